#include "bf16.h"

#include <cpuid.h>
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <memory>
#include <unordered_map>

#include "dnnl_util.h"

namespace sfn {

namespace {

bool computeInBf16 = false;

uint16_t bf16Bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);  // quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16"))) void convertAvx512Bf16(const float* src, uint16_t* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    __m256bh h = _mm512_cvtneps_pbh(_mm512_loadu_ps(src + i));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i), reinterpret_cast<__m256i&>(h));
  }
  if (i < n) {
    const __mmask16 m = static_cast<__mmask16>((1u << (n - i)) - 1u);
    __m256bh h = _mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m, src + i));
    _mm256_mask_storeu_epi16(dst + i, m, reinterpret_cast<__m256i&>(h));
  }
}

// __builtin_cpu_init first: this runs during the library's static initialisation, possibly before libgcc's.
const bool kHasAvx512Bf16 = (__builtin_cpu_init(), __builtin_cpu_supports("avx512bf16"));

// A growable 64-byte-aligned bf16 buffer for one converted operand (reused between calls: the
// JS side calls the kernels one at a time).
struct Bf16Scratch {
  uint16_t* data = nullptr;
  size_t capacity = 0;
  ~Bf16Scratch() { std::free(data); }
  uint16_t* fill(const float* src, int64_t n) {
    if (static_cast<size_t>(n) > capacity) {
      std::free(data);
      const size_t bytes = (static_cast<size_t>(n) * sizeof(uint16_t) + 63) / 64 * 64;
      data = static_cast<uint16_t*>(std::aligned_alloc(64, bytes));
      if (!data) throw JsError{"bf16: out of memory for a converted operand"};
      capacity = static_cast<size_t>(n);
    }
    convertToBf16(src, data, n);
    return data;
  }
};

Bf16Scratch& scratch(int slot) {
  static Bf16Scratch s[2];
  return s[slot];
}

// Primitives cached by shape; a shape oneDNN rejected stays rejected so the JS fallback is cheap.
template <typename Entry>
struct ShapeCache {
  std::unordered_map<std::string, std::unique_ptr<Entry>> built;
  std::unordered_map<std::string, std::string> rejected;
  template <typename Build>
  Entry& get(const std::string& key, Build build) {
    auto it = built.find(key);
    if (it != built.end()) return *it->second;
    auto bad = rejected.find(key);
    if (bad != rejected.end()) throw JsError{bad->second};
    try {
      return *built.emplace(key, build()).first->second;
    } catch (const JsError& err) {
      rejected.emplace(key, err.message);
      throw;
    }
  }
};

dnnl_memory_desc_t denseDesc(int rank, const dnnl_dims_t dims, dnnl_data_type_t type) {
  dnnl_dims_t strides;
  int64_t stride = 1;
  for (int i = rank - 1; i >= 0; --i) strides[i] = stride, stride *= dims[i];
  dnnl_memory_desc_t md;
  dnnlCheck(dnnl_memory_desc_init_by_strides(&md, rank, dims, type, strides), "bf16 dense md");
  return md;
}

int64_t elements(const std::vector<int64_t>& dims) {
  int64_t n = 1;
  for (int64_t d : dims) n *= d;
  return n;
}

struct MatmulEntry {
  PrimitiveDesc pd;
  Primitive prim;
  Memory a, b, bias, c;
  std::string impl;
  bool singleThread = false;
};

std::unique_ptr<MatmulEntry> buildMatmul(const MatmulShape& s) {
  auto e = std::make_unique<MatmulEntry>();
  const int r = static_cast<int>(s.aDims.size());
  dnnl_memory_desc_t a = logicalDesc(s.aDims, s.transA, dnnl_bf16), b = logicalDesc(s.bDims, s.transB, dnnl_bf16);
  dnnl_dims_t cDims, biasDims;
  double flops = 2.0 * a.dims[r - 2] * a.dims[r - 1] * b.dims[r - 1];
  for (int i = 0; i < r - 2; ++i) cDims[i] = std::max(a.dims[i], b.dims[i]), biasDims[i] = 1, flops *= cDims[i];
  cDims[r - 2] = a.dims[r - 2], cDims[r - 1] = b.dims[r - 1];
  biasDims[r - 2] = 1, biasDims[r - 1] = cDims[r - 1];
  e->singleThread = flops < kSingleThreadFlops;
  ThreadScope threads(e->singleThread);
  dnnl_memory_desc_t c = denseDesc(r, cDims, dnnl_f32), bias = denseDesc(r, biasDims, dnnl_f32);
  dnnl_matmul_desc_t md;
  dnnlCheck(dnnl_matmul_desc_init(&md, &a, &b, s.withBias ? &bias : nullptr, &c), "bf16 matmul desc");
  ActivationAttr attr(s.activation, s.alpha, s.scale, s.accumulate);
  dnnlCheck(dnnl_primitive_desc_create(&e->pd.pd, &md, attr.attr, dnnl().engine, nullptr), "bf16 matmul pd");
  dnnlCheck(dnnl_primitive_create(&e->prim.p, e->pd.pd), "bf16 matmul primitive_create");
  e->a.wrap(&a), e->b.wrap(&b), e->c.wrap(&c);
  if (s.withBias) e->bias.wrap(&bias);
  e->impl = implName(e->pd.pd);
  return e;
}

// Convolution memory descriptors with a data type per role: bf16 for what is multiplied, fp32
// for what is produced (and for the bias).
struct ConvDescs {
  dnnl_memory_desc_t src, dst, weights, userWeights, bias;
  dnnl_dims_t strides, dilates, padL, padR;
};

ConvDescs convDescs(const ConvShape& s, dnnl_data_type_t srcType, dnnl_data_type_t dstType, dnnl_data_type_t weightsType) {
  ConvDescs d;
  const dnnl_format_tag_t act = s.channelsFirst ? dnnl_nchw : dnnl_nhwc;
  dnnl_dims_t srcDims = {s.n, s.c, s.h, s.w}, dstDims = {s.n, s.o, s.oh, s.ow}, wDims = {s.o, s.c, s.kh, s.kw}, bDims = {s.o};
  dnnlCheck(dnnl_memory_desc_init_by_tag(&d.src, 4, srcDims, srcType, act), "bf16 conv src md");
  dnnlCheck(dnnl_memory_desc_init_by_tag(&d.dst, 4, dstDims, dstType, act), "bf16 conv dst md");
  dnnlCheck(dnnl_memory_desc_init_by_tag(&d.weights, 4, wDims, weightsType, dnnl_format_tag_any), "bf16 conv weights md");
  // tfjs filters are [kh, kw, in, out] fp32.
  dnnlCheck(dnnl_memory_desc_init_by_tag(&d.userWeights, 4, wDims, dnnl_f32, dnnl_hwio), "bf16 conv user weights md");
  dnnlCheck(dnnl_memory_desc_init_by_tag(&d.bias, 1, bDims, dnnl_f32, dnnl_a), "bf16 conv bias md");
  d.strides[0] = s.sh, d.strides[1] = s.sw;
  d.dilates[0] = s.dh - 1, d.dilates[1] = s.dw - 1;  // oneDNN counts skipped taps, tfjs the spacing
  d.padL[0] = s.pt, d.padL[1] = s.pl;
  d.padR[0] = s.pb, d.padR[1] = s.pr;
  return d;
}

struct ConvEntry {
  PrimitiveDesc pd;
  Primitive prim;
  std::string impl;
  // in1/in2: the bf16 operands (scratch), or for the weights the internal bf16 copy; out: fp32.
  Memory in1, in2, bias, out;
  Memory userWeights, weightsInternal;
  Reorder weightsReorder;
  bool singleThread = false;
};

std::unique_ptr<ConvEntry> buildConv(ConvKind kind, const ConvShape& s) {
  auto e = std::make_unique<ConvEntry>();
  e->singleThread = 2.0 * s.n * s.oh * s.ow * s.o * s.kh * s.kw * s.c < kSingleThreadFlops;
  ThreadScope threads(e->singleThread);
  if (kind == ConvKind::Forward) {
    ConvDescs d = convDescs(s, dnnl_bf16, dnnl_f32, dnnl_bf16);
    dnnl_convolution_desc_t cd;
    dnnlCheck(dnnl_dilated_convolution_forward_desc_init(&cd, dnnl_forward_training, dnnl_convolution_direct, &d.src, &d.weights,
                                                         s.withBias ? &d.bias : nullptr, &d.dst, d.strides, d.dilates, d.padL, d.padR),
              "bf16 convolution forward desc");
    ActivationAttr attr(s.activation, s.alpha);
    dnnlCheck(dnnl_primitive_desc_create(&e->pd.pd, &cd, attr.attr, dnnl().engine, nullptr), "bf16 convolution forward pd");
    const dnnl_memory_desc_t* w = dnnl_primitive_desc_query_md(e->pd.pd, dnnl_query_weights_md, 0);
    e->weightsReorder.init(&d.userWeights, w);
    e->in1.wrap(&d.src), e->userWeights.wrap(&d.userWeights), e->weightsInternal.allocate(w), e->out.wrap(&d.dst);
    if (s.withBias) e->bias.wrap(&d.bias);
  } else {
    // Backward primitives are defined relative to a forward one (the hint): the bf16 forward.
    ConvDescs h = convDescs(s, dnnl_bf16, dnnl_bf16, dnnl_bf16);
    dnnl_convolution_desc_t hd;
    dnnlCheck(dnnl_dilated_convolution_forward_desc_init(&hd, dnnl_forward_training, dnnl_convolution_direct, &h.src, &h.weights, nullptr,
                                                         &h.dst, h.strides, h.dilates, h.padL, h.padR),
              "bf16 convolution hint desc");
    PrimitiveDesc hint;
    dnnlCheck(dnnl_primitive_desc_create(&hint.pd, &hd, nullptr, dnnl().engine, nullptr), "bf16 convolution hint pd");
    dnnl_convolution_desc_t cd;
    if (kind == ConvKind::BackwardData) {
      ConvDescs d = convDescs(s, dnnl_f32, dnnl_bf16, dnnl_bf16);  // dx fp32 from dy, w in bf16
      dnnlCheck(dnnl_dilated_convolution_backward_data_desc_init(&cd, dnnl_convolution_direct, &d.src, &d.weights, &d.dst, d.strides,
                                                                 d.dilates, d.padL, d.padR),
                "bf16 convolution backward data desc");
      dnnlCheck(dnnl_primitive_desc_create(&e->pd.pd, &cd, nullptr, dnnl().engine, hint.pd), "bf16 convolution backward data pd");
      const dnnl_memory_desc_t* w = dnnl_primitive_desc_query_md(e->pd.pd, dnnl_query_weights_md, 0);
      e->weightsReorder.init(&d.userWeights, w);
      e->in1.wrap(&d.dst), e->userWeights.wrap(&d.userWeights), e->weightsInternal.allocate(w), e->out.wrap(&d.src);
    } else {
      ConvDescs d = convDescs(s, dnnl_bf16, dnnl_bf16, dnnl_f32);  // dw fp32 from x and dy in bf16
      dnnlCheck(dnnl_dilated_convolution_backward_weights_desc_init(&cd, dnnl_convolution_direct, &d.src, &d.weights, nullptr, &d.dst,
                                                                    d.strides, d.dilates, d.padL, d.padR),
                "bf16 convolution backward weights desc");
      dnnlCheck(dnnl_primitive_desc_create(&e->pd.pd, &cd, nullptr, dnnl().engine, hint.pd), "bf16 convolution backward weights pd");
      const dnnl_memory_desc_t* w = dnnl_primitive_desc_query_md(e->pd.pd, dnnl_query_diff_weights_md, 0);
      e->weightsReorder.init(w, &d.userWeights);
      e->in1.wrap(&d.src), e->in2.wrap(&d.dst), e->userWeights.wrap(&d.userWeights);
      if (e->weightsReorder.needed) e->weightsInternal.allocate(w);
    }
  }
  dnnlCheck(dnnl_primitive_create(&e->prim.p, e->pd.pd), "bf16 convolution primitive_create");
  e->impl = implName(e->pd.pd);
  return e;
}

bool cpuHasAmxBf16() {
  unsigned eax, ebx, ecx, edx;
  if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) return false;
  const unsigned amxBf16 = 1u << 22, amxTile = 1u << 24;
  return (edx & amxBf16) && (edx & amxTile);
}

}  // namespace

void setBf16Compute(bool on) { computeInBf16 = on; }
bool bf16Compute() { return computeInBf16; }

void convertToBf16(const float* src, uint16_t* dst, int64_t n) {
  constexpr int64_t kChunk = 1 << 15;
  auto run = [&](int64_t begin, int64_t end) {
    if (kHasAvx512Bf16) return convertAvx512Bf16(src + begin, dst + begin, end - begin);
    for (int64_t i = begin; i < end; ++i) dst[i] = bf16Bits(src[i]);
  };
  if (n <= 4 * kChunk) return run(0, n);
  const int64_t chunks = (n + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static)
  for (int64_t c = 0; c < chunks; ++c) run(c * kChunk, std::min(n, (c + 1) * kChunk));
}

const std::string& runBf16Matmul(const MatmulShape& s, const float* a, const float* b, const float* bias, float* c, const uint16_t* aBf16,
                                 const uint16_t* bBf16) {
  static ShapeCache<MatmulEntry> cache;
  MatmulEntry& e = cache.get(s.key(), [&] { return buildMatmul(s); });
  ThreadScope threads(e.singleThread);
  e.a.point(aBf16 ? const_cast<uint16_t*>(aBf16) : scratch(0).fill(a, elements(s.aDims)));
  e.b.point(bBf16 ? const_cast<uint16_t*>(bBf16) : scratch(1).fill(b, elements(s.bDims)));
  e.c.point(c);
  dnnl_exec_arg_t args[4] = {{DNNL_ARG_SRC, e.a.m}, {DNNL_ARG_WEIGHTS, e.b.m}, {DNNL_ARG_DST, e.c.m}, {DNNL_ARG_BIAS, nullptr}};
  int n = 3;
  if (s.withBias) e.bias.point(bias), args[3].memory = e.bias.m, n = 4;
  dnnlCheck(dnnl_primitive_execute(e.prim.p, dnnl().stream, n, args), "bf16 matmul execute");
  dnnlCheck(dnnl_stream_wait(dnnl().stream), "stream_wait");
  return e.impl;
}

const std::string& runBf16Conv(ConvKind kind, const ConvShape& s, const float* in1, const float* in2, const float* bias, float* out) {
  static ShapeCache<ConvEntry> cache;
  ConvEntry& e = cache.get(s.key(kind), [&] { return buildConv(kind, s); });
  ThreadScope threads(e.singleThread);
  const int64_t xSize = s.n * s.c * s.h * s.w, ySize = s.n * s.o * s.oh * s.ow;
  dnnl_stream_t stream = dnnl().stream;
  if (kind == ConvKind::BackwardWeights) {
    e.in1.point(scratch(0).fill(in1, xSize));
    e.in2.point(scratch(1).fill(in2, ySize));
    e.userWeights.point(out);
    dnnl_memory_t dw = e.weightsReorder.needed ? e.weightsInternal.m : e.userWeights.m;
    dnnl_exec_arg_t args[3] = {{DNNL_ARG_SRC, e.in1.m}, {DNNL_ARG_DIFF_DST, e.in2.m}, {DNNL_ARG_DIFF_WEIGHTS, dw}};
    dnnlCheck(dnnl_primitive_execute(e.prim.p, stream, 3, args), "bf16 convolution backward weights execute");
    if (e.weightsReorder.needed) e.weightsReorder.run(e.weightsInternal.m, e.userWeights.m);
  } else {
    // The fp32 filter goes to the primitive's bf16 layout in one reorder (conversion included).
    e.in1.point(scratch(0).fill(in1, kind == ConvKind::Forward ? xSize : ySize));
    e.userWeights.point(in2);
    e.out.point(out);
    e.weightsReorder.run(e.userWeights.m, e.weightsInternal.m);
    if (kind == ConvKind::Forward) {
      dnnl_exec_arg_t args[4] = {{DNNL_ARG_SRC, e.in1.m}, {DNNL_ARG_WEIGHTS, e.weightsInternal.m}, {DNNL_ARG_DST, e.out.m}, {DNNL_ARG_BIAS, nullptr}};
      int n = 3;
      if (s.withBias) e.bias.point(bias), args[3].memory = e.bias.m, n = 4;
      dnnlCheck(dnnl_primitive_execute(e.prim.p, stream, n, args), "bf16 convolution forward execute");
    } else {
      dnnl_exec_arg_t args[3] = {{DNNL_ARG_DIFF_DST, e.in1.m}, {DNNL_ARG_WEIGHTS, e.weightsInternal.m}, {DNNL_ARG_DIFF_SRC, e.out.m}};
      dnnlCheck(dnnl_primitive_execute(e.prim.p, stream, 3, args), "bf16 convolution backward data execute");
    }
  }
  dnnlCheck(dnnl_stream_wait(stream), "stream_wait");
  return e.impl;
}

const std::string& enableAmxWhenPresent() {
  static const std::string outcome = []() -> std::string {
    if (!cpuHasAmxBf16()) return "no AMX on this CPU";
    for (const char* name : {"DNNL_MAX_CPU_ISA", "ONEDNN_MAX_CPU_ISA"}) {
      if (const char* v = std::getenv(name)) return std::string("AMX left to ") + name + "=" + v;
    }
    constexpr long kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
    if (syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) != 0) return "AMX present but Linux refused the tile state (kernel < 5.16?)";
    if (dnnl_set_max_cpu_isa(dnnl_cpu_isa_avx512_core_amx) != dnnl_success) return "AMX present but oneDNN would not raise its ISA ceiling";
    return "AMX enabled (dnnl_set_max_cpu_isa(avx512_core_amx))";
  }();
  return outcome;
}

}  // namespace sfn
