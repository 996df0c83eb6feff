// Float64 dense linear algebra for the evaluation metrics (FID's matrix square root, KID's kernels,
// feature covariances): LAPACK's divide-and-conquer symmetric eigensolver and BLAS level-3 products
// from OpenBLAS, which ships LAPACK. The Fortran symbol is declared here so no lapacke header is needed.
#include <cblas.h>

#include <cmath>
#include <string>
#include <vector>

#include "lapack.h"

extern "C" void dpotrf_(const char* uplo, const int* n, double* a, const int* lda, int* info);
extern "C" void dsyevd_(const char* jobz, const char* uplo, const int* n, double* a, const int* lda, double* w, double* work,
                        const int* lwork, int* iwork, const int* liwork, int* info);

namespace sfn {

template <>
struct TypedArrayKind<double> {
  static constexpr napi_typedarray_type type = napi_float64_array;
  static constexpr const char* name = "a Float64Array";
};

namespace {

void requireDoubles(size_t have, int64_t need, const char* name) {
  if (static_cast<int64_t>(have) < need) {
    throw JsError{std::string(name) + ": buffer holds " + std::to_string(have) + " doubles, the shape needs " + std::to_string(need)};
  }
}

int dimArg(napi_env env, napi_value v, const char* name) {
  const int64_t d = intArg(env, v, name);
  if (d < 0 || d > 1 << 20) throw JsError{std::string(name) + ": dimension out of range"};
  return static_cast<int>(d);
}

}  // namespace

// dsyevd(vectors, n, a, w): eigenvalues of the symmetric n×n `a` (upper triangle of its column-major
// view) into w, ascending; with vectors, `a` is overwritten by the eigenvectors as its columns.
napi_value lapackSyevd(napi_env env, napi_callback_info cb) {
  napi_value argv[4];
  getArgs(env, cb, argv, "dsyevd");
  const bool vectors = boolArg(env, argv[0], "vectors");
  const int n = dimArg(env, argv[1], "n");
  auto a = typedArg<double>(env, argv[2], "a");
  auto w = typedArg<double>(env, argv[3], "w");
  requireDoubles(a.length, static_cast<int64_t>(n) * n, "a");
  requireDoubles(w.length, n, "w");
  if (n == 0) return nullptr;
  const char jobz = vectors ? 'V' : 'N';
  const char uplo = 'U';
  int lwork = -1, liwork = -1, info = 0, iworkQuery = 0;
  double workQuery = 0;
  dsyevd_(&jobz, &uplo, &n, a.data, &n, w.data, &workQuery, &lwork, &iworkQuery, &liwork, &info);
  if (info != 0) throw JsError{"dsyevd: workspace query failed (info " + std::to_string(info) + ")"};
  lwork = static_cast<int>(workQuery);
  liwork = iworkQuery;
  std::vector<double> work(static_cast<size_t>(std::max(lwork, 1)));
  std::vector<int> iwork(static_cast<size_t>(std::max(liwork, 1)));
  dsyevd_(&jobz, &uplo, &n, a.data, &n, w.data, work.data(), &lwork, iwork.data(), &liwork, &info);
  if (info < 0) throw JsError{"dsyevd: argument " + std::to_string(-info) + " is invalid"};
  if (info > 0) throw JsError{"dsyevd: the eigenvalue algorithm failed to converge (info " + std::to_string(info) + ")"};
  return nullptr;
}

// dgemm(transA, transB, m, n, k, alpha, a, b, beta, c): row-major c[m×n] = alpha·op(a)·op(b) + beta·c.
napi_value blasGemm(napi_env env, napi_callback_info cb) {
  napi_value argv[10];
  getArgs(env, cb, argv, "dgemm");
  const bool transA = boolArg(env, argv[0], "transA");
  const bool transB = boolArg(env, argv[1], "transB");
  const int m = dimArg(env, argv[2], "m"), n = dimArg(env, argv[3], "n"), k = dimArg(env, argv[4], "k");
  const double alpha = doubleArg(env, argv[5], "alpha");
  auto a = typedArg<double>(env, argv[6], "a");
  auto b = typedArg<double>(env, argv[7], "b");
  const double beta = doubleArg(env, argv[8], "beta");
  auto c = typedArg<double>(env, argv[9], "c");
  requireDoubles(a.length, static_cast<int64_t>(m) * k, "a");
  requireDoubles(b.length, static_cast<int64_t>(k) * n, "b");
  requireDoubles(c.length, static_cast<int64_t>(m) * n, "c");
  if (m == 0 || n == 0) return nullptr;
  cblas_dgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans, m, n, k, alpha, a.data,
              transA ? m : k, b.data, transB ? k : n, beta, c.data, n);
  return nullptr;
}

// dsyrk(n, k, alpha, a, beta, c): the upper triangle of row-major c[n×n] = alpha·aᵀa + beta·c, a row-major [k×n].
napi_value blasSyrk(napi_env env, napi_callback_info cb) {
  napi_value argv[6];
  getArgs(env, cb, argv, "dsyrk");
  const int n = dimArg(env, argv[0], "n"), k = dimArg(env, argv[1], "k");
  const double alpha = doubleArg(env, argv[2], "alpha");
  auto a = typedArg<double>(env, argv[3], "a");
  const double beta = doubleArg(env, argv[4], "beta");
  auto c = typedArg<double>(env, argv[5], "c");
  requireDoubles(a.length, static_cast<int64_t>(k) * n, "a");
  requireDoubles(c.length, static_cast<int64_t>(n) * n, "c");
  if (n == 0) return nullptr;
  cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, n, k, alpha, a.data, n, beta, c.data, n);
  return nullptr;
}

// dpotrf(n, a) → info: Cholesky of the symmetric positive definite n×n `a` in place, upper triangle of its
// column-major view = lower triangle of the row-major one (a = L·Lᵀ, L there); info > 0: not positive definite.
napi_value lapackPotrf(napi_env env, napi_callback_info cb) {
  napi_value argv[2];
  getArgs(env, cb, argv, "dpotrf");
  const int n = dimArg(env, argv[0], "n");
  auto a = typedArg<double>(env, argv[1], "a");
  requireDoubles(a.length, static_cast<int64_t>(n) * n, "a");
  int info = 0;
  const char uplo = 'U';
  if (n > 0) dpotrf_(&uplo, &n, a.data, &n, &info);
  if (info < 0) throw JsError{"dpotrf: argument " + std::to_string(-info) + " is invalid"};
  return makeNumber(env, info);
}

// dtrmm(right, lower, transA, m, n, alpha, a, b): row-major b[m×n] = alpha·op(a)·b (left) or alpha·b·op(a)
// (right) for a triangular a (non-unit diagonal).
napi_value blasTrmm(napi_env env, napi_callback_info cb) {
  napi_value argv[8];
  getArgs(env, cb, argv, "dtrmm");
  const bool right = boolArg(env, argv[0], "right");
  const bool lower = boolArg(env, argv[1], "lower");
  const bool transA = boolArg(env, argv[2], "transA");
  const int m = dimArg(env, argv[3], "m"), n = dimArg(env, argv[4], "n");
  const double alpha = doubleArg(env, argv[5], "alpha");
  auto a = typedArg<double>(env, argv[6], "a");
  auto b = typedArg<double>(env, argv[7], "b");
  const int k = right ? n : m;
  requireDoubles(a.length, static_cast<int64_t>(k) * k, "a");
  requireDoubles(b.length, static_cast<int64_t>(m) * n, "b");
  if (m == 0 || n == 0) return nullptr;
  cblas_dtrmm(CblasRowMajor, right ? CblasRight : CblasLeft, lower ? CblasLower : CblasUpper, transA ? CblasTrans : CblasNoTrans,
              CblasNonUnit, m, n, alpha, a.data, k, b.data, n);
  return nullptr;
}

}  // namespace sfn
