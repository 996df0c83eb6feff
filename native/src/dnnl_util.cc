#include "dnnl_util.h"

#include <omp.h>

namespace sfn {

DnnlContext& dnnl() {
  static DnnlContext ctx = [] {
    DnnlContext c;
    dnnlCheck(dnnl_engine_create(&c.engine, dnnl_cpu, 0), "engine_create");
    dnnlCheck(dnnl_stream_create(&c.stream, c.engine, dnnl_stream_default_flags), "stream_create");
    return c;
  }();
  return ctx;
}

void Reorder::init(const dnnl_memory_desc_t* from, const dnnl_memory_desc_t* to) {
  needed = !dnnl_memory_desc_equal(from, to);
  if (!needed) return;
  PrimitiveDesc pd;
  dnnlCheck(dnnl_reorder_primitive_desc_create(&pd.pd, from, dnnl().engine, to, dnnl().engine, nullptr), "reorder_primitive_desc_create");
  dnnlCheck(dnnl_primitive_create(&prim.p, pd.pd), "reorder primitive_create");
}

void Reorder::run(dnnl_memory_t from, dnnl_memory_t to) {
  dnnl_exec_arg_t args[2] = {{DNNL_ARG_FROM, from}, {DNNL_ARG_TO, to}};
  dnnlCheck(dnnl_primitive_execute(prim.p, dnnl().stream, 2, args), "reorder execute");
}

ActivationAttr::ActivationAttr(Activation activation, float leakyAlpha, float outputScale, bool accumulate) {
  if (activation == Activation::Linear && outputScale == 1.f && !accumulate) return;
  dnnl_post_ops_t ops = nullptr;
  dnnlCheck(dnnl_post_ops_create(&ops), "post_ops_create");
  dnnl_status_t st = dnnl_primitive_attr_create(&attr);
  if (st == dnnl_success && outputScale != 1.f) st = dnnl_primitive_attr_set_output_scales(attr, 1, 0, &outputScale);
  if (st == dnnl_success && accumulate) st = dnnl_post_ops_append_sum(ops, 1.f);
  if (st == dnnl_success && activation != Activation::Linear) {
    dnnl_alg_kind_t alg = dnnl_eltwise_relu;
    float alpha = 0, beta = 0;
    switch (activation) {
      case Activation::LeakyRelu: alpha = leakyAlpha; break;
      case Activation::Relu6: alg = dnnl_eltwise_clip, beta = 6; break;
      case Activation::Sigmoid: alg = dnnl_eltwise_logistic; break;
      case Activation::Elu: alg = dnnl_eltwise_elu, alpha = 1; break;
      default: break;
    }
    st = dnnl_post_ops_append_eltwise(ops, 1.f, alg, alpha, beta);
  }
  if (st == dnnl_success) st = dnnl_primitive_attr_set_post_ops(attr, ops);  // copies ops
  dnnl_post_ops_destroy(ops);
  dnnlCheck(st, "matmul attributes");
}

ThreadScope::ThreadScope(bool single) {
  if (!single) return;
  previous = omp_get_max_threads();
  omp_set_num_threads(1);
}

ThreadScope::~ThreadScope() {
  if (previous > 0) omp_set_num_threads(previous);
}

std::string implName(const_dnnl_primitive_desc_t pd) {
  const char* name = nullptr;
  if (dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &name) != dnnl_success || !name) return "?";
  return name;
}

}  // namespace sfn
