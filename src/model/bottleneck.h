// The bottleneck denoising block as one kernel (internal to the library).
//
// y = x + expand(relu(mid(relu(reduce(x))))) with reduce a 1x1 convolution C -> m, mid a 3x3
// convolution m -> m (zero padding 1) and expand a 1x1 convolution m -> C. Through LibTorch this
// is seven operators, each a pass over a [N, C, H, W] tensor (and autograd's as many again
// backwards), and oneDNN's convolution on one or two channels; here each image is computed in
// one pass while it sits in cache, forward and backward. Same function and gradients as the
// operators; the sums run in another order (equal to float rounding, not bit for bit).
#pragma once

#include <torch/torch.h>

namespace quell::detail {

/// Whether `bottleneck_block` takes x and these parameters: CPU float32 throughout, x 4-D and
/// contiguous with C channels, weights [m, C, 1, 1], [m, m, 3, 3], [C, m, 1, 1] and biases
/// [m], [m], [C], and a narrow block (m <= 2, or m <= 4 on planes of 100 positions or more),
/// where the kernel is faster than LibTorch's operators.
bool bottleneck_applies(const torch::Tensor& x, const torch::Tensor& reduce_w,
                        const torch::Tensor& reduce_b, const torch::Tensor& mid_w,
                        const torch::Tensor& mid_b, const torch::Tensor& expand_w,
                        const torch::Tensor& expand_b);

/// The block's output. With autograd on (grad mode and anything requiring a gradient) it is a
/// node whose backward gives the gradients of x and of every parameter. Requires
/// bottleneck_applies().
torch::Tensor bottleneck_block(const torch::Tensor& x, const torch::Tensor& reduce_w,
                               const torch::Tensor& reduce_b, const torch::Tensor& mid_w,
                               const torch::Tensor& mid_b, const torch::Tensor& expand_w,
                               const torch::Tensor& expand_b);

}  // namespace quell::detail
