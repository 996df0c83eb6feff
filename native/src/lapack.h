// Float64 LAPACK/BLAS entry points for the evaluation metrics (lapack.cc).
#pragma once
#include "napi_util.h"

namespace sfn {

napi_value lapackSyevd(napi_env env, napi_callback_info cb);
napi_value blasGemm(napi_env env, napi_callback_info cb);
napi_value blasSyrk(napi_env env, napi_callback_info cb);
napi_value lapackPotrf(napi_env env, napi_callback_info cb);
napi_value blasTrmm(napi_env env, napi_callback_info cb);

}  // namespace sfn
