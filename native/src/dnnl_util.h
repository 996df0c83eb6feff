// Process-wide oneDNN engine and stream, and status checking.
#pragma once
#include <oneapi/dnnl/dnnl.h>

#include <string>

#include "napi_util.h"

namespace sfn {

struct DnnlContext {
  dnnl_engine_t engine = nullptr;
  dnnl_stream_t stream = nullptr;
};

// Created on first use; lives until the process exits (a tfjs backend is never unloaded).
DnnlContext& dnnl();

inline void dnnlCheck(dnnl_status_t status, const char* what) {
  if (status != dnnl_success) throw JsError{std::string("oneDNN ") + what + " failed with status " + std::to_string(static_cast<int>(status))};
}

// Owns a primitive descriptor / primitive / memory and destroys it with the right function.
struct PrimitiveDesc {
  dnnl_primitive_desc_t pd = nullptr;
  PrimitiveDesc() = default;
  PrimitiveDesc(const PrimitiveDesc&) = delete;
  PrimitiveDesc& operator=(const PrimitiveDesc&) = delete;
  ~PrimitiveDesc() { if (pd) dnnl_primitive_desc_destroy(pd); }
};

struct Primitive {
  dnnl_primitive_t p = nullptr;
  Primitive() = default;
  Primitive(const Primitive&) = delete;
  Primitive& operator=(const Primitive&) = delete;
  ~Primitive() { if (p) dnnl_primitive_destroy(p); }
};

struct Memory {
  dnnl_memory_t m = nullptr;
  Memory() = default;
  Memory(const Memory&) = delete;
  Memory& operator=(const Memory&) = delete;
  ~Memory() { if (m) dnnl_memory_destroy(m); }
  // A memory over caller-owned data (the pointer is replaced before every execution).
  void wrap(const dnnl_memory_desc_t* md) { dnnlCheck(dnnl_memory_create(&m, md, dnnl().engine, DNNL_MEMORY_NONE), "memory_create"); }
  // A memory that oneDNN allocates (reordered weights, gradients in a blocked layout).
  void allocate(const dnnl_memory_desc_t* md) { dnnlCheck(dnnl_memory_create(&m, md, dnnl().engine, DNNL_MEMORY_ALLOCATE), "memory_create"); }
  void point(const void* data) { dnnlCheck(dnnl_memory_set_data_handle(m, const_cast<void*>(data)), "memory_set_data_handle"); }
};

// A reorder between two layouts of the same tensor, or nothing when the layouts are equal.
struct Reorder {
  Primitive prim;
  bool needed = false;
  void init(const dnnl_memory_desc_t* from, const dnnl_memory_desc_t* to);
  void run(dnnl_memory_t from, dnnl_memory_t to);
};

// Post-op applied to a forward output (the tfjs fused activations that oneDNN has).
enum class Activation : int { Linear = 0, Relu = 1, Relu6 = 2, LeakyRelu = 3, Sigmoid = 4, Elu = 5 };

// Owns primitive attributes: an output scale (when not 1), then a sum post-op (dst += result, when
// accumulating), then the activation post-op (none for Linear). No attributes at all by default.
struct ActivationAttr {
  dnnl_primitive_attr_t attr = nullptr;
  ActivationAttr(Activation activation, float leakyAlpha, float outputScale = 1.f, bool accumulate = false);
  ActivationAttr(const ActivationAttr&) = delete;
  ActivationAttr& operator=(const ActivationAttr&) = delete;
  ~ActivationAttr() { if (attr) dnnl_primitive_attr_destroy(attr); }
};

// Below this many flops a second OpenMP thread costs more to wake (tens to hundreds of µs on a
// busy 2-core machine) than it saves, so such products run on the calling thread alone.
constexpr double kSingleThreadFlops = 4.0e6;

// Limits OpenMP to one thread for its lifetime when `single`. oneDNN sizes some kernels' thread
// partition when the primitive is created, so creation and execution must both run under it.
struct ThreadScope {
  int previous = 0;
  explicit ThreadScope(bool single);
  ~ThreadScope();
  ThreadScope(const ThreadScope&) = delete;
  ThreadScope& operator=(const ThreadScope&) = delete;
};

// Implementation name oneDNN picked (for diagnostics).
std::string implName(const_dnnl_primitive_desc_t pd);

}  // namespace sfn
