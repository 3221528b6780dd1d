// Denoising blocks: small trainable residual modules that run after a site, on the digital unit
// beside the analog arrays (no noise inside them). Parameter counts: docs/denoise.md.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

#include "quell/io.h"

namespace quell {

/// Which block and how wide. Text: "bottleneck", "mlp:r=8", "channel", "auto:r=4".
struct BlockSpec {
  /// auto: bottleneck on [C,H,W] sites, position on [T,D] sites, mlp on others.
  /// bottleneck: x + 1x1(C->m) ReLU 3x3(m->m) ReLU 1x1(m->C), m = ceil(C/r); [C,H,W] only.
  /// mlp: x + Linear(D->m) ReLU Linear(m->D), m = ceil(D/r); any shape (D = all features).
  /// position: the same per position, D = the last dimension (tokens, frames: [T, D] sites).
  /// channel: per-channel affine x*(1+a)+b (a, b start at 0); any shape (C = first dim).
  std::string kind = "auto";
  int ratio = 4;  ///< reduction r >= 1 (unused by channel)

  static BlockSpec parse(const std::string& text);
  std::string str() const;
  Json to_json() const;
  static BlockSpec from_json(const Json& j);
  /// The concrete kind for a site of per-sample shape `shape` ("auto" resolved). Throws
  /// std::invalid_argument if the block cannot sit there (e.g. bottleneck on a [D] site).
  std::string resolve(const std::vector<int64_t>& shape) const;
  /// Exact parameter count of the block at a site of per-sample shape `shape`.
  int64_t params(const std::vector<int64_t>& shape) const;
  bool operator==(const BlockSpec& o) const { return kind == o.kind && ratio == o.ratio; }
};

/// Names of the block kinds.
std::vector<std::string> block_kinds();

/// One block: y = x + f(x), with f's last layer zero at construction (identity at init).
class DenoiserImpl : public torch::nn::Module {
 public:
  DenoiserImpl(const BlockSpec& spec, const std::vector<int64_t>& shape);
  torch::Tensor forward(const torch::Tensor& x);
  const BlockSpec& spec() const { return spec_; }  ///< kind resolved (never "auto")
  int64_t width() const { return width_; }         ///< m (0 for channel)

 private:
  BlockSpec spec_;
  std::vector<int64_t> shape_;
  int64_t width_ = 0;
  torch::nn::Conv2d reduce_{nullptr}, mid_{nullptr}, expand_{nullptr};
  torch::nn::Linear down_{nullptr}, up_{nullptr};
  torch::Tensor scale_, shift_;
};
TORCH_MODULE(Denoiser);

/// Where a block sits: after site `site` (its noise applied first), the block `block`.
struct BlockPlacement {
  int site = 0;
  BlockSpec block;
};

}  // namespace quell
