// Internals of the model graph shared by its implementation files (model.cpp, script.cpp) and
// the tests: the kernels the forward pass uses and the importer's access to ModelImpl. Not part
// of the public API.
#pragma once

#include <torch/torch.h>

#include <functional>
#include <memory>
#include <vector>

#include "quell/models.h"

namespace quell {

/// max_pool2d(x, kernel, stride) without padding. On CPU with kernel == stride and no gradient
/// needed, a direct loop (same values, NaN propagates; several times faster than LibTorch
/// 1.13's kernel); otherwise torch::max_pool2d.
torch::Tensor max_pool_2d(const torch::Tensor& x, int64_t kernel, int64_t stride);
/// conv.forward(x), through quell's direct kernel where it is faster than LibTorch's (inference
/// of convolutions with at most 4 input channels on AVX-512 CPUs: see model/fused.h); equal to
/// about 1e-6 relative.
torch::Tensor conv2d(torch::nn::Conv2dImpl& conv, const torch::Tensor& x);

/// Runs the graph segment of a kScript node on the live values (ModelImpl::run_node).
torch::Tensor run_script_node(const Node& node, const std::vector<torch::Tensor>& values);

namespace detail {
/// The importer's (model/script.cpp) way into a ModelImpl it builds.
struct ModelAccess {
  static Node& add_node(ModelImpl& m, Node node) { return m.add_node(std::move(node)); }
  /// Keeps the TorchScript module alive in the model and records the import.
  static void set_script(ModelImpl& m, std::shared_ptr<void> module_state,
                         std::shared_ptr<ScriptInfo> info, std::function<void(bool)> set_training) {
    m.set_script(std::move(module_state), std::move(info), std::move(set_training));
  }
};
}  // namespace detail

}  // namespace quell
