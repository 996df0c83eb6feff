#include "layout.h"

#include <algorithm>
#include <cstring>
#include <numeric>

#include "parallel.h"

namespace sfn {

namespace {

int64_t product(const std::vector<int64_t>& dims) {
  int64_t p = 1;
  for (int64_t d : dims) p *= d;
  return p;
}

void copyParallel(const float* x, int64_t n, float* out) {
  forRanges(n, 1, [&](int64_t b, int64_t e) { std::memcpy(out + b, x + b, (e - b) * sizeof(float)); });
}

std::vector<int64_t> stridesOf(const std::vector<int64_t>& dims) {
  std::vector<int64_t> s(dims.size());
  int64_t acc = 1;
  for (size_t i = dims.size(); i-- > 0;) s[i] = acc, acc *= dims[i];
  return s;
}

// A transpose reduced to its essential dims: size-1 dims dropped, and input dims that stay
// neighbours in the output merged (NHWC→NCHW becomes a [N, HW, C]→[N, C, HW] swap).
struct ReducedTranspose {
  std::vector<int64_t> dims;  // input order
  std::vector<int> perm;      // output dim i is input dim perm[i]
};

ReducedTranspose reduceTranspose(const std::vector<int64_t>& shape, const std::vector<int64_t>& perm) {
  const int r = static_cast<int>(shape.size());
  std::vector<int> kept(r, -1);
  std::vector<int64_t> dims;
  for (int i = 0; i < r; ++i) {
    if (shape[i] != 1) kept[i] = static_cast<int>(dims.size()), dims.push_back(shape[i]);
  }
  // Runs of consecutive input dims in output order, as [first, last] input dims.
  std::vector<std::pair<int, int>> runs;
  for (int i = 0; i < r; ++i) {
    const int v = kept[perm[i]];
    if (v < 0) continue;
    if (!runs.empty() && runs.back().second + 1 == v) runs.back().second = v;
    else runs.push_back({v, v});
  }
  const int g = static_cast<int>(runs.size());
  std::vector<int> byInput(g);
  std::iota(byInput.begin(), byInput.end(), 0);
  std::sort(byInput.begin(), byInput.end(), [&](int a, int b) { return runs[a].first < runs[b].first; });
  ReducedTranspose red;
  red.dims.resize(g);
  red.perm.resize(g);
  std::vector<int> inputRank(g);
  for (int j = 0; j < g; ++j) {
    const auto [first, last] = runs[byInput[j]];
    red.dims[j] = 1;
    for (int d = first; d <= last; ++d) red.dims[j] *= dims[d];
    inputRank[byInput[j]] = j;
  }
  for (int i = 0; i < g; ++i) red.perm[i] = inputRank[i];
  return red;
}

// Walks the offsets of a row-major index over `dims` with per-dim strides, one step at a time.
struct Odometer {
  const std::vector<int64_t>& dims;
  const std::vector<int64_t>& strides;
  std::vector<int64_t> idx;
  int64_t offset = 0;

  Odometer(const std::vector<int64_t>& d, const std::vector<int64_t>& s, int64_t start) : dims(d), strides(s), idx(d.size()) {
    for (size_t i = dims.size(); i-- > 0;) {
      idx[i] = start % dims[i];
      start /= dims[i];
      offset += idx[i] * strides[i];
    }
  }

  void next() {
    for (size_t i = dims.size(); i-- > 0;) {
      if (++idx[i] < dims[i]) {
        offset += strides[i];
        return;
      }
      offset -= (dims[i] - 1) * strides[i];
      idx[i] = 0;
    }
  }
};

// Output rows of `run` contiguous floats, each read from a strided place in x.
void transposeRuns(const float* x, const std::vector<int64_t>& rowDims, const std::vector<int64_t>& rowInStrides, int64_t run, float* out) {
  const int64_t rows = product(rowDims);
  forRanges(rows, run, [&](int64_t b, int64_t e) {
    Odometer in(rowDims, rowInStrides, b);
    for (int64_t row = b; row < e; ++row, in.next()) std::memcpy(out + row * run, x + in.offset, run * sizeof(float));
  });
}

// Input innermost dim (length n, output stride outStride) against output innermost dim (length m,
// input stride inStride), in square tiles so that both the reads and the writes stay in cache.
void transposeTiles(const float* x, const std::vector<int64_t>& outerDims, const std::vector<int64_t>& outerIn,
                    const std::vector<int64_t>& outerOut, int64_t n, int64_t outStride, int64_t m, int64_t inStride, float* out) {
  constexpr int64_t kTile = 32;
  const int64_t blocks = (n + kTile - 1) / kTile;
  const int64_t items = product(outerDims) * blocks;
  forRanges(items, std::min(kTile, n) * m, [&](int64_t b, int64_t e) {
    for (int64_t item = b; item < e; ++item) {
      int64_t rest = item / blocks, inBase = 0, outBase = 0;
      for (size_t d = outerDims.size(); d-- > 0;) {
        const int64_t i = rest % outerDims[d];
        rest /= outerDims[d];
        inBase += i * outerIn[d], outBase += i * outerOut[d];
      }
      const int64_t i0 = (item % blocks) * kTile, i1 = std::min(n, i0 + kTile);
      for (int64_t j0 = 0; j0 < m; j0 += kTile) {
        const int64_t j1 = std::min(m, j0 + kTile);
        for (int64_t i = i0; i < i1; ++i) {
          const float* src = x + inBase + i;
          float* dst = out + outBase + i * outStride;
          for (int64_t j = j0; j < j1; ++j) dst[j] = src[j * inStride];
        }
      }
    }
  });
}

}  // namespace

void transposeCopy(const float* x, const std::vector<int64_t>& shape, const std::vector<int64_t>& perm, float* out) {
  const ReducedTranspose red = reduceTranspose(shape, perm);
  const int r = static_cast<int>(red.dims.size());
  bool identity = true;
  for (int i = 0; i < r; ++i) identity = identity && red.perm[i] == i;
  if (identity) return copyParallel(x, product(shape), out);
  const std::vector<int64_t> inStrides = stridesOf(red.dims);
  std::vector<int64_t> outDims(r), outInStrides(r);
  for (int i = 0; i < r; ++i) outDims[i] = red.dims[red.perm[i]], outInStrides[i] = inStrides[red.perm[i]];
  const std::vector<int64_t> outStrides = stridesOf(outDims);
  // The innermost dim kept its place (other dims move around it): copy whole rows of it.
  if (red.perm[r - 1] == r - 1) {
    const std::vector<int64_t> rowDims(outDims.begin(), outDims.end() - 1), rowIn(outInStrides.begin(), outInStrides.end() - 1);
    return transposeRuns(x, rowDims, rowIn, outDims[r - 1], out);
  }
  const int q = static_cast<int>(std::find(red.perm.begin(), red.perm.end(), r - 1) - red.perm.begin());
  std::vector<int64_t> outerDims, outerIn, outerOut;
  for (int i = 0; i < r - 1; ++i) {
    if (i == q) continue;
    outerDims.push_back(outDims[i]), outerIn.push_back(outInStrides[i]), outerOut.push_back(outStrides[i]);
  }
  transposeTiles(x, outerDims, outerIn, outerOut, red.dims[r - 1], outStrides[q], outDims[r - 1], outInStrides[r - 1], out);
}

namespace {

// Visits the output of a concat (or the input of a split) as consecutive segments, each lying in
// one piece's row, over the flat range [begin, end): f(piece, row, offsetInPieceRow, flatStart, count).
// Walking flat ranges balances threads even when there is a single row (axis 0) or few pieces.
template <typename F>
void forSegments(const std::vector<int64_t>& runs, int64_t outer, F f) {
  const size_t k = runs.size();
  std::vector<int64_t> starts(k + 1, 0);
  for (size_t i = 0; i < k; ++i) starts[i + 1] = starts[i] + runs[i];
  const int64_t rowLen = starts[k];
  if (rowLen == 0) return;
  forRanges(outer * rowLen, 1, [&](int64_t b, int64_t e) {
    int64_t row = b / rowLen, within = b % rowLen;
    size_t piece = static_cast<size_t>(std::upper_bound(starts.begin(), starts.end(), within) - starts.begin()) - 1;
    for (int64_t pos = b; pos < e;) {
      const int64_t count = std::min(e - pos, starts[piece + 1] - within);
      // An empty piece yields count 0 and is stepped over.
      if (count > 0) f(piece, row, within - starts[piece], pos, count);
      pos += count, within += count;
      if (within == starts[piece + 1]) {
        if (within == rowLen) {
          within = 0, piece = 0, ++row;
        } else {
          ++piece;
        }
      }
    }
  });
}

}  // namespace

void concatRows(const std::vector<const float*>& inputs, const std::vector<int64_t>& runs, int64_t outer, float* out) {
  forSegments(runs, outer, [&](size_t piece, int64_t row, int64_t offset, int64_t flat, int64_t count) {
    std::memcpy(out + flat, inputs[piece] + row * runs[piece] + offset, count * sizeof(float));
  });
}

void splitRows(const float* x, const std::vector<int64_t>& runs, int64_t outer, const std::vector<float*>& outputs) {
  forSegments(runs, outer, [&](size_t piece, int64_t row, int64_t offset, int64_t flat, int64_t count) {
    std::memcpy(outputs[piece] + row * runs[piece] + offset, x + flat, count * sizeof(float));
  });
}

void tileCopy(const float* x, const std::vector<int64_t>& shape, const std::vector<int64_t>& reps, float* out) {
  // A dim that is not repeated merges into the dim before it: the output's index over the pair
  // modulo the pair's input size is still the input's index.
  std::vector<int64_t> dims, times;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (!dims.empty() && reps[i] == 1) dims.back() *= shape[i];
    else dims.push_back(shape[i]), times.push_back(reps[i]);
  }
  const size_t r = dims.size();
  const std::vector<int64_t> inStrides = stridesOf(dims);
  std::vector<int64_t> outDims(r);
  for (size_t i = 0; i < r; ++i) outDims[i] = dims[i] * times[i];
  const int64_t run = dims[r - 1], rowLen = outDims[r - 1], rows = product(outDims) / rowLen;
  forRanges(rows, rowLen, [&](int64_t b, int64_t e) {
    std::vector<int64_t> idx(r - 1);
    int64_t rest = b;
    for (size_t i = r - 1; i-- > 0;) idx[i] = rest % outDims[i], rest /= outDims[i];
    for (int64_t row = b; row < e; ++row) {
      int64_t src = 0;
      for (size_t i = 0; i + 1 < r; ++i) src += (idx[i] % dims[i]) * inStrides[i];
      float* dst = out + row * rowLen;
      for (int64_t t = 0; t < times[r - 1]; ++t) std::memcpy(dst + t * run, x + src, run * sizeof(float));
      for (size_t i = r - 1; i-- > 0;) {
        if (++idx[i] < outDims[i]) break;
        idx[i] = 0;
      }
    }
  });
}

void padConstant(const float* x, const std::vector<int64_t>& shape, const std::vector<int64_t>& before, const std::vector<int64_t>& after,
                 float value, float* out) {
  // An unpadded dim merges into the dim before it, scaling that dim's padding.
  std::vector<int64_t> dims, lo, hi;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (!dims.empty() && before[i] == 0 && after[i] == 0) {
      dims.back() *= shape[i], lo.back() *= shape[i], hi.back() *= shape[i];
    } else {
      dims.push_back(shape[i]), lo.push_back(before[i]), hi.push_back(after[i]);
    }
  }
  const size_t r = dims.size();
  const std::vector<int64_t> inStrides = stridesOf(dims);
  std::vector<int64_t> outDims(r);
  for (size_t i = 0; i < r; ++i) outDims[i] = lo[i] + dims[i] + hi[i];
  const int64_t rowLen = outDims[r - 1], run = dims[r - 1], rows = product(outDims) / rowLen;
  forRanges(rows, rowLen, [&](int64_t b, int64_t e) {
    std::vector<int64_t> idx(r - 1);
    int64_t rest = b;
    for (size_t i = r - 1; i-- > 0;) idx[i] = rest % outDims[i], rest /= outDims[i];
    for (int64_t row = b; row < e; ++row) {
      float* dst = out + row * rowLen;
      bool inside = true;
      int64_t src = 0;
      for (size_t i = 0; i + 1 < r; ++i) {
        const int64_t j = idx[i] - lo[i];
        inside = inside && j >= 0 && j < dims[i];
        src += j * inStrides[i];
      }
      if (inside) {
        std::fill(dst, dst + lo[r - 1], value);
        std::memcpy(dst + lo[r - 1], x + src, run * sizeof(float));
        std::fill(dst + lo[r - 1] + run, dst + rowLen, value);
      } else {
        std::fill(dst, dst + rowLen, value);
      }
      for (size_t i = r - 1; i-- > 0;) {
        if (++idx[i] < outDims[i]) break;
        idx[i] = 0;
      }
    }
  });
}

}  // namespace sfn
