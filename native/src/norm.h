// Group normalisation of channels-last data (LayerNorm is the one-group, one-position case):
// forward and backward in one pass each over the data, statistics in double.
#pragma once
#include <algorithm>
#include <cmath>
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

// Rows per block in the one-position (LayerNorm-shaped) paths: a row's statistics are a chain of
// dependent double adds along its channels (a double reduction does not vectorise without
// reassociating, which would change the bits), so kRowBlock rows are summed together and that many
// chains are in flight.
constexpr int64_t kRowBlock = 8;

// Mean and 1/√(var + eps) of kRowBlock rows over their channels [begin, end), in double, the sums
// taken in channel order; the first nr rows' results go to mean[r·stride] and rstd[r·stride]. A
// short block passes its last row again in the spare lanes.
inline void rowBlockMoments(const float* const* rows, int64_t nr, int64_t begin, int64_t end, float eps, float* mean, float* rstd, int64_t stride) {
  double s1[kRowBlock] = {}, s2[kRowBlock] = {};
  for (int64_t ch = begin; ch < end; ++ch) {
    for (int64_t r = 0; r < kRowBlock; ++r) {
      const double v = rows[r][ch];
      s1[r] += v;
      s2[r] += v * v;
    }
  }
  const double count = static_cast<double>(end - begin);
  for (int64_t r = 0; r < nr; ++r) {
    const double mu = s1[r] / count;
    const double var = std::max(0.0, s2[r] / count - mu * mu);
    mean[r * stride] = static_cast<float>(mu);
    rstd[r * stride] = static_cast<float>(1.0 / std::sqrt(var + static_cast<double>(eps)));
  }
}

}  // namespace sfn
