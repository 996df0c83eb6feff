#include "fused_norm.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "fast_math.h"
#include "napi_util.h"
#include "norm.h"
#include "parallel.h"

namespace sfn {

namespace {

struct ModDims {
  int64_t n, t, p, c, g, width, scaleOff, shiftOff;
  int act;
  int64_t size() const { return n * t * p * c; }
  int64_t stats() const { return n * t * g; }
};

void requireFloats(size_t have, int64_t need, const char* name) {
  if (static_cast<int64_t>(have) < need) {
    throw JsError{std::string("normModulate: ") + name + " holds " + std::to_string(have) + " floats, the shape needs " + std::to_string(need)};
  }
}

ModDims modDims(napi_env env, napi_value v) {
  auto d = typedArg<int32_t>(env, v, "dims");
  if (d.length != 9) throw JsError{"normModulate: dims must be [n, t, p, c, groups, width, scaleOffset, shiftOffset, activation]"};
  ModDims m{d.data[0], d.data[1], d.data[2], d.data[3], d.data[4], d.data[5], d.data[6], d.data[7], d.data[8]};
  if (m.n < 1 || m.t < 1 || m.p < 1 || m.c < 1 || m.g < 1 || m.c % m.g != 0) throw JsError{"normModulate: dims must be positive and channels divisible by groups"};
  if (m.scaleOff < 0 || m.shiftOff < 0 || m.scaleOff + m.c > m.width || m.shiftOff + m.c > m.width) throw JsError{"normModulate: scale/shift columns outside the modulation width"};
  if (m.act != 0 && m.act != 1) throw JsError{"normModulate: activation must be 0 (none) or 1 (SiLU)"};
  return m;
}

// Work is split over tiles (samples × tiles per sample): a DiT step's LayerNorm is one sample of
// 256 one-token tiles, which a split over samples ran on one thread.
bool parallelOver(const ModDims& d) { return d.n * d.t > 1 && d.size() >= kParallelWork; }

// Statistics of one tile (p rows of c channels) per group, in double.
void tileStats(const float* x, int64_t p, int64_t c, int64_t g, float eps, double* sum, double* sumSq, float* mean, float* rstd) {
  const int64_t cg = c / g;
  std::fill(sum, sum + c, 0.0);
  std::fill(sumSq, sumSq + c, 0.0);
  for (int64_t r = 0; r < p; ++r) {
    const float* row = x + r * c;
    for (int64_t ch = 0; ch < c; ++ch) {
      const double v = row[ch];
      sum[ch] += v;
      sumSq[ch] += v * v;
    }
  }
  const double count = static_cast<double>(p * cg);
  for (int64_t k = 0; k < g; ++k) {
    double s1 = 0, s2 = 0;
    for (int64_t ch = k * cg; ch < (k + 1) * cg; ++ch) s1 += sum[ch], s2 += sumSq[ch];
    const double mu = s1 / count;
    const double var = std::max(0.0, s2 / count - mu * mu);
    mean[k] = static_cast<float>(mu);
    rstd[k] = static_cast<float>(1.0 / std::sqrt(var + static_cast<double>(eps)));
  }
}

// y rows of one tile: act(x̂·gain + shift), gain = 1 + scale.
SFN_VECTOR_CLONES void modulateRows(const float* x, int64_t p, int64_t c, const float* chMean, const float* chRstd, const float* gain, const float* shift, int act, float* y) {
  for (int64_t r = 0; r < p; ++r) {
    const float* row = x + r * c;
    float* out = y + r * c;
    if (act == 1) {
      for (int64_t ch = 0; ch < c; ++ch) {
        const float z = (row[ch] - chMean[ch]) * chRstd[ch] * gain[ch] + shift[ch];
        out[ch] = z * sigmoidFast(z);
      }
    } else {
      for (int64_t ch = 0; ch < c; ++ch) out[ch] = (row[ch] - chMean[ch]) * chRstd[ch] * gain[ch] + shift[ch];
    }
  }
}

// dz = dy·act'(z) of one tile's rows, written to dz; per-channel Σ dz and Σ dz·x̂ added to the sums.
SFN_VECTOR_CLONES void modulateGradRows(const float* dy, const float* x, int64_t p, int64_t c, const float* chMean, const float* chRstd, const float* gain,
                                        const float* shift, int act, float* dz, double* sumDz, double* sumDzXhat) {
  for (int64_t r = 0; r < p; ++r) {
    const float* xr = x + r * c;
    const float* dr = dy + r * c;
    float* out = dz + r * c;
    for (int64_t ch = 0; ch < c; ++ch) {
      const float xhat = (xr[ch] - chMean[ch]) * chRstd[ch];
      float d = dr[ch];
      if (act == 1) {
        const float z = xhat * gain[ch] + shift[ch];
        const float s = sigmoidFast(z);
        d *= s * (1.f + z * (1.f - s));
      }
      out[ch] = d;
      sumDz[ch] += d;
      sumDzXhat[ch] += static_cast<double>(d) * xhat;
    }
  }
}

// dx = rstd·(gain·dz − mean(gain·dz) − x̂·mean(gain·dz·x̂)) in place over dz.
SFN_VECTOR_CLONES void normGradRows(const float* x, int64_t p, int64_t c, const float* chMean, const float* chRstd, const float* gain, const float* a,
                                    const float* b, float* dzdx) {
  for (int64_t r = 0; r < p; ++r) {
    const float* xr = x + r * c;
    float* io = dzdx + r * c;
    for (int64_t ch = 0; ch < c; ++ch) {
      const float xhat = (xr[ch] - chMean[ch]) * chRstd[ch];
      io[ch] = chRstd[ch] * (gain[ch] * io[ch] - a[ch] - xhat * b[ch]);
    }
  }
}

// One row of the one-row-tile backward (a LayerNorm per token): dz = dy·act'(z) into dz, and per
// group mean(gain·dz) and mean(gain·dz·x̂) into ma/mb. The double sums run in 8 lanes along the
// channels, added up in a fixed order: vectorised, and the same whichever thread takes the row.
SFN_VECTOR_CLONES void rowGradMeans(const float* dy, const float* x, int64_t c, int64_t g, const float* mean, const float* rstd, const float* gain,
                                    const float* shift, int act, float* dz, float* ma, float* mb) {
  const int64_t cg = c / g;
  if (act == 1) {
    for (int64_t k = 0; k < g; ++k) {
      const float m = mean[k], r = rstd[k];
      for (int64_t ch = k * cg; ch < (k + 1) * cg; ++ch) {
        const float z = ((x[ch] - m) * r) * gain[ch] + shift[ch];
        const float sg = sigmoidFast(z);
        dz[ch] = dy[ch] * (sg * (1.f + z * (1.f - sg)));
      }
    }
  } else {
    std::copy(dy, dy + c, dz);
  }
  constexpr int kLanes = 8;
  for (int64_t k = 0; k < g; ++k) {
    const float m = mean[k], r = rstd[k];
    double s1[kLanes] = {}, s2[kLanes] = {};
    const int64_t begin = k * cg, end = (k + 1) * cg;
    int64_t ch = begin;
    for (; ch + kLanes <= end; ch += kLanes) {
      for (int j = 0; j < kLanes; ++j) {
        const double gd = static_cast<double>(gain[ch + j]) * dz[ch + j];
        s1[j] += gd;
        s2[j] += gd * ((x[ch + j] - m) * r);
      }
    }
    for (int j = 0; ch < end; ++ch, ++j) {
      const double gd = static_cast<double>(gain[ch]) * dz[ch];
      s1[j] += gd;
      s2[j] += gd * ((x[ch] - m) * r);
    }
    const double count = static_cast<double>(cg);
    ma[k] = static_cast<float>((((s1[0] + s1[1]) + (s1[2] + s1[3])) + ((s1[4] + s1[5]) + (s1[6] + s1[7]))) / count);
    mb[k] = static_cast<float>((((s2[0] + s2[1]) + (s2[2] + s2[3])) + ((s2[4] + s2[5]) + (s2[6] + s2[7]))) / count);
  }
}

// Channels [c0, c1) of one row into a sample's modulation-gradient sums: totalDz += dz, totalDzXhat += dz·x̂.
SFN_VECTOR_CLONES void addModulationGradRow(const float* dz, const float* x, int64_t c0, int64_t c1, int64_t cg, const float* mean, const float* rstd,
                                            double* totalDz, double* totalDzXhat) {
  for (int64_t k = c0 / cg; k * cg < c1; ++k) {
    const float m = mean[k], r = rstd[k];
    for (int64_t ch = std::max(c0, k * cg); ch < std::min(c1, (k + 1) * cg); ++ch) {
      totalDz[ch - c0] += dz[ch];
      totalDzXhat[ch - c0] += static_cast<double>(dz[ch]) * ((x[ch] - m) * r);
    }
  }
}

// dx = rstd·(gain·dz − ma − x̂·mb) of one row, in place over dz: normGradRows's arithmetic with the
// statistics per group rather than spread per channel (a one-row tile's groups are LayerNorm-wide,
// and spreading them for every row cost more than the row itself).
SFN_VECTOR_CLONES void rowNormGrad(const float* x, int64_t c, int64_t g, const float* mean, const float* rstd, const float* gain, const float* ma, const float* mb,
                                   float* dzdx) {
  const int64_t cg = c / g;
  for (int64_t k = 0; k < g; ++k) {
    const float m = mean[k], r = rstd[k], a = ma[k], b = mb[k];
    for (int64_t ch = k * cg; ch < (k + 1) * cg; ++ch) dzdx[ch] = r * (gain[ch] * dzdx[ch] - a - ((x[ch] - m) * r) * b);
  }
}

// One-row tiles (p = 1: a LayerNorm per token) go kRowBlock (norm.h) at a time through their statistics:
// a group's sums are a chain of dependent double adds along its channels (taken in the same order as
// tileStats and the per-tile gradient sums, so the same bits), and a block keeps that many chains in
// flight instead of one. Tiles of several rows keep one tile per block: their row sums dominate.
int64_t tileBlock(const ModDims& d) { return d.p == 1 ? kRowBlock : 1; }

// tileStats for the one-row tiles [at0, at0 + nr), nr <= kRowBlock, group by group.
void rowBlockStats(const float* x, int64_t at0, int64_t nr, int64_t c, int64_t g, float eps, float* mean, float* rstd) {
  const int64_t cg = c / g;
  const float* row[kRowBlock];
  for (int64_t r = 0; r < kRowBlock; ++r) row[r] = x + (at0 + std::min(r, nr - 1)) * c;
  for (int64_t k = 0; k < g; ++k) rowBlockMoments(row, nr, k * cg, (k + 1) * cg, eps, mean + at0 * g + k, rstd + at0 * g + k, g);
}

// Per group of tiles [at0, at0 + nr): mean(gain·dz) and mean(gain·dz·x̂) from the per-channel sums.
void blockGradMeans(const ModDims& d, const double* allDz, const double* allDzXhat, const float* mod, int64_t at0, int64_t nr, float* ma, float* mb) {
  const int64_t c = d.c, g = d.g, cg = c / g;
  const double count = static_cast<double>(d.p * cg);
  const double* dz[kRowBlock];
  const double* dzx[kRowBlock];
  const float* scale[kRowBlock];
  for (int64_t r = 0; r < kRowBlock; ++r) {
    const int64_t at = at0 + std::min(r, nr - 1);
    dz[r] = allDz + at * c, dzx[r] = allDzXhat + at * c, scale[r] = mod + (at / d.t) * d.width + d.scaleOff;
  }
  for (int64_t k = 0; k < g; ++k) {
    double s1[kRowBlock] = {}, s2[kRowBlock] = {};
    for (int64_t ch = k * cg; ch < (k + 1) * cg; ++ch) {
      for (int64_t r = 0; r < kRowBlock; ++r) {
        const float gain = 1.f + scale[r][ch];
        s1[r] += gain * dz[r][ch];
        s2[r] += gain * dzx[r][ch];
      }
    }
    for (int64_t r = 0; r < nr; ++r) ma[r * g + k] = static_cast<float>(s1[r] / count), mb[r * g + k] = static_cast<float>(s2[r] / count);
  }
}

// gain = 1 + scale of sample b, kept per thread between tiles of the same sample.
struct SampleGain {
  std::vector<float> gain;
  int64_t of = -1;
  explicit SampleGain(int64_t c) : gain(c) {}
  const float* operator()(const ModDims& d, const float* mod, int64_t b) {
    if (b != of) {
      const float* scale = mod + b * d.width + d.scaleOff;
      for (int64_t ch = 0; ch < d.c; ++ch) gain[ch] = 1.f + scale[ch];
      of = b;
    }
    return gain.data();
  }
};

void forward(const ModDims& d, float eps, const float* x, const float* mod, float* y, float* mean, float* rstd) {
  const int64_t c = d.c, g = d.g, cg = c / g, tile = d.p * c, tiles = d.n * d.t;
  const int64_t block = tileBlock(d), blocks = (tiles + block - 1) / block;
#pragma omp parallel if (parallelOver(d))
  {
    std::vector<double> sum(c), sumSq(c);
    std::vector<float> chMean(c), chRstd(c);
    SampleGain gainOf(c);
#pragma omp for schedule(static)
    for (int64_t blk = 0; blk < blocks; ++blk) {
      const int64_t at0 = blk * block, nr = std::min(block, tiles - at0);
      if (block == 1) tileStats(x + at0 * tile, d.p, c, g, eps, sum.data(), sumSq.data(), mean + at0 * g, rstd + at0 * g);
      else rowBlockStats(x, at0, nr, c, g, eps, mean, rstd);
      for (int64_t at = at0; at < at0 + nr; ++at) {
        const int64_t b = at / d.t;
        spreadGroups(mean + at * g, rstd + at * g, g, cg, chMean.data(), chRstd.data());
        modulateRows(x + at * tile, d.p, c, chMean.data(), chRstd.data(), gainOf(d, mod, b), mod + b * d.width + d.shiftOff, d.act, y + at * tile);
      }
    }
  }
}

// The one-row-tile case (a LayerNorm per token, DiT's adaLN) in three passes over the rows. The
// tile path's per-tile double sums are, for one-row tiles, dz and dz·x̂ themselves: writing them
// out and reading them back twice (16 bytes per element) made that backward 4-5× the forward.
void backwardRows(const ModDims& d, const float* dy, const float* x, const float* mod, const float* mean, const float* rstd, float* dx, float* dmod) {
  const int64_t c = d.c, g = d.g, cg = c / g, rows = d.n * d.t;
  static thread_local std::vector<float> rowMeans;
  rowMeans.resize(2 * rows * g);
  float* const ma = rowMeans.data();
  float* const mb = ma + rows * g;
  const bool parallel = parallelOver(d);
  // Pass 1: dz into dx, and each row's means.
#pragma omp parallel if (parallel)
  {
    SampleGain gainOf(c);
#pragma omp for schedule(static)
    for (int64_t at = 0; at < rows; ++at) {
      const int64_t b = at / d.t;
      rowGradMeans(dy + at * c, x + at * c, c, g, mean + at * g, rstd + at * g, gainOf(d, mod, b), mod + b * d.width + d.shiftOff, d.act, dx + at * c,
                   ma + at * g, mb + at * g);
    }
  }
  // Pass 2: the modulation gradient, summed over a sample's rows in row order, per (sample,
  // channel chunk) so that the order does not depend on the thread count.
  std::fill(dmod, dmod + d.n * d.width, 0.f);
  constexpr int64_t kChunk = 64;
  const int64_t chunks = (c + kChunk - 1) / kChunk;
  forEachIndex(d.n * chunks, parallel, [&](int64_t task) {
    const int64_t b = task / chunks, c0 = (task % chunks) * kChunk, c1 = std::min(c, c0 + kChunk);
    double totalDz[kChunk] = {}, totalDzXhat[kChunk] = {};
    for (int64_t at = b * d.t; at < (b + 1) * d.t; ++at) addModulationGradRow(dx + at * c, x + at * c, c0, c1, cg, mean + at * g, rstd + at * g, totalDz, totalDzXhat);
    float* dm = dmod + b * d.width;
    for (int64_t ch = c0; ch < c1; ++ch) {
      dm[d.scaleOff + ch] = static_cast<float>(totalDzXhat[ch - c0]);
      dm[d.shiftOff + ch] = static_cast<float>(totalDz[ch - c0]);
    }
  });
  // Pass 3: dx from dz, in place.
#pragma omp parallel if (parallel)
  {
    SampleGain gainOf(c);
#pragma omp for schedule(static)
    for (int64_t at = 0; at < rows; ++at) rowNormGrad(x + at * c, c, g, mean + at * g, rstd + at * g, gainOf(d, mod, at / d.t), ma + at * g, mb + at * g, dx + at * c);
  }
}

// Tiles of several rows (a GroupNorm over positions): per-tile sums, then per-sample totals.
void backwardTiles(const ModDims& d, const float* dy, const float* x, const float* mod, const float* mean, const float* rstd, float* dx, float* dmod) {
  const int64_t c = d.c, g = d.g, cg = c / g, tile = d.p * c, tiles = d.n * d.t;
  const int64_t block = tileBlock(d), blocks = (tiles + block - 1) / block;
  // Per-tile Σ dz and Σ dz·x̂, added per sample in tile order afterwards: the modulation gradient
  // comes out the same whichever thread ran which tile.
  static thread_local std::vector<double> tileDz, tileDzXhat;
  tileDz.resize(tiles * c);
  tileDzXhat.resize(tiles * c);
  double* const allDz = tileDz.data();
  double* const allDzXhat = tileDzXhat.data();
#pragma omp parallel if (parallelOver(d))
  {
    std::vector<float> chMean(c), chRstd(c), a(c), bc(c), ma(kRowBlock * g), mb(kRowBlock * g);
    SampleGain gainOf(c);
#pragma omp for schedule(static)
    for (int64_t blk = 0; blk < blocks; ++blk) {
      const int64_t at0 = blk * block, nr = std::min(block, tiles - at0);
      for (int64_t at = at0; at < at0 + nr; ++at) {
        const int64_t b = at / d.t;
        spreadGroups(mean + at * g, rstd + at * g, g, cg, chMean.data(), chRstd.data());
        double* sumDz = allDz + at * c;
        double* sumDzXhat = allDzXhat + at * c;
        std::fill(sumDz, sumDz + c, 0.0);
        std::fill(sumDzXhat, sumDzXhat + c, 0.0);
        modulateGradRows(dy + at * tile, x + at * tile, d.p, c, chMean.data(), chRstd.data(), gainOf(d, mod, b), mod + b * d.width + d.shiftOff, d.act,
                         dx + at * tile, sumDz, sumDzXhat);
      }
      blockGradMeans(d, allDz, allDzXhat, mod, at0, nr, ma.data(), mb.data());
      for (int64_t at = at0; at < at0 + nr; ++at) {
        spreadGroups(mean + at * g, rstd + at * g, g, cg, chMean.data(), chRstd.data());
        spreadGroups(ma.data() + (at - at0) * g, mb.data() + (at - at0) * g, g, cg, a.data(), bc.data());
        normGradRows(x + at * tile, d.p, c, chMean.data(), chRstd.data(), gainOf(d, mod, at / d.t), a.data(), bc.data(), dx + at * tile);
      }
    }
  }
  forEachIndex(d.n, parallelOver(d) && d.n > 1, [&](int64_t b) {
    std::vector<double> totalDz(c, 0.0), totalDzXhat(c, 0.0);
    for (int64_t t = 0; t < d.t; ++t) {
      const double* sDz = allDz + (b * d.t + t) * c;
      const double* sDzXhat = allDzXhat + (b * d.t + t) * c;
      for (int64_t ch = 0; ch < c; ++ch) totalDz[ch] += sDz[ch], totalDzXhat[ch] += sDzXhat[ch];
    }
    float* dm = dmod + b * d.width;
    std::fill(dm, dm + d.width, 0.f);
    for (int64_t ch = 0; ch < c; ++ch) {
      dm[d.scaleOff + ch] = static_cast<float>(totalDzXhat[ch]);
      dm[d.shiftOff + ch] = static_cast<float>(totalDz[ch]);
    }
  });
}

void backward(const ModDims& d, const float* dy, const float* x, const float* mod, const float* mean, const float* rstd, float* dx, float* dmod) {
  if (d.p == 1) backwardRows(d, dy, x, mod, mean, rstd, dx, dmod);
  else backwardTiles(d, dy, x, mod, mean, rstd, dx, dmod);
}

struct GateDims {
  int64_t n, s, c, width, offset;
};

GateDims gateDims(napi_env env, napi_value v) {
  auto d = typedArg<int32_t>(env, v, "dims");
  if (d.length != 5) throw JsError{"gatedResidual: dims must be [n, s, c, width, offset]"};
  GateDims g{d.data[0], d.data[1], d.data[2], d.data[3], d.data[4]};
  if (g.n < 1 || g.s < 1 || g.c < 1 || g.offset < 0 || g.offset + g.c > g.width) throw JsError{"gatedResidual: dims must be positive and the gate inside the modulation width"};
  return g;
}

SFN_VECTOR_CLONES void gateRows(const float* x, const float* branch, const float* gate, int64_t rows, int64_t c, float* out) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t k = 0; k < c; ++k) out[r * c + k] = x[r * c + k] + branch[r * c + k] * gate[k];
}

SFN_VECTOR_CLONES void gateGradRows(const float* dy, const float* branch, const float* gate, int64_t rows, int64_t c, float* dbranch, double* acc) {
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t k = 0; k < c; ++k) {
      const float d = dy[r * c + k];
      dbranch[r * c + k] = d * gate[k];
      acc[k] += static_cast<double>(d) * branch[r * c + k];
    }
  }
}

}  // namespace

napi_value gatedResidualBinding(napi_env env, napi_callback_info cb) {
  napi_value argv[5];
  getArgs(env, cb, argv, "gatedResidual");
  auto x = typedArg<float>(env, argv[0], "x");
  auto branch = typedArg<float>(env, argv[1], "branch");
  auto mod = typedArg<float>(env, argv[2], "mod");
  const GateDims g = gateDims(env, argv[3]);
  auto out = typedArg<float>(env, argv[4], "out");
  const int64_t size = g.n * g.s * g.c;
  requireFloats(x.length, size, "x"), requireFloats(branch.length, size, "branch"), requireFloats(out.length, size, "out");
  requireFloats(mod.length, g.n * g.width, "mod");
  // Ranges over all rows; each row finds its sample's gate.
  forRanges(g.n * g.s, g.c, [&](int64_t begin, int64_t end) {
    while (begin < end) {
      const int64_t b = begin / g.s, stop = std::min(end, (b + 1) * g.s);
      gateRows(x.data + begin * g.c, branch.data + begin * g.c, mod.data + b * g.width + g.offset, stop - begin, g.c, out.data + begin * g.c);
      begin = stop;
    }
  });
  return nullptr;
}

napi_value gatedResidualGradBinding(napi_env env, napi_callback_info cb) {
  napi_value argv[6];
  getArgs(env, cb, argv, "gatedResidualGrad");
  auto dy = typedArg<float>(env, argv[0], "dy");
  auto branch = typedArg<float>(env, argv[1], "branch");
  auto mod = typedArg<float>(env, argv[2], "mod");
  const GateDims g = gateDims(env, argv[3]);
  auto dbranch = typedArg<float>(env, argv[4], "dbranch");
  auto dmod = typedArg<float>(env, argv[5], "dmod");
  const int64_t size = g.n * g.s * g.c;
  requireFloats(dy.length, size, "dy"), requireFloats(branch.length, size, "branch"), requireFloats(dbranch.length, size, "dbranch");
  requireFloats(mod.length, g.n * g.width, "mod"), requireFloats(dmod.length, g.n * g.width, "dmod");
  const int64_t rows = g.n * g.s;
  const bool parallel = omp_get_max_threads() > 1 && size >= kParallelWork;
  const int threads = parallel ? omp_get_max_threads() : 1;
  // Per-thread sums of dy·branch per (sample, channel), added up after.
  std::vector<std::vector<double>> partial(threads, std::vector<double>(g.n * g.c, 0.0));
  auto body = [&](int64_t t, int64_t nt) {
    int64_t begin = rows * t / nt;
    const int64_t end = rows * (t + 1) / nt;
    while (begin < end) {
      const int64_t b = begin / g.s, stop = std::min(end, (b + 1) * g.s);
      gateGradRows(dy.data + begin * g.c, branch.data + begin * g.c, mod.data + b * g.width + g.offset, stop - begin, g.c, dbranch.data + begin * g.c,
                   partial[t].data() + b * g.c);
      begin = stop;
    }
  };
  if (parallel) {
#pragma omp parallel num_threads(threads)
    body(omp_get_thread_num(), omp_get_num_threads());
  } else {
    body(0, 1);
  }
  std::fill(dmod.data, dmod.data + g.n * g.width, 0.f);
  for (int64_t b = 0; b < g.n; ++b) {
    for (int64_t k = 0; k < g.c; ++k) {
      double sum = 0;
      for (int t = 0; t < threads; ++t) sum += partial[t][b * g.c + k];
      dmod.data[b * g.width + g.offset + k] = static_cast<float>(sum);
    }
  }
  return nullptr;
}

napi_value normModulateBinding(napi_env env, napi_callback_info cb) {
  napi_value argv[7];
  getArgs(env, cb, argv, "normModulate");
  auto x = typedArg<float>(env, argv[0], "x");
  const ModDims d = modDims(env, argv[1]);
  const float eps = static_cast<float>(doubleArg(env, argv[2], "eps"));
  auto mod = typedArg<float>(env, argv[3], "mod");
  auto y = typedArg<float>(env, argv[4], "y");
  auto mean = typedArg<float>(env, argv[5], "mean");
  auto rstd = typedArg<float>(env, argv[6], "rstd");
  requireFloats(x.length, d.size(), "x"), requireFloats(y.length, d.size(), "y");
  requireFloats(mod.length, d.n * d.width, "mod");
  requireFloats(mean.length, d.stats(), "mean"), requireFloats(rstd.length, d.stats(), "rstd");
  forward(d, eps, x.data, mod.data, y.data, mean.data, rstd.data);
  return nullptr;
}

napi_value normModulateGradBinding(napi_env env, napi_callback_info cb) {
  napi_value argv[8];
  getArgs(env, cb, argv, "normModulateGrad");
  auto dy = typedArg<float>(env, argv[0], "dy");
  auto x = typedArg<float>(env, argv[1], "x");
  const ModDims d = modDims(env, argv[2]);
  auto mod = typedArg<float>(env, argv[3], "mod");
  auto mean = typedArg<float>(env, argv[4], "mean");
  auto rstd = typedArg<float>(env, argv[5], "rstd");
  auto dx = typedArg<float>(env, argv[6], "dx");
  auto dmod = typedArg<float>(env, argv[7], "dmod");
  requireFloats(dy.length, d.size(), "dy"), requireFloats(x.length, d.size(), "x"), requireFloats(dx.length, d.size(), "dx");
  requireFloats(mod.length, d.n * d.width, "mod"), requireFloats(dmod.length, d.n * d.width, "dmod");
  requireFloats(mean.length, d.stats(), "mean"), requireFloats(rstd.length, d.stats(), "rstd");
  backward(d, dy.data, x.data, mod.data, mean.data, rstd.data, dx.data, dmod.data);
  return nullptr;
}

}  // namespace sfn
