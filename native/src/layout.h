// Data movement the tfjs cpu backend does element by element in JS (Transpose, Concat, SplitV,
// Tile, PadV2): plain copy loops over dense row-major float32 arrays, split across OpenMP
// threads above a size threshold. Every function expects non-empty, consistent shapes (the
// N-API layer checks buffer lengths first).
#pragma once
#include <cstdint>
#include <vector>

namespace sfn {

// out = x.transpose(perm): out's dim i is x's dim perm[i].
void transposeCopy(const float* x, const std::vector<int64_t>& shape, const std::vector<int64_t>& perm, float* out);

// Concatenation seen as `outer` rows: row o of the output is row o of each input in turn, where
// input k's rows hold runs[k] values (its size along the axis times the inner size).
void concatRows(const std::vector<const float*>& inputs, const std::vector<int64_t>& runs, int64_t outer, float* out);

// The inverse of concatRows: row o of x (sum(runs) values) is cut into one run per output.
void splitRows(const float* x, const std::vector<int64_t>& runs, int64_t outer, const std::vector<float*>& outputs);

// out = x repeated reps[i] times along each dim i.
void tileCopy(const float* x, const std::vector<int64_t>& shape, const std::vector<int64_t>& reps, float* out);

// out = x with before[i] / after[i] entries of `value` added on each side of dim i.
void padConstant(const float* x, const std::vector<int64_t>& shape, const std::vector<int64_t>& before, const std::vector<int64_t>& after,
                 float value, float* out);

}  // namespace sfn
