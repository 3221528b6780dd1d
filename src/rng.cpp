// Counter-based Gaussian noise: Philox4x32-10 + Box-Muller, vectorised, thread-count invariant.
//
// Element-to-random mapping (the contract every kernel and test relies on):
//   Philox key      k = mix_seed(s.key, s.stream), split into (k0, k1) = (low, high 32 bits).
//   Philox counter  (c0, c1, c2, c3) = (low, high 32 bits of call index, substream, 0).
//   Elements are grouped into blocks of kBlock = 256. Block b uses the kLanes = 64 Philox calls
//   with call index 64*b + j, j = 0..63. Call j returns words (w0, w1, w2, w3); Box-Muller turns
//   (w0, w1) into the normals of elements 256*b + j (cos) and 256*b + 64 + j (sin), and (w2, w3)
//   into elements 256*b + 128 + j (cos) and 256*b + 192 + j (sin).
//   So element i's normal depends only on (key, stream, substream, i): a tensor of n elements
//   equals the first n elements of a longer one, for any thread count or chunking.
//   Substream 0 is the noise of the single-noise kernels and n1 (multiplicative) of the mixed
//   kernels; substream 1 is n2 (additive) of the mixed kernels. Substreams live in the counter,
//   so they never collide with another (key, stream) pair.
//
// Box-Muller (Box & Muller 1958), all in float:
//   u = (w0 >> 1) * 2^-31 + 2^-32 in (0, 1]   (31 random bits; 1.0 only by rounding, never 0)
//   r = sqrt(-2 ln u)                         (max r = sqrt(64 ln 2) = 6.66: the tail beyond it,
//                                              P(|n| > 6.66) = 2.7e-11, is cut)
//   theta = 2 pi * w1 / 2^32                  (all 32 bits; range-reduced exactly in integers)
//   n_cos = r cos(theta), n_sin = r sin(theta)
//
// Accuracy of the float approximations against double-precision libm (measured maxima; the
// test Approximations.LogSinCosAccuracy checks the bounds in brackets):
//   ln: Cephes logf (S. Moshier) polynomial, relative error 8e-8 [2e-7] for u in [2^-32, 1).
//   sqrt: IEEE (vsqrtps / sqrtss), correctly rounded.
//   sin/cos: Cephes sinf/cosf minimax polynomials on [-pi/4, pi/4], absolute error 1.1e-7
//         [1.2e-7].
//   End to end, against Box-Muller in double on the same 32-bit words (4e6 normals): relative
//   error < 3e-6 for |n| > 0.1. Closer to 0 the rounding of u to float near 1 (24 bits) bounds
//   the absolute error by 3e-5; that only quantises r below ~0.01 (probability 5e-5) and does
//   not show in any distribution test.
//   float64 tensors get the same float-precision normals, widened (the noise does not need more).
//
// Speed: a block is generated in phases (Philox, ln, sqrt, sin/cos), each a loop over 64 or
// 128 independent lanes, so the vectorised loops are throughput-bound instead of waiting on one
// lane's 10 rounds or polynomial. GCC only vectorises libm calls under -fno-math-errno (a global
// flag; function attributes and pragmas do not change it), which the project does not set: ln
// and sin/cos are plain arithmetic that GCC vectorises, sqrt is a separate loop (intrinsic, or
// scalar std::sqrt in the generic path). Philox uses intrinsics because GCC's vectorisation of
// the 32x32->64 multiply shuffles across 128-bit lanes and costs twice the instructions.
// Three paths, chosen once at run time with __builtin_cpu_supports: AVX-512 (F/VL/DQ/BW),
// AVX2, and generic (SSE2 on x86-64, whatever the compiler does elsewhere). Measured on the
// project's machine (AMD EPYC, Zen 4), per normal: AVX-512 ~0.9 ns, AVX2 ~1.3 ns, generic
// ~5 ns; torch's normal_ alone is ~3 ns.
//
// Bit-identical paths: with FMA available GCC contracts a*b+c (the C++ default is
// -ffp-contract=fast), which would change the last bits of some normals. The AVX2 functions
// are compiled for "avx2" without "fma", and the AVX-512 ones (where FMA is implied) with
// optimize("fp-contract=off"). So every path performs the same IEEE operations in the same
// order and gives identical bits (tested); the stream does not depend on the machine.

#include "quell/rng.h"

#include <ATen/Parallel.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <sstream>
#include <stdexcept>
#include <string>

namespace quell {

namespace {

constexpr uint32_t kPhiloxM0 = 0xD2511F53u;  // Salmon et al. 2011, Random123 philox4x32
constexpr uint32_t kPhiloxM1 = 0xCD9E8D57u;
constexpr uint32_t kPhiloxW0 = 0x9E3779B9u;  // Weyl key increments (golden ratio, sqrt(3)-1)
constexpr uint32_t kPhiloxW1 = 0xBB67AE85u;

constexpr int64_t kLanes = 64;          // Philox calls per block
constexpr int64_t kBlock = 4 * kLanes;  // normals per block
constexpr int64_t kGrainBlocks = 128;   // >= 32768 elements per parallel chunk

#define QUELL_RNG_INLINE inline __attribute__((always_inline))

struct PhiloxKey {
  uint32_t k0 = 0;
  uint32_t k1 = 0;
};

PhiloxKey philox_key(RngStream s) {
  const uint64_t k = mix_seed(s.key, s.stream);
  return {static_cast<uint32_t>(k), static_cast<uint32_t>(k >> 32)};
}

QUELL_RNG_INLINE float bits_to_float(uint32_t b) {
  float f;
  std::memcpy(&f, &b, sizeof f);
  return f;
}

QUELL_RNG_INLINE uint32_t float_to_bits(float f) {
  uint32_t b;
  std::memcpy(&b, &f, sizeof b);
  return b;
}

// One Philox4x32 round (Random123 philox4x32round).
QUELL_RNG_INLINE void philox_round(uint32_t& c0, uint32_t& c1, uint32_t& c2, uint32_t& c3,
                                   uint32_t k0, uint32_t k1) {
  const uint64_t p0 = static_cast<uint64_t>(kPhiloxM0) * c0;
  const uint64_t p1 = static_cast<uint64_t>(kPhiloxM1) * c2;
  const uint32_t n0 = static_cast<uint32_t>(p1 >> 32) ^ c1 ^ k0;
  const uint32_t n2 = static_cast<uint32_t>(p0 >> 32) ^ c3 ^ k1;
  c1 = static_cast<uint32_t>(p1);
  c3 = static_cast<uint32_t>(p0);
  c0 = n0;
  c2 = n2;
}

// Philox4x32-10 in place on (c0..c3): 10 rounds, the key bumped between rounds.
QUELL_RNG_INLINE void philox10(uint32_t& c0, uint32_t& c1, uint32_t& c2, uint32_t& c3, uint32_t k0,
                               uint32_t k1) {
  for (int round = 0; round < 10; ++round) {
    philox_round(c0, c1, c2, c3, k0, k1);
    k0 += kPhiloxW0;
    k1 += kPhiloxW1;
  }
}

// ln(u) for normal floats u > 0 (here u in [2^-32, 1]); Cephes logf (S. Moshier), without
// the special cases. ln(1) is exactly 0.
QUELL_RNG_INLINE float log_positive(float u) {
  // Selects are done on integer bits: GCC will not if-convert a conditional float operation
  // (it could trap under the default -ftrapping-math), which would block vectorisation.
  const uint32_t b = float_to_bits(u);
  uint32_t m_bits = (b & 0x007FFFFFu) | 0x3F800000u;     // mantissa m in [1, 2)
  const uint32_t high = m_bits > 0x3FB504F3u ? 1u : 0u;  // m > sqrt(2): use m / 2, e + 1
  m_bits -= high << 23;                                  // m in [sqrt(.5), sqrt(2))
  const int32_t e = static_cast<int32_t>(b >> 23) - 127 + static_cast<int32_t>(high);
  const float f = bits_to_float(m_bits) - 1.0f;
  const float z = f * f;
  // Cephes' degree-8 polynomial p(f) = sum a_k f^k, evaluated by Estrin's scheme (shorter
  // dependency chain than Horner's; same accuracy, checked in the tests).
  const float z2 = z * z;
  const float p01 = -2.4999993993E-1f * f + 3.3333331174E-1f;
  const float p23 = -1.6668057665E-1f * f + 2.0000714765E-1f;
  const float p45 = -1.2420140846E-1f * f + 1.4249322787E-1f;
  const float p67 = -1.1514610310E-1f * f + 1.1676998740E-1f;
  const float p03 = p23 * z + p01;
  const float p47 = p67 * z + p45;
  const float p = (7.0376836292E-2f * z2 + p47) * z2 + p03;
  const float fe = static_cast<float>(e);
  float y = p * f * z;
  y += -2.12194440E-4f * fe;  // ln 2 = 0.693359375 - 2.12194440e-4 (split for exactness)
  y += -0.5f * z;
  return (f + y) + 0.693359375f * fe;
}

// Squared Box-Muller radius r^2 = -2 ln u, u in (0, 1] built from the top 31 bits of w.
QUELL_RNG_INLINE float radius_squared(uint32_t w) {
  // (w >> 1) converts exactly as a non-negative int32 (a signed convert vectorises on
  // SSE2/AVX2, an unsigned one does not). u = 1 only by rounding, never 0.
  const float u = static_cast<float>(static_cast<int32_t>(w >> 1)) * 0x1p-31f + 0x1p-32f;
  // Clamp to >= 0 by bits (a rounding -0 or tiny negative would give NaN in the sqrt).
  uint32_t r2_bits = float_to_bits(-2.0f * log_positive(u));
  r2_bits &= ~static_cast<uint32_t>(static_cast<int32_t>(r2_bits) >> 31);
  return bits_to_float(r2_bits);
}

// sin and cos of theta = 2 pi w / 2^32. theta = q pi/2 + a with q the nearest quadrant and
// a in [-pi/4, pi/4): exact in integers, so no floating-point range reduction error.
QUELL_RNG_INLINE void sincos_turns(uint32_t w, float& sin_theta, float& cos_theta) {
  const uint32_t q = (w + 0x20000000u) >> 30;
  const int32_t rest = static_cast<int32_t>(w - (q << 30));
  const float a = static_cast<float>(rest) * 1.46291807926715968e-9f;  // 2 pi / 2^32
  const float a2 = a * a;
  const float sin_a =
      ((-1.9515295891E-4f * a2 + 8.3321608736E-3f) * a2 - 1.6666654611E-1f) * a2 * a + a;
  const float cos_a =
      ((2.443315711809948E-5f * a2 - 1.388731625493765E-3f) * a2 + 4.166664568298827E-2f) * a2 *
          a2 -
      0.5f * a2 + 1.0f;
  // sin(q pi/2 + a), cos(q pi/2 + a) for q = 0..3: (s, c), (c, -s), (-s, -c), (-c, s).
  const uint32_t swap_mask = 0u - (q & 1u);
  const uint32_t sb = float_to_bits(sin_a);
  const uint32_t cb = float_to_bits(cos_a);
  sin_theta = bits_to_float(((sb & ~swap_mask) | (cb & swap_mask)) ^ ((q & 2u) << 30));
  cos_theta = bits_to_float(((cb & ~swap_mask) | (sb & swap_mask)) ^ (((q + 1u) & 2u) << 30));
}

// The 64 Philox outputs of one block, as four arrays of words: c[0][j] .. c[3][j] are the
// words of call j. Box-Muller pairs (c[0], c[1]) and (c[2], c[3]): radius, angle.
struct BlockWords {
  alignas(64) uint32_t c[4][kLanes];
};

// A block is generated in phases, each a loop over independent lanes, so the vectorised code
// is throughput-bound rather than bound by the latency of one lane's 10 rounds or polynomial.
QUELL_RNG_INLINE void philox_block(PhiloxKey key, uint32_t substream, uint64_t block,
                                   BlockWords& w) {
  const uint64_t first_call = block * static_cast<uint64_t>(kLanes);
  // first_call is a multiple of 64, so adding j < 64 never carries into the high word.
  const uint32_t call_lo = static_cast<uint32_t>(first_call);
  const uint32_t call_hi = static_cast<uint32_t>(first_call >> 32);
  for (int j = 0; j < kLanes; ++j) {
    w.c[0][j] = call_lo + static_cast<uint32_t>(j);
    w.c[1][j] = call_hi;
    w.c[2][j] = substream;
    w.c[3][j] = 0;
  }
  uint32_t k0 = key.k0;
  uint32_t k1 = key.k1;
  for (int round = 0; round < 10; ++round) {
    for (int j = 0; j < kLanes; ++j)
      philox_round(w.c[0][j], w.c[1][j], w.c[2][j], w.c[3][j], k0, k1);
    k0 += kPhiloxW0;
    k1 += kPhiloxW1;
  }
}

// r2[p * 64 + j] = squared radius of pair p (0: words c[0], 1: words c[2]) of call j.
QUELL_RNG_INLINE void radius_squared_block(const BlockWords& w, float* __restrict r2) {
  for (int j = 0; j < kLanes; ++j) r2[j] = radius_squared(w.c[0][j]);
  for (int j = 0; j < kLanes; ++j) r2[kLanes + j] = radius_squared(w.c[2][j]);
}

// In place r2 -> r. std::sqrt is correctly rounded, so this scalar loop and the AVX2
// vsqrtps loop give identical bits.
QUELL_RNG_INLINE void sqrt_block_scalar(float* r) {
  for (int i = 0; i < 2 * kLanes; ++i) r[i] = std::sqrt(r[i]);
}

// out = the block's normals from radii r and angle words c[1], c[3], in element order.
QUELL_RNG_INLINE void rotate_block(const BlockWords& w, const float* __restrict r,
                                   float* __restrict out) {
  for (int j = 0; j < kLanes; ++j) {
    float s;
    float c;
    sincos_turns(w.c[1][j], s, c);
    out[j] = r[j] * c;
    out[kLanes + j] = r[j] * s;
  }
  for (int j = 0; j < kLanes; ++j) {
    float s;
    float c;
    sincos_turns(w.c[3][j], s, c);
    out[2 * kLanes + j] = r[kLanes + j] * c;
    out[3 * kLanes + j] = r[kLanes + j] * s;
  }
}

// Box-Muller on two 32-bit words (scalar reference): n_cos = r cos(theta), n_sin = r sin(theta).
QUELL_RNG_INLINE void box_muller(uint32_t w_radius, uint32_t w_angle, float& n_cos, float& n_sin) {
  const float r = std::sqrt(radius_squared(w_radius));
  float sin_theta;
  float cos_theta;
  sincos_turns(w_angle, sin_theta, cos_theta);
  n_cos = r * cos_theta;
  n_sin = r * sin_theta;
}

// The kBlock standard normals of block `block` of (key, substream), in element order.
using NormalBlockFn = void (*)(PhiloxKey, uint32_t, uint64_t, float*);

void normal_block_generic(PhiloxKey key, uint32_t substream, uint64_t block, float* out) {
  BlockWords w;
  alignas(64) float r[2 * kLanes];
  philox_block(key, substream, block, w);
  radius_squared_block(w, r);
  sqrt_block_scalar(r);
  rotate_block(w, r, out);
}

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define QUELL_RNG_HAVE_X86_PATHS 1

// hi and lo 32 bits of a * m for 8 lanes: vpmuludq multiplies the even lanes; the odd lanes
// are shifted down and multiplied separately, then the halves are blended back.
__attribute__((target("avx2"))) inline void mulhilo_avx2(__m256i a, __m256i m, __m256i& hi,
                                                         __m256i& lo) {
  const __m256i even = _mm256_mul_epu32(a, m);
  const __m256i odd = _mm256_mul_epu32(_mm256_srli_epi64(a, 32), m);
  hi = _mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, 0xAA);
  lo = _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA);
}

// philox_block with intrinsics: GCC's own vectorisation of the 32x32->64 multiply shuffles
// across 128-bit lanes and costs about twice as many instructions.
__attribute__((target("avx2"))) inline void philox_block_avx2(PhiloxKey key, uint32_t substream,
                                                              uint64_t block, BlockWords& w) {
  const uint64_t first_call = block * static_cast<uint64_t>(kLanes);
  const uint32_t call_lo = static_cast<uint32_t>(first_call);
  const uint32_t call_hi = static_cast<uint32_t>(first_call >> 32);
  const __m256i lane_offsets = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  for (int v = 0; v < kLanes; v += 8) {
    const __m256i lo =
        _mm256_add_epi32(_mm256_set1_epi32(static_cast<int>(call_lo + v)), lane_offsets);
    _mm256_store_si256(reinterpret_cast<__m256i*>(&w.c[0][v]), lo);
    _mm256_store_si256(reinterpret_cast<__m256i*>(&w.c[1][v]),
                       _mm256_set1_epi32(static_cast<int>(call_hi)));
    _mm256_store_si256(reinterpret_cast<__m256i*>(&w.c[2][v]),
                       _mm256_set1_epi32(static_cast<int>(substream)));
    _mm256_store_si256(reinterpret_cast<__m256i*>(&w.c[3][v]), _mm256_setzero_si256());
  }
  const __m256i m0 = _mm256_set1_epi32(static_cast<int>(kPhiloxM0));
  const __m256i m1 = _mm256_set1_epi32(static_cast<int>(kPhiloxM1));
  uint32_t k0 = key.k0;
  uint32_t k1 = key.k1;
  for (int round = 0; round < 10; ++round) {
    const __m256i vk0 = _mm256_set1_epi32(static_cast<int>(k0));
    const __m256i vk1 = _mm256_set1_epi32(static_cast<int>(k1));
    for (int v = 0; v < kLanes; v += 8) {
      __m256i* p0 = reinterpret_cast<__m256i*>(&w.c[0][v]);
      __m256i* p1 = reinterpret_cast<__m256i*>(&w.c[1][v]);
      __m256i* p2 = reinterpret_cast<__m256i*>(&w.c[2][v]);
      __m256i* p3 = reinterpret_cast<__m256i*>(&w.c[3][v]);
      const __m256i x0 = _mm256_load_si256(p0);
      const __m256i x1 = _mm256_load_si256(p1);
      const __m256i x2 = _mm256_load_si256(p2);
      const __m256i x3 = _mm256_load_si256(p3);
      __m256i hi0;
      __m256i lo0;
      __m256i hi1;
      __m256i lo1;
      mulhilo_avx2(x0, m0, hi0, lo0);
      mulhilo_avx2(x2, m1, hi1, lo1);
      _mm256_store_si256(p0, _mm256_xor_si256(_mm256_xor_si256(hi1, x1), vk0));
      _mm256_store_si256(p1, lo1);
      _mm256_store_si256(p2, _mm256_xor_si256(_mm256_xor_si256(hi0, x3), vk1));
      _mm256_store_si256(p3, lo0);
    }
    k0 += kPhiloxW0;
    k1 += kPhiloxW1;
  }
}

__attribute__((target("avx2"))) inline void sqrt_block_avx2(float* r) {
  for (int i = 0; i < 2 * kLanes; i += 8) {
    _mm256_store_ps(r + i, _mm256_sqrt_ps(_mm256_load_ps(r + i)));
  }
}

__attribute__((target("avx2"))) void normal_block_avx2(PhiloxKey key, uint32_t substream,
                                                       uint64_t block, float* out) {
  BlockWords w;
  alignas(64) float r[2 * kLanes];
  philox_block_avx2(key, substream, block, w);
  radius_squared_block(w, r);
  sqrt_block_avx2(r);
  rotate_block(w, r, out);
}

// AVX-512: 16 lanes per instruction, the Philox state in registers, vpternlogd for the double
// xor. FMA comes with AVX-512F, so contraction is switched off for these functions to keep the
// results bit-identical to the other paths (it would gain ~3%).
// GCC 12 warns about its own _mm512_undefined_* in every AVX-512 intrinsic (GCC PR 105593,
// a false positive): silenced for this section only.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#define QUELL_RNG_AVX512 \
  __attribute__((target("avx512f,avx512vl,avx512dq,avx512bw"), optimize("fp-contract=off")))

QUELL_RNG_AVX512 inline void mulhilo_avx512(__m512i a, __m512i m, __m512i& hi, __m512i& lo) {
  const __m512i even = _mm512_mul_epu32(a, m);
  const __m512i odd = _mm512_mul_epu32(_mm512_srli_epi64(a, 32), m);
  hi = _mm512_mask_blend_epi32(0xAAAA, _mm512_srli_epi64(even, 32), odd);
  lo = _mm512_mask_blend_epi32(0xAAAA, even, _mm512_slli_epi64(odd, 32));
}

QUELL_RNG_AVX512 inline void philox_block_avx512(PhiloxKey key, uint32_t substream, uint64_t block,
                                                 BlockWords& w) {
  constexpr int kVectors = kLanes / 16;
  const uint64_t first_call = block * static_cast<uint64_t>(kLanes);
  const uint32_t call_lo = static_cast<uint32_t>(first_call);
  const uint32_t call_hi = static_cast<uint32_t>(first_call >> 32);
  const __m512i lane_offsets =
      _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  __m512i x0[kVectors];
  __m512i x1[kVectors];
  __m512i x2[kVectors];
  __m512i x3[kVectors];
  for (int v = 0; v < kVectors; ++v) {
    x0[v] = _mm512_add_epi32(_mm512_set1_epi32(static_cast<int>(call_lo + 16 * v)), lane_offsets);
    x1[v] = _mm512_set1_epi32(static_cast<int>(call_hi));
    x2[v] = _mm512_set1_epi32(static_cast<int>(substream));
    x3[v] = _mm512_setzero_si512();
  }
  const __m512i m0 = _mm512_set1_epi32(static_cast<int>(kPhiloxM0));
  const __m512i m1 = _mm512_set1_epi32(static_cast<int>(kPhiloxM1));
  uint32_t k0 = key.k0;
  uint32_t k1 = key.k1;
  for (int round = 0; round < 10; ++round) {
    const __m512i vk0 = _mm512_set1_epi32(static_cast<int>(k0));
    const __m512i vk1 = _mm512_set1_epi32(static_cast<int>(k1));
    for (int v = 0; v < kVectors; ++v) {
      __m512i hi0;
      __m512i lo0;
      __m512i hi1;
      __m512i lo1;
      mulhilo_avx512(x0[v], m0, hi0, lo0);
      mulhilo_avx512(x2[v], m1, hi1, lo1);
      x0[v] = _mm512_ternarylogic_epi32(hi1, x1[v], vk0, 0x96);  // 0x96: a ^ b ^ c
      x1[v] = lo1;
      x2[v] = _mm512_ternarylogic_epi32(hi0, x3[v], vk1, 0x96);
      x3[v] = lo0;
    }
    k0 += kPhiloxW0;
    k1 += kPhiloxW1;
  }
  for (int v = 0; v < kVectors; ++v) {
    _mm512_store_si512(&w.c[0][16 * v], x0[v]);
    _mm512_store_si512(&w.c[1][16 * v], x1[v]);
    _mm512_store_si512(&w.c[2][16 * v], x2[v]);
    _mm512_store_si512(&w.c[3][16 * v], x3[v]);
  }
}

QUELL_RNG_AVX512 inline void sqrt_block_avx512(float* r) {
  for (int i = 0; i < 2 * kLanes; i += 16) {
    _mm512_store_ps(r + i, _mm512_sqrt_ps(_mm512_load_ps(r + i)));
  }
}

QUELL_RNG_AVX512 void normal_block_avx512(PhiloxKey key, uint32_t substream, uint64_t block,
                                          float* out) {
  BlockWords w;
  alignas(64) float r[2 * kLanes];
  philox_block_avx512(key, substream, block, w);
  radius_squared_block(w, r);
  sqrt_block_avx512(r);
  rotate_block(w, r, out);
}
#undef QUELL_RNG_AVX512
#pragma GCC diagnostic pop
#endif

#ifdef QUELL_RNG_HAVE_X86_PATHS
bool cpu_has_avx512() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
         __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bw");
}

bool cpu_has_avx2() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2");
}
#endif

NormalBlockFn select_normal_block() {
#ifdef QUELL_RNG_HAVE_X86_PATHS
  if (cpu_has_avx512()) return normal_block_avx512;
  if (cpu_has_avx2()) return normal_block_avx2;
#endif
  return normal_block_generic;
}

NormalBlockFn normal_block_fn() {
  static const NormalBlockFn fn = select_normal_block();
  return fn;
}

// ---- argument checks --------------------------------------------------------------------

std::string format_double(double v) {
  std::ostringstream os;
  os.precision(17);
  os << v;
  return os.str();
}

void check_scale(const char* fn, const char* name, double v) {
  if (!(std::isfinite(v) && v >= 0.0)) {
    throw std::invalid_argument(std::string("quell::") + fn + ": " + name +
                                " must be finite and >= 0, got " + format_double(v));
  }
}

void check_tensor(const char* fn, const torch::Tensor& x) {
  if (!x.defined()) {
    throw std::invalid_argument(std::string("quell::") + fn + ": tensor is undefined");
  }
  if (!x.is_floating_point()) {
    throw std::invalid_argument(std::string("quell::") + fn +
                                ": expects a floating-point tensor, got " +
                                std::string(c10::toString(x.scalar_type())));
  }
  if (x.requires_grad() && at::GradMode::is_enabled()) {
    throw std::invalid_argument(
        std::string("quell::") + fn +
        ": in-place noise on a tensor that requires grad while grad mode is on; wrap the call "
        "in torch::NoGradGuard or pass a tensor that does not require grad");
  }
}

// Whether the fast kernels can write x's memory directly.
bool is_direct(const torch::Tensor& x) {
  return x.device().is_cpu() && x.is_contiguous() && x.layout() == torch::kStrided &&
         (x.scalar_type() == torch::kFloat || x.scalar_type() == torch::kDouble);
}

// Autograd detects later use of a tensor saved for backward through its version counter; we
// write the memory behind torch's back, so bump it as an in-place op would.
void mark_modified(torch::Tensor& x) {
  if (!x.is_inference()) x.unsafeGetTensorImpl()->bump_version();
}

// Runs `direct(tensor)` on x if it is a contiguous float/double CPU tensor, otherwise on a
// contiguous CPU copy (float64 stays float64, every other floating type is computed in
// float32) that is written back. Elements are indexed in x's logical row-major order, so a
// non-contiguous or non-CPU tensor gets the same values as its contiguous CPU twin.
template <class Direct>
void with_direct(torch::Tensor& x, bool needs_input, Direct direct) {
  if (is_direct(x)) {
    direct(x);
    mark_modified(x);
    return;
  }
  const auto work_type = x.scalar_type() == torch::kDouble ? torch::kDouble : torch::kFloat;
  torch::Tensor work = torch::empty(x.sizes(), torch::TensorOptions().dtype(work_type));
  if (needs_input) work.copy_(x);
  direct(work);
  x.copy_(work);
}

// Calls apply(first, count, n) for consecutive element ranges of a tensor of `numel`
// elements, n[k] being the standard normal of element first + k of `substream`, in parallel.
// Note: with LibTorch's OpenMP backend at::parallel_for is an inline template whose
// `#pragma omp parallel` only takes effect in translation units compiled with -fopenmp
// (ATen/ParallelOpenMP.h); without it these kernels run on one thread (same results).
template <class Apply>
void for_each_block(int64_t numel, RngStream s, uint32_t substream, Apply apply) {
  const PhiloxKey key = philox_key(s);
  const NormalBlockFn gen = normal_block_fn();
  const int64_t num_blocks = (numel + kBlock - 1) / kBlock;
  at::parallel_for(0, num_blocks, kGrainBlocks, [&](int64_t begin, int64_t end) {
    alignas(64) float n[kBlock];
    for (int64_t b = begin; b < end; ++b) {
      gen(key, substream, static_cast<uint64_t>(b), n);
      const int64_t first = b * kBlock;
      apply(first, std::min(kBlock, numel - first), n);
    }
  });
}

// As for_each_block, with n1 from substream 0 and n2 from substream 1.
template <class Apply>
void for_each_block2(int64_t numel, RngStream s, Apply apply) {
  const PhiloxKey key = philox_key(s);
  const NormalBlockFn gen = normal_block_fn();
  const int64_t num_blocks = (numel + kBlock - 1) / kBlock;
  at::parallel_for(0, num_blocks, kGrainBlocks, [&](int64_t begin, int64_t end) {
    alignas(64) float n1[kBlock];
    alignas(64) float n2[kBlock];
    for (int64_t b = begin; b < end; ++b) {
      gen(key, /*substream=*/0, static_cast<uint64_t>(b), n1);
      gen(key, /*substream=*/1, static_cast<uint64_t>(b), n2);
      const int64_t first = b * kBlock;
      apply(first, std::min(kBlock, numel - first), n1, n2);
    }
  });
}

// T is float or double: float tensors are updated in float arithmetic, double in double.
template <class T>
void fill_direct(torch::Tensor& x, RngStream s, double mean, double std) {
  T* data = x.data_ptr<T>();
  const T m = static_cast<T>(mean);
  const T sd = static_cast<T>(std);
  for_each_block(x.numel(), s, /*substream=*/0, [&](int64_t first, int64_t count, const float* n) {
    T* __restrict out = data + first;
    for (int64_t k = 0; k < count; ++k) out[k] = m + sd * static_cast<T>(n[k]);
  });
}

template <class T>
void add_direct(torch::Tensor& x, RngStream s, uint32_t substream, double sigma) {
  T* data = x.data_ptr<T>();
  const T sg = static_cast<T>(sigma);
  for_each_block(x.numel(), s, substream, [&](int64_t first, int64_t count, const float* n) {
    T* __restrict out = data + first;
    for (int64_t k = 0; k < count; ++k) out[k] += sg * static_cast<T>(n[k]);
  });
}

template <class T>
void mul_direct(torch::Tensor& x, RngStream s, double sigma) {
  T* data = x.data_ptr<T>();
  const T sg = static_cast<T>(sigma);
  for_each_block(x.numel(), s, /*substream=*/0, [&](int64_t first, int64_t count, const float* n) {
    T* __restrict out = data + first;
    for (int64_t k = 0; k < count; ++k) out[k] *= T(1) + sg * static_cast<T>(n[k]);
  });
}

template <class T>
void mul_add_direct(torch::Tensor& x, RngStream s, double sigma_mul, double sigma_add) {
  T* data = x.data_ptr<T>();
  const T sm = static_cast<T>(sigma_mul);
  const T sa = static_cast<T>(sigma_add);
  for_each_block2(
      x.numel(), s, [&](int64_t first, int64_t count, const float* n1, const float* n2) {
        T* __restrict out = data + first;
        for (int64_t k = 0; k < count; ++k) {
          out[k] = out[k] * (T(1) + sm * static_cast<T>(n1[k])) + sa * static_cast<T>(n2[k]);
        }
      });
}

template <class T>
void add_mul_direct(torch::Tensor& x, RngStream s, double sigma_mul, double sigma_add) {
  T* data = x.data_ptr<T>();
  const T sm = static_cast<T>(sigma_mul);
  const T sa = static_cast<T>(sigma_add);
  for_each_block2(
      x.numel(), s, [&](int64_t first, int64_t count, const float* n1, const float* n2) {
        T* __restrict out = data + first;
        for (int64_t k = 0; k < count; ++k) {
          out[k] = (out[k] + sa * static_cast<T>(n2[k])) * (T(1) + sm * static_cast<T>(n1[k]));
        }
      });
}

// x += sigma * n with n from `substream`; arguments already checked, sigma > 0.
void add_normal_substream(torch::Tensor& x, RngStream s, uint32_t substream, double sigma) {
  with_direct(x, /*needs_input=*/true, [&](torch::Tensor& t) {
    if (t.scalar_type() == torch::kDouble) {
      add_direct<double>(t, s, substream, sigma);
    } else {
      add_direct<float>(t, s, substream, sigma);
    }
  });
}

}  // namespace

namespace detail {

// Not part of the public header: exposed for the known-answer and reference tests.
std::array<uint32_t, 4> philox4x32_10(std::array<uint32_t, 4> counter,
                                      std::array<uint32_t, 2> key) {
  philox10(counter[0], counter[1], counter[2], counter[3], key[0], key[1]);
  return counter;
}

// The standard normal of element `index` of (s, substream), computed by scalar code along
// the mapping documented at the top of this file.
float reference_normal(RngStream s, uint32_t substream, uint64_t index) {
  const PhiloxKey key = philox_key(s);
  const uint64_t block = index / kBlock;
  const uint64_t within = index % kBlock;
  const uint64_t lane = within % kLanes;
  const uint64_t word_pair = within / kLanes;  // 0: (w0,w1) cos, 1: sin, 2: (w2,w3) cos, 3: sin
  const uint64_t call = block * kLanes + lane;
  std::array<uint32_t, 4> w =
      philox4x32_10({static_cast<uint32_t>(call), static_cast<uint32_t>(call >> 32), substream, 0u},
                    {key.k0, key.k1});
  float n_cos = 0.0f;
  float n_sin = 0.0f;
  if (word_pair < 2) {
    box_muller(w[0], w[1], n_cos, n_sin);
  } else {
    box_muller(w[2], w[3], n_cos, n_sin);
  }
  return (word_pair % 2 == 0) ? n_cos : n_sin;
}

// Generates block `block` of (s, substream) with one implementation: 0 generic, 1 AVX2,
// 2 AVX-512. Returns false (and writes nothing) if this CPU or build lacks it.
bool normal_block_on_path(int path, RngStream s, uint32_t substream, uint64_t block, float* out) {
  const PhiloxKey key = philox_key(s);
  if (path == 0) {
    normal_block_generic(key, substream, block, out);
    return true;
  }
#ifdef QUELL_RNG_HAVE_X86_PATHS
  if (path == 1 && cpu_has_avx2()) {
    normal_block_avx2(key, substream, block, out);
    return true;
  }
  if (path == 2 && cpu_has_avx512()) {
    normal_block_avx512(key, substream, block, out);
    return true;
  }
#endif
  return false;
}

// The float approximations on their own, for the accuracy test.
float approx_log(float u) { return log_positive(u); }
void approx_sincos_turns(uint32_t w, float& sin_out, float& cos_out) {
  sincos_turns(w, sin_out, cos_out);
}

}  // namespace detail

// ---- public API -------------------------------------------------------------------------

uint64_t mix_seed(uint64_t a, uint64_t b) {
  // splitmix64 finaliser (Steele, Lea, Flood 2014; constants from Vigna's splitmix64.c),
  // applied as f(f(a) ^ b): order-sensitive, and equal outputs need a 64-bit collision.
  auto splitmix64 = [](uint64_t z) {
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  };
  return splitmix64(splitmix64(a) ^ b);
}

uint64_t mix_seed(uint64_t a, uint64_t b, uint64_t c) { return mix_seed(mix_seed(a, b), c); }

void normal_fill_(torch::Tensor& x, RngStream s, double mean, double std) {
  if (!std::isfinite(mean)) {
    throw std::invalid_argument("quell::normal_fill_: mean must be finite, got " +
                                format_double(mean));
  }
  check_scale("normal_fill_", "std", std);
  check_tensor("normal_fill_", x);
  if (x.numel() == 0) return;
  with_direct(x, /*needs_input=*/false, [&](torch::Tensor& t) {
    if (t.scalar_type() == torch::kDouble) {
      fill_direct<double>(t, s, mean, std);
    } else {
      fill_direct<float>(t, s, mean, std);
    }
  });
}

void add_normal_(torch::Tensor& x, RngStream s, double sigma) {
  check_scale("add_normal_", "sigma", sigma);
  check_tensor("add_normal_", x);
  if (sigma == 0.0 || x.numel() == 0) return;
  add_normal_substream(x, s, /*substream=*/0, sigma);
}

void mul_normal_(torch::Tensor& x, RngStream s, double sigma) {
  check_scale("mul_normal_", "sigma", sigma);
  check_tensor("mul_normal_", x);
  if (sigma == 0.0 || x.numel() == 0) return;
  with_direct(x, /*needs_input=*/true, [&](torch::Tensor& t) {
    if (t.scalar_type() == torch::kDouble) {
      mul_direct<double>(t, s, sigma);
    } else {
      mul_direct<float>(t, s, sigma);
    }
  });
}

void mul_add_normal_(torch::Tensor& x, RngStream s, double sigma_mul, double sigma_add) {
  check_scale("mul_add_normal_", "sigma_mul", sigma_mul);
  check_scale("mul_add_normal_", "sigma_add", sigma_add);
  check_tensor("mul_add_normal_", x);
  if ((sigma_mul == 0.0 && sigma_add == 0.0) || x.numel() == 0) return;
  // With one scale 0 the formula has one noise term: run the single kernel on that term's
  // substream (same values, half the generation cost).
  if (sigma_add == 0.0) {
    mul_normal_(x, s, sigma_mul);
    return;
  }
  if (sigma_mul == 0.0) {
    add_normal_substream(x, s, /*substream=*/1, sigma_add);
    return;
  }
  with_direct(x, /*needs_input=*/true, [&](torch::Tensor& t) {
    if (t.scalar_type() == torch::kDouble) {
      mul_add_direct<double>(t, s, sigma_mul, sigma_add);
    } else {
      mul_add_direct<float>(t, s, sigma_mul, sigma_add);
    }
  });
}

void add_mul_normal_(torch::Tensor& x, RngStream s, double sigma_mul, double sigma_add) {
  check_scale("add_mul_normal_", "sigma_mul", sigma_mul);
  check_scale("add_mul_normal_", "sigma_add", sigma_add);
  check_tensor("add_mul_normal_", x);
  if ((sigma_mul == 0.0 && sigma_add == 0.0) || x.numel() == 0) return;
  // With one scale 0 the formula has one noise term: run the single kernel on that term's
  // substream (same values, half the generation cost).
  if (sigma_add == 0.0) {
    mul_normal_(x, s, sigma_mul);
    return;
  }
  if (sigma_mul == 0.0) {
    add_normal_substream(x, s, /*substream=*/1, sigma_add);
    return;
  }
  with_direct(x, /*needs_input=*/true, [&](torch::Tensor& t) {
    if (t.scalar_type() == torch::kDouble) {
      add_mul_direct<double>(t, s, sigma_mul, sigma_add);
    } else {
      add_mul_direct<float>(t, s, sigma_mul, sigma_add);
    }
  });
}

}  // namespace quell
