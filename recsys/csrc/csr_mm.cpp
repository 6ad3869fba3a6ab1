// Sparse (CSR, float32) x dense (float32, row-major) products for graph propagation on the CPU.
//
// Each output row is a weighted sum of rows of x. With 64-wide embeddings a row of x is four
// 16-float vectors, so one output row is accumulated in four registers (two for 32 wide, one for
// 16) while the row's stored entries are walked, and the x rows a few entries ahead are
// prefetched: the work is a chain of gathers from x, and hiding their latency is what matters. Rows are handed to threads in small
// dynamic chunks, because degrees in interaction graphs are skewed.
//
//   rows_mm(crow, col, val, x, rows, out):   out[l] = A[rows[l]] x   (every row when rows is empty)
//   masked_mm(crow, col, val, local, h, out): out[i] = sum over row i's entries whose column c has
//                                             local[c] >= 0 of val * h[local[c]]
//
// masked_mm is A y for a y that is zero except at a few rows (h placed at the rows c with
// local[c] >= 0) without materialising y. The sum over a row's entries runs in storage order.
//
//   gather_dot(q, table, idx):               out[b, m] = q[b] . table[idx[b, m]]
//
// gather_dot scores many candidates per query (a hard-negative sampler's inner loop) without
// copying the candidates' rows out of the table first.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <omp.h>
#ifdef __AVX512F__
#include <immintrin.h>
#endif

namespace {

constexpr int64_t kAhead = 8;  // entries to look ahead when prefetching rows of x

#ifdef __AVX512F__
// Columns c .. c + 16 V - 1 of out_row = the sum over entries j in [s, e) (where pick(j) >= 0) of
// val[j] * src[pick(j)], held in V 16-float registers while the entries are walked; the same
// columns of the rows kAhead entries on are prefetched (V cache lines).
template <int V, typename Pick>
inline void block(const float* val, const float* src, int64_t d, int64_t c, int64_t s, int64_t e,
                  Pick pick, float* out_row) {
  __m512 a[V];
  for (int k = 0; k < V; ++k) a[k] = _mm512_setzero_ps();
  for (int64_t j = s; j < e; ++j) {
    if (j + kAhead < e) {
      const int64_t ahead = pick(j + kAhead);
      if (ahead >= 0) {
        const char* p = reinterpret_cast<const char*>(src + ahead * d + c);
        for (int k = 0; k < V; ++k) __builtin_prefetch(p + 64 * k);
      }
    }
    const int64_t r = pick(j);
    if (r < 0) continue;
    const float* x = src + r * d + c;
    const __m512 v = _mm512_set1_ps(val[j]);
    for (int k = 0; k < V; ++k) a[k] = _mm512_fmadd_ps(v, _mm512_loadu_ps(x + 16 * k), a[k]);
  }
  for (int k = 0; k < V; ++k) _mm512_storeu_ps(out_row + c + 16 * k, a[k]);
}
#endif

// out_row = sum over entries j in [s, e) (where pick(j) >= 0) of val[j] * src[pick(j)], d floats:
// 64 columns at a time, then 32, then 16 (a worker's block of a split table is often 32 or 16
// wide: recsys/dist.py), then plain loops for what is left.
template <typename Pick>
inline void accumulate(const float* val, const float* src, int64_t d, int64_t s, int64_t e,
                       Pick pick, float* out_row) {
  int64_t c = 0;
#ifdef __AVX512F__
  for (; c + 64 <= d; c += 64) block<4>(val, src, d, c, s, e, pick, out_row);
  if (c + 32 <= d) {
    block<2>(val, src, d, c, s, e, pick, out_row);
    c += 32;
  }
  if (c + 16 <= d) {
    block<1>(val, src, d, c, s, e, pick, out_row);
    c += 16;
  }
#endif
  if (c < d) {  // what is left of the width (all of it without AVX-512): plain loops
    float* o = out_row + c;
    const int64_t w = d - c;
    for (int64_t t = 0; t < w; ++t) o[t] = 0.f;
    for (int64_t j = s; j < e; ++j) {
      const int64_t r = pick(j);
      if (r < 0) continue;
      const float* x = src + r * d + c;
      const float v = val[j];
#pragma omp simd
      for (int64_t t = 0; t < w; ++t) o[t] += v * x[t];
    }
  }
}

void check(const torch::Tensor& crow, const torch::Tensor& col, const torch::Tensor& val,
           const torch::Tensor& dense, const torch::Tensor& out) {
  TORCH_CHECK(crow.dtype() == torch::kInt64 && col.dtype() == torch::kInt64, "indices must be int64");
  TORCH_CHECK(val.dtype() == torch::kFloat32 && dense.dtype() == torch::kFloat32 &&
                  out.dtype() == torch::kFloat32, "values must be float32");
  TORCH_CHECK(crow.is_contiguous() && col.is_contiguous() && val.is_contiguous() &&
                  dense.is_contiguous() && out.is_contiguous(), "tensors must be contiguous");
  TORCH_CHECK(dense.dim() == 2 && out.dim() == 2 && dense.size(1) == out.size(1), "widths differ");
}

// out row l = the (picked) entries of A's row row_of(l) times rows of src, for l < out.size(0).
template <typename RowOf, typename Pick>
torch::Tensor row_sums(const torch::Tensor& crow, const torch::Tensor& val, const torch::Tensor& src,
                       torch::Tensor out, RowOf row_of, Pick pick) {
  const int64_t m = out.size(0), d = src.size(1);
  const int64_t* cp = crow.data_ptr<int64_t>();
  const float* vp = val.data_ptr<float>();
  const float* sp = src.data_ptr<float>();
  float* op = out.data_ptr<float>();
  const int threads = at::get_num_threads();
#pragma omp parallel for num_threads(threads) schedule(dynamic, 64)
  for (int64_t l = 0; l < m; ++l) {
    const int64_t i = row_of(l);
    accumulate(vp, sp, d, cp[i], cp[i + 1], pick, op + l * d);
  }
  return out;
}

}  // namespace

torch::Tensor rows_mm(torch::Tensor crow, torch::Tensor col, torch::Tensor val, torch::Tensor x,
                      torch::Tensor rows, torch::Tensor out) {
  check(crow, col, val, x, out);
  const bool all = rows.numel() == 0;
  const int64_t m = all ? crow.size(0) - 1 : rows.size(0);
  TORCH_CHECK(out.size(0) == m, "out has ", out.size(0), " rows, expected ", m);
  const int64_t* ci = col.data_ptr<int64_t>();
  const int64_t* rp = all ? nullptr : rows.data_ptr<int64_t>();
  return row_sums(crow, val, x, out, [rp](int64_t l) { return rp ? rp[l] : l; },
                  [ci](int64_t j) { return ci[j]; });
}

torch::Tensor masked_mm(torch::Tensor crow, torch::Tensor col, torch::Tensor val, torch::Tensor local,
                        torch::Tensor h, torch::Tensor out) {
  check(crow, col, val, h, out);
  TORCH_CHECK(local.dtype() == torch::kInt64 && local.is_contiguous(), "local must be contiguous int64");
  TORCH_CHECK(out.size(0) == crow.size(0) - 1, "out has ", out.size(0), " rows, expected ", crow.size(0) - 1);
  const int64_t* ci = col.data_ptr<int64_t>();
  const int64_t* lp = local.data_ptr<int64_t>();
  return row_sums(crow, val, h, out, [](int64_t l) { return l; }, [ci, lp](int64_t j) { return lp[ci[j]]; });
}

torch::Tensor gather_dot(torch::Tensor q, torch::Tensor table, torch::Tensor idx) {
  TORCH_CHECK(q.dtype() == torch::kFloat32 && table.dtype() == torch::kFloat32, "values must be float32");
  TORCH_CHECK(idx.dtype() == torch::kInt64, "indices must be int64");
  TORCH_CHECK(q.is_contiguous() && table.is_contiguous() && idx.is_contiguous(), "tensors must be contiguous");
  TORCH_CHECK(q.dim() == 2 && table.dim() == 2 && idx.dim() == 2 && q.size(1) == table.size(1) &&
                  idx.size(0) == q.size(0), "shapes: q (B, d), table (N, d), idx (B, M)");
  const int64_t b_count = idx.size(0), m = idx.size(1), d = q.size(1);
  auto out = torch::empty({b_count, m}, q.options());
  const float* qp = q.data_ptr<float>();
  const float* tp = table.data_ptr<float>();
  const int64_t* ip = idx.data_ptr<int64_t>();
  float* op = out.data_ptr<float>();
  const int threads = at::get_num_threads();
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t b = 0; b < b_count; ++b) {
    const float* qb = qp + b * d;
    const int64_t* ib = ip + b * m;
    for (int64_t j = 0; j < m; ++j) {
      if (j + kAhead < m) {
        const char* p = reinterpret_cast<const char*>(tp + ib[j + kAhead] * d);
        for (int64_t c = 0; c < d; c += 16) __builtin_prefetch(p + 4 * c);
      }
      const float* row = tp + ib[j] * d;
      int64_t c = 0;
      float sum = 0.f;
#ifdef __AVX512F__
      __m512 acc = _mm512_setzero_ps();
      for (; c + 16 <= d; c += 16) acc = _mm512_fmadd_ps(_mm512_loadu_ps(qb + c), _mm512_loadu_ps(row + c), acc);
      sum = _mm512_reduce_add_ps(acc);
#endif
      for (; c < d; ++c) sum += qb[c] * row[c];
      op[b * m + j] = sum;
    }
  }
  return out;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("rows_mm", &rows_mm, "out[l] = A[rows[l]] x for a CSR A (every row when rows is empty)");
  m.def("gather_dot", &gather_dot, "out[b, m] = q[b] . table[idx[b, m]]");
  m.def("masked_mm", &masked_mm, "A y for y zero except rows c with local[c] >= 0, where it is h[local[c]]");
}
