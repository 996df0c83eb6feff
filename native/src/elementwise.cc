#include "elementwise.h"

#include <omp.h>

#include <algorithm>
#include <cmath>

namespace sfn {

namespace {

// Below this many elements a parallel region costs more than the loop.
constexpr int64_t kParallelElements = 1 << 15;

template <typename F>
void binaryRow(F f, const float* a, int64_t sa, const float* b, int64_t sb, float* out, int64_t n) {
  if (sa == 1 && sb == 1) {
    for (int64_t i = 0; i < n; ++i) out[i] = f(a[i], b[i]);
  } else if (sa == 1) {
    const float bv = b[0];
    for (int64_t i = 0; i < n; ++i) out[i] = f(a[i], bv);
  } else if (sb == 1) {
    const float av = a[0];
    for (int64_t i = 0; i < n; ++i) out[i] = f(av, b[i]);
  } else {
    const float v = f(a[0], b[0]);
    for (int64_t i = 0; i < n; ++i) out[i] = v;
  }
}

template <typename F>
void broadcastWith(F f, const float* a, const std::vector<int64_t>& aShape, const float* b, const std::vector<int64_t>& bShape, float* out,
                   const std::vector<int64_t>& outShape) {
  // Merge adjacent dims that broadcast the same way, so the inner loop is as long as possible.
  std::vector<int64_t> dims, aDims, bDims;
  for (size_t i = 0; i < outShape.size(); ++i) {
    if (outShape[i] == 1) continue;
    const bool aB = aShape[i] == 1, bB = bShape[i] == 1;
    if (!dims.empty() && (aDims.back() == 1) == aB && (bDims.back() == 1) == bB) {
      dims.back() *= outShape[i], aDims.back() *= aShape[i], bDims.back() *= bShape[i];
    } else {
      dims.push_back(outShape[i]), aDims.push_back(aShape[i]), bDims.push_back(bShape[i]);
    }
  }
  if (dims.empty()) dims = aDims = bDims = {1};
  const int r = static_cast<int>(dims.size());
  std::vector<int64_t> aStride(r), bStride(r);
  int64_t as = 1, bs = 1;
  for (int i = r - 1; i >= 0; --i) {
    aStride[i] = aDims[i] == 1 ? 0 : as, bStride[i] = bDims[i] == 1 ? 0 : bs;
    as *= aDims[i], bs *= bDims[i];
  }
  const int64_t inner = dims[r - 1];
  int64_t outer = 1;
  for (int i = 0; i < r - 1; ++i) outer *= dims[i];
  const int64_t saInner = aStride[r - 1], sbInner = bStride[r - 1];
#pragma omp parallel for schedule(static) if (outer * inner >= kParallelElements && outer > 1)
  for (int64_t o = 0; o < outer; ++o) {
    int64_t aOff = 0, bOff = 0, rest = o;
    for (int i = r - 2; i >= 0; --i) {
      const int64_t idx = rest % dims[i];
      rest /= dims[i];
      aOff += idx * aStride[i], bOff += idx * bStride[i];
    }
    binaryRow(f, a + aOff, saInner, b + bOff, sbInner, out + o * inner, inner);
  }
}

}  // namespace

void broadcastBinary(BinaryOp op, const float* a, const std::vector<int64_t>& aShape, const float* b, const std::vector<int64_t>& bShape,
                     float* out, const std::vector<int64_t>& outShape) {
  switch (op) {
    case BinaryOp::Add: return broadcastWith([](float x, float y) { return x + y; }, a, aShape, b, bShape, out, outShape);
    case BinaryOp::Sub: return broadcastWith([](float x, float y) { return x - y; }, a, aShape, b, bShape, out, outShape);
    case BinaryOp::Mul: return broadcastWith([](float x, float y) { return x * y; }, a, aShape, b, bShape, out, outShape);
    case BinaryOp::Div: return broadcastWith([](float x, float y) { return x / y; }, a, aShape, b, bShape, out, outShape);
  }
}

void softmaxRows(const float* x, float* y, int64_t rows, int64_t cols) {
#pragma omp parallel for schedule(static) if (rows * cols >= kParallelElements && rows > 1)
  for (int64_t r = 0; r < rows; ++r) {
    const float* in = x + r * cols;
    float* out = y + r * cols;
    float m = in[0];
    for (int64_t c = 1; c < cols; ++c) m = std::max(m, in[c]);
    double sum = 0;
    for (int64_t c = 0; c < cols; ++c) sum += (out[c] = std::exp(in[c] - m));
    const float inv = static_cast<float>(1.0 / sum);
    for (int64_t c = 0; c < cols; ++c) out[c] *= inv;
  }
}

void sliceCopy(const float* x, const std::vector<int64_t>& shape, const std::vector<int64_t>& begin, const std::vector<int64_t>& size,
               float* out) {
  const int r = static_cast<int>(shape.size());
  std::vector<int64_t> stride(r);
  int64_t s = 1;
  for (int i = r - 1; i >= 0; --i) stride[i] = s, s *= shape[i];
  const int64_t inner = size[r - 1];
  int64_t outer = 1;
  for (int i = 0; i < r - 1; ++i) outer *= size[i];
#pragma omp parallel for schedule(static) if (outer * inner >= kParallelElements && outer > 1)
  for (int64_t o = 0; o < outer; ++o) {
    int64_t off = begin[r - 1], rest = o;
    for (int i = r - 2; i >= 0; --i) {
      off += (begin[i] + rest % size[i]) * stride[i];
      rest /= size[i];
    }
    std::copy(x + off, x + off + inner, out + o * inner);
  }
}

}  // namespace sfn
