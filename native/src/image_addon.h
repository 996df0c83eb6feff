// Bindings of the image addon (scaleforge_image.node): curation's per-file kernels, apart from the
// backend addon so that neither needs the other's libraries.
#pragma once
#include <node_api.h>

namespace sfn {

// jpeg.cc (libjpeg-turbo)
napi_value jpegHeader(napi_env env, napi_callback_info cb);
napi_value jpegDecode(napi_env env, napi_callback_info cb);
napi_value jpegEncode(napi_env env, napi_callback_info cb);
napi_value jpegVersion(napi_env env, napi_callback_info cb);

// luma_measures.cc
napi_value lumaMeasures(napi_env env, napi_callback_info cb);

// pil_resample.cc
napi_value pilResize(napi_env env, napi_callback_info cb);

}  // namespace sfn
