// N-API entry points. Every function works synchronously on the callers' typed arrays (tfjs cpu
// tensor storage), checks that each buffer is large enough before any native code touches it,
// and reports failures as JS Errors (the JS side then falls back to the reference kernel).
#include <cblas.h>
#include <omp.h>

#include <exception>
#include <vector>

#include "activation.h"
#include "attention.h"
#include "bf16.h"
#include "conv.h"
#include "elementwise.h"
#include "fused_conv.h"
#include "fused_norm.h"
#include "lapack.h"
#include "layout.h"
#include "matmul.h"
#include "napi_util.h"
#include "norm.h"
#include "optim.h"
#include "reduce.h"
#include "pool_resize.h"
#include "signal_shield.h"
#include "unary.h"

namespace sfn {
namespace {

using Binding = napi_value (*)(napi_env, napi_callback_info);

// Every binding runs under a SignalShield (native/src/signal_shield.h): oneDNN's JIT kernels must
// not take a signal, and OpenMP threads started here inherit the blocked mask.
template <Binding F>
napi_value guarded(napi_env env, napi_callback_info info) {
  try {
    SignalShield shield;
    return F(env, info);
  } catch (const JsError& e) {
    napi_throw_error(env, nullptr, e.message.c_str());
    return nullptr;
  } catch (const std::exception& e) {
    // bad_alloc and the kernels' own argument checks: a JS Error, never a terminated process.
    napi_throw_error(env, nullptr, e.what());
    return nullptr;
  }
}

void requireLength(size_t have, int64_t need, const char* name) {
  if (static_cast<int64_t>(have) < need) {
    throw JsError{std::string(name) + ": buffer holds " + std::to_string(have) + " floats, the shape needs " + std::to_string(need)};
  }
}

napi_value info(napi_env env, napi_callback_info) {
  napi_value out;
  check(env, napi_create_object(env, &out), "create_object");
  const dnnl_version_t* v = dnnl_version();
  const std::string dnnlVersion = std::to_string(v->major) + '.' + std::to_string(v->minor) + '.' + std::to_string(v->patch);
  auto set = [&](const char* key, napi_value value) { check(env, napi_set_named_property(env, out, key, value), "set_property"); };
  set("dnnlVersion", makeString(env, dnnlVersion));
  set("dnnlCpuIsa", makeNumber(env, static_cast<double>(dnnl_get_effective_cpu_isa())));
  set("dnnlAmx", makeString(env, enableAmxWhenPresent()));
  set("openblasCore", makeString(env, openblas_get_corename()));
  set("openblasConfig", makeString(env, openblas_get_config()));
  set("ompThreads", makeNumber(env, omp_get_max_threads()));
  set("openblasThreads", makeNumber(env, openblas_get_num_threads()));
  return out;
}

napi_value setThreads(napi_env env, napi_callback_info cb) {
  napi_value argv[1];
  getArgs(env, cb, argv, "setThreads");
  const int64_t n = intArg(env, argv[0], "threads");
  if (n < 1) throw JsError{"setThreads: expected a positive thread count"};
  omp_set_num_threads(static_cast<int>(n));
  openblas_set_num_threads(static_cast<int>(n));
  return nullptr;
}

// sgemm(library, transA, transB, m, n, k, a, aOffset, b, bOffset, c, cOffset)
napi_value gemm(napi_env env, napi_callback_info cb) {
  napi_value argv[12];
  getArgs(env, cb, argv, "sgemm");
  const auto lib = static_cast<GemmLibrary>(intArg(env, argv[0], "library"));
  const bool ta = boolArg(env, argv[1], "transA"), tb = boolArg(env, argv[2], "transB");
  const int64_t m = intArg(env, argv[3], "m"), n = intArg(env, argv[4], "n"), k = intArg(env, argv[5], "k");
  auto a = typedArg<float>(env, argv[6], "a");
  const int64_t aOff = intArg(env, argv[7], "aOffset");
  auto b = typedArg<float>(env, argv[8], "b");
  const int64_t bOff = intArg(env, argv[9], "bOffset");
  auto c = typedArg<float>(env, argv[10], "c");
  const int64_t cOff = intArg(env, argv[11], "cOffset");
  if (m < 1 || n < 1 || k < 1 || aOff < 0 || bOff < 0 || cOff < 0) throw JsError{"sgemm: sizes must be positive and offsets non-negative"};
  requireLength(a.length, aOff + m * k, "a");
  requireLength(b.length, bOff + k * n, "b");
  requireLength(c.length, cOff + m * n, "c");
  sgemm(lib, ta, tb, m, n, k, a.data + aOff, b.data + bOff, c.data + cOff);
  return nullptr;
}

std::vector<int64_t> dimsArg(napi_env env, napi_value v, const char* name) {
  auto view = typedArg<int32_t>(env, v, name);
  if (view.length < 2 || view.length > 12) throw JsError{std::string(name) + ": expected rank 2..12"};
  std::vector<int64_t> dims(view.data, view.data + view.length);
  for (int64_t d : dims) if (d < 1) throw JsError{std::string(name) + ": dims must be positive"};
  return dims;
}

int64_t product(const std::vector<int64_t>& dims) {
  int64_t p = 1;
  for (int64_t d : dims) p *= d;
  return p;
}

// matmul(aDims, bDims, transA, transB, a, b, bias|null, c, activation, alpha, scale, accumulate) -> implementation
napi_value matmul(napi_env env, napi_callback_info cb) {
  napi_value argv[12];
  getArgs(env, cb, argv, "matmul");
  MatmulShape s;
  s.aDims = dimsArg(env, argv[0], "aDims");
  s.bDims = dimsArg(env, argv[1], "bDims");
  s.transA = boolArg(env, argv[2], "transA");
  s.transB = boolArg(env, argv[3], "transB");
  s.activation = static_cast<Activation>(intArg(env, argv[8], "activation"));
  s.alpha = static_cast<float>(doubleArg(env, argv[9], "alpha"));
  s.scale = static_cast<float>(doubleArg(env, argv[10], "scale"));
  s.accumulate = boolArg(env, argv[11], "accumulate");
  const size_t r = s.aDims.size();
  if (s.bDims.size() != r) throw JsError{"matmul: a and b must have the same rank (pad batch dims with 1)"};
  const int64_t m = s.transA ? s.aDims[r - 1] : s.aDims[r - 2], k = s.transA ? s.aDims[r - 2] : s.aDims[r - 1];
  const int64_t kb = s.transB ? s.bDims[r - 1] : s.bDims[r - 2], n = s.transB ? s.bDims[r - 2] : s.bDims[r - 1];
  if (k != kb) throw JsError{"matmul: inner dimensions differ"};
  int64_t batch = 1;
  for (size_t i = 0; i + 2 < r; ++i) {
    const int64_t da = s.aDims[i], db = s.bDims[i];
    if (da != db && da != 1 && db != 1) throw JsError{"matmul: batch dims do not broadcast"};
    batch *= std::max(da, db);
  }
  // a and b may each come as their bf16 bits (a Uint16Array from toBf16) when the bf16 kernels are on.
  const bool aIsBf16 = isTypedArrayOf(env, argv[4], napi_uint16_array), bIsBf16 = isTypedArrayOf(env, argv[5], napi_uint16_array);
  if ((aIsBf16 || bIsBf16) && !bf16Compute()) throw JsError{"matmul: bf16 operands (Uint16Array) need the bf16 kernels on"};
  TypedView<float> a, b;
  TypedView<uint16_t> aBf16, bBf16;
  if (aIsBf16) aBf16 = typedArg<uint16_t>(env, argv[4], "a");
  else a = typedArg<float>(env, argv[4], "a");
  if (bIsBf16) bBf16 = typedArg<uint16_t>(env, argv[5], "b");
  else b = typedArg<float>(env, argv[5], "b");
  auto c = typedArg<float>(env, argv[7], "c");
  requireLength(aIsBf16 ? aBf16.length : a.length, product(s.aDims), "a");
  requireLength(bIsBf16 ? bBf16.length : b.length, product(s.bDims), "b");
  requireLength(c.length, batch * m * n, "c");
  const float* bias = nullptr;
  s.withBias = !isNullish(env, argv[6]);
  if (s.withBias) {
    auto bv = typedArg<float>(env, argv[6], "bias");
    requireLength(bv.length, n, "bias");
    bias = bv.data;
  }
  if (bf16Compute()) return makeString(env, runBf16Matmul(s, a.data, b.data, bias, c.data, aBf16.data, bBf16.data));
  return makeString(env, runMatmul(s, a.data, b.data, bias, c.data));
}

// toBf16(src Float32Array, dst Uint16Array): dst = src rounded to bf16 (convertToBf16).
napi_value toBf16(napi_env env, napi_callback_info cb) {
  napi_value argv[2];
  getArgs(env, cb, argv, "toBf16");
  auto src = typedArg<float>(env, argv[0], "src");
  auto dst = typedArg<uint16_t>(env, argv[1], "dst");
  requireLength(dst.length, static_cast<int64_t>(src.length), "dst");
  convertToBf16(src.data, dst.data, static_cast<int64_t>(src.length));
  return nullptr;
}

// conv(kind, params[19], alpha, in1, in2, bias|null, out) -> implementation
// params: n c h w o kh kw oh ow sh sw dh dw pt pl pb pr channelsFirst activation
napi_value conv(napi_env env, napi_callback_info cb) {
  napi_value argv[7];
  getArgs(env, cb, argv, "conv");
  const auto kind = static_cast<ConvKind>(intArg(env, argv[0], "kind"));
  auto p = typedArg<int32_t>(env, argv[1], "params");
  if (p.length != 19) throw JsError{"conv: params must hold 19 ints"};
  ConvShape s{p.data[0], p.data[1], p.data[2], p.data[3], p.data[4], p.data[5], p.data[6], p.data[7], p.data[8], p.data[9],
              p.data[10], p.data[11], p.data[12], p.data[13], p.data[14], p.data[15], p.data[16], p.data[17] != 0, false,
              static_cast<Activation>(p.data[18]), static_cast<float>(doubleArg(env, argv[2], "alpha"))};
  for (int i = 0; i < 13; ++i) if (p.data[i] < 1) throw JsError{"conv: sizes, strides and dilations must be positive"};
  const int64_t xSize = s.n * s.c * s.h * s.w, wSize = s.kh * s.kw * s.c * s.o, ySize = s.n * s.o * s.oh * s.ow;
  auto in1 = typedArg<float>(env, argv[3], "in1");
  auto in2 = typedArg<float>(env, argv[4], "in2");
  auto out = typedArg<float>(env, argv[6], "out");
  const float* bias = nullptr;
  switch (kind) {
    case ConvKind::Forward:
      requireLength(in1.length, xSize, "x"), requireLength(in2.length, wSize, "filter"), requireLength(out.length, ySize, "y");
      s.withBias = !isNullish(env, argv[5]);
      if (s.withBias) {
        auto bv = typedArg<float>(env, argv[5], "bias");
        requireLength(bv.length, s.o, "bias");
        bias = bv.data;
      }
      break;
    case ConvKind::BackwardData:
      requireLength(in1.length, ySize, "dy"), requireLength(in2.length, wSize, "filter"), requireLength(out.length, xSize, "dx");
      break;
    case ConvKind::BackwardWeights:
      requireLength(in1.length, xSize, "x"), requireLength(in2.length, ySize, "dy"), requireLength(out.length, wSize, "dw");
      break;
    default:
      throw JsError{"conv: unknown kind"};
  }
  if (kind != ConvKind::Forward) s.activation = Activation::Linear;
  return makeString(env, (bf16Compute() ? runBf16Conv : runConv)(kind, s, in1.data, in2.data, bias, out.data));
}

std::vector<int64_t> shapeArg(napi_env env, napi_value v, const char* name) {
  auto view = typedArg<int32_t>(env, v, name);
  std::vector<int64_t> dims(view.data, view.data + view.length);
  for (int64_t d : dims) if (d < 0) throw JsError{std::string(name) + ": dims must be non-negative"};
  return dims;
}

// binary(op, a, aShape, b, bShape, out, outShape): shapes padded to out's rank, numpy broadcasting;
// out is a Uint8Array for comparison ops, a Float32Array otherwise.
napi_value binary(napi_env env, napi_callback_info cb) {
  napi_value argv[7];
  getArgs(env, cb, argv, "binary");
  const int64_t opCode = intArg(env, argv[0], "op");
  if (opCode < 0 || opCode >= kBinaryOpCount) throw JsError{"binary: unknown op"};
  const auto op = static_cast<BinaryOp>(opCode);
  auto a = typedArg<float>(env, argv[1], "a");
  auto aShape = shapeArg(env, argv[2], "aShape");
  auto b = typedArg<float>(env, argv[3], "b");
  auto bShape = shapeArg(env, argv[4], "bShape");
  TypedView<float> outF;
  TypedView<uint8_t> outB;
  if (isComparison(op)) {
    outB = typedArg<uint8_t>(env, argv[5], "out");
  } else {
    outF = typedArg<float>(env, argv[5], "out");
  }
  const size_t outLength = isComparison(op) ? outB.length : outF.length;
  auto outShape = shapeArg(env, argv[6], "outShape");
  if (aShape.size() != outShape.size() || bShape.size() != outShape.size() || outShape.empty()) throw JsError{"binary: shapes must share out's rank"};
  for (size_t i = 0; i < outShape.size(); ++i) {
    if ((aShape[i] != outShape[i] && aShape[i] != 1) || (bShape[i] != outShape[i] && bShape[i] != 1)) throw JsError{"binary: shapes do not broadcast"};
  }
  requireLength(a.length, product(aShape), "a");
  requireLength(b.length, product(bShape), "b");
  requireLength(outLength, product(outShape), "out");
  if (product(outShape) == 0) return nullptr;
  if (isComparison(op)) {
    broadcastCompare(op, a.data, aShape, b.data, bShape, outB.data, outShape);
  } else {
    broadcastBinary(op, a.data, aShape, b.data, bShape, outF.data, outShape);
  }
  return nullptr;
}

// unary(op, x, y, p0, p1): y = op(x) elementwise over x's length; p0/p1 are the op's attributes.
napi_value unary(napi_env env, napi_callback_info cb) {
  napi_value argv[5];
  getArgs(env, cb, argv, "unary");
  const int64_t opCode = intArg(env, argv[0], "op");
  if (opCode < 0 || opCode >= kUnaryOpCount) throw JsError{"unary: unknown op"};
  auto x = typedArg<float>(env, argv[1], "x");
  auto y = typedArg<float>(env, argv[2], "y");
  const double p0 = doubleArg(env, argv[3], "p0"), p1 = doubleArg(env, argv[4], "p1");
  requireLength(y.length, static_cast<int64_t>(x.length), "y");
  unaryMap(static_cast<UnaryOp>(opCode), x.data, y.data, static_cast<int64_t>(x.length), p0, p1);
  return nullptr;
}

// select(condition, t, e, out): out = condition ? t : e; the condition holds one byte per element
// or one per row of t's first axis (its length decides which).
napi_value select(napi_env env, napi_callback_info cb) {
  napi_value argv[4];
  getArgs(env, cb, argv, "select");
  auto cond = typedArg<uint8_t>(env, argv[0], "condition");
  auto t = typedArg<float>(env, argv[1], "t");
  auto e = typedArg<float>(env, argv[2], "e");
  auto out = typedArg<float>(env, argv[3], "out");
  const auto n = static_cast<int64_t>(out.length);
  requireLength(t.length, n, "t");
  requireLength(e.length, n, "e");
  if (n == 0) return nullptr;
  if (cond.length == 0 || n % static_cast<int64_t>(cond.length) != 0) throw JsError{"select: condition length must divide the output length"};
  selectRows(cond.data, n / static_cast<int64_t>(cond.length), t.data, e.data, out.data, n);
  return nullptr;
}

// softmax(x, y, rows, cols)
napi_value softmax(napi_env env, napi_callback_info cb) {
  napi_value argv[4];
  getArgs(env, cb, argv, "softmax");
  auto x = typedArg<float>(env, argv[0], "x");
  auto y = typedArg<float>(env, argv[1], "y");
  const int64_t rows = intArg(env, argv[2], "rows"), cols = intArg(env, argv[3], "cols");
  if (rows < 0 || cols < 1) throw JsError{"softmax: rows must be >= 0 and cols >= 1"};
  requireLength(x.length, rows * cols, "x");
  requireLength(y.length, rows * cols, "y");
  softmaxRows(x.data, y.data, rows, cols);
  return nullptr;
}

// slice(x, shape, begin, size, out)
napi_value slice(napi_env env, napi_callback_info cb) {
  napi_value argv[5];
  getArgs(env, cb, argv, "slice");
  auto x = typedArg<float>(env, argv[0], "x");
  auto shape = shapeArg(env, argv[1], "shape");
  auto begin = shapeArg(env, argv[2], "begin");
  auto size = shapeArg(env, argv[3], "size");
  auto out = typedArg<float>(env, argv[4], "out");
  if (shape.empty() || begin.size() != shape.size() || size.size() != shape.size()) throw JsError{"slice: shape, begin and size must share one rank >= 1"};
  for (size_t i = 0; i < shape.size(); ++i) if (begin[i] + size[i] > shape[i]) throw JsError{"slice: region exceeds the input"};
  requireLength(x.length, product(shape), "x");
  requireLength(out.length, product(size), "out");
  if (product(size) > 0) sliceCopy(x.data, shape, begin, size, out.data);
  return nullptr;
}

// reduce(op, x, shape, reducedMask, out): op over the dims whose mask entry is non-zero.
napi_value reduceAxes(napi_env env, napi_callback_info cb) {
  napi_value argv[5];
  getArgs(env, cb, argv, "reduce");
  const int64_t op = intArg(env, argv[0], "op");
  if (op < 0 || op > 4) throw JsError{"reduce: unknown op"};
  auto x = typedArg<float>(env, argv[1], "x");
  auto shape = shapeArg(env, argv[2], "shape");
  auto mask = typedArg<int32_t>(env, argv[3], "reducedMask");
  auto out = typedArg<float>(env, argv[4], "out");
  if (mask.length != shape.size()) throw JsError{"reduce: reducedMask must have one entry per dim"};
  std::vector<bool> reduced(shape.size());
  int64_t outSize = 1;
  for (size_t i = 0; i < shape.size(); ++i) {
    reduced[i] = mask.data[i] != 0;
    if (!reduced[i]) outSize *= shape[i];
  }
  if (product(shape) == 0) throw JsError{"reduce: empty input"};
  requireLength(x.length, product(shape), "x");
  requireLength(out.length, outSize, "out");
  reduce(static_cast<ReduceOp>(op), x.data, shape, reduced, out.data);
  return nullptr;
}

// Shape [n, s, c, g] of a group-normalised tensor, checked.
struct NormDims {
  int64_t n, s, c, g;
};

NormDims normDims(napi_env env, napi_value v) {
  auto d = typedArg<int32_t>(env, v, "dims");
  if (d.length != 4) throw JsError{"groupNorm: dims must be [n, s, c, groups]"};
  NormDims nd{d.data[0], d.data[1], d.data[2], d.data[3]};
  if (nd.n < 1 || nd.s < 1 || nd.c < 1 || nd.g < 1 || nd.c % nd.g != 0) throw JsError{"groupNorm: dims must be positive and channels divisible by groups"};
  return nd;
}

// groupNorm(x, dims, eps, y, mean, rstd)
napi_value groupNorm(napi_env env, napi_callback_info cb) {
  napi_value argv[6];
  getArgs(env, cb, argv, "groupNorm");
  auto x = typedArg<float>(env, argv[0], "x");
  const NormDims d = normDims(env, argv[1]);
  const float eps = static_cast<float>(doubleArg(env, argv[2], "eps"));
  auto y = typedArg<float>(env, argv[3], "y");
  auto mean = typedArg<float>(env, argv[4], "mean");
  auto rstd = typedArg<float>(env, argv[5], "rstd");
  requireLength(x.length, d.n * d.s * d.c, "x");
  requireLength(y.length, d.n * d.s * d.c, "y");
  requireLength(mean.length, d.n * d.g, "mean");
  requireLength(rstd.length, d.n * d.g, "rstd");
  groupNormForward(x.data, d.n, d.s, d.c, d.g, eps, y.data, mean.data, rstd.data);
  return nullptr;
}

// groupNormGrad(dy, x, mean, rstd, dims, dx)
napi_value groupNormGrad(napi_env env, napi_callback_info cb) {
  napi_value argv[6];
  getArgs(env, cb, argv, "groupNormGrad");
  auto dy = typedArg<float>(env, argv[0], "dy");
  auto x = typedArg<float>(env, argv[1], "x");
  auto mean = typedArg<float>(env, argv[2], "mean");
  auto rstd = typedArg<float>(env, argv[3], "rstd");
  const NormDims d = normDims(env, argv[4]);
  auto dx = typedArg<float>(env, argv[5], "dx");
  const int64_t size = d.n * d.s * d.c;
  requireLength(dy.length, size, "dy");
  requireLength(x.length, size, "x");
  requireLength(dx.length, size, "dx");
  requireLength(mean.length, d.n * d.g, "mean");
  requireLength(rstd.length, d.n * d.g, "rstd");
  groupNormBackward(dy.data, x.data, mean.data, rstd.data, d.n, d.s, d.c, d.g, dx.data);
  return nullptr;
}

// adam(p, g, m0|null, v0|null, pOut, mOut, vOut, hyper Float64Array[lr, beta1, beta2, eps, weightDecay, step, decoupled])
napi_value adam(napi_env env, napi_callback_info cb) {
  napi_value argv[8];
  getArgs(env, cb, argv, "adam");
  auto p = typedArg<float>(env, argv[0], "p");
  auto g = typedArg<float>(env, argv[1], "g");
  const bool hasMoments = !isNullish(env, argv[2]);
  if (hasMoments == isNullish(env, argv[3])) throw JsError{"adam: give both moments or neither"};
  TypedView<float> m0, v0;
  if (hasMoments) m0 = typedArg<float>(env, argv[2], "m0"), v0 = typedArg<float>(env, argv[3], "v0");
  auto pOut = typedArg<float>(env, argv[4], "pOut");
  auto mOut = typedArg<float>(env, argv[5], "mOut");
  auto vOut = typedArg<float>(env, argv[6], "vOut");
  double hyper[7];
  for (uint32_t i = 0; i < 7; ++i) {
    napi_value item;
    check(env, napi_get_element(env, argv[7], i, &item), "get_element");
    hyper[i] = doubleArg(env, item, "hyper");
  }
  const int64_t n = static_cast<int64_t>(p.length);
  requireLength(g.length, n, "g");
  if (hasMoments) requireLength(m0.length, n, "m0"), requireLength(v0.length, n, "v0");
  requireLength(pOut.length, n, "pOut");
  requireLength(mOut.length, n, "mOut");
  requireLength(vOut.length, n, "vOut");
  if (hyper[5] < 1) throw JsError{"adam: step must be >= 1"};
  const AdamHyper h{hyper[0], hyper[1], hyper[2], hyper[3], hyper[4], static_cast<int64_t>(hyper[5]), hyper[6] != 0};
  adamUpdate(h, n, p.data, g.data, hasMoments ? m0.data : nullptr, hasMoments ? v0.data : nullptr, pOut.data, mOut.data, vOut.data);
  return nullptr;
}

// activation(kind, x, y) and activationGrad(kind, dy, x, dx): SiLU, GELU (tanh / erf), QuickGELU.
napi_value activation(napi_env env, napi_callback_info cb) {
  napi_value argv[3];
  getArgs(env, cb, argv, "activation");
  const int64_t kind = intArg(env, argv[0], "kind");
  if (kind < 0 || kind > 3) throw JsError{"activation: unknown kind"};
  auto x = typedArg<float>(env, argv[1], "x");
  auto y = typedArg<float>(env, argv[2], "y");
  requireLength(y.length, static_cast<int64_t>(x.length), "y");
  activationForward(static_cast<SmoothActivation>(kind), x.data, y.data, static_cast<int64_t>(x.length));
  return nullptr;
}

napi_value activationGrad(napi_env env, napi_callback_info cb) {
  napi_value argv[4];
  getArgs(env, cb, argv, "activationGrad");
  const int64_t kind = intArg(env, argv[0], "kind");
  if (kind < 0 || kind > 3) throw JsError{"activationGrad: unknown kind"};
  auto dy = typedArg<float>(env, argv[1], "dy");
  auto x = typedArg<float>(env, argv[2], "x");
  auto dx = typedArg<float>(env, argv[3], "dx");
  const int64_t n = static_cast<int64_t>(x.length);
  requireLength(dy.length, n, "dy");
  requireLength(dx.length, n, "dx");
  activationBackward(static_cast<SmoothActivation>(kind), dy.data, x.data, dx.data, n);
  return nullptr;
}

// leakyReluGrad(dy, x, alpha, dx)
napi_value leakyReluGradient(napi_env env, napi_callback_info cb) {
  napi_value argv[4];
  getArgs(env, cb, argv, "leakyReluGrad");
  auto dy = typedArg<float>(env, argv[0], "dy");
  auto x = typedArg<float>(env, argv[1], "x");
  const auto alpha = static_cast<float>(doubleArg(env, argv[2], "alpha"));
  auto dx = typedArg<float>(env, argv[3], "dx");
  const int64_t n = static_cast<int64_t>(x.length);
  requireLength(dy.length, n, "dy");
  requireLength(dx.length, n, "dx");
  leakyReluGrad(dy.data, x.data, alpha, dx.data, n);
  return nullptr;
}

// transpose(x, shape, perm, out)
napi_value transpose(napi_env env, napi_callback_info cb) {
  napi_value argv[4];
  getArgs(env, cb, argv, "transpose");
  auto x = typedArg<float>(env, argv[0], "x");
  auto shape = shapeArg(env, argv[1], "shape");
  auto perm = shapeArg(env, argv[2], "perm");
  auto out = typedArg<float>(env, argv[3], "out");
  if (perm.size() != shape.size()) throw JsError{"transpose: perm must have the shape's rank"};
  std::vector<bool> seen(shape.size(), false);
  for (int64_t p : perm) {
    if (p >= static_cast<int64_t>(shape.size()) || seen[p]) throw JsError{"transpose: perm is not a permutation"};
    seen[p] = true;
  }
  requireLength(x.length, product(shape), "x");
  requireLength(out.length, product(shape), "out");
  if (product(shape) > 0) transposeCopy(x.data, shape, perm, out.data);
  return nullptr;
}

std::vector<TypedView<float>> floatArrays(napi_env env, napi_value v, const char* name) {
  bool isArray = false;
  check(env, napi_is_array(env, v, &isArray), "is_array");
  if (!isArray) throw JsError{std::string(name) + ": expected an array of Float32Arrays"};
  uint32_t n = 0;
  check(env, napi_get_array_length(env, v, &n), "array_length");
  std::vector<TypedView<float>> views;
  for (uint32_t i = 0; i < n; ++i) {
    napi_value item;
    check(env, napi_get_element(env, v, i, &item), "get_element");
    views.push_back(typedArg<float>(env, item, name));
  }
  return views;
}

// Shared checks of concat/splitV: one run length per piece, each piece holding outer·run floats.
int64_t checkPieces(const std::vector<TypedView<float>>& pieces, const std::vector<int64_t>& runs, int64_t outer, const char* fn) {
  if (pieces.empty() || pieces.size() != runs.size()) throw JsError{std::string(fn) + ": expected one run length per piece"};
  if (outer < 0) throw JsError{std::string(fn) + ": outer must be non-negative"};
  int64_t rowLen = 0;
  for (size_t k = 0; k < pieces.size(); ++k) {
    requireLength(pieces[k].length, outer * runs[k], "piece");
    rowLen += runs[k];
  }
  return rowLen;
}

// concat(inputs[], runs, outer, out)
napi_value concat(napi_env env, napi_callback_info cb) {
  napi_value argv[4];
  getArgs(env, cb, argv, "concat");
  auto inputs = floatArrays(env, argv[0], "inputs");
  auto runs = shapeArg(env, argv[1], "runs");
  const int64_t outer = intArg(env, argv[2], "outer");
  auto out = typedArg<float>(env, argv[3], "out");
  const int64_t rowLen = checkPieces(inputs, runs, outer, "concat");
  requireLength(out.length, outer * rowLen, "out");
  std::vector<const float*> ptrs;
  for (const auto& v : inputs) ptrs.push_back(v.data);
  if (outer * rowLen > 0) concatRows(ptrs, runs, outer, out.data);
  return nullptr;
}

// splitV(x, runs, outer, outputs[])
napi_value splitV(napi_env env, napi_callback_info cb) {
  napi_value argv[4];
  getArgs(env, cb, argv, "splitV");
  auto x = typedArg<float>(env, argv[0], "x");
  auto runs = shapeArg(env, argv[1], "runs");
  const int64_t outer = intArg(env, argv[2], "outer");
  auto outputs = floatArrays(env, argv[3], "outputs");
  const int64_t rowLen = checkPieces(outputs, runs, outer, "splitV");
  requireLength(x.length, outer * rowLen, "x");
  std::vector<float*> ptrs;
  for (const auto& v : outputs) ptrs.push_back(v.data);
  if (outer * rowLen > 0) splitRows(x.data, runs, outer, ptrs);
  return nullptr;
}

// tile(x, shape, reps, out)
napi_value tile(napi_env env, napi_callback_info cb) {
  napi_value argv[4];
  getArgs(env, cb, argv, "tile");
  auto x = typedArg<float>(env, argv[0], "x");
  auto shape = shapeArg(env, argv[1], "shape");
  auto reps = shapeArg(env, argv[2], "reps");
  auto out = typedArg<float>(env, argv[3], "out");
  if (shape.empty() || reps.size() != shape.size()) throw JsError{"tile: shape and reps must share one rank >= 1"};
  std::vector<int64_t> outShape(shape.size());
  for (size_t i = 0; i < shape.size(); ++i) outShape[i] = shape[i] * reps[i];
  requireLength(x.length, product(shape), "x");
  requireLength(out.length, product(outShape), "out");
  if (product(outShape) > 0) tileCopy(x.data, shape, reps, out.data);
  return nullptr;
}

// pad(x, shape, before, after, value, out)
napi_value pad(napi_env env, napi_callback_info cb) {
  napi_value argv[6];
  getArgs(env, cb, argv, "pad");
  auto x = typedArg<float>(env, argv[0], "x");
  auto shape = shapeArg(env, argv[1], "shape");
  auto before = shapeArg(env, argv[2], "before");
  auto after = shapeArg(env, argv[3], "after");
  const float value = static_cast<float>(doubleArg(env, argv[4], "value"));
  auto out = typedArg<float>(env, argv[5], "out");
  if (shape.empty() || before.size() != shape.size() || after.size() != shape.size()) throw JsError{"pad: shape, before and after must share one rank >= 1"};
  std::vector<int64_t> outShape(shape.size());
  for (size_t i = 0; i < shape.size(); ++i) outShape[i] = before[i] + shape[i] + after[i];
  requireLength(x.length, product(shape), "x");
  requireLength(out.length, product(outShape), "out");
  if (product(shape) == 0) throw JsError{"pad: x must not be empty"};
  padConstant(x.data, shape, before, after, value, out.data);
  return nullptr;
}

// pool(kind, params[12], in, out); kind 0 average forward (x → y), 1 its backward (dy → dx).
// params: batch inH inW channels outH outW filterH filterW strideH strideW padTop padLeft
napi_value pool(napi_env env, napi_callback_info cb) {
  napi_value argv[4];
  getArgs(env, cb, argv, "pool");
  const int64_t kind = intArg(env, argv[0], "kind");
  auto p = typedArg<int32_t>(env, argv[1], "params");
  if (p.length != 12) throw JsError{"pool: params must hold 12 ints"};
  const PoolShape s{p.data[0], p.data[1], p.data[2], p.data[3], p.data[4], p.data[5], p.data[6], p.data[7], p.data[8], p.data[9], p.data[10], p.data[11]};
  for (int i = 0; i < 10; ++i) if (p.data[i] < 1) throw JsError{"pool: sizes and strides must be positive"};
  if (s.padTop < 0 || s.padLeft < 0) throw JsError{"pool: padding must be non-negative"};
  auto in = typedArg<float>(env, argv[2], "in");
  auto out = typedArg<float>(env, argv[3], "out");
  const int64_t xSize = s.batch * s.inH * s.inW * s.channels, ySize = s.batch * s.outH * s.outW * s.channels;
  if (kind == 0) {
    requireLength(in.length, xSize, "x"), requireLength(out.length, ySize, "y");
    avgPoolForward(s, in.data, out.data);
  } else if (kind == 1) {
    requireLength(in.length, ySize, "dy"), requireLength(out.length, xSize, "dx");
    avgPoolBackward(s, in.data, out.data);
  } else {
    throw JsError{"pool: unknown kind"};
  }
  return nullptr;
}

// resize(kind, params[6], alignCorners, halfPixelCenters, in, out); kind 0 bilinear forward,
// 1 bilinear backward, 2 nearest forward, 3 nearest backward. params: batch inH inW channels outH outW
napi_value resize(napi_env env, napi_callback_info cb) {
  napi_value argv[6];
  getArgs(env, cb, argv, "resize");
  const int64_t kind = intArg(env, argv[0], "kind");
  auto p = typedArg<int32_t>(env, argv[1], "params");
  if (p.length != 6) throw JsError{"resize: params must hold 6 ints"};
  for (size_t i = 0; i < 6; ++i) if (p.data[i] < 1) throw JsError{"resize: sizes must be positive"};
  const ResizeShape s{p.data[0], p.data[1], p.data[2], p.data[3], p.data[4], p.data[5], boolArg(env, argv[2], "alignCorners"),
                      boolArg(env, argv[3], "halfPixelCenters")};
  auto in = typedArg<float>(env, argv[4], "in");
  auto out = typedArg<float>(env, argv[5], "out");
  const int64_t xSize = s.batch * s.inH * s.inW * s.channels, ySize = s.batch * s.outH * s.outW * s.channels;
  const bool forward = kind == 0 || kind == 2;
  if (kind < 0 || kind > 3) throw JsError{"resize: unknown kind"};
  requireLength(in.length, forward ? xSize : ySize, forward ? "x" : "dy");
  requireLength(out.length, forward ? ySize : xSize, forward ? "y" : "dx");
  switch (kind) {
    case 0: resizeBilinearForward(s, in.data, out.data); break;
    case 1: resizeBilinearBackward(s, in.data, out.data); break;
    case 2: resizeNearestForward(s, in.data, out.data); break;
    default: resizeNearestBackward(s, in.data, out.data); break;
  }
  return nullptr;
}

AttentionShape attentionShape(napi_env env, napi_value dims, napi_value scale, napi_value causal) {
  auto d = typedArg<int32_t>(env, dims, "dims");
  if (d.length != 6) throw JsError{"attention: dims must be [batch, nq, nk, heads, kvHeads, dim]"};
  for (size_t i = 0; i < 6; ++i) if (d.data[i] < 1) throw JsError{"attention: dims must be positive"};
  AttentionShape s{d.data[0], d.data[1], d.data[2], d.data[3], d.data[4], d.data[5], static_cast<float>(doubleArg(env, scale, "scale")),
                   boolArg(env, causal, "causal")};
  if (s.heads % s.kvHeads != 0) throw JsError{"attention: heads must be a multiple of kvHeads"};
  return s;
}

// attention(dims[6], scale, causal, q, k, v, o, p)
napi_value attention(napi_env env, napi_callback_info cb) {
  napi_value argv[8];
  getArgs(env, cb, argv, "attention");
  const AttentionShape s = attentionShape(env, argv[0], argv[1], argv[2]);
  auto q = typedArg<float>(env, argv[3], "q");
  auto k = typedArg<float>(env, argv[4], "k");
  auto v = typedArg<float>(env, argv[5], "v");
  auto o = typedArg<float>(env, argv[6], "o");
  auto p = typedArg<float>(env, argv[7], "p");
  const int64_t qSize = s.batch * s.nq * s.heads * s.dim, kvSize = s.batch * s.nk * s.kvHeads * s.dim;
  requireLength(q.length, qSize, "q"), requireLength(k.length, kvSize, "k"), requireLength(v.length, kvSize, "v");
  requireLength(o.length, qSize, "o"), requireLength(p.length, s.batch * s.heads * s.nq * s.nk, "p");
  attentionForward(s, q.data, k.data, v.data, o.data, p.data);
  return nullptr;
}

// attentionGrad(dims[6], scale, dO, q, k, v, p, dq, dk, dv)
napi_value attentionGrad(napi_env env, napi_callback_info cb) {
  napi_value argv[10];
  getArgs(env, cb, argv, "attentionGrad");
  napi_value noCausal;
  check(env, napi_get_boolean(env, false, &noCausal), "get_boolean");
  const AttentionShape s = attentionShape(env, argv[0], argv[1], noCausal);
  auto dout = typedArg<float>(env, argv[2], "dO");
  auto q = typedArg<float>(env, argv[3], "q");
  auto k = typedArg<float>(env, argv[4], "k");
  auto v = typedArg<float>(env, argv[5], "v");
  auto p = typedArg<float>(env, argv[6], "p");
  auto dq = typedArg<float>(env, argv[7], "dq");
  auto dk = typedArg<float>(env, argv[8], "dk");
  auto dv = typedArg<float>(env, argv[9], "dv");
  const int64_t qSize = s.batch * s.nq * s.heads * s.dim, kvSize = s.batch * s.nk * s.kvHeads * s.dim;
  requireLength(dout.length, qSize, "dO"), requireLength(q.length, qSize, "q"), requireLength(k.length, kvSize, "k");
  requireLength(v.length, kvSize, "v"), requireLength(p.length, s.batch * s.heads * s.nq * s.nk, "p");
  requireLength(dq.length, qSize, "dq"), requireLength(dk.length, kvSize, "dk"), requireLength(dv.length, kvSize, "dv");
  attentionBackward(s, dout.data, q.data, k.data, v.data, p.data, dq.data, dk.data, dv.data);
  return nullptr;
}

// setBf16Compute(on): matmul and conv run in bf16 (native/src/bf16.h) until turned off.
napi_value setBf16(napi_env env, napi_callback_info cb) {
  napi_value argv[1];
  getArgs(env, cb, argv, "setBf16Compute");
  setBf16Compute(boolArg(env, argv[0], "on"));
  return nullptr;
}

// asyncSignalsBlocked(): whether, inside a native call, SIGCHLD is blocked on every thread of an
// OpenMP team (the invariant that keeps signals out of oneDNN's JIT kernels; for tests).
napi_value asyncSignalsBlocked(napi_env env, napi_callback_info) { return makeBool(env, signalBlockedOnAllOmpThreads(SIGCHLD)); }

napi_value init(napi_env env, napi_value exports) {
  enableAmxWhenPresent();  // before any other oneDNN call (oneDNN 2.6 leaves AMX off by default)
  const napi_property_descriptor props[] = {
      {"info", nullptr, guarded<info>, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"setThreads", nullptr, guarded<setThreads>, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"sgemm", nullptr, guarded<gemm>, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"matmul", nullptr, guarded<matmul>, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"toBf16", nullptr, guarded<toBf16>, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"conv", nullptr, guarded<conv>, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"setBf16Compute", nullptr, guarded<setBf16>, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"asyncSignalsBlocked", nullptr, guarded<asyncSignalsBlocked>, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"binary", nullptr, guarded<binary>, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"unary", nullptr, guarded<unary>, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"select", nullptr, guarded<select>, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"softmax", nullptr, guarded<softmax>, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"slice", nullptr, guarded<slice>, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"groupNorm", nullptr, guarded<groupNorm>, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"groupNormGrad", nullptr, guarded<groupNormGrad>, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"adam", nullptr, guarded<adam>, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"activation", nullptr, guarded<activation>, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"activationGrad", nullptr, guarded<activationGrad>, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"reduce", nullptr, guarded<reduceAxes>, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"transpose", nullptr, guarded<transpose>, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"concat", nullptr, guarded<concat>, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"splitV", nullptr, guarded<splitV>, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"tile", nullptr, guarded<tile>, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"pad", nullptr, guarded<pad>, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"pool", nullptr, guarded<pool>, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"resize", nullptr, guarded<resize>, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"dsyevd", nullptr, guarded<lapackSyevd>, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"dgemm", nullptr, guarded<blasGemm>, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"dsyrk", nullptr, guarded<blasSyrk>, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"dpotrf", nullptr, guarded<lapackPotrf>, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"dtrmm", nullptr, guarded<blasTrmm>, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"leakyReluGrad", nullptr, guarded<leakyReluGradient>, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"attention", nullptr, guarded<attention>, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"attentionGrad", nullptr, guarded<attentionGrad>, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"convList", nullptr, guarded<convListForwardBinding>, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"convListGrad", nullptr, guarded<convListBackwardBinding>, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"normModulate", nullptr, guarded<normModulateBinding>, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"normModulateGrad", nullptr, guarded<normModulateGradBinding>, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"gatedResidual", nullptr, guarded<gatedResidualBinding>, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"gatedResidualGrad", nullptr, guarded<gatedResidualGradBinding>, nullptr, nullptr, nullptr, napi_default, nullptr},
  };
  napi_define_properties(env, exports, sizeof(props) / sizeof(props[0]), props);
  return exports;
}

}  // namespace
}  // namespace sfn

NAPI_MODULE(NODE_GYP_MODULE_NAME, sfn::init)
