// Small helpers over the plain N-API C interface (no node-addon-api dependency, so the addon
// builds with nothing but node-gyp and the system libraries).
#pragma once
#include <node_api.h>

#include <cstddef>
#include <cstdint>
#include <string>

namespace sfn {

// Thrown inside bindings and turned into a JS Error at the boundary.
struct JsError {
  std::string message;
};

inline void check(napi_env env, napi_status status, const char* what) {
  if (status != napi_ok) throw JsError{std::string("N-API call failed: ") + what};
}

template <typename T>
struct TypedView {
  T* data = nullptr;
  size_t length = 0;
};

template <typename T>
struct TypedArrayKind;
template <>
struct TypedArrayKind<float> {
  static constexpr napi_typedarray_type type = napi_float32_array;
  static constexpr const char* name = "a Float32Array";
};
template <>
struct TypedArrayKind<int32_t> {
  static constexpr napi_typedarray_type type = napi_int32_array;
  static constexpr const char* name = "an Int32Array";
};
// bf16 bits (the upper half of an fp32), as the matmul kernels' pre-converted operands.
template <>
struct TypedArrayKind<uint16_t> {
  static constexpr napi_typedarray_type type = napi_uint16_array;
  static constexpr const char* name = "a Uint16Array";
};
// tfjs stores bool tensors as Uint8Array.
template <>
struct TypedArrayKind<uint8_t> {
  static constexpr napi_typedarray_type type = napi_uint8_array;
  static constexpr const char* name = "a Uint8Array";
};

// What a value is as a typed array: isTyped false for anything else.
struct TypedArrayInfo {
  bool isTyped = false;
  napi_typedarray_type type = napi_int8_array;
  void* data = nullptr;
  size_t length = 0;
};

inline TypedArrayInfo typedArrayInfo(napi_env env, napi_value v) {
  TypedArrayInfo info;
  check(env, napi_is_typedarray(env, v, &info.isTyped), "is_typedarray");
  if (!info.isTyped) return info;
  napi_value buffer;
  size_t offset;
  check(env, napi_get_typedarray_info(env, v, &info.type, &info.length, &info.data, &buffer, &offset), "typedarray_info");
  return info;
}

// A view of a Float32Array/Int32Array/Uint8Array/Uint16Array argument's own memory (offset included): no copy.
template <typename T>
TypedView<T> typedArg(napi_env env, napi_value v, const char* name) {
  const TypedArrayInfo info = typedArrayInfo(env, v);
  if (!info.isTyped) throw JsError{std::string(name) + ": expected a typed array"};
  if (info.type != TypedArrayKind<T>::type) throw JsError{std::string(name) + ": expected " + TypedArrayKind<T>::name};
  return {static_cast<T*>(info.data), info.length};
}

// Whether v is a typed array of the given element type.
inline bool isTypedArrayOf(napi_env env, napi_value v, napi_typedarray_type want) {
  const TypedArrayInfo info = typedArrayInfo(env, v);
  return info.isTyped && info.type == want;
}

inline bool isNullish(napi_env env, napi_value v) {
  napi_valuetype t;
  check(env, napi_typeof(env, v, &t), "typeof");
  return t == napi_null || t == napi_undefined;
}

inline int64_t intArg(napi_env env, napi_value v, const char* name) {
  int64_t out;
  if (napi_get_value_int64(env, v, &out) != napi_ok) throw JsError{std::string(name) + ": expected a number"};
  return out;
}

inline double doubleArg(napi_env env, napi_value v, const char* name) {
  double out;
  if (napi_get_value_double(env, v, &out) != napi_ok) throw JsError{std::string(name) + ": expected a number"};
  return out;
}

inline bool boolArg(napi_env env, napi_value v, const char* name) {
  bool out;
  if (napi_get_value_bool(env, v, &out) != napi_ok) throw JsError{std::string(name) + ": expected a boolean"};
  return out;
}

inline napi_value makeBool(napi_env env, bool b) {
  napi_value v;
  check(env, napi_get_boolean(env, b, &v), "get_boolean");
  return v;
}

inline napi_value makeString(napi_env env, const std::string& s) {
  napi_value v;
  check(env, napi_create_string_utf8(env, s.c_str(), s.size(), &v), "create_string");
  return v;
}

inline napi_value makeNumber(napi_env env, double d) {
  napi_value v;
  check(env, napi_create_double(env, d, &v), "create_double");
  return v;
}

// Fetches exactly `n` arguments or throws.
template <size_t N>
void getArgs(napi_env env, napi_callback_info info, napi_value (&argv)[N], const char* fn) {
  size_t argc = N;
  check(env, napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr), "get_cb_info");
  if (argc < N) throw JsError{std::string(fn) + ": expected " + std::to_string(N) + " arguments, got " + std::to_string(argc)};
}

}  // namespace sfn
