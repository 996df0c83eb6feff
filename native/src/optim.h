// One fused Adam/AdamW update per parameter tensor: the arithmetic of the tfjs composite in
// src/train/optim.ts, op for op in float32 (no contraction), so both paths give the same bits.
#pragma once
#include <cstdint>

namespace sfn {

struct AdamHyper {
  double lr, beta1, beta2, eps, weightDecay;
  int64_t step;
  bool decoupled;  // AdamW: decay the parameter; Adam: add wd·p to the gradient
};

// m0/v0 may be null (first step: zero moments). Writes the new parameter and moments.
void adamUpdate(const AdamHyper& h, int64_t n, const float* p, const float* g, const float* m0, const float* v0, float* pOut, float* mOut, float* vOut);

}  // namespace sfn
