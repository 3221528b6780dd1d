// Fast, counter-based Gaussian noise kernels.
//
// Every element's random number is a pure function of (key, stream, element index): a SplitMix64
// counter hash turned into standard normals by a polynomial inverse normal CDF (accuracy and
// speed: the header comment of src/rng.cpp). So results are
// identical for any number of threads and any chunking, and a caller names a fresh, independent
// stream for each (site, forward pass, repetition) without keeping generator state.
#pragma once

#include <torch/torch.h>

#include <cstdint>

namespace quell {

/// Identifies one independent stream of normals: `key` is the user seed, `stream` says which
/// use (e.g. a hash of site index, forward counter and repetition).
struct RngStream {
  uint64_t key = 0;
  uint64_t stream = 0;
};

/// Mixes several 64-bit values into one (splitmix64-based); used to build stream ids.
uint64_t mix_seed(uint64_t a, uint64_t b);
uint64_t mix_seed(uint64_t a, uint64_t b, uint64_t c);

/// x: float32/float64 CPU tensors run in place; other dtypes, non-contiguous tensors and other
/// devices go through a contiguous CPU copy and get exactly the values of the CPU path.
/// Fills x with N(mean, std^2) in place.
void normal_fill_(torch::Tensor& x, RngStream s, double mean = 0.0, double std = 1.0);
/// x += sigma * n, n ~ N(0, 1) i.i.d. per element, in place (one pass, no temporary).
void add_normal_(torch::Tensor& x, RngStream s, double sigma);
/// x *= (1 + sigma * n), n ~ N(0, 1) i.i.d. per element, in place.
void mul_normal_(torch::Tensor& x, RngStream s, double sigma);
/// x = x * (1 + sigma_mul * n1) + sigma_add * n2 in place (mul then add), with n1, n2
/// independent (drawn from two sub-streams of s).
void mul_add_normal_(torch::Tensor& x, RngStream s, double sigma_mul, double sigma_add);
/// x = (x + sigma_add * n2) * (1 + sigma_mul * n1) in place (add then mul).
void add_mul_normal_(torch::Tensor& x, RngStream s, double sigma_mul, double sigma_add);

/// Out of place: the same values as the in-place function of the same name on a copy of x,
/// returned as a new contiguous tensor; x is not modified. One pass that reads x and writes the
/// result, so noise on a value that must be kept (a cached activation) costs no extra copy.
torch::Tensor add_normal(const torch::Tensor& x, RngStream s, double sigma);
torch::Tensor mul_normal(const torch::Tensor& x, RngStream s, double sigma);
torch::Tensor mul_add_normal(const torch::Tensor& x, RngStream s, double sigma_mul,
                             double sigma_add);
torch::Tensor add_mul_normal(const torch::Tensor& x, RngStream s, double sigma_mul,
                             double sigma_add);

namespace detail {
/// The standard normals of elements first .. first + count - 1 of stream s (substream 0: those
/// add_normal_ adds), written to out: what fused kernels draw for one slice of a tensor.
void normal_range(RngStream s, int64_t first, int64_t count, float* out);
}  // namespace detail

}  // namespace quell
