#include "norm.h"
#include "parallel.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <vector>

namespace sfn {

namespace {


// Work is split over samples; LayerNorm calls have many one-position "samples" of one group.
bool parallel(int64_t n, int64_t s, int64_t c) { return n > 1 && n * s * c >= kParallelWork; }

}  // namespace

void groupNormForward(const float* x, int64_t n, int64_t s, int64_t c, int64_t g, float eps, float* y, float* mean, float* rstd) {
  const int64_t cg = c / g;
  const double count = static_cast<double>(s * cg);
#pragma omp parallel for schedule(static) if (parallel(n, s, c))
  for (int64_t b = 0; b < n; ++b) {
    const float* xb = x + b * s * c;
    // Per-channel partial sums first (vectorises over the contiguous channels), then per group.
    std::vector<double> sum(c, 0.0), sumSq(c, 0.0);
    for (int64_t p = 0; p < s; ++p) {
      const float* row = xb + p * c;
      for (int64_t ch = 0; ch < c; ++ch) {
        const double v = row[ch];
        sum[ch] += v;
        sumSq[ch] += v * v;
      }
    }
    std::vector<float> gm(g), gr(g);
    for (int64_t k = 0; k < g; ++k) {
      double s1 = 0, s2 = 0;
      for (int64_t ch = k * cg; ch < (k + 1) * cg; ++ch) s1 += sum[ch], s2 += sumSq[ch];
      const double mu = s1 / count;
      const double var = std::max(0.0, s2 / count - mu * mu);
      gm[k] = static_cast<float>(mu);
      gr[k] = static_cast<float>(1.0 / std::sqrt(var + static_cast<double>(eps)));
      mean[b * g + k] = gm[k];
      rstd[b * g + k] = gr[k];
    }
    std::vector<float> chMean(c), chRstd(c);
    for (int64_t ch = 0; ch < c; ++ch) chMean[ch] = gm[ch / cg], chRstd[ch] = gr[ch / cg];
    float* yb = y + b * s * c;
    for (int64_t p = 0; p < s; ++p) {
      const float* row = xb + p * c;
      float* out = yb + p * c;
      for (int64_t ch = 0; ch < c; ++ch) out[ch] = (row[ch] - chMean[ch]) * chRstd[ch];
    }
  }
}

void groupNormBackward(const float* dy, const float* x, const float* mean, const float* rstd, int64_t n, int64_t s, int64_t c, int64_t g, float* dx) {
  const int64_t cg = c / g;
  const double count = static_cast<double>(s * cg);
#pragma omp parallel for schedule(static) if (parallel(n, s, c))
  for (int64_t b = 0; b < n; ++b) {
    const float* xb = x + b * s * c;
    const float* dyb = dy + b * s * c;
    std::vector<float> chMean(c), chRstd(c);
    for (int64_t ch = 0; ch < c; ++ch) chMean[ch] = mean[b * g + ch / cg], chRstd[ch] = rstd[b * g + ch / cg];
    std::vector<double> sumDy(c, 0.0), sumDyXhat(c, 0.0);
    for (int64_t p = 0; p < s; ++p) {
      const float* xr = xb + p * c;
      const float* dr = dyb + p * c;
      for (int64_t ch = 0; ch < c; ++ch) {
        const double d = dr[ch];
        sumDy[ch] += d;
        sumDyXhat[ch] += d * static_cast<double>((xr[ch] - chMean[ch]) * chRstd[ch]);
      }
    }
    std::vector<float> a(c), bcoef(c);
    for (int64_t k = 0; k < g; ++k) {
      double s1 = 0, s2 = 0;
      for (int64_t ch = k * cg; ch < (k + 1) * cg; ++ch) s1 += sumDy[ch], s2 += sumDyXhat[ch];
      const float mDy = static_cast<float>(s1 / count), mDyXhat = static_cast<float>(s2 / count);
      for (int64_t ch = k * cg; ch < (k + 1) * cg; ++ch) a[ch] = mDy, bcoef[ch] = mDyXhat;
    }
    float* dxb = dx + b * s * c;
    for (int64_t p = 0; p < s; ++p) {
      const float* xr = xb + p * c;
      const float* dr = dyb + p * c;
      float* out = dxb + p * c;
      for (int64_t ch = 0; ch < c; ++ch) {
        const float xhat = (xr[ch] - chMean[ch]) * chRstd[ch];
        out[ch] = chRstd[ch] * (dr[ch] - a[ch] - xhat * bcoef[ch]);
      }
    }
  }
}

}  // namespace sfn
