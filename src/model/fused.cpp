// Fused batch norm + ReLU + 2x2 max pool for inert chains (see fused.h), AVX-512.
//
// Bit-exactness with the separate LibTorch ops: LibTorch 1.13's CPU batch norm (eval) computes
// alpha = invstd * w and beta = b - mean * alpha per channel, then y = x * alpha + beta, and its
// vectorised kernels are compiled with contraction, so beta and y are fused multiply-adds; this
// file does the same with explicit FMAs (tested: Fused.ChainsGiveTheBitsOfTheSeparateOps).
// ReLU keeps NaN; the max takes the first operand when it is greater or NaN, like quell's max
// pool.

#include "model/fused.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#define QUELL_FUSED_X86 1
#define QUELL_FUSED_AVX512 __attribute__((target("avx512f,avx512vl,avx512dq,avx512bw")))
#endif

namespace quell::detail {

namespace {

struct Plane {
  float alpha = 1.0f;
  float beta = 0.0f;
};

#ifdef QUELL_FUSED_X86

// relu, keeping NaN: v if v > 0 or v is NaN, else 0.
QUELL_FUSED_AVX512 inline __m512 relu16(__m512 v) {
  const __mmask16 keep = _mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_GT_OQ) |
                         _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
  return _mm512_maskz_mov_ps(keep, v);
}

// a if a > b or a is NaN, else b (the scalar pool's nan_max).
QUELL_FUSED_AVX512 inline __m512 nan_max16(__m512 a, __m512 b) {
  const __mmask16 take_a =
      _mm512_cmp_ps_mask(a, b, _CMP_GT_OQ) | _mm512_cmp_ps_mask(a, a, _CMP_UNORD_Q);
  return _mm512_mask_blend_ps(take_a, b, a);
}

// The chain on 16 values: noise (x + sigma n, the product rounded before the sum, as
// add_normal_'s scalar loop), batch norm, ReLU.
template <bool kNoise, bool kAffine, bool kRelu>
QUELL_FUSED_AVX512 inline __m512 transform16(__m512 v, __m512 n, __m512 sigma, __m512 alpha,
                                             __m512 beta) {
  if (kNoise) {
    __m512 scaled = _mm512_mul_ps(sigma, n);
    __asm__("" : "+v"(scaled));  // no contraction into an FMA
    v = _mm512_add_ps(v, scaled);
  }
  if (kAffine) v = _mm512_fmadd_ps(v, alpha, beta);
  if (kRelu) v = relu16(v);
  return v;
}

// The noise of 16 values at `offset` of the plane's normals (zeros when there is none).
template <bool kNoise>
QUELL_FUSED_AVX512 inline __m512 noise16(const float* nz, int64_t offset, __mmask16 m) {
  return kNoise ? _mm512_maskz_loadu_ps(m, nz + offset) : _mm512_setzero_ps();
}

inline __mmask16 first_lanes(int64_t n) {
  return n >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << n) - 1u);
}

// transform() of the 16 (masked) values of a plane at `offset`.
template <bool kNoise, bool kAffine, bool kRelu>
QUELL_FUSED_AVX512 inline __m512 load16(const float* in, const float* nz, int64_t offset,
                                        __mmask16 m, __m512 sigma, __m512 alpha, __m512 beta) {
  return transform16<kNoise, kAffine, kRelu>(_mm512_maskz_loadu_ps(m, in + offset),
                                             noise16<kNoise>(nz, offset, m), sigma, alpha, beta);
}

// Elementwise: out = transform(in) over one plane of `size` floats (nz: its normals).
template <bool kNoise, bool kAffine, bool kRelu>
QUELL_FUSED_AVX512 void map_plane(const float* in, const float* nz, float* out, int64_t size,
                                  Plane p, float sigma_f) {
  const __m512 alpha = _mm512_set1_ps(p.alpha), beta = _mm512_set1_ps(p.beta);
  const __m512 sigma = _mm512_set1_ps(sigma_f);
  for (int64_t i = 0; i < size; i += 16) {
    const __mmask16 m = first_lanes(size - i);
    const __m512 v = _mm512_maskz_loadu_ps(m, in + i);
    _mm512_mask_storeu_ps(
        out + i, m,
        transform16<kNoise, kAffine, kRelu>(v, noise16<kNoise>(nz, i, m), sigma, alpha, beta));
  }
}

// 2x2 max pool of transform(in) over one [h, w] plane into [h / 2, w / 2].
template <bool kNoise, bool kAffine, bool kRelu>
QUELL_FUSED_AVX512 void pool_plane(const float* in, const float* nz, float* out, int64_t h,
                                   int64_t w, Plane p, float sigma_f) {
  const __m512 alpha = _mm512_set1_ps(p.alpha), beta = _mm512_set1_ps(p.beta);
  const __m512 sigma = _mm512_set1_ps(sigma_f);
  // Even and odd lanes of the 32 floats (lo, hi).
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
  const int64_t oh = h / 2, ow = w / 2;
  for (int64_t y = 0; y < oh; ++y) {
    const int64_t r0 = 2 * y * w;
    const int64_t r1 = r0 + w;
    float* dst = out + y * ow;
    for (int64_t x = 0; x < ow; x += 16) {
      const int64_t outputs = std::min<int64_t>(16, ow - x);
      const int64_t inputs = 2 * outputs;  // input columns 2x .. 2x + inputs - 1
      const __mmask16 m_lo = first_lanes(inputs);
      const __mmask16 m_hi = first_lanes(inputs > 16 ? inputs - 16 : 0);
      const __m512 a_lo =
          load16<kNoise, kAffine, kRelu>(in, nz, r0 + 2 * x, m_lo, sigma, alpha, beta);
      const __m512 a_hi =
          load16<kNoise, kAffine, kRelu>(in, nz, r0 + 2 * x + 16, m_hi, sigma, alpha, beta);
      const __m512 b_lo =
          load16<kNoise, kAffine, kRelu>(in, nz, r1 + 2 * x, m_lo, sigma, alpha, beta);
      const __m512 b_hi =
          load16<kNoise, kAffine, kRelu>(in, nz, r1 + 2 * x + 16, m_hi, sigma, alpha, beta);
      // nan_max(nan_max(r0[2x], r0[2x+1]), nan_max(r1[2x], r1[2x+1])), as the scalar pool.
      const __m512 top = nan_max16(_mm512_permutex2var_ps(a_lo, even, a_hi),
                                   _mm512_permutex2var_ps(a_lo, odd, a_hi));
      const __m512 bottom = nan_max16(_mm512_permutex2var_ps(b_lo, even, b_hi),
                                      _mm512_permutex2var_ps(b_lo, odd, b_hi));
      _mm512_mask_storeu_ps(dst + x, first_lanes(outputs), nan_max16(top, bottom));
    }
  }
}

template <bool kNoise, bool kAffine, bool kRelu>
void run_planes(const float* in, float* out, const std::vector<Plane>& planes, int64_t n,
                int64_t h, int64_t w, bool pool, RngStream stream, float sigma) {
  const int64_t c = static_cast<int64_t>(planes.size());
  const int64_t in_size = h * w;
  const int64_t out_size = pool ? (h / 2) * (w / 2) : in_size;
  at::parallel_for(0, n * c, 16, [&](int64_t begin, int64_t end) {
    std::vector<float> normals(kNoise ? static_cast<size_t>(in_size) : 0);
    for (int64_t i = begin; i < end; ++i) {
      const Plane p = planes[static_cast<size_t>(i % c)];
      if (kNoise) normal_range(stream, i * in_size, in_size, normals.data());
      if (pool) {
        pool_plane<kNoise, kAffine, kRelu>(in + i * in_size, normals.data(), out + i * out_size,
                                           h, w, p, sigma);
      } else {
        map_plane<kNoise, kAffine, kRelu>(in + i * in_size, normals.data(), out + i * out_size,
                                          in_size, p, sigma);
      }
    }
  });
}

template <bool kNoise>
void run_chain_planes(bool affine, bool relu, const float* in, float* out,
                      const std::vector<Plane>& planes, int64_t n, int64_t h, int64_t w,
                      bool pool, RngStream stream, float sigma) {
  if (affine && relu) {
    run_planes<kNoise, true, true>(in, out, planes, n, h, w, pool, stream, sigma);
  } else if (affine) {
    run_planes<kNoise, true, false>(in, out, planes, n, h, w, pool, stream, sigma);
  } else if (relu) {
    run_planes<kNoise, false, true>(in, out, planes, n, h, w, pool, stream, sigma);
  } else {
    run_planes<kNoise, false, false>(in, out, planes, n, h, w, pool, stream, sigma);
  }
}

// ---- direct convolution ---------------------------------------------------------------------

// One image: `pad` holds its cin zero-padded planes of hp rows of wbuf floats; wpack the
// weights of CB output channels as [cin][k][k][CB]; out the CB output planes (oh x ow each).
// Output rows in chunks of 16 * XB columns, CB x XB accumulators in registers; each tap
// loads XB input vectors once and broadcasts CB weights.
template <int CB, int XB>
QUELL_FUSED_AVX512 void conv_image(const float* pad, int64_t cin, int64_t hp, int64_t wbuf,
                                   int64_t k, const float* wpack, const float* bias, float* out,
                                   int64_t oh, int64_t ow) {
  for (int64_t oy = 0; oy < oh; ++oy) {
    for (int64_t x0 = 0; x0 < ow; x0 += 16 * XB) {
      __m512 acc[CB][XB];
      for (int c = 0; c < CB; ++c) {
        for (int b = 0; b < XB; ++b) acc[c][b] = _mm512_set1_ps(bias ? bias[c] : 0.0f);
      }
      const float* w = wpack;
      for (int64_t ci = 0; ci < cin; ++ci) {
        for (int64_t ky = 0; ky < k; ++ky) {
          const float* row = pad + (ci * hp + oy + ky) * wbuf + x0;
          for (int64_t kx = 0; kx < k; ++kx, w += CB) {
            __m512 v[XB];
            for (int b = 0; b < XB; ++b) v[b] = _mm512_loadu_ps(row + kx + 16 * b);
            for (int c = 0; c < CB; ++c) {
              const __m512 wc = _mm512_set1_ps(w[c]);
              for (int b = 0; b < XB; ++b) acc[c][b] = _mm512_fmadd_ps(v[b], wc, acc[c][b]);
            }
          }
        }
      }
      for (int b = 0; b < XB; ++b) {
        const int64_t first = x0 + 16 * b;
        if (first >= ow) break;
        const __mmask16 m = first_lanes(ow - first);
        for (int c = 0; c < CB; ++c) {
          _mm512_mask_storeu_ps(out + c * oh * ow + oy * ow + first, m, acc[c][b]);
        }
      }
    }
  }
}

using ConvImageFn = void (*)(const float*, int64_t, int64_t, int64_t, int64_t, const float*,
                             const float*, float*, int64_t, int64_t);

template <int XB>
ConvImageFn conv_image_fn(int cb) {
  switch (cb) {
    case 1: return conv_image<1, XB>;
    case 2: return conv_image<2, XB>;
    case 3: return conv_image<3, XB>;
    case 4: return conv_image<4, XB>;
    case 5: return conv_image<5, XB>;
    case 6: return conv_image<6, XB>;
    case 7: return conv_image<7, XB>;
    default: return conv_image<8, XB>;
  }
}

#endif  // QUELL_FUSED_X86

// Per-channel alpha and beta of an eval-mode batch norm, as LibTorch computes them.
std::vector<Plane> batch_norm_terms(const torch::nn::BatchNorm2dImpl& bn) {
  const torch::Tensor mean = bn.running_mean.contiguous();
  const torch::Tensor var = bn.running_var.contiguous();
  const int64_t c = mean.numel();
  const float eps = static_cast<float>(bn.options.eps());
  const float* m = mean.data_ptr<float>();
  const float* v = var.data_ptr<float>();
  const torch::Tensor weight = bn.weight.defined() ? bn.weight.contiguous() : torch::Tensor();
  const torch::Tensor bias = bn.bias.defined() ? bn.bias.contiguous() : torch::Tensor();
  std::vector<Plane> planes(static_cast<size_t>(c));
  for (int64_t k = 0; k < c; ++k) {
    const float invstd = 1 / std::sqrt(v[k] + eps);
    const float w = weight.defined() ? weight.data_ptr<float>()[k] : 1.0f;
    const float b = bias.defined() ? bias.data_ptr<float>()[k] : 0.0f;
    Plane& p = planes[static_cast<size_t>(k)];
    p.alpha = invstd * w;
    p.beta = std::fma(-m[k], p.alpha, b);
  }
  return planes;
}

bool is_float(const torch::Tensor& t) {
  return t.defined() && t.scalar_type() == torch::kFloat && t.device().is_cpu();
}

}  // namespace

bool fused_kernels_available() {
#ifdef QUELL_FUSED_X86
  static const bool ok = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
                         __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bw");
  return ok;
#else
  return false;
#endif
}

bool fused_applies(const FusedChain& chain, const torch::Tensor& x) {
  if (!is_float(x) || x.dim() != 4 || !x.is_contiguous()) return false;
  if (chain.pool && (x.size(2) < 2 || x.size(3) < 2)) return false;
  if (chain.bn) {
    const auto& bn = *chain.bn;
    if (bn.is_training() || !is_float(bn.running_mean) || !is_float(bn.running_var)) return false;
    if (bn.running_mean.numel() != x.size(1)) return false;
    if (bn.weight.defined() && !is_float(bn.weight)) return false;
    if (bn.bias.defined() && !is_float(bn.bias)) return false;
  }
  return true;
}

torch::Tensor run_fused(const FusedChain& chain, const torch::Tensor& x) {
  TORCH_INTERNAL_ASSERT(fused_kernels_available() && fused_applies(chain, x));
  const int64_t n = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3);
  torch::Tensor out = chain.pool ? torch::empty({n, c, h / 2, w / 2}, x.options())
                                 : torch::empty_like(x, torch::MemoryFormat::Contiguous);
  if (x.numel() == 0) return out;
#ifdef QUELL_FUSED_X86
  const std::vector<Plane> planes =
      chain.bn ? batch_norm_terms(*chain.bn) : std::vector<Plane>(static_cast<size_t>(c));
  const float* in = x.data_ptr<float>();
  float* dst = out.data_ptr<float>();
  const bool affine = chain.bn != nullptr;
  const float sigma = static_cast<float>(chain.sigma);  // as add_normal_'s kernel
  if (chain.noise) {
    run_chain_planes<true>(affine, chain.relu, in, dst, planes, n, h, w, chain.pool,
                           chain.stream, sigma);
  } else {
    run_chain_planes<false>(affine, chain.relu, in, dst, planes, n, h, w, chain.pool,
                            chain.stream, sigma);
  }
#endif
  return out;
}

constexpr int kConvChannelBlock = 8;  // output channels per pass over an image's rows

bool direct_conv_applies(const torch::Tensor& x, const torch::Tensor& weight,
                         const torch::Tensor& bias, at::IntArrayRef stride,
                         at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  if (!fused_kernels_available()) return false;
  auto all = [](at::IntArrayRef v, int64_t value) {
    return v.size() == 2 && v[0] == value && v[1] == value;
  };
  if (!all(stride, 1) || !all(dilation, 1) || groups != 1) return false;
  if (padding.size() != 2 || padding[0] != padding[1]) return false;
  if (!is_float(x) || x.dim() != 4 || !is_float(weight) || weight.dim() != 4) return false;
  if (bias.defined() && (!is_float(bias) || bias.numel() != weight.size(0))) return false;
  const int64_t k = weight.size(2), p = padding[0];
  if (weight.size(3) != k || k < 1 || k > 7 || p < 0 || p >= k) return false;
  const int64_t cin = weight.size(1);
  if (cin > 4 || x.size(1) != cin || weight.size(0) < 1) return false;
  if (x.size(2) + 2 * p < k || x.size(3) + 2 * p < k) return false;
  if (torch::GradMode::is_enabled() &&
      (x.requires_grad() || weight.requires_grad() || (bias.defined() && bias.requires_grad()))) {
    return false;
  }
  return true;
}

torch::Tensor direct_conv2d(const torch::Tensor& input, const torch::Tensor& weight_in,
                            const torch::Tensor& bias_in, int64_t padding) {
  const torch::Tensor x = input.contiguous();
  const int64_t n = x.size(0), cin = x.size(1), h = x.size(2), w = x.size(3);
  const int64_t cout = weight_in.size(0);
  const int64_t k = weight_in.size(2), p = padding;
  const int64_t oh = h + 2 * p - k + 1, ow = w + 2 * p - k + 1;
  torch::Tensor out = torch::empty({n, cout, oh, ow}, x.options());
  if (out.numel() == 0) return out;
#ifdef QUELL_FUSED_X86
  const int xb = ow > 16 ? 2 : 1;
  const int64_t chunk = 16 * xb;
  const int64_t hp = h + 2 * p;
  const int64_t wbuf = (ow + chunk - 1) / chunk * chunk + k - 1;  // every vector load in bounds
  // Weights as [block][cin][k][k][cb] (cb = the block's channels), bias per block.
  const torch::Tensor weight = weight_in.contiguous();
  const float* wsrc = weight.data_ptr<float>();
  const int64_t blocks = (cout + kConvChannelBlock - 1) / kConvChannelBlock;
  std::vector<float> wpack(static_cast<size_t>(blocks * kConvChannelBlock * cin * k * k));
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t c0 = b * kConvChannelBlock;
    const int64_t cb = std::min<int64_t>(kConvChannelBlock, cout - c0);
    float* dst = wpack.data() + c0 * cin * k * k;
    for (int64_t t = 0; t < cin * k * k; ++t) {
      for (int64_t c = 0; c < cb; ++c) dst[t * cb + c] = wsrc[(c0 + c) * cin * k * k + t];
    }
  }
  const torch::Tensor bias = bias_in.defined() ? bias_in.contiguous() : torch::Tensor();
  const float* bsrc = bias.defined() ? bias.data_ptr<float>() : nullptr;
  const float* xs = x.data_ptr<float>();
  float* ys = out.data_ptr<float>();
  at::parallel_for(0, n, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> pad(static_cast<size_t>(cin * hp * wbuf), 0.0f);  // borders stay 0
    for (int64_t i = begin; i < end; ++i) {
      for (int64_t ci = 0; ci < cin; ++ci) {
        for (int64_t y = 0; y < h; ++y) {
          std::copy_n(xs + ((i * cin + ci) * h + y) * w, w,
                      pad.data() + (ci * hp + y + p) * wbuf + p);
        }
      }
      for (int64_t b = 0; b < blocks; ++b) {
        const int64_t c0 = b * kConvChannelBlock;
        const int cb = static_cast<int>(std::min<int64_t>(kConvChannelBlock, cout - c0));
        const ConvImageFn fn = xb == 2 ? conv_image_fn<2>(cb) : conv_image_fn<1>(cb);
        fn(pad.data(), cin, hp, wbuf, k, wpack.data() + c0 * cin * k * k,
           bsrc ? bsrc + c0 : nullptr, ys + (i * cout + c0) * oh * ow, oh, ow);
      }
    }
  });
#endif
  return out;
}

}  // namespace quell::detail
