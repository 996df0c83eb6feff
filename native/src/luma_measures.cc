// The three quality measures of src/curate/filters.ts (mean luma, luma-histogram entropy, variance of
// the 4-neighbour Laplacian), in one pass over the analysis image and in the same order of double
// operations as the JS, so the values agree to the last bit or two (entropy's log2 may differ by an ulp).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "image_addon.h"
#include "napi_util.h"

namespace sfn {

// lumaMeasures(rgb, width, height) → { brightness, entropy, blurVariance }
napi_value lumaMeasures(napi_env env, napi_callback_info cb) {
  napi_value argv[3];
  getArgs(env, cb, argv, "lumaMeasures");
  const auto rgb = typedArg<uint8_t>(env, argv[0], "rgb");
  const int64_t w = intArg(env, argv[1], "width"), h = intArg(env, argv[2], "height");
  if (w < 1 || h < 1 || static_cast<int64_t>(rgb.length) != w * h * 3) throw JsError{"lumaMeasures: rgb must hold width × height × 3 bytes"};
  const size_t n = static_cast<size_t>(w) * h;
  std::vector<double> y(n);
  double hist[256] = {0};
  double total = 0;
  for (size_t i = 0; i < n; i++) {
    const double v = 0.299 * rgb.data[3 * i] + 0.587 * rgb.data[3 * i + 1] + 0.114 * rgb.data[3 * i + 2];
    y[i] = v;
    total += v;
    const double bin = std::round(v);
    hist[bin < 0 ? 0 : bin > 255 ? 255 : static_cast<int>(bin)] += 1;
  }
  double entropy = 0;
  for (double c : hist) {
    if (c == 0) continue;
    const double p = c / static_cast<double>(n);
    entropy -= p * std::log2(p);
  }
  double blur = 0;
  if (w >= 3 && h >= 3) {
    double sum = 0, sumSq = 0, count = 0;
    for (int64_t r = 1; r < h - 1; r++) {
      for (int64_t c = 1; c < w - 1; c++) {
        const size_t i = static_cast<size_t>(r * w + c);
        const double v = y[i - w] + y[i + w] + y[i - 1] + y[i + 1] - 4 * y[i];
        sum += v;
        sumSq += v * v;
        count++;
      }
    }
    const double mean = sum / count;
    blur = std::max(0.0, sumSq / count - mean * mean);
  }
  napi_value out;
  check(env, napi_create_object(env, &out), "create_object");
  check(env, napi_set_named_property(env, out, "brightness", makeNumber(env, total / static_cast<double>(n) / 255)), "set_property");
  check(env, napi_set_named_property(env, out, "entropy", makeNumber(env, entropy)), "set_property");
  check(env, napi_set_named_property(env, out, "blurVariance", makeNumber(env, blur)), "set_property");
  return out;
}

}  // namespace sfn
