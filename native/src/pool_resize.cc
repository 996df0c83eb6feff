#include "pool_resize.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "parallel.h"

namespace sfn {

namespace {

// The input range [lo, hi) one output position reads along one axis; empty when hi <= lo.
struct Span {
  int64_t lo, hi;
  int64_t size() const { return std::max<int64_t>(0, hi - lo); }
};

std::vector<Span> poolSpans(int64_t outSize, int64_t inSize, int64_t filter, int64_t stride, int64_t pad) {
  std::vector<Span> spans(outSize);
  for (int64_t o = 0; o < outSize; ++o) {
    const int64_t corner = o * stride - pad;
    spans[o] = {std::max<int64_t>(0, corner), std::min(inSize, corner + filter)};
  }
  return spans;
}

// For each input position along one axis, the output positions that read it and with what weight:
// the transpose of a forward pass's taps, so a backward pass can gather instead of scatter and
// split its output across threads without write conflicts.
struct Contribution {
  int64_t out;
  float weight;
};
using Gathers = std::vector<std::vector<Contribution>>;

// For each input pixel (n, i, j), dx = Σ over rows (r, wr) of i and cols (c, wc) of j of wr·wc·dy[n, r, c].
void gatherBackward(const Gathers& rows, const Gathers& cols, int64_t batch, int64_t inH, int64_t inW, int64_t outH, int64_t outW,
                    int64_t channels, const float* dy, float* dx) {
  forRanges(batch * inH, inW * channels * 4, [&](int64_t b, int64_t e) {
    for (int64_t item = b; item < e; ++item) {
      const int64_t n = item / inH, i = item % inH;
      const float* dyImage = dy + n * outH * outW * channels;
      for (int64_t j = 0; j < inW; ++j) {
        float* acc = dx + ((item * inW) + j) * channels;
        std::fill(acc, acc + channels, 0.0f);
        for (const Contribution& r : rows[i]) {
          for (const Contribution& c : cols[j]) {
            const float w = r.weight * c.weight;
            const float* g = dyImage + (r.out * outW + c.out) * channels;
            for (int64_t d = 0; d < channels; ++d) acc[d] += w * g[d];
          }
        }
      }
    }
  });
}

// tfjs's source-coordinate scale: with alignCorners the corner pixels' centres coincide.
double resizeScale(int64_t inSize, int64_t outSize, bool alignCorners) {
  return alignCorners && outSize > 1 ? static_cast<double>(inSize - 1) / static_cast<double>(outSize - 1)
                                     : static_cast<double>(inSize) / static_cast<double>(outSize);
}

// Bilinear taps along one axis, as tfjs's ResizeBilinear computes them: clamped floor and ceil of
// the source coordinate, and the coordinate's distance from the (clamped) floor.
struct BilinearTaps {
  std::vector<int64_t> lo, hi;
  std::vector<float> frac;
};

BilinearTaps bilinearTaps(int64_t outSize, int64_t inSize, bool alignCorners, bool halfPixelCenters) {
  const double scale = resizeScale(inSize, outSize, alignCorners);
  BilinearTaps t{std::vector<int64_t>(outSize), std::vector<int64_t>(outSize), std::vector<float>(outSize)};
  for (int64_t o = 0; o < outSize; ++o) {
    const double src = halfPixelCenters ? scale * (static_cast<double>(o) + 0.5) - 0.5 : scale * static_cast<double>(o);
    t.lo[o] = std::max<int64_t>(0, static_cast<int64_t>(std::floor(src)));
    t.hi[o] = std::min<int64_t>(inSize - 1, static_cast<int64_t>(std::ceil(src)));
    t.frac[o] = static_cast<float>(src - static_cast<double>(t.lo[o]));
  }
  return t;
}

Gathers bilinearGathers(const BilinearTaps& t, int64_t inSize) {
  Gathers g(inSize);
  for (size_t o = 0; o < t.lo.size(); ++o) {
    g[t.lo[o]].push_back({static_cast<int64_t>(o), 1.0f - t.frac[o]});
    g[t.hi[o]].push_back({static_cast<int64_t>(o), t.frac[o]});
  }
  return g;
}

// tfjs's ResizeNearestNeighbor source index along one axis.
std::vector<int64_t> nearestSources(int64_t outSize, int64_t inSize, bool alignCorners, bool halfPixelCenters) {
  const double scale = resizeScale(inSize, outSize, alignCorners);
  std::vector<int64_t> src(outSize);
  for (int64_t o = 0; o < outSize; ++o) {
    const double at = scale * (static_cast<double>(o) + (halfPixelCenters ? 0.5 : 0.0));
    // at >= 0, where std::round and JS Math.round agree (halves round up).
    int64_t s = std::min<int64_t>(inSize - 1, static_cast<int64_t>(alignCorners ? std::round(at) : std::floor(at)));
    if (halfPixelCenters) s = std::max<int64_t>(0, s);
    src[o] = s;
  }
  return src;
}

Gathers nearestGathers(const std::vector<int64_t>& src, int64_t inSize) {
  Gathers g(inSize);
  for (size_t o = 0; o < src.size(); ++o) g[src[o]].push_back({static_cast<int64_t>(o), 1.0f});
  return g;
}

}  // namespace

void avgPoolForward(const PoolShape& s, const float* x, float* y) {
  const auto rows = poolSpans(s.outH, s.inH, s.filterH, s.strideH, s.padTop);
  const auto cols = poolSpans(s.outW, s.inW, s.filterW, s.strideW, s.padLeft);
  const int64_t c = s.channels;
  forRanges(s.batch * s.outH, s.outW * c * s.filterH * s.filterW, [&](int64_t b, int64_t e) {
    for (int64_t item = b; item < e; ++item) {
      const int64_t n = item / s.outH, r = item % s.outH;
      const float* image = x + n * s.inH * s.inW * c;
      for (int64_t q = 0; q < s.outW; ++q) {
        float* acc = y + (item * s.outW + q) * c;
        std::fill(acc, acc + c, 0.0f);
        for (int64_t i = rows[r].lo; i < rows[r].hi; ++i) {
          for (int64_t j = cols[q].lo; j < cols[q].hi; ++j) {
            const float* px = image + (i * s.inW + j) * c;
            for (int64_t d = 0; d < c; ++d) acc[d] += px[d];
          }
        }
        // A window wholly inside the padding averages nothing: 0/0, NaN, as in tfjs.
        const float inv = 1.0f / static_cast<float>(rows[r].size() * cols[q].size());
        for (int64_t d = 0; d < c; ++d) acc[d] *= inv;
      }
    }
  });
}

void avgPoolBackward(const PoolShape& s, const float* dy, float* dx) {
  const auto rows = poolSpans(s.outH, s.inH, s.filterH, s.strideH, s.padTop);
  const auto cols = poolSpans(s.outW, s.inW, s.filterW, s.strideW, s.padLeft);
  // The divisor rows·cols factors per axis, so each axis carries 1/its span's size.
  auto gathers = [](const std::vector<Span>& spans, int64_t inSize) {
    Gathers g(inSize);
    for (size_t o = 0; o < spans.size(); ++o) {
      for (int64_t i = spans[o].lo; i < spans[o].hi; ++i) g[i].push_back({static_cast<int64_t>(o), 1.0f / static_cast<float>(spans[o].size())});
    }
    return g;
  };
  gatherBackward(gathers(rows, s.inH), gathers(cols, s.inW), s.batch, s.inH, s.inW, s.outH, s.outW, s.channels, dy, dx);
}

void resizeBilinearForward(const ResizeShape& s, const float* x, float* y) {
  const BilinearTaps rows = bilinearTaps(s.outH, s.inH, s.alignCorners, s.halfPixelCenters);
  const BilinearTaps cols = bilinearTaps(s.outW, s.inW, s.alignCorners, s.halfPixelCenters);
  const int64_t c = s.channels;
  forRanges(s.batch * s.outH, s.outW * c * 4, [&](int64_t b, int64_t e) {
    for (int64_t item = b; item < e; ++item) {
      const int64_t n = item / s.outH, r = item % s.outH;
      const float* top = x + (n * s.inH + rows.lo[r]) * s.inW * c;
      const float* bottom = x + (n * s.inH + rows.hi[r]) * s.inW * c;
      const float fr = rows.frac[r];
      float* out = y + item * s.outW * c;
      for (int64_t q = 0; q < s.outW; ++q, out += c) {
        const float* tl = top + cols.lo[q] * c;
        const float* tr = top + cols.hi[q] * c;
        const float* bl = bottom + cols.lo[q] * c;
        const float* br = bottom + cols.hi[q] * c;
        const float fc = cols.frac[q];
        for (int64_t d = 0; d < c; ++d) {
          const float upper = tl[d] + (tr[d] - tl[d]) * fc;
          const float lower = bl[d] + (br[d] - bl[d]) * fc;
          out[d] = upper + (lower - upper) * fr;
        }
      }
    }
  });
}

void resizeBilinearBackward(const ResizeShape& s, const float* dy, float* dx) {
  const Gathers rows = bilinearGathers(bilinearTaps(s.outH, s.inH, s.alignCorners, s.halfPixelCenters), s.inH);
  const Gathers cols = bilinearGathers(bilinearTaps(s.outW, s.inW, s.alignCorners, s.halfPixelCenters), s.inW);
  gatherBackward(rows, cols, s.batch, s.inH, s.inW, s.outH, s.outW, s.channels, dy, dx);
}

void resizeNearestForward(const ResizeShape& s, const float* x, float* y) {
  const auto rows = nearestSources(s.outH, s.inH, s.alignCorners, s.halfPixelCenters);
  const auto cols = nearestSources(s.outW, s.inW, s.alignCorners, s.halfPixelCenters);
  const int64_t c = s.channels;
  forRanges(s.batch * s.outH, s.outW * c, [&](int64_t b, int64_t e) {
    for (int64_t item = b; item < e; ++item) {
      const int64_t n = item / s.outH, r = item % s.outH;
      const float* row = x + (n * s.inH + rows[r]) * s.inW * c;
      float* out = y + item * s.outW * c;
      for (int64_t q = 0; q < s.outW; ++q, out += c) std::copy(row + cols[q] * c, row + cols[q] * c + c, out);
    }
  });
}

void resizeNearestBackward(const ResizeShape& s, const float* dy, float* dx) {
  const Gathers rows = nearestGathers(nearestSources(s.outH, s.inH, s.alignCorners, s.halfPixelCenters), s.inH);
  const Gathers cols = nearestGathers(nearestSources(s.outW, s.inW, s.alignCorners, s.halfPixelCenters), s.inW);
  gatherBackward(rows, cols, s.batch, s.inH, s.inW, s.outH, s.outW, s.channels, dy, dx);
}

}  // namespace sfn
