#include "conv.h"

#include <memory>
#include <unordered_map>

#include <omp.h>

#include "dnnl_util.h"

namespace sfn {

std::string ConvShape::key(ConvKind kind) const {
  std::string k = std::to_string(static_cast<int>(kind));
  for (int64_t v : {n, c, h, w, o, kh, kw, oh, ow, sh, sw, dh, dw, pt, pl, pb, pr}) k += ',' + std::to_string(v);
  k += channelsFirst ? ",nchw" : ",nhwc";
  if (kind == ConvKind::Forward) {
    k += withBias ? ",b" : ",-";
    k += ',' + std::to_string(static_cast<int>(activation)) + ',' + std::to_string(alpha);
  }
  // oneDNN fixes a primitive's work split and per-thread scratch for the OpenMP thread count at
  // creation, and the count changes at run time (setThreads, the thread governor): one primitive
  // per thread count, so none runs under a team it was not made for.
  k += ",t" + std::to_string(omp_get_max_threads());
  return k;
}

namespace {

struct Descs {
  dnnl_memory_desc_t src, dst, userWeights, anyWeights, bias;
  dnnl_dims_t strides, dilates, padL, padR;
};

Descs makeDescs(const ConvShape& s) {
  Descs d;
  const dnnl_format_tag_t act = s.channelsFirst ? dnnl_nchw : dnnl_nhwc;
  dnnl_dims_t srcDims = {s.n, s.c, s.h, s.w};
  dnnl_dims_t dstDims = {s.n, s.o, s.oh, s.ow};
  dnnl_dims_t wDims = {s.o, s.c, s.kh, s.kw};
  dnnl_dims_t bDims = {s.o};
  dnnlCheck(dnnl_memory_desc_init_by_tag(&d.src, 4, srcDims, dnnl_f32, act), "src md");
  dnnlCheck(dnnl_memory_desc_init_by_tag(&d.dst, 4, dstDims, dnnl_f32, act), "dst md");
  dnnlCheck(dnnl_memory_desc_init_by_tag(&d.userWeights, 4, wDims, dnnl_f32, dnnl_hwio), "weights md");
  // Letting the primitive pick the weights layout selects the fast blocked kernels (a reorder is cheap).
  dnnlCheck(dnnl_memory_desc_init_by_tag(&d.anyWeights, 4, wDims, dnnl_f32, dnnl_format_tag_any), "weights any md");
  dnnlCheck(dnnl_memory_desc_init_by_tag(&d.bias, 1, bDims, dnnl_f32, dnnl_a), "bias md");
  d.strides[0] = s.sh, d.strides[1] = s.sw;
  // oneDNN counts dilation as the number of skipped taps (0 = dense); tfjs counts the tap spacing.
  d.dilates[0] = s.dh - 1, d.dilates[1] = s.dw - 1;
  d.padL[0] = s.pt, d.padL[1] = s.pl;
  d.padR[0] = s.pb, d.padR[1] = s.pr;
  return d;
}

void forwardPd(PrimitiveDesc& out, Descs& d, bool withBias, const_dnnl_primitive_attr_t attr, dnnl_prop_kind_t prop) {
  dnnl_convolution_desc_t cd;
  dnnlCheck(dnnl_dilated_convolution_forward_desc_init(&cd, prop, dnnl_convolution_direct, &d.src, &d.anyWeights,
                                                       withBias ? &d.bias : nullptr, &d.dst, d.strides, d.dilates, d.padL, d.padR),
            "convolution forward desc");
  dnnlCheck(dnnl_primitive_desc_create(&out.pd, &cd, attr, dnnl().engine, nullptr), "convolution forward pd");
}

struct ConvEntry {
  PrimitiveDesc pd;
  Primitive prim;
  std::string impl;
  // Caller-owned buffers, repointed each run.
  Memory a, b, bias, out;
  // The weights (or weight gradient) in the layout the primitive chose.
  Memory weightsInternal;
  Reorder weightsReorder;
  ConvKind kind;
  bool singleThread = false;
};

std::unique_ptr<ConvEntry> build(ConvKind kind, const ConvShape& s) {
  auto e = std::make_unique<ConvEntry>();
  e->kind = kind;
  e->singleThread = 2.0 * s.n * s.oh * s.ow * s.o * s.kh * s.kw * s.c < kSingleThreadFlops;
  ThreadScope threads(e->singleThread);
  Descs d = makeDescs(s);
  if (kind == ConvKind::Forward) {
    ActivationAttr attr(s.activation, s.alpha);
    forwardPd(e->pd, d, s.withBias, attr.attr, dnnl_forward_training);
    const dnnl_memory_desc_t* w = dnnl_primitive_desc_query_md(e->pd.pd, dnnl_query_weights_md, 0);
    e->weightsReorder.init(&d.userWeights, w);
    e->a.wrap(&d.src);
    e->b.wrap(&d.userWeights);
    if (e->weightsReorder.needed) e->weightsInternal.allocate(w);
    if (s.withBias) e->bias.wrap(&d.bias);
    e->out.wrap(&d.dst);
  } else {
    // Backward primitives are defined relative to a forward one (the hint).
    PrimitiveDesc hint;
    forwardPd(hint, d, false, nullptr, dnnl_forward_training);
    dnnl_convolution_desc_t cd;
    if (kind == ConvKind::BackwardData) {
      dnnlCheck(dnnl_dilated_convolution_backward_data_desc_init(&cd, dnnl_convolution_direct, &d.src, &d.anyWeights, &d.dst, d.strides,
                                                                 d.dilates, d.padL, d.padR),
                "convolution backward data desc");
    } else {
      dnnlCheck(dnnl_dilated_convolution_backward_weights_desc_init(&cd, dnnl_convolution_direct, &d.src, &d.anyWeights, nullptr, &d.dst,
                                                                    d.strides, d.dilates, d.padL, d.padR),
                "convolution backward weights desc");
    }
    dnnlCheck(dnnl_primitive_desc_create(&e->pd.pd, &cd, nullptr, dnnl().engine, hint.pd), "convolution backward pd");
    if (kind == ConvKind::BackwardData) {
      const dnnl_memory_desc_t* w = dnnl_primitive_desc_query_md(e->pd.pd, dnnl_query_weights_md, 0);
      e->weightsReorder.init(&d.userWeights, w);
      e->a.wrap(&d.dst);  // dy
      e->b.wrap(&d.userWeights);
      if (e->weightsReorder.needed) e->weightsInternal.allocate(w);
      e->out.wrap(&d.src);  // dx
    } else {
      const dnnl_memory_desc_t* w = dnnl_primitive_desc_query_md(e->pd.pd, dnnl_query_diff_weights_md, 0);
      e->weightsReorder.init(w, &d.userWeights);
      e->a.wrap(&d.src);  // x
      e->b.wrap(&d.dst);  // dy
      if (e->weightsReorder.needed) e->weightsInternal.allocate(w);
      e->out.wrap(&d.userWeights);  // dw
    }
  }
  dnnlCheck(dnnl_primitive_create(&e->prim.p, e->pd.pd), "convolution primitive_create");
  e->impl = implName(e->pd.pd);
  return e;
}

// A shape oneDNN rejected stays rejected: remembering it keeps the fallback path cheap.
std::unordered_map<std::string, std::unique_ptr<ConvEntry>>& cache() {
  static std::unordered_map<std::string, std::unique_ptr<ConvEntry>> c;
  return c;
}

std::unordered_map<std::string, std::string>& rejected() {
  static std::unordered_map<std::string, std::string> r;
  return r;
}

}  // namespace

const std::string& runConv(ConvKind kind, const ConvShape& s, const float* in1, const float* in2, const float* bias, float* out) {
  auto& c = cache();
  const std::string key = s.key(kind);
  auto it = c.find(key);
  if (it == c.end()) {
    auto bad = rejected().find(key);
    if (bad != rejected().end()) throw JsError{bad->second};
    try {
      it = c.emplace(key, build(kind, s)).first;
    } catch (const JsError& err) {
      rejected().emplace(key, err.message);
      throw;
    }
  }
  ConvEntry& e = *it->second;
  ThreadScope threads(e.singleThread);
  e.a.point(in1);
  e.b.point(in2);
  e.out.point(out);
  dnnl_stream_t stream = dnnl().stream;
  if (kind == ConvKind::Forward) {
    dnnl_memory_t w = e.b.m;
    if (e.weightsReorder.needed) e.weightsReorder.run(e.b.m, e.weightsInternal.m), w = e.weightsInternal.m;
    dnnl_exec_arg_t args[4] = {{DNNL_ARG_SRC, e.a.m}, {DNNL_ARG_WEIGHTS, w}, {DNNL_ARG_DST, e.out.m}, {DNNL_ARG_BIAS, nullptr}};
    int n = 3;
    if (s.withBias) e.bias.point(bias), args[3].memory = e.bias.m, n = 4;
    dnnlCheck(dnnl_primitive_execute(e.prim.p, stream, n, args), "convolution forward execute");
  } else if (kind == ConvKind::BackwardData) {
    dnnl_memory_t w = e.b.m;
    if (e.weightsReorder.needed) e.weightsReorder.run(e.b.m, e.weightsInternal.m), w = e.weightsInternal.m;
    dnnl_exec_arg_t args[3] = {{DNNL_ARG_DIFF_DST, e.a.m}, {DNNL_ARG_WEIGHTS, w}, {DNNL_ARG_DIFF_SRC, e.out.m}};
    dnnlCheck(dnnl_primitive_execute(e.prim.p, stream, 3, args), "convolution backward data execute");
  } else {
    dnnl_memory_t dw = e.weightsReorder.needed ? e.weightsInternal.m : e.out.m;
    dnnl_exec_arg_t args[3] = {{DNNL_ARG_SRC, e.a.m}, {DNNL_ARG_DIFF_DST, e.b.m}, {DNNL_ARG_DIFF_WEIGHTS, dw}};
    dnnlCheck(dnnl_primitive_execute(e.prim.p, stream, 3, args), "convolution backward weights execute");
    if (e.weightsReorder.needed) e.weightsReorder.run(e.weightsInternal.m, e.out.m);
  }
  dnnlCheck(dnnl_stream_wait(stream), "stream_wait");
  return e.impl;
}

}  // namespace sfn
