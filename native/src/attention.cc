#include "attention.h"

#include <oneapi/dnnl/dnnl.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "fast_math.h"
#include "parallel.h"

namespace sfn {

namespace {

// The composite's masked score (src/nn/attention.ts): finite, so a fully masked row is uniform.
constexpr float kMaskedScore = -1e30f;

// Row-major C = alpha·op(A)·op(B) + beta·C with leading dimensions. Called inside a parallel
// region over (batch, head) pairs, where oneDNN's sgemm runs on the calling thread alone.
void gemm(char ta, char tb, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda, const float* b, int64_t ldb, float beta,
          float* c, int64_t ldc) {
  dnnl_sgemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

// Softmax of each row in place, as the native Softmax kernel computes it.
SFN_VECTOR_CLONES void softmaxInPlace(float* s, int64_t rows, int64_t cols) {
  for (int64_t r = 0; r < rows; ++r) softmaxRow(s + r * cols, s + r * cols, cols);
}

// dS = scale · P ∘ (dP − rowsum(P ∘ dP)), in place over dP.
SFN_VECTOR_CLONES void softmaxBackwardInPlace(const float* p, float* dp, int64_t rows, int64_t cols, float scale) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* pr = p + r * cols;
    float* g = dp + r * cols;
    double dot = 0;
    for (int64_t c = 0; c < cols; ++c) dot += static_cast<double>(pr[c]) * g[c];
    const float d = static_cast<float>(dot);
    for (int64_t c = 0; c < cols; ++c) g[c] = scale * (pr[c] * (g[c] - d));
  }
}

// Work of one (batch, head) pair in flops, to decide whether to split pairs across threads.
bool parallelWorth(const AttentionShape& s) { return 4.0 * s.batch * s.heads * s.nq * s.nk * s.dim >= 2.0e5; }

}  // namespace

void attentionForward(const AttentionShape& s, const float* q, const float* k, const float* v, float* o, float* p) {
  const int64_t groups = s.heads / s.kvHeads, ldq = s.heads * s.dim, ldk = s.kvHeads * s.dim;
  forEachIndex(s.batch * s.heads, parallelWorth(s), [&](int64_t bh) {
    const int64_t b = bh / s.heads, h = bh % s.heads, hk = h / groups;
    const float* qh = q + b * s.nq * ldq + h * s.dim;
    const float* kh = k + b * s.nk * ldk + hk * s.dim;
    const float* vh = v + b * s.nk * ldk + hk * s.dim;
    float* ph = p + bh * s.nq * s.nk;
    gemm('N', 'T', s.nq, s.nk, s.dim, s.scale, qh, ldq, kh, ldk, 0.f, ph, s.nk);
    if (s.causal) {
      for (int64_t i = 0; i < s.nq; ++i) std::fill(ph + i * s.nk + std::min(i + 1, s.nk), ph + (i + 1) * s.nk, kMaskedScore);
    }
    softmaxInPlace(ph, s.nq, s.nk);
    gemm('N', 'N', s.nq, s.dim, s.nk, 1.f, ph, s.nk, vh, ldk, 0.f, o + b * s.nq * ldq + h * s.dim, ldq);
  });
}

void attentionBackward(const AttentionShape& s, const float* dout, const float* q, const float* k, const float* v, const float* p, float* dq,
                       float* dk, float* dv) {
  const int64_t groups = s.heads / s.kvHeads, ldq = s.heads * s.dim, ldk = s.kvHeads * s.dim;
  // One task per (batch, key/value head): the query heads of a group add into the same dK and dV.
  forEachRange(s.batch * s.kvHeads, parallelWorth(s), [&](int64_t begin, int64_t end) {
    std::vector<float> ds(static_cast<size_t>(s.nq * s.nk));
    for (int64_t bk = begin; bk < end; ++bk) {
      const int64_t b = bk / s.kvHeads, hk = bk % s.kvHeads;
      const float* kh = k + b * s.nk * ldk + hk * s.dim;
      const float* vh = v + b * s.nk * ldk + hk * s.dim;
      float* dkh = dk + b * s.nk * ldk + hk * s.dim;
      float* dvh = dv + b * s.nk * ldk + hk * s.dim;
      for (int64_t g = 0; g < groups; ++g) {
        const int64_t h = hk * groups + g;
        const float* ph = p + (b * s.heads + h) * s.nq * s.nk;
        const float* doh = dout + b * s.nq * ldq + h * s.dim;
        const float* qh = q + b * s.nq * ldq + h * s.dim;
        const float beta = g == 0 ? 0.f : 1.f;
        gemm('T', 'N', s.nk, s.dim, s.nq, 1.f, ph, s.nk, doh, ldq, beta, dvh, ldk);          // dV += Pᵀ·dO
        gemm('N', 'T', s.nq, s.nk, s.dim, 1.f, doh, ldq, vh, ldk, 0.f, ds.data(), s.nk);     // dP = dO·Vᵀ
        softmaxBackwardInPlace(ph, ds.data(), s.nq, s.nk, s.scale);                          // dS (scaled)
        gemm('N', 'N', s.nq, s.dim, s.nk, 1.f, ds.data(), s.nk, kh, ldk, 0.f, dq + b * s.nq * ldq + h * s.dim, ldq);  // dQ = dS·K
        gemm('T', 'N', s.nk, s.dim, s.nq, 1.f, ds.data(), s.nk, qh, ldq, beta, dkh, ldk);  // dK += dSᵀ·Q
      }
    }
  });
}

}  // namespace sfn
