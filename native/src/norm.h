// Group normalisation of channels-last data (LayerNorm is the one-group, one-position case):
// forward and backward in one pass each over the data, statistics in double.
#pragma once
#include <algorithm>
#include <cstdint>

namespace sfn {

// x [n, s, c] with c split into g groups: y = (x - mean) * rstd per (n, group), statistics over
// the s positions and c/g channels; mean and rstd are [n, g].
void groupNormForward(const float* x, int64_t n, int64_t s, int64_t c, int64_t g, float eps, float* y, float* mean, float* rstd);

// dx of y = (x - mean) * rstd given dy: rstd * (dy - mean(dy) - xhat * mean(dy * xhat)).
void groupNormBackward(const float* dy, const float* x, const float* mean, const float* rstd, int64_t n, int64_t s, int64_t c, int64_t g, float* dx);

// Per-channel copies of per-group statistics, group by group: `m[ch / cg]` per channel costs an
// integer division each, which for a LayerNorm over 64 tokens × 32 samples was most of the kernel.
inline void spreadGroups(const float* m, const float* r, int64_t g, int64_t cg, float* chMean, float* chRstd) {
  for (int64_t k = 0; k < g; ++k) {
    std::fill(chMean + k * cg, chMean + (k + 1) * cg, m[k]);
    std::fill(chRstd + k * cg, chRstd + (k + 1) * cg, r[k]);
  }
}

}  // namespace sfn
