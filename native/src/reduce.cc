#include "reduce.h"
#include "parallel.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>

#include <immintrin.h>

namespace sfn {

namespace {


// Adjacent dims with the same role merge, size-1 dims vanish: the walk then has the longest
// possible contiguous inner run and the fewest odometer carries.
struct Layout {
  std::vector<int64_t> dims;
  std::vector<bool> reduced;
  std::vector<int64_t> outStride;  // 0 for reduced dims
  int64_t size = 1, outSize = 1;
};

Layout collapse(const std::vector<int64_t>& shape, const std::vector<bool>& reduced) {
  Layout l;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] == 1) continue;
    if (!l.dims.empty() && l.reduced.back() == reduced[i]) {
      l.dims.back() *= shape[i];
    } else {
      l.dims.push_back(shape[i]);
      l.reduced.push_back(reduced[i]);
    }
  }
  if (l.dims.empty()) l.dims = {1}, l.reduced = {true};
  const size_t r = l.dims.size();
  l.outStride.assign(r, 0);
  for (size_t i = r; i-- > 0;) {
    l.size *= l.dims[i];
    if (!l.reduced[i]) l.outStride[i] = l.outSize, l.outSize *= l.dims[i];
  }
  return l;
}

// The sum loops as plain functions so that they get the AVX-512 / AVX2 clones (parallel.h): as
// template members they compiled to baseline SSE2, two doubles per instruction.
inline double sumRun(const float* x, int64_t n) {
  // Independent partial sums: no loop-carried dependency on one register.
  double s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    for (int k = 0; k < 8; ++k) s[k] += x[j + k];
  }
  double total = ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
  for (; j < n; ++j) total += x[j];
  return total;
}

// sumRun for rows of a multiple of 16 floats with AVX-512: the 8 lanes of sumRun in one register,
// the row's 8-float chunks added in order, then the same tree ((s0+s1)+(s2+s3))+((s4+s5)+(s6+s7))
// by permutes (an add of a lane and its partner is exact in either order).
__attribute__((target("avx512f"))) void sumEachRowAvx512(const float* x, int64_t rows, int64_t n, double* acc) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = x + r * n;
    __m512d s = _mm512_setzero_pd();
    for (int64_t j = 0; j < n; j += 16) {
      const __m512 v = _mm512_loadu_ps(row + j);
      s = _mm512_add_pd(s, _mm512_cvtps_pd(_mm512_castps512_ps256(v)));
      s = _mm512_add_pd(s, _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1))));
    }
    s = _mm512_add_pd(s, _mm512_permute_pd(s, 0x55));                                   // s0+s1 in lanes 0, 1; s2+s3 in 2, 3; …
    s = _mm512_add_pd(s, _mm512_permutex_pd(s, _MM_SHUFFLE(1, 0, 3, 2)));               // (s0+s1)+(s2+s3) in lanes 0–3; …
    s = _mm512_add_pd(s, _mm512_shuffle_f64x2(s, s, _MM_SHUFFLE(1, 0, 3, 2)));          // + the other half
    acc[r] += _mm512_cvtsd_f64(s);
  }
}

const bool kHasAvx512 = (__builtin_cpu_init(), __builtin_cpu_supports("avx512f"));

SFN_VECTOR_CLONES void sumEachRowPlain(const float* x, int64_t rows, int64_t n, double* acc) {
  for (int64_t r = 0; r < rows; ++r) acc[r] += sumRun(x + r * n, n);
}

// acc[r] += Σ row r, for `rows` rows of n (a sum over the innermost dim).
void sumEachRow(const float* x, int64_t rows, int64_t n, double* acc) {
  if (kHasAvx512 && n % 16 == 0) return sumEachRowAvx512(x, rows, n, acc);
  sumEachRowPlain(x, rows, n, acc);
}

// acc[j] += Σ_r x[r, j] over `rows` rows of n (a sum over every outer dim: a bias gradient), 32
// columns at a time in registers: adding into acc in memory row after row made every add wait
// for the previous row's store.
SFN_VECTOR_CLONES void sumColumns(const float* x, int64_t rows, int64_t n, double* acc) {
  constexpr int64_t kBlock = 32;
  int64_t j0 = 0;
  for (; j0 + kBlock <= n; j0 += kBlock) {
    double s[kBlock];
    for (int64_t k = 0; k < kBlock; ++k) s[k] = acc[j0 + k];
    for (int64_t r = 0; r < rows; ++r) {
      const float* row = x + r * n + j0;
      for (int64_t k = 0; k < kBlock; ++k) s[k] += row[k];
    }
    for (int64_t k = 0; k < kBlock; ++k) acc[j0 + k] = s[k];
  }
  for (int64_t r = 0; r < rows && j0 < n; ++r) {
    const float* row = x + r * n;
    for (int64_t j = j0; j < n; ++j) acc[j] += row[j];
  }
}

struct SumAcc {
  static double init() { return 0; }
  static double combine(double a, double b) { return a + b; }
  static double run(const float* x, int64_t n) { return sumRun(x, n); }
};

struct ProdAcc {
  static double init() { return 1; }
  static double combine(double a, double b) { return a * b; }
  static double run(const float* x, int64_t n) {
    double p = 1;
    for (int64_t j = 0; j < n; ++j) p *= x[j];
    return p;
  }
};

// NaN wins, as in tfjs (`if (isNaN(v) || v > max) max = v`).
struct MaxAcc {
  static double init() { return -std::numeric_limits<double>::infinity(); }
  static double combine(double a, double b) { return (std::isnan(b) || b > a) ? b : a; }
  static double run(const float* x, int64_t n) {
    double m = init();
    for (int64_t j = 0; j < n; ++j) m = combine(m, x[j]);
    return m;
  }
};

struct MinAcc {
  static double init() { return std::numeric_limits<double>::infinity(); }
  static double combine(double a, double b) { return (std::isnan(b) || b < a) ? b : a; }
  static double run(const float* x, int64_t n) {
    double m = init();
    for (int64_t j = 0; j < n; ++j) m = combine(m, x[j]);
    return m;
  }
};

// Accumulates input rows [rowBegin, rowEnd) into acc (outSize doubles, pre-initialised).
template <typename Acc>
void accumulateRows(const Layout& l, const float* x, int64_t rowBegin, int64_t rowEnd, double* acc) {
  const int r = static_cast<int>(l.dims.size());
  const int64_t inner = l.dims[r - 1];
  const bool innerReduced = l.reduced[r - 1];
  // The two layouts of a training step's sums, [kept, reduced] and [reduced, kept], in one call
  // each (the same additions in the same order as the general walk below).
  if constexpr (std::is_same_v<Acc, SumAcc>) {
    if (r == 2 && innerReduced && !l.reduced[0]) return sumEachRow(x + rowBegin * inner, rowEnd - rowBegin, inner, acc + rowBegin);
    if (r == 2 && !innerReduced && l.reduced[0]) return sumColumns(x + rowBegin * inner, rowEnd - rowBegin, inner, acc);
    if (r == 1 && innerReduced) return sumEachRow(x + rowBegin * inner, rowEnd - rowBegin, inner, acc);
  }
  // Odometer over the outer dims (all but the innermost), started at rowBegin.
  std::vector<int64_t> idx(r > 1 ? r - 1 : 0);
  int64_t outOff = 0, rest = rowBegin;
  for (int i = r - 2; i >= 0; --i) {
    idx[i] = rest % l.dims[i];
    rest /= l.dims[i];
    outOff += idx[i] * l.outStride[i];
  }
  const float* row = x + rowBegin * inner;
  for (int64_t q = rowBegin; q < rowEnd; ++q, row += inner) {
    if (innerReduced) {
      acc[outOff] = Acc::combine(acc[outOff], Acc::run(row, inner));
    } else {
      double* a = acc + outOff;
      for (int64_t j = 0; j < inner; ++j) a[j] = Acc::combine(a[j], row[j]);
    }
    for (int i = r - 2; i >= 0; --i) {
      outOff += l.outStride[i];
      if (++idx[i] < l.dims[i]) break;
      outOff -= idx[i] * l.outStride[i];
      idx[i] = 0;
    }
  }
}

template <typename Acc>
void reduceWith(const Layout& l, const float* x, float* out, double scale) {
  const int64_t inner = l.dims.back();
  const int64_t rows = l.size / inner;
  int threads = l.size >= kParallelWork ? omp_get_max_threads() : 1;
  // Each thread keeps private accumulators for every output; worth it only when the outputs are
  // few compared with the input (always the case for the reductions of a training step).
  if (l.outSize * 8 > l.size || rows < threads) threads = 1;
  if (threads == 1) {
    std::vector<double> acc(l.outSize, Acc::init());
    accumulateRows<Acc>(l, x, 0, rows, acc.data());
    for (int64_t o = 0; o < l.outSize; ++o) out[o] = static_cast<float>(acc[o] * scale);
    return;
  }
  std::vector<double> acc(static_cast<size_t>(threads) * l.outSize, Acc::init());
#pragma omp parallel num_threads(threads)
  {
    const int t = omp_get_thread_num();
    const int n = omp_get_num_threads();
    accumulateRows<Acc>(l, x, rows * t / n, rows * (t + 1) / n, acc.data() + static_cast<size_t>(t) * l.outSize);
  }
  for (int64_t o = 0; o < l.outSize; ++o) {
    double v = acc[o];
    for (int t = 1; t < threads; ++t) v = Acc::combine(v, acc[static_cast<size_t>(t) * l.outSize + o]);
    out[o] = static_cast<float>(v * scale);
  }
}

}  // namespace

void reduce(ReduceOp op, const float* x, const std::vector<int64_t>& shape, const std::vector<bool>& reduced, float* out) {
  const Layout l = collapse(shape, reduced);
  switch (op) {
    case ReduceOp::Sum: return reduceWith<SumAcc>(l, x, out, 1.0);
    case ReduceOp::Mean: return reduceWith<SumAcc>(l, x, out, 1.0 / static_cast<double>(l.size / l.outSize));
    case ReduceOp::Max: return reduceWith<MaxAcc>(l, x, out, 1.0);
    case ReduceOp::Min: return reduceWith<MinAcc>(l, x, out, 1.0);
    case ReduceOp::Prod: return reduceWith<ProdAcc>(l, x, out, 1.0);
  }
}

}  // namespace sfn
