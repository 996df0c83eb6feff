#include "attention.h"

#include <oneapi/dnnl/dnnl.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "bf16.h"
#include "dnnl_util.h"
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

// Multi-head attention (kvHeads == heads) under bf16 compute: the five products as batched bf16
// matmul primitives over (batch, head), reading and writing the heads in place through strides,
// as autocast's bmm runs them (softmax and its gradient stay fp32). Interleaved against the
// per-head fp32 sgemm path below at 2 threads (Zen 4): 0.77-0.88 of its time for head width 64
// (256 tokens: a DiT-S/2 LoRA step 0.93), but 0.92-1.04 for width 32, where the bf16 products'
// operand packing costs what they save; in fp32 the batched products were no faster (0.86-1.15).
// So width ≥ 64 under bf16 takes this path; fp32, narrower heads and grouped heads (whose dK and
// dV sum over a group's query heads, which a batched matmul cannot express) keep the per-head one.
bool useBatchedBf16(const AttentionShape& s) { return s.kvHeads == s.heads && s.dim >= 64 && bf16Compute(); }

// A shape whose batched primitive oneDNN refused: from then on it takes the per-head path.
std::unordered_set<std::string>& refusedShapes() {
  static std::unordered_set<std::string> refused;
  return refused;
}
std::string shapeKey(const AttentionShape& s) {
  return std::to_string(s.batch) + ',' + std::to_string(s.nq) + ',' + std::to_string(s.nk) + ',' + std::to_string(s.heads) + ',' + std::to_string(s.dim);
}

// A [B, H, rows, cols] operand over memory laid out some other way.
struct View {
  int64_t dims[4];
  int64_t strides[4];
};

// The heads of a token-major [B, N, H, d] tensor, as [B, H, N, d].
View headsOf(int64_t b, int64_t n, int64_t h, int64_t d) { return {{b, h, n, d}, {n * h * d, d, h * d, 1}}; }
// A dense [B, H, rows, cols] tensor.
View dense(int64_t b, int64_t h, int64_t rows, int64_t cols) { return {{b, h, rows, cols}, {h * rows * cols, rows * cols, cols, 1}}; }
View transposed(View v) {
  std::swap(v.dims[2], v.dims[3]);
  std::swap(v.strides[2], v.strides[3]);
  return v;
}

dnnl_memory_desc_t viewDesc(const View& v, dnnl_data_type_t type) {
  dnnl_memory_desc_t md;
  dnnlCheck(dnnl_memory_desc_init_by_strides(&md, 4, v.dims, type, v.strides), "attention operand md");
  return md;
}

struct BatchedProduct {
  PrimitiveDesc pd;
  Primitive prim;
  Memory a, b, c;
  bool singleThread = false;
};

// c = scale · a·b for every (batch, head), a and b bf16, c fp32. Cached by shape.
BatchedProduct& batchedProduct(const View& a, const View& b, const View& c, float scale) {
  static std::unordered_map<std::string, std::unique_ptr<BatchedProduct>> cache;
  std::string key;
  for (const View* v : {&a, &b, &c}) {
    for (int i = 0; i < 4; ++i) key += std::to_string(v->dims[i]) + ':' + std::to_string(v->strides[i]) + ',';
  }
  key += std::to_string(scale) + ",t" + std::to_string(omp_get_max_threads());
  auto it = cache.find(key);
  if (it != cache.end()) return *it->second;
  auto e = std::make_unique<BatchedProduct>();
  e->singleThread = 2.0 * c.dims[0] * c.dims[1] * c.dims[2] * c.dims[3] * a.dims[3] < kSingleThreadFlops;
  ThreadScope threads(e->singleThread);
  dnnl_memory_desc_t am = viewDesc(a, dnnl_bf16), bm = viewDesc(b, dnnl_bf16), cm = viewDesc(c, dnnl_f32);
  dnnl_matmul_desc_t md;
  dnnlCheck(dnnl_matmul_desc_init(&md, &am, &bm, nullptr, &cm), "attention matmul desc");
  ActivationAttr attr(Activation::Linear, 0.f, scale);
  dnnlCheck(dnnl_primitive_desc_create(&e->pd.pd, &md, attr.attr, dnnl().engine, nullptr), "attention matmul pd");
  dnnlCheck(dnnl_primitive_create(&e->prim.p, e->pd.pd), "attention matmul primitive_create");
  e->a.wrap(&am), e->b.wrap(&bm), e->c.wrap(&cm);
  return *cache.emplace(key, std::move(e)).first->second;
}

void runProduct(BatchedProduct& e, const void* a, const void* b, float* c) {
  ThreadScope threads(e.singleThread);
  e.a.point(a), e.b.point(b), e.c.point(c);
  dnnl_exec_arg_t args[3] = {{DNNL_ARG_SRC, e.a.m}, {DNNL_ARG_WEIGHTS, e.b.m}, {DNNL_ARG_DST, e.c.m}};
  dnnlCheck(dnnl_primitive_execute(e.prim.p, dnnl().stream, 3, args), "attention matmul execute");
  dnnlCheck(dnnl_stream_wait(dnnl().stream), "stream_wait");
}

// bf16 copies of the products' operands, one buffer per slot, kept between calls (the JS side
// calls the kernels one at a time).
struct Bf16Operands {
  std::vector<uint16_t> copies[6];
  static Bf16Operands& shared() {
    static Bf16Operands ops;
    return ops;
  }
  const uint16_t* operator()(int slot, const float* data, int64_t n) {
    std::vector<uint16_t>& copy = copies[slot];
    if (static_cast<int64_t>(copy.size()) < n) copy.resize(n);
    convertToBf16(data, copy.data(), n);
    return copy.data();
  }
};

void softmaxRows(float* s, int64_t rows, int64_t cols, int64_t nq, bool causal) {
  forRanges(rows, cols, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      float* row = s + r * cols;
      if (causal) std::fill(row + std::min(r % nq + 1, cols), row + cols, kMaskedScore);
      softmaxInPlace(row, 1, cols);
    }
  });
}

void batchedBf16Forward(const AttentionShape& s, const float* q, const float* k, const float* v, float* o, float* p) {
  const int64_t B = s.batch, H = s.heads, d = s.dim;
  const View qh = headsOf(B, s.nq, H, d), kh = headsOf(B, s.nk, H, d), vh = headsOf(B, s.nk, H, d), ph = dense(B, H, s.nq, s.nk);
  Bf16Operands& ops = Bf16Operands::shared();
  const int64_t qn = B * s.nq * H * d, kn = B * s.nk * H * d, pn = B * H * s.nq * s.nk;
  runProduct(batchedProduct(qh, transposed(kh), ph, s.scale), ops(0, q, qn), ops(1, k, kn), p);
  softmaxRows(p, B * H * s.nq, s.nk, s.nq, s.causal);
  runProduct(batchedProduct(ph, vh, qh, 1.f), ops(2, p, pn), ops(3, v, kn), o);
}

void batchedBf16Backward(const AttentionShape& s, const float* dout, const float* q, const float* k, const float* v, const float* p, float* dq,
                         float* dk, float* dv) {
  const int64_t B = s.batch, H = s.heads, d = s.dim;
  const View qh = headsOf(B, s.nq, H, d), kh = headsOf(B, s.nk, H, d), ph = dense(B, H, s.nq, s.nk);
  Bf16Operands& ops = Bf16Operands::shared();
  const int64_t qn = B * s.nq * H * d, kn = B * s.nk * H * d, pn = B * H * s.nq * s.nk;
  static std::vector<float> dsBuffer;
  if (static_cast<int64_t>(dsBuffer.size()) < pn) dsBuffer.resize(pn);
  float* ds = dsBuffer.data();
  const uint16_t* dO = ops(0, dout, qn);
  runProduct(batchedProduct(transposed(ph), qh, kh, 1.f), ops(1, p, pn), dO, dv);  // dV = Pᵀ·dO
  runProduct(batchedProduct(qh, transposed(kh), ph, 1.f), dO, ops(2, v, kn), ds);  // dP = dO·Vᵀ
  forRanges(B * H * s.nq, s.nk, [&](int64_t begin, int64_t end) { softmaxBackwardInPlace(p + begin * s.nk, ds + begin * s.nk, end - begin, s.nk, s.scale); });
  const uint16_t* dS = ops(3, ds, pn);
  runProduct(batchedProduct(ph, kh, qh, 1.f), dS, ops(4, k, kn), dq);             // dQ = dS·K
  runProduct(batchedProduct(transposed(ph), qh, kh, 1.f), dS, ops(5, q, qn), dk);  // dK = dSᵀ·Q
}

}  // namespace

void attentionForward(const AttentionShape& s, const float* q, const float* k, const float* v, float* o, float* p) {
  if (useBatchedBf16(s) && !refusedShapes().count(shapeKey(s))) {
    try {
      return batchedBf16Forward(s, q, k, v, o, p);
    } catch (const JsError&) {
      refusedShapes().insert(shapeKey(s));  // every output is written again below
    }
  }
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
  if (useBatchedBf16(s) && !refusedShapes().count(shapeKey(s))) {
    try {
      return batchedBf16Backward(s, dout, q, k, v, p, dq, dk, dv);
    } catch (const JsError&) {
      refusedShapes().insert(shapeKey(s));
    }
  }
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
