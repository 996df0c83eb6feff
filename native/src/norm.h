// Group normalisation of channels-last data (LayerNorm is the one-group, one-position case):
// forward and backward in one pass each over the data, statistics in double.
#pragma once
#include <cstdint>

namespace sfn {

// x [n, s, c] with c split into g groups: y = (x - mean) * rstd per (n, group), statistics over
// the s positions and c/g channels; mean and rstd are [n, g].
void groupNormForward(const float* x, int64_t n, int64_t s, int64_t c, int64_t g, float eps, float* y, float* mean, float* rstd);

// dx of y = (x - mean) * rstd given dy: rstd * (dy - mean(dy) - xhat * mean(dy * xhat)).
void groupNormBackward(const float* dy, const float* x, const float* mean, const float* rstd, int64_t n, int64_t s, int64_t c, int64_t g, float* dx);

}  // namespace sfn
