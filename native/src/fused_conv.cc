#include "fused_conv.h"

#include <cstring>
#include <string>
#include <vector>

#include "bf16.h"
#include "conv.h"
#include "napi_util.h"
#include "parallel.h"

namespace sfn {

namespace {

// Geometry shared by every input: [n, h, w, o, kh, kw, oh, ow, sh, sw, pt, pl, pb, pr].
struct ListGeometry {
  ConvShape shape;
  std::vector<int64_t> channels;  // per input; shape.c is their sum
};

void requireFloats(size_t have, int64_t need, const std::string& name) {
  if (static_cast<int64_t>(have) < need) {
    throw JsError{"convList: " + name + " holds " + std::to_string(have) + " floats, the shape needs " + std::to_string(need)};
  }
}

ListGeometry geometry(napi_env env, napi_value geomArg, napi_value channelsArg, int activation, float alpha) {
  auto g = typedArg<int32_t>(env, geomArg, "geom");
  if (g.length != 14) throw JsError{"convList: geom must hold 14 ints [n, h, w, o, kh, kw, oh, ow, sh, sw, pt, pl, pb, pr]"};
  for (int i = 0; i < 10; ++i) if (g.data[i] < 1) throw JsError{"convList: sizes and strides must be positive"};
  for (int i = 10; i < 14; ++i) if (g.data[i] < 0) throw JsError{"convList: padding must be non-negative"};
  auto ch = typedArg<int32_t>(env, channelsArg, "channels");
  if (ch.length < 1) throw JsError{"convList: at least one input"};
  ListGeometry out;
  int64_t c = 0;
  for (size_t i = 0; i < ch.length; ++i) {
    if (ch.data[i] < 1) throw JsError{"convList: channel counts must be positive"};
    out.channels.push_back(ch.data[i]);
    c += ch.data[i];
  }
  if (activation != 0 && activation != 1 && activation != 3) throw JsError{"convList: activation must be linear (0), relu (1) or leaky relu (3)"};
  if (activation == 3 && !(alpha >= 0)) throw JsError{"convList: leaky relu slope must be >= 0 (the gradient reads the sign of y)"};
  const int32_t* d = g.data;
  out.shape = ConvShape{d[0], c, d[1], d[2], d[3], d[4], d[5], d[6], d[7], d[8], d[9], 1, 1, d[10], d[11], d[12], d[13], false, false,
                        static_cast<Activation>(activation), alpha};
  return out;
}

std::vector<TypedView<float>> floatList(napi_env env, napi_value arr, const char* name, bool allowNull) {
  bool isArray = false;
  check(env, napi_is_array(env, arr, &isArray), "is_array");
  if (!isArray) throw JsError{std::string("convList: ") + name + " must be an array"};
  uint32_t len = 0;
  check(env, napi_get_array_length(env, arr, &len), "get_array_length");
  std::vector<TypedView<float>> out(len);
  for (uint32_t i = 0; i < len; ++i) {
    napi_value item;
    check(env, napi_get_element(env, arr, i, &item), "get_element");
    if (allowNull && isNullish(env, item)) continue;
    out[i] = typedArg<float>(env, item, name);
  }
  return out;
}

// Scratch reused across calls (the addon runs on the JS thread only).
std::vector<float>& scratch(int which) {
  static std::vector<float> buffers[5];
  return buffers[which];
}

float* sized(int which, int64_t n) {
  auto& v = scratch(which);
  if (static_cast<int64_t>(v.size()) < n) v.resize(n);
  return v.data();
}

// Copies the inputs into their channel concatenation [positions, C]; a single input is used as is.
const float* concatInputs(const std::vector<TypedView<float>>& xs, const std::vector<int64_t>& channels, int64_t positions, int64_t c) {
  if (xs.size() == 1) return xs[0].data;
  float* dst = sized(0, positions * c);
  forRanges(positions, c, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      int64_t off = 0;
      for (size_t i = 0; i < xs.size(); ++i) {
        std::memcpy(dst + p * c + off, xs[i].data + p * channels[i], channels[i] * sizeof(float));
        off += channels[i];
      }
    }
  });
  return dst;
}

// [o, c, kh, kw] (PyTorch) ↔ [kh, kw, c, o] (what runConv takes).
void oihwToHwio(const float* w, int64_t o, int64_t c, int64_t kh, int64_t kw, float* out) {
  for (int64_t oo = 0; oo < o; ++oo)
    for (int64_t cc = 0; cc < c; ++cc)
      for (int64_t y = 0; y < kh; ++y)
        for (int64_t x = 0; x < kw; ++x) out[((y * kw + x) * c + cc) * o + oo] = w[((oo * c + cc) * kh + y) * kw + x];
}

void hwioToOihw(const float* w, int64_t o, int64_t c, int64_t kh, int64_t kw, float* out) {
  for (int64_t oo = 0; oo < o; ++oo)
    for (int64_t cc = 0; cc < c; ++cc)
      for (int64_t y = 0; y < kh; ++y)
        for (int64_t x = 0; x < kw; ++x) out[((oo * c + cc) * kh + y) * kw + x] = w[((y * kw + x) * c + cc) * o + oo];
}

// dpre = dy · act'(pre), read from y's sign (y > 0 exactly where pre > 0 for slopes >= 0), and the
// bias gradient Σ dpre over positions in double.
SFN_VECTOR_CLONES void activationGradRange(const float* dy, const float* y, float slope, int64_t begin, int64_t end, int64_t o, float* dpre, double* dbias) {
  for (int64_t p = begin; p < end; ++p) {
    const float* dr = dy + p * o;
    float* out = dpre + p * o;
    if (y) {
      const float* yr = y + p * o;
      for (int64_t k = 0; k < o; ++k) out[k] = yr[k] > 0.f ? dr[k] : dr[k] * slope;
    } else if (out != dr) {
      std::memcpy(out, dr, o * sizeof(float));
    }
    if (dbias) for (int64_t k = 0; k < o; ++k) dbias[k] += out[k];
  }
}

// A kh×kw convolution with stride (kh, kw), no padding and no dilation (a ViT/DiT patch embedding)
// reads each input pixel once: it is a matmul of the [positions, kh·kw·C] patch matrix with the
// filter as [kh·kw·C, O] (HWIO is exactly that). oneDNN's convolution kernels handle this shape badly
// (3 input channels, stride 4: the backward passes of a DiT patch embedding took 2-3 ms where the
// products are 0.1 ms), so these passes run as matmuls over gathered patches.
// 1×1 convolutions stay on oneDNN, which runs them as a matmul over the input in place; a gather
// would only copy it.
bool isPatchConv(const ConvShape& s) {
  return s.kh * s.kw > 1 && s.kh == s.sh && s.kw == s.sw && s.pt == 0 && s.pl == 0 && s.pb == 0 && s.pr == 0 && s.dh == 1 && s.dw == 1 && s.oh == s.h / s.kh &&
         s.ow == s.w / s.kw;
}

// patches[(b, i, j), (y, x, c)] = x[b, i·kh + y, j·kw + x, c], or the reverse (scatter, dx outside the
// patch grid set to 0) when `toImage`.
void movePatches(const ConvShape& s, const float* from, float* to, bool toImage) {
  const int64_t row = s.kw * s.c, K = s.kh * row;
  if (toImage && (s.oh * s.kh != s.h || s.ow * s.kw != s.w)) std::fill(to, to + s.n * s.h * s.w * s.c, 0.f);
  forRanges(s.n * s.oh * s.ow, K, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      const int64_t b = p / (s.oh * s.ow), i = (p / s.ow) % s.oh, j = p % s.ow;
      for (int64_t y = 0; y < s.kh; ++y) {
        const int64_t pixel = ((b * s.h + i * s.kh + y) * s.w + j * s.kw) * s.c;
        if (toImage) std::memcpy(to + pixel, from + p * K + y * row, row * sizeof(float));
        else std::memcpy(to + p * K + y * row, from + pixel, row * sizeof(float));
      }
    }
  });
}

// One pass of a patch convolution, with runConv's arguments (filters HWIO).
const std::string& runPatchConv(ConvKind kind, const ConvShape& s, const float* in1, const float* in2, const float* bias, float* out) {
  const int64_t P = s.n * s.oh * s.ow, K = s.kh * s.kw * s.c;
  auto run = [](const MatmulShape& m, const float* a, const float* b, const float* bias, float* c) -> const std::string& {
    return bf16Compute() ? runBf16Matmul(m, a, b, bias, c) : runMatmul(m, a, b, bias, c);
  };
  float* patches = sized(4, P * K);
  MatmulShape m{{P, K}, {K, s.o}, false, false, false, Activation::Linear, 0.f};
  if (kind == ConvKind::Forward) {
    movePatches(s, in1, patches, false);
    m.withBias = bias != nullptr, m.activation = s.activation, m.alpha = s.alpha;
    return run(m, patches, in2, bias, out);
  }
  if (kind == ConvKind::BackwardWeights) {  // dW = patchesᵀ · dy
    movePatches(s, in1, patches, false);
    m.bDims = {P, s.o}, m.transA = true;
    return run(m, patches, in2, nullptr, out);
  }
  m.aDims = {P, s.o}, m.bDims = {K, s.o}, m.transB = true;  // dpatches = dy · Wᵀ
  const std::string& impl = run(m, in1, in2, nullptr, patches);
  movePatches(s, patches, out, true);
  return impl;
}

const std::string& runListConv(ConvKind kind, const ConvShape& s, const float* in1, const float* in2, const float* bias, float* out) {
  if (isPatchConv(s)) return runPatchConv(kind, s, in1, in2, bias, out);
  return (bf16Compute() ? runBf16Conv : runConv)(kind, s, in1, in2, bias, out);
}

}  // namespace

napi_value convListForwardBinding(napi_env env, napi_callback_info cb) {
  napi_value argv[8];
  getArgs(env, cb, argv, "convList");
  const int activation = static_cast<int>(intArg(env, argv[5], "activation"));
  const float alpha = static_cast<float>(doubleArg(env, argv[6], "alpha"));
  ListGeometry geo = geometry(env, argv[0], argv[1], activation, alpha);
  ConvShape& s = geo.shape;
  auto xs = floatList(env, argv[2], "inputs", false);
  if (xs.size() != geo.channels.size()) throw JsError{"convList: one channel count per input"};
  const int64_t positions = s.n * s.h * s.w;
  for (size_t i = 0; i < xs.size(); ++i) requireFloats(xs[i].length, positions * geo.channels[i], "input " + std::to_string(i));
  auto w = typedArg<float>(env, argv[3], "weight");
  requireFloats(w.length, s.o * s.c * s.kh * s.kw, "weight");
  const float* bias = nullptr;
  if (!isNullish(env, argv[4])) {
    auto b = typedArg<float>(env, argv[4], "bias");
    requireFloats(b.length, s.o, "bias");
    bias = b.data, s.withBias = true;
  }
  auto y = typedArg<float>(env, argv[7], "y");
  requireFloats(y.length, s.n * s.oh * s.ow * s.o, "y");
  const float* x = concatInputs(xs, geo.channels, positions, s.c);
  float* wHwio = sized(1, s.o * s.c * s.kh * s.kw);
  oihwToHwio(w.data, s.o, s.c, s.kh, s.kw, wHwio);
  return makeString(env, runListConv(ConvKind::Forward, s, x, wHwio, bias, y.data));
}

napi_value convListBackwardBinding(napi_env env, napi_callback_info cb) {
  napi_value argv[11];
  getArgs(env, cb, argv, "convListGrad");
  const int activation = static_cast<int>(intArg(env, argv[6], "activation"));
  const float alpha = static_cast<float>(doubleArg(env, argv[7], "alpha"));
  ListGeometry geo = geometry(env, argv[0], argv[1], activation, alpha);
  ConvShape& s = geo.shape;
  s.activation = Activation::Linear;
  auto xs = floatList(env, argv[2], "inputs", false);
  if (xs.size() != geo.channels.size()) throw JsError{"convListGrad: one channel count per input"};
  const int64_t positions = s.n * s.h * s.w, outPositions = s.n * s.oh * s.ow, wSize = s.o * s.c * s.kh * s.kw;
  for (size_t i = 0; i < xs.size(); ++i) requireFloats(xs[i].length, positions * geo.channels[i], "input " + std::to_string(i));
  auto w = typedArg<float>(env, argv[3], "weight");
  requireFloats(w.length, wSize, "weight");
  const float* y = nullptr;
  if (activation != 0) {
    auto yv = typedArg<float>(env, argv[4], "y");
    requireFloats(yv.length, outPositions * s.o, "y");
    y = yv.data;
  }
  auto dy = typedArg<float>(env, argv[5], "dy");
  requireFloats(dy.length, outPositions * s.o, "dy");
  auto dxs = floatList(env, argv[8], "dxs", true);
  if (dxs.size() != xs.size()) throw JsError{"convListGrad: one dx (or null) per input"};
  bool anyDx = false;
  for (size_t i = 0; i < dxs.size(); ++i) {
    if (!dxs[i].data) continue;
    requireFloats(dxs[i].length, positions * geo.channels[i], "dx " + std::to_string(i));
    anyDx = true;
  }
  TypedView<float> dw;
  if (!isNullish(env, argv[9])) dw = typedArg<float>(env, argv[9], "dw"), requireFloats(dw.length, wSize, "dw");
  float* db = nullptr;
  if (!isNullish(env, argv[10])) {
    auto b = typedArg<float>(env, argv[10], "db");
    requireFloats(b.length, s.o, "db");
    db = b.data;
  }

  // The pre-activation gradient and the bias gradient in one pass over dy.
  const float* dpre = dy.data;
  const float slope = activation == 3 ? alpha : 0.f;
  if (y || db) {
    float* buf = y ? sized(2, outPositions * s.o) : dy.data;
    std::vector<double> dbias(db ? s.o : 0, 0.0);
    const int threads = omp_get_max_threads();
    if (db && threads > 1 && outPositions * s.o >= kParallelWork) {
      std::vector<std::vector<double>> partial(threads, std::vector<double>(s.o, 0.0));
#pragma omp parallel
      {
        const int64_t t = omp_get_thread_num(), nt = omp_get_num_threads();
        activationGradRange(dy.data, y, slope, outPositions * t / nt, outPositions * (t + 1) / nt, s.o, buf, partial[t].data());
      }
      for (auto& part : partial) for (int64_t k = 0; k < s.o; ++k) dbias[k] += part[k];
    } else {
      forRanges(outPositions, s.o, [&](int64_t begin, int64_t end) { activationGradRange(dy.data, y, slope, begin, end, s.o, buf, nullptr); });
      if (db) activationGradRange(buf, nullptr, 0.f, 0, outPositions, s.o, buf, dbias.data());
    }
    if (db) for (int64_t k = 0; k < s.o; ++k) db[k] = static_cast<float>(dbias[k]);
    dpre = buf;
  }

  if (dw.data) {
    const float* x = concatInputs(xs, geo.channels, positions, s.c);
    float* dwHwio = sized(1, wSize);
    runListConv(ConvKind::BackwardWeights, s, x, dpre, nullptr, dwHwio);
    hwioToOihw(dwHwio, s.o, s.c, s.kh, s.kw, dw.data);
  }
  if (!anyDx) return nullptr;

  float* wHwio = sized(3, wSize);
  oihwToHwio(w.data, s.o, s.c, s.kh, s.kw, wHwio);
  if (xs.size() == 1) {
    runListConv(ConvKind::BackwardData, s, dpre, wHwio, nullptr, dxs[0].data);
    return nullptr;
  }
  // The concatenation's gradient, then each input's channel slice of it.
  float* dx = sized(0, positions * s.c);
  runListConv(ConvKind::BackwardData, s, dpre, wHwio, nullptr, dx);
  forRanges(positions, s.c, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      int64_t off = 0;
      for (size_t i = 0; i < dxs.size(); ++i) {
        if (dxs[i].data) std::memcpy(dxs[i].data + p * geo.channels[i], dx + p * s.c + off, geo.channels[i] * sizeof(float));
        off += geo.channels[i];
      }
    }
  });
  return nullptr;
}

}  // namespace sfn
