#include "matmul.h"

#include <cblas.h>

#include <memory>
#include <unordered_map>

#include <omp.h>

#include "dnnl_util.h"

namespace sfn {

void sgemm(GemmLibrary lib, bool transA, bool transB, int64_t m, int64_t n, int64_t k, const float* a, const float* b, float* c) {
  const int64_t lda = transA ? m : k, ldb = transB ? k : n, ldc = n;
  // OpenBLAS applies its own small-size threshold; oneDNN's sgemm needs ours.
  ThreadScope threads(lib == GemmLibrary::Dnnl && 2.0 * m * n * k < kSingleThreadFlops);
  if (lib == GemmLibrary::OpenBlas) {
    cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans, static_cast<blasint>(m),
                static_cast<blasint>(n), static_cast<blasint>(k), 1.f, a, static_cast<blasint>(lda), b, static_cast<blasint>(ldb), 0.f, c,
                static_cast<blasint>(ldc));
  } else {
    dnnlCheck(dnnl_sgemm(transA ? 'T' : 'N', transB ? 'T' : 'N', m, n, k, 1.f, a, lda, b, ldb, 0.f, c, ldc), "sgemm");
  }
}

std::string MatmulShape::key() const {
  std::string k;
  for (int64_t v : aDims) k += std::to_string(v) + ',';
  k += '|';
  for (int64_t v : bDims) k += std::to_string(v) + ',';
  k += transA ? "T" : "N";
  k += transB ? "T" : "N";
  k += withBias ? "b" : "-";
  k += std::to_string(static_cast<int>(activation)) + ',' + std::to_string(alpha);
  if (scale != 1.f || accumulate) k += ",s" + std::to_string(scale) + (accumulate ? "+" : "");
  // One primitive per OpenMP thread count: see ConvShape::key.
  k += ",t" + std::to_string(omp_get_max_threads());
  return k;
}

dnnl_memory_desc_t logicalDesc(const std::vector<int64_t>& stored, bool transposed, dnnl_data_type_t type) {
  const int r = static_cast<int>(stored.size());
  dnnl_dims_t dims, strides;
  int64_t stride = 1;
  for (int i = r - 1; i >= 0; --i) {
    strides[i] = stride;
    dims[i] = stored[i];
    stride *= stored[i];
  }
  if (transposed) {
    std::swap(dims[r - 1], dims[r - 2]);
    std::swap(strides[r - 1], strides[r - 2]);
  }
  dnnl_memory_desc_t md;
  dnnlCheck(dnnl_memory_desc_init_by_strides(&md, r, dims, type, strides), "matmul operand md");
  return md;
}

namespace {

struct MatmulEntry {
  PrimitiveDesc pd;
  Primitive prim;
  Memory a, b, bias, c;
  std::string impl;
  bool singleThread = false;
};

std::unique_ptr<MatmulEntry> build(const MatmulShape& s) {
  auto e = std::make_unique<MatmulEntry>();
  const int r = static_cast<int>(s.aDims.size());
  dnnl_memory_desc_t a = logicalDesc(s.aDims, s.transA, dnnl_f32), b = logicalDesc(s.bDims, s.transB, dnnl_f32);
  double flops = 2.0 * a.dims[r - 2] * a.dims[r - 1] * b.dims[r - 1];
  for (int i = 0; i < r - 2; ++i) flops *= std::max(a.dims[i], b.dims[i]);
  e->singleThread = flops < kSingleThreadFlops;
  ThreadScope threads(e->singleThread);
  dnnl_dims_t cDims, biasDims;
  for (int i = 0; i < r - 2; ++i) cDims[i] = std::max(a.dims[i], b.dims[i]), biasDims[i] = 1;
  cDims[r - 2] = a.dims[r - 2];
  cDims[r - 1] = b.dims[r - 1];
  biasDims[r - 2] = 1;
  biasDims[r - 1] = cDims[r - 1];
  dnnl_memory_desc_t c, bias;
  // Dense row-major output whatever the rank.
  dnnl_dims_t cStrides;
  int64_t stride = 1;
  for (int i = r - 1; i >= 0; --i) cStrides[i] = stride, stride *= cDims[i];
  dnnlCheck(dnnl_memory_desc_init_by_strides(&c, r, cDims, dnnl_f32, cStrides), "matmul dst md");
  dnnl_dims_t biasStrides;
  stride = 1;
  for (int i = r - 1; i >= 0; --i) biasStrides[i] = stride, stride *= biasDims[i];
  dnnlCheck(dnnl_memory_desc_init_by_strides(&bias, r, biasDims, dnnl_f32, biasStrides), "matmul bias md");

  dnnl_matmul_desc_t md;
  dnnlCheck(dnnl_matmul_desc_init(&md, &a, &b, s.withBias ? &bias : nullptr, &c), "matmul desc");
  ActivationAttr attr(s.activation, s.alpha, s.scale, s.accumulate);
  dnnl_status_t st = dnnl_primitive_desc_create(&e->pd.pd, &md, attr.attr, dnnl().engine, nullptr);
  dnnlCheck(st, "matmul pd");
  dnnlCheck(dnnl_primitive_create(&e->prim.p, e->pd.pd), "matmul primitive_create");
  e->a.wrap(&a);
  e->b.wrap(&b);
  e->c.wrap(&c);
  if (s.withBias) e->bias.wrap(&bias);
  e->impl = implName(e->pd.pd);
  return e;
}

}  // namespace

const std::string& runMatmul(const MatmulShape& s, const float* a, const float* b, const float* bias, float* c) {
  static std::unordered_map<std::string, std::unique_ptr<MatmulEntry>> cache;
  static std::unordered_map<std::string, std::string> rejected;
  const std::string key = s.key();
  auto it = cache.find(key);
  if (it == cache.end()) {
    auto bad = rejected.find(key);
    if (bad != rejected.end()) throw JsError{bad->second};
    try {
      it = cache.emplace(key, build(s)).first;
    } catch (const JsError& err) {
      rejected.emplace(key, err.message);
      throw;
    }
  }
  MatmulEntry& e = *it->second;
  ThreadScope threads(e.singleThread);
  e.a.point(a);
  e.b.point(b);
  e.c.point(c);
  dnnl_exec_arg_t args[4] = {{DNNL_ARG_SRC, e.a.m}, {DNNL_ARG_WEIGHTS, e.b.m}, {DNNL_ARG_DST, e.c.m}, {DNNL_ARG_BIAS, nullptr}};
  int n = 3;
  if (s.withBias) e.bias.point(bias), args[3].memory = e.bias.m, n = 4;
  dnnlCheck(dnnl_primitive_execute(e.prim.p, dnnl().stream, n, args), "matmul execute");
  dnnlCheck(dnnl_stream_wait(dnnl().stream), "stream_wait");
  return e.impl;
}

}  // namespace sfn
