#include "optim.h"

#include <omp.h>

#include <cmath>

namespace sfn {

void adamUpdate(const AdamHyper& h, int64_t n, const float* p, const float* g, const float* m0, const float* v0, float* pOut, float* mOut, float* vOut) {
  // Every constant is what the composite turns a JS number into: a float32 scalar tensor.
  const float b1 = static_cast<float>(h.beta1), oneMinusB1 = static_cast<float>(1 - h.beta1);
  const float b2 = static_cast<float>(h.beta2), oneMinusB2 = static_cast<float>(1 - h.beta2);
  const double bc1 = 1 - std::pow(h.beta1, static_cast<double>(h.step));
  const double bc2 = 1 - std::pow(h.beta2, static_cast<double>(h.step));
  const float sqrtBc2 = static_cast<float>(std::sqrt(bc2));
  const float stepSize = static_cast<float>(h.lr / bc1);
  const float eps = static_cast<float>(h.eps);
  const bool decay = h.weightDecay != 0;
  const float decayFactor = static_cast<float>(1 - h.lr * h.weightDecay);
  const float wd = static_cast<float>(h.weightDecay);
#pragma omp parallel for schedule(static) if (n >= (1 << 16))
  for (int64_t i = 0; i < n; ++i) {
    float param = p[i];
    float grad = g[i];
    if (decay) {
      if (h.decoupled) {
        param = param * decayFactor;
      } else {
        grad = grad + p[i] * wd;
      }
    }
    const float mPrev = m0 ? m0[i] * b1 : 0.0f;
    const float vPrev = v0 ? v0[i] * b2 : 0.0f;
    const float m = mPrev + grad * oneMinusB1;
    const float gg = grad * grad;
    const float v = vPrev + gg * oneMinusB2;
    const float denom = std::sqrt(v) / sqrtBc2 + eps;
    const float update = (m / denom) * stepSize;
    mOut[i] = m;
    vOut[i] = v;
    pOut[i] = param - update;
  }
}

}  // namespace sfn
