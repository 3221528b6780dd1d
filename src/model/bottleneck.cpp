// The bottleneck denoising block in one pass per image, forward and backward (see bottleneck.h).
//
// Per image (C channels of P = H*W positions, m = the block's width): a = reduce(x) and
// h1 = relu(a) (m planes), b = mid(h1) and h2 = relu(b) (m planes), y = x + expand(h2). An image
// of a lenet5-bn conv site (6 x 28 x 28 floats, 19 KB) stays in the first-level cache through all
// of it. Training saves h1 and h2 (m planes each) for the backward pass, which runs the chain
// backwards per image, again in one pass, and writes each image's parameter gradients to a row;
// the rows are summed in image order, so gradients do not depend on the number of threads.
// ReLU keeps NaN (as torch::relu), and its backward passes the gradient where the output is > 0
// (as LibTorch's threshold_backward).

#include "model/bottleneck.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstring>
#include <vector>

namespace quell::detail {
namespace {

struct Block {
  int64_t c = 0, m = 0, h = 0, w = 0;
  const float *wr = nullptr, *br = nullptr;  // [m, C], [m]
  const float *wm = nullptr, *bm = nullptr;  // [m, m, 3, 3], [m]
  const float *we = nullptr, *be = nullptr;  // [C, m], [C]

  int64_t plane() const { return h * w; }
  int64_t padded_width() const { return w + 2; }
  int64_t padded_plane() const { return (h + 2) * (w + 2); }
  // One image's parameter gradients, in the order reduce.w, reduce.b, mid.w, mid.b, expand.w,
  // expand.b.
  int64_t params() const { return m * c + m + 9 * m * m + m + c * m + c; }
  int64_t most_taps() const { return std::max({c, 9 * m, m + 1}); }
};

Block block_of(const torch::Tensor& x, const torch::Tensor& wr, const torch::Tensor& br,
               const torch::Tensor& wm, const torch::Tensor& bm, const torch::Tensor& we,
               const torch::Tensor& be) {
  Block k;
  k.c = x.size(1);
  k.m = wr.size(0);
  k.h = x.size(2);
  k.w = x.size(3);
  k.wr = wr.data_ptr<float>();
  k.br = br.data_ptr<float>();
  k.wm = wm.data_ptr<float>();
  k.bm = bm.data_ptr<float>();
  k.we = we.data_ptr<float>();
  k.be = be.data_ptr<float>();
  return k;
}

inline float relu(float v) { return v < 0.0f ? 0.0f : v; }  // NaN stays NaN

// Taps of a weighted sum: source planes and their weights (combine()).
struct Taps {
  std::vector<const float*> src;
  std::vector<float> w;
  int64_t n = 0;
  explicit Taps(int64_t most) : src(static_cast<size_t>(most)), w(static_cast<size_t>(most)) {}
  void clear() { n = 0; }
  void add(const float* s, float weight) {
    src[static_cast<size_t>(n)] = s;
    w[static_cast<size_t>(n)] = weight;
    ++n;
  }
};

// out[q] = bias + sum_t w[t] src[t][q] for q < n, the taps added in order at every position;
// sixteen positions at a time, their sums held in registers across the taps.
void combine(float* __restrict out, float bias, const Taps& taps, int64_t n) {
  constexpr int64_t kLanes = 16;
  const float* const* src = taps.src.data();
  const float* w = taps.w.data();
  int64_t q = 0;
  for (; q + kLanes <= n; q += kLanes) {
    float acc[kLanes];
    for (int64_t l = 0; l < kLanes; ++l) acc[l] = bias;
    for (int64_t t = 0; t < taps.n; ++t) {
      const float wt = w[t];
      const float* s = src[t] + q;
      for (int64_t l = 0; l < kLanes; ++l) acc[l] += wt * s[l];
    }
    for (int64_t l = 0; l < kLanes; ++l) out[q + l] = acc[l];
  }
  for (; q < n; ++q) {
    float a = bias;
    for (int64_t t = 0; t < taps.n; ++t) a += w[t] * src[t][q];
    out[q] = a;
  }
}

// Sums in eight lanes (vectorisable without reassociating a single accumulator).
inline float dot(const float* __restrict a, const float* __restrict b, int64_t n) {
  float lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    for (int l = 0; l < 8; ++l) lane[l] += a[i + l] * b[i + l];
  }
  float s = 0.0f;
  for (; i < n; ++i) s += a[i] * b[i];
  for (int l = 0; l < 8; ++l) s += lane[l];
  return s;
}

inline float sum(const float* __restrict a, int64_t n) {
  float lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    for (int l = 0; l < 8; ++l) lane[l] += a[i + l];
  }
  float s = 0.0f;
  for (; i < n; ++i) s += a[i];
  for (int l = 0; l < 8; ++l) s += lane[l];
  return s;
}

// m planes [H][W] into the interior of m padded planes [H+2][W+2] (their border stays zero).
void pad_planes(const Block& k, const float* planes, float* pad) {
  const int64_t pw = k.padded_width(), pp = k.padded_plane(), p = k.plane();
  for (int64_t i = 0; i < k.m; ++i) {
    for (int64_t y = 0; y < k.h; ++y) {
      std::memcpy(pad + i * pp + (y + 1) * pw + 1, planes + i * p + y * k.w,
                  static_cast<size_t>(k.w) * sizeof(float));
    }
  }
}

// One image forward: h1, h2 (m planes each) and y (C planes); pad: m padded planes, zero border;
// acc: one padded plane.
void forward_image(const Block& k, const float* x, float* h1, float* h2, float* y, float* pad,
                   float* acc, Taps& taps) {
  const int64_t p = k.plane(), pw = k.padded_width(), pp = k.padded_plane();
  for (int64_t j = 0; j < k.m; ++j) {
    taps.clear();
    for (int64_t c = 0; c < k.c; ++c) taps.add(x + c * p, k.wr[j * k.c + c]);
    float* a = h1 + j * p;
    combine(a, k.br[j], taps, p);
    for (int64_t q = 0; q < p; ++q) a[q] = relu(a[q]);
  }
  // The 3x3 convolution over the padded planes as flat arrays: output position q (padded
  // coordinates) reads q + (ky - 1) * pw + (kx - 1), one long vectorisable loop; the border
  // positions in between compute garbage that is not copied out.
  pad_planes(k, h1, pad);
  const int64_t first = pw + 1, span = (k.h - 1) * pw + k.w;
  for (int64_t j = 0; j < k.m; ++j) {
    taps.clear();
    for (int64_t i = 0; i < k.m; ++i) {
      for (int64_t ky = 0; ky < 3; ++ky) {
        for (int64_t kx = 0; kx < 3; ++kx) {
          taps.add(pad + i * pp + first + (ky - 1) * pw + (kx - 1),
                   k.wm[((j * k.m + i) * 3 + ky) * 3 + kx]);
        }
      }
    }
    combine(acc, k.bm[j], taps, span);
    float* b = h2 + j * p;
    for (int64_t r = 0; r < k.h; ++r) {
      for (int64_t s = 0; s < k.w; ++s) b[r * k.w + s] = relu(acc[r * pw + s]);
    }
  }
  for (int64_t c = 0; c < k.c; ++c) {
    taps.clear();
    taps.add(x + c * p, 1.0f);
    for (int64_t j = 0; j < k.m; ++j) taps.add(h2 + j * p, k.we[c * k.m + j]);
    combine(y + c * p, k.be[c], taps, p);
  }
}

// One image backward from g = dL/dy: dx (C planes, or null) and the image's parameter
// gradients (grads, Block::params() floats). Scratch: db and da (m planes each), pad1 and padb
// (m padded planes each, zero border), acc (one padded plane), taps.
void backward_image(const Block& k, const float* x, const float* h1, const float* h2,
                    const float* g, float* dx, float* grads, float* db, float* da, float* pad1,
                    float* padb, float* acc, Taps& taps) {
  const int64_t p = k.plane(), pw = k.padded_width(), pp = k.padded_plane();
  float* g_wr = grads;
  float* g_br = g_wr + k.m * k.c;
  float* g_wm = g_br + k.m;
  float* g_bm = g_wm + 9 * k.m * k.m;
  float* g_we = g_bm + k.m;
  float* g_be = g_we + k.c * k.m;
  // expand: y = x + We h2 + be
  for (int64_t c = 0; c < k.c; ++c) {
    const float* gc = g + c * p;
    g_be[c] = sum(gc, p);
    for (int64_t j = 0; j < k.m; ++j) g_we[c * k.m + j] = dot(gc, h2 + j * p, p);
  }
  for (int64_t j = 0; j < k.m; ++j) {  // db = (We^T g) where h2 > 0
    float* d = db + j * p;
    taps.clear();
    for (int64_t c = 0; c < k.c; ++c) taps.add(g + c * p, k.we[c * k.m + j]);
    combine(d, 0.0f, taps, p);
    const float* h = h2 + j * p;
    for (int64_t q = 0; q < p; ++q) d[q] = h[q] > 0.0f ? d[q] : 0.0f;
    g_bm[j] = sum(d, p);
  }
  // mid: b[j](r, s) = bm[j] + sum_i,ky,kx wm[j,i,ky,kx] h1pad[i](r + ky, s + kx). In padded
  // coordinates (q = (r + 1) * pw + s + 1, flat over the planes as in forward_image) with db
  // padded too, whose zero border makes the positions between rows add nothing:
  // dwm[j,i,ky,kx] = sum_q dbpad[j](q) h1pad[i](q + (ky - 1) * pw + kx - 1) and
  // dh1pad[i](q) = sum_j,ky,kx wm[j,i,ky,kx] dbpad[j](q + (1 - ky) * pw + 1 - kx).
  pad_planes(k, h1, pad1);
  pad_planes(k, db, padb);
  const int64_t first = pw + 1, span = (k.h - 1) * pw + k.w;
  for (int64_t j = 0; j < k.m; ++j) {
    const float* d = padb + j * pp + first;
    for (int64_t i = 0; i < k.m; ++i) {
      for (int64_t ky = 0; ky < 3; ++ky) {
        for (int64_t kx = 0; kx < 3; ++kx) {
          g_wm[((j * k.m + i) * 3 + ky) * 3 + kx] =
              dot(d, pad1 + i * pp + first + (ky - 1) * pw + (kx - 1), span);
        }
      }
    }
  }
  for (int64_t i = 0; i < k.m; ++i) {
    taps.clear();
    for (int64_t j = 0; j < k.m; ++j) {
      for (int64_t ky = 0; ky < 3; ++ky) {
        for (int64_t kx = 0; kx < 3; ++kx) {
          taps.add(padb + j * pp + first + (1 - ky) * pw + (1 - kx),
                   k.wm[((j * k.m + i) * 3 + ky) * 3 + kx]);
        }
      }
    }
    combine(acc, 0.0f, taps, span);
    float* a = da + i * p;
    const float* h = h1 + i * p;
    for (int64_t r = 0; r < k.h; ++r) {
      for (int64_t s = 0; s < k.w; ++s) {
        a[r * k.w + s] = h[r * k.w + s] > 0.0f ? acc[r * pw + s] : 0.0f;
      }
    }
  }
  // reduce: a = Wr x + br
  for (int64_t j = 0; j < k.m; ++j) {
    const float* a = da + j * p;
    g_br[j] = sum(a, p);
    for (int64_t c = 0; c < k.c; ++c) g_wr[j * k.c + c] = dot(a, x + c * p, p);
  }
  if (dx == nullptr) return;
  for (int64_t c = 0; c < k.c; ++c) {
    taps.clear();
    taps.add(g + c * p, 1.0f);
    for (int64_t j = 0; j < k.m; ++j) taps.add(da + j * p, k.wr[j * k.c + c]);
    combine(dx + c * p, 0.0f, taps, p);
  }
}

// y, and h1 and h2 when `keep` (training), for every image; images run in parallel.
torch::Tensor forward_all(const torch::Tensor& x, const torch::Tensor& wr, const torch::Tensor& br,
                          const torch::Tensor& wm, const torch::Tensor& bm,
                          const torch::Tensor& we, const torch::Tensor& be, torch::Tensor* h1,
                          torch::Tensor* h2) {
  const Block k = block_of(x, wr, br, wm, bm, we, be);
  const int64_t n = x.size(0), p = k.plane();
  torch::Tensor y = torch::empty_like(x);
  const bool keep = h1 != nullptr;
  if (keep) {
    *h1 = torch::empty({n, k.m, k.h, k.w}, x.options());
    *h2 = torch::empty({n, k.m, k.h, k.w}, x.options());
  }
  const float* xs = x.data_ptr<float>();
  float* ys = y.data_ptr<float>();
  float* h1s = keep ? h1->data_ptr<float>() : nullptr;
  float* h2s = keep ? h2->data_ptr<float>() : nullptr;
  at::parallel_for(0, n, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> pad(static_cast<size_t>(k.m * k.padded_plane()), 0.0f);
    std::vector<float> acc(static_cast<size_t>(k.padded_plane()));
    Taps taps(k.most_taps());
    std::vector<float> scratch(keep ? 0 : static_cast<size_t>(2 * k.m * p));
    for (int64_t i = begin; i < end; ++i) {
      float* a = keep ? h1s + i * k.m * p : scratch.data();
      float* b = keep ? h2s + i * k.m * p : scratch.data() + k.m * p;
      forward_image(k, xs + i * k.c * p, a, b, ys + i * k.c * p, pad.data(), acc.data(), taps);
    }
  });
  return y;
}

class BottleneckFunction : public torch::autograd::Function<BottleneckFunction> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x,
                               const torch::Tensor& wr, const torch::Tensor& br,
                               const torch::Tensor& wm, const torch::Tensor& bm,
                               const torch::Tensor& we, const torch::Tensor& be) {
    torch::Tensor h1, h2;
    torch::Tensor y = forward_all(x, wr, br, wm, bm, we, be, &h1, &h2);
    ctx->save_for_backward({x, h1, h2, wr, br, wm, bm, we, be});
    return y;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const torch::Tensor &x = saved[0], &h1 = saved[1], &h2 = saved[2];
    const Block k = block_of(x, saved[3], saved[4], saved[5], saved[6], saved[7], saved[8]);
    const torch::Tensor g = grad_outputs[0].to(torch::kFloat).contiguous();
    const int64_t n = x.size(0), p = k.plane(), np = k.params();
    const bool want_dx = ctx->needs_input_grad(0);
    torch::Tensor dx = want_dx ? torch::empty_like(x) : torch::Tensor();
    torch::Tensor rows = torch::empty({n, np}, x.options());
    const float *xs = x.data_ptr<float>(), *h1s = h1.data_ptr<float>(),
                *h2s = h2.data_ptr<float>(), *gs = g.data_ptr<float>();
    float* dxs = want_dx ? dx.data_ptr<float>() : nullptr;
    float* rs = rows.data_ptr<float>();
    at::parallel_for(0, n, 1, [&](int64_t begin, int64_t end) {
      std::vector<float> planes(static_cast<size_t>(2 * k.m * p));
      std::vector<float> pads(static_cast<size_t>(2 * k.m * k.padded_plane()), 0.0f);
      std::vector<float> acc(static_cast<size_t>(k.padded_plane()));
      Taps taps(k.most_taps());
      for (int64_t i = begin; i < end; ++i) {
        backward_image(k, xs + i * k.c * p, h1s + i * k.m * p, h2s + i * k.m * p,
                       gs + i * k.c * p, want_dx ? dxs + i * k.c * p : nullptr, rs + i * np,
                       planes.data(), planes.data() + k.m * p, pads.data(),
                       pads.data() + k.m * k.padded_plane(), acc.data(), taps);
      }
    });
    // Summed over images in order: the same bits for any number of threads.
    const torch::Tensor total = rows.sum(0);
    int64_t at = 0;
    auto take = [&](const torch::Tensor& like) {
      torch::Tensor t = total.narrow(0, at, like.numel()).view(like.sizes());
      at += like.numel();
      return t;
    };
    torch::Tensor g_wr = take(saved[3]), g_br = take(saved[4]), g_wm = take(saved[5]),
                  g_bm = take(saved[6]), g_we = take(saved[7]), g_be = take(saved[8]);
    return {dx, g_wr, g_br, g_wm, g_bm, g_we, g_be};
  }
};

bool is_float_cpu(const torch::Tensor& t) {
  return t.defined() && t.is_cpu() && t.scalar_type() == torch::kFloat && t.is_contiguous();
}

}  // namespace

bool bottleneck_applies(const torch::Tensor& x, const torch::Tensor& reduce_w,
                        const torch::Tensor& reduce_b, const torch::Tensor& mid_w,
                        const torch::Tensor& mid_b, const torch::Tensor& expand_w,
                        const torch::Tensor& expand_b) {
  for (const auto* t : {&x, &reduce_w, &reduce_b, &mid_w, &mid_b, &expand_w, &expand_b}) {
    if (!is_float_cpu(*t)) return false;
  }
  if (x.dim() != 4 || x.size(0) == 0) return false;
  const int64_t c = x.size(1), m = reduce_w.size(0);
  // Where it is faster than LibTorch's operators (bench_blocks, docs/bench.md): narrow blocks.
  // Above m = 4 (measured at 8 and 16), and at m = 4 on planes below 10 x 10, oneDNN's
  // convolutions win.
  if (m > 4 || (m > 2 && x.size(2) * x.size(3) < 100)) return false;
  return reduce_w.sizes() == at::IntArrayRef{m, c, 1, 1} &&
         reduce_b.sizes() == at::IntArrayRef{m} && mid_w.sizes() == at::IntArrayRef{m, m, 3, 3} &&
         mid_b.sizes() == at::IntArrayRef{m} && expand_w.sizes() == at::IntArrayRef{c, m, 1, 1} &&
         expand_b.sizes() == at::IntArrayRef{c};
}

torch::Tensor bottleneck_block(const torch::Tensor& x, const torch::Tensor& reduce_w,
                               const torch::Tensor& reduce_b, const torch::Tensor& mid_w,
                               const torch::Tensor& mid_b, const torch::Tensor& expand_w,
                               const torch::Tensor& expand_b) {
  bool grad = false;
  if (torch::GradMode::is_enabled()) {
    for (const auto* t : {&x, &reduce_w, &reduce_b, &mid_w, &mid_b, &expand_w, &expand_b}) {
      grad |= t->requires_grad();
    }
  }
  if (grad) {
    return BottleneckFunction::apply(x, reduce_w, reduce_b, mid_w, mid_b, expand_w, expand_b);
  }
  return forward_all(x, reduce_w, reduce_b, mid_w, mid_b, expand_w, expand_b, nullptr, nullptr);
}

}  // namespace quell::detail
