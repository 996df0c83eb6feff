// Pillow's Image.resize(size, LANCZOS) on 8-bit interleaved channels, the native twin of
// src/curate/pil_resize.ts (same taps, same 22-bit fixed point, same order of passes and rounding
// between them; within a pass the integer sums are exact in any order;
// test/curate_image_addon.test.ts checks the two byte for byte). Used for perceptual hashes and the
// quality measures' analysis image, where the JS loops were a third of a file's CPU time.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "image_addon.h"
#include "napi_util.h"

namespace sfn {
namespace {

constexpr int kPrecisionBits = 22;
constexpr double kSupport = 3.0;

double sinc(double x) {
  if (x == 0.0) return 1.0;
  const double px = x * M_PI;
  return std::sin(px) / px;
}

double lanczos3(double x) { return x >= -kSupport && x < kSupport ? sinc(x) * sinc(x / kSupport) : 0.0; }

struct Taps {
  std::vector<int32_t> first, count, weights;
  int stride = 0;
};

Taps lanczosTaps(int inSize, int outSize) {
  const double scale = static_cast<double>(inSize) / outSize;
  const double filterScale = std::max(scale, 1.0);
  const double support = kSupport * filterScale;
  Taps t;
  t.stride = static_cast<int>(std::ceil(support)) * 2 + 1;
  t.first.resize(outSize), t.count.resize(outSize), t.weights.assign(static_cast<size_t>(outSize) * t.stride, 0);
  std::vector<double> raw(t.stride);
  // Pillow evaluates the filter at x · (1 / filterscale), not x / filterscale: the last ulp can differ.
  const double ss = 1.0 / filterScale;
  for (int o = 0; o < outSize; o++) {
    const double centre = (o + 0.5) * scale;
    const int lo = std::max(static_cast<int>(centre - support + 0.5), 0);
    const int hi = std::min(static_cast<int>(centre + support + 0.5), inSize);
    const int n = hi - lo;
    double sum = 0;
    for (int k = 0; k < n; k++) {
      raw[k] = lanczos3((k + lo - centre + 0.5) * ss);
      sum += raw[k];
    }
    for (int k = 0; k < n; k++) {
      const double w = sum != 0 ? raw[k] / sum : raw[k];
      t.weights[static_cast<size_t>(o) * t.stride + k] = static_cast<int32_t>(w < 0 ? -0.5 + w * (1 << kPrecisionBits) : 0.5 + w * (1 << kPrecisionBits));
    }
    t.first[o] = lo, t.count[o] = n;
  }
  return t;
}

inline uint8_t clip8(int32_t acc) {
  const int32_t v = acc >> kPrecisionBits;
  return static_cast<uint8_t>(v < 0 ? 0 : v > 255 ? 255 : v);
}

// Pixels (C bytes each) of a w×h image written transposed: out is h×w. Tiled so both sides stay in cache.
template <int C>
void transposeTiles(const uint8_t* src, int w, int h, uint8_t* out) {
  constexpr int kTile = 16;
  for (int y0 = 0; y0 < h; y0 += kTile) {
    for (int x0 = 0; x0 < w; x0 += kTile) {
      const int y1 = std::min(h, y0 + kTile), x1 = std::min(w, x0 + kTile);
      for (int x = x0; x < x1; x++) {
        uint8_t* o = out + (static_cast<size_t>(x) * h + y0) * C;
        const uint8_t* i = src + (static_cast<size_t>(y0) * w + x) * C;
        for (int y = y0; y < y1; y++, o += C, i += static_cast<size_t>(w) * C) {
          for (int c = 0; c < C; c++) o[c] = i[c];
        }
      }
    }
  }
}

void transposePixels(const uint8_t* src, int w, int h, int channels, uint8_t* out) {
  switch (channels) {
    case 1: return transposeTiles<1>(src, w, h, out);
    case 2: return transposeTiles<2>(src, w, h, out);
    case 3: return transposeTiles<3>(src, w, h, out);
    default: return transposeTiles<4>(src, w, h, out);
  }
}

// Each output row is a weighted sum of input rows. Integer sums are exact whatever their order, so this
// row-by-row accumulation gives Pillow's per-pixel sums; AVX2 (where the CPU has it) does 8 at a time.
__attribute__((target_clones("avx2", "default")))
void resampleColumns(const uint8_t* src, int rowLen, int height, int outHeight, uint8_t* out) {
  const Taps t = lanczosTaps(height, outHeight);
  std::vector<int32_t> acc(rowLen);
  const int32_t half = 1 << (kPrecisionBits - 1);
  int32_t* a = acc.data();
  for (int o = 0; o < outHeight; o++) {
    for (int i = 0; i < rowLen; i++) a[i] = half;
    const int32_t* w = t.weights.data() + static_cast<size_t>(o) * t.stride;
    for (int k = 0; k < t.count[o]; k++) {
      const uint8_t* __restrict row = src + static_cast<size_t>(t.first[o] + k) * rowLen;
      const int32_t wk = w[k];
      for (int i = 0; i < rowLen; i++) a[i] += static_cast<int32_t>(row[i]) * wk;
    }
    uint8_t* dst = out + static_cast<size_t>(o) * rowLen;
    for (int i = 0; i < rowLen; i++) dst[i] = clip8(a[i]);
  }
}

// The horizontal pass as a vertical one on the transposed image (contiguous, vectorisable rows).
void resampleRows(const uint8_t* src, int width, int height, int channels, int outWidth, uint8_t* out) {
  std::vector<uint8_t> turned(static_cast<size_t>(width) * height * channels), resampled(static_cast<size_t>(outWidth) * height * channels);
  transposePixels(src, width, height, channels, turned.data());
  resampleColumns(turned.data(), height * channels, width, outWidth, resampled.data());
  transposePixels(resampled.data(), height, outWidth, channels, out);
}

}  // namespace

// pilResize(src Uint8Array, width, height, channels, outWidth, outHeight) → Buffer
napi_value pilResize(napi_env env, napi_callback_info cb) {
  napi_value argv[6];
  getArgs(env, cb, argv, "pilResize");
  const auto src = typedArg<uint8_t>(env, argv[0], "src");
  const int64_t w = intArg(env, argv[1], "width"), h = intArg(env, argv[2], "height"), c = intArg(env, argv[3], "channels");
  const int64_t ow = intArg(env, argv[4], "outWidth"), oh = intArg(env, argv[5], "outHeight");
  if (w < 1 || h < 1 || ow < 1 || oh < 1 || c < 1 || c > 4) throw JsError{"pilResize: sizes must be positive and channels 1..4"};
  if (w > (1 << 20) || h > (1 << 20) || ow > (1 << 20) || oh > (1 << 20)) throw JsError{"pilResize: a side exceeds 2^20"};
  if (static_cast<int64_t>(src.length) != w * h * c) throw JsError{"pilResize: buffer size is not width × height × channels"};
  const int W = static_cast<int>(w), H = static_cast<int>(h), C = static_cast<int>(c), OW = static_cast<int>(ow), OH = static_cast<int>(oh);
  napi_value buffer;
  void* dst;
  check(env, napi_create_buffer(env, static_cast<size_t>(OW) * OH * C, &dst, &buffer), "create_buffer");
  auto* out = static_cast<uint8_t*>(dst);
  if (OW == W && OH == H) {
    std::memcpy(out, src.data, src.length);
  } else if (OH == H) {
    resampleRows(src.data, W, H, C, OW, out);
  } else if (OW == W) {
    resampleColumns(src.data, W * C, H, OH, out);
  } else {
    std::vector<uint8_t> rows(static_cast<size_t>(OW) * H * C);
    resampleRows(src.data, W, H, C, OW, rows.data());
    resampleColumns(rows.data(), OW * C, H, OH, out);
  }
  return buffer;
}

}  // namespace sfn
