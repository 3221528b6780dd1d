// Fused inference kernels for chains of inert sites (internal to the library).
//
// When no site logic runs between a batch norm, a ReLU and a 2x2 max pool (nothing is noisy,
// observed or denoised there, and nothing else reads the values in between), the forward pass
// computes the chain in one pass over memory instead of three, with the same bits as the
// separate LibTorch ops: batch norm in eval mode as LibTorch 1.13's CPU kernel computes it,
// alpha = w / sqrt(var + eps), beta = fma(-mean, alpha, b), y = fma(x, alpha, beta); ReLU and
// max propagating NaN like torch. AVX-512 only: elsewhere the model runs the separate ops.
#pragma once

#include <torch/torch.h>

#include "quell/rng.h"

namespace quell::detail {

/// True if this CPU runs the fused kernels (AVX-512 F/BW/VL/DQ).
bool fused_kernels_available();

/// What a fused chain does to a [N, C, H, W] float32 contiguous CPU tensor, in order.
struct FusedChain {
  /// First, the additive noise of the site before the chain, x + sigma * n with n the normals
  /// of `stream` by flat element index: the bits add_normal_ gives (quell/rng.h).
  bool noise = false;
  RngStream stream;
  double sigma = 0.0;
  const torch::nn::BatchNorm2dImpl* bn = nullptr;  ///< eval-mode batch norm, or none
  bool relu = false;
  bool pool = false;  ///< 2x2 max pool, stride 2, floor mode
};

/// Whether `run_fused` takes x (float32, contiguous, 4-D, CPU) for this chain.
bool fused_applies(const FusedChain& chain, const torch::Tensor& x);

/// The chain's output. Requires fused_kernels_available() and fused_applies().
torch::Tensor run_fused(const FusedChain& chain, const torch::Tensor& x);

/// Whether `direct_conv2d` takes conv2d(x, weight, bias, stride, padding, dilation, groups):
/// AVX-512, no autograd needed, float32 CPU, 4-D, square kernel of at most 7, stride 1, no
/// dilation, one group, equal zero padding below the kernel size, and at most 4 input
/// channels (where LibTorch's oneDNN convolution reaches only 5-12 GMAC/s here).
bool direct_conv_applies(const torch::Tensor& x, const torch::Tensor& weight,
                         const torch::Tensor& bias, at::IntArrayRef stride,
                         at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups);

/// The convolution by a direct AVX-512 kernel: output rows in 16-lane vectors, weights
/// broadcast, accumulators in registers. It sums in another order than oneDNN: equal to about
/// 1e-6 relative, not bit for bit. Requires direct_conv_applies().
torch::Tensor direct_conv2d(const torch::Tensor& x, const torch::Tensor& weight,
                            const torch::Tensor& bias, int64_t padding);

}  // namespace quell::detail
