// Entry point of the image addon (see image_addon.h). Context-aware, so every curation worker
// thread can load it; every binding is synchronous and turns C++ exceptions into JS Errors.
#include <exception>

#include "image_addon.h"
#include "napi_util.h"

namespace sfn {
namespace {

using Binding = napi_value (*)(napi_env, napi_callback_info);

template <Binding F>
napi_value guarded(napi_env env, napi_callback_info info) {
  try {
    return F(env, info);
  } catch (const JsError& e) {
    napi_throw_error(env, nullptr, e.message.c_str());
    return nullptr;
  } catch (const std::exception& e) {
    napi_throw_error(env, nullptr, e.what());
    return nullptr;
  }
}

}  // namespace
}  // namespace sfn

NAPI_MODULE_INIT() {
  const napi_property_descriptor props[] = {
      {"jpegHeader", nullptr, sfn::guarded<sfn::jpegHeader>, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"jpegDecode", nullptr, sfn::guarded<sfn::jpegDecode>, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"jpegEncode", nullptr, sfn::guarded<sfn::jpegEncode>, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"jpegVersion", nullptr, sfn::guarded<sfn::jpegVersion>, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"pilResize", nullptr, sfn::guarded<sfn::pilResize>, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"lumaMeasures", nullptr, sfn::guarded<sfn::lumaMeasures>, nullptr, nullptr, nullptr, napi_default, nullptr},
  };
  napi_define_properties(env, exports, sizeof(props) / sizeof(props[0]), props);
  return exports;
}
