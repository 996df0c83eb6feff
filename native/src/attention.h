// Scaled-dot-product attention with grouped key/value heads, forward and backward, on the token-
// major layout of a projection's output ([B, N, H, d]: no head transposes before or after).
#pragma once
#include <cstdint>

namespace sfn {

struct AttentionShape {
  int64_t batch, nq, nk, heads, kvHeads, dim;
  float scale;
  bool causal;
};

// q [B, Nq, H, d], k/v [B, Nk, Hkv, d] → o [B, Nq, H, d] and the probabilities p [B, H, Nq, Nk]
// that the backward pass reuses. Query head h reads key/value head h / (H / Hkv).
void attentionForward(const AttentionShape& s, const float* q, const float* k, const float* v, float* o, float* p);

// Gradients of q, k and v (layouts as the inputs) from dO and the forward's p.
void attentionBackward(const AttentionShape& s, const float* dout, const float* q, const float* k, const float* v, const float* p, float* dq,
                       float* dk, float* dv);

}  // namespace sfn
