#include "quell/blocks.h"

#include <stdexcept>

#include "model/bottleneck.h"
#include "util/json.h"
#include "util/text.h"

namespace quell {
namespace {

int64_t reduced(int64_t n, int ratio) { return std::max<int64_t>(1, (n + ratio - 1) / ratio); }

int64_t features(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (auto d : shape) n *= d;
  return n;
}

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? "," : "") + std::to_string(shape[i]);
  return s + "]";
}

}  // namespace

std::vector<std::string> block_kinds() { return {"auto", "bottleneck", "mlp", "position", "channel"}; }

BlockSpec BlockSpec::parse(const std::string& text) {
  const auto parts = text::split(text, ':');
  BlockSpec b;
  b.kind = text::trim(parts[0]);
  bool known = false;
  for (const auto& k : block_kinds()) known |= k == b.kind;
  if (!known) {
    std::string list;
    for (const auto& k : block_kinds()) list += (list.empty() ? "" : ", ") + k;
    throw std::invalid_argument("unknown denoiser block '" + b.kind + "' (known: " + list + ")");
  }
  for (size_t i = 1; i < parts.size(); ++i) {
    const std::string p = text::trim(parts[i]);
    if (p.rfind("r=", 0) != 0) {
      throw std::invalid_argument("block '" + text + "': unknown option '" + p +
                                  "' (expected r=RATIO)");
    }
    b.ratio = text::parse_int(p.substr(2), "block '" + text + "' ratio");
  }
  if (b.ratio < 1) throw std::invalid_argument("block '" + text + "': ratio must be >= 1");
  return b;
}

std::string BlockSpec::str() const {
  return kind == "channel" ? kind : kind + ":r=" + std::to_string(ratio);
}

Json BlockSpec::to_json() const { return Json{{"kind", kind}, {"ratio", ratio}}; }

BlockSpec BlockSpec::from_json(const Json& j) {
  BlockSpec b;
  b.kind = j.at("kind").get<std::string>();
  b.ratio = json::integer_or(j, "ratio", 4);
  return parse(b.str());  // validates
}

std::string BlockSpec::resolve(const std::vector<int64_t>& shape) const {
  if (shape.empty()) throw std::invalid_argument("denoiser block: site has no shape");
  if (kind == "auto") {
    if (shape.size() == 3) return "bottleneck";
    return shape.size() == 2 ? "position" : "mlp";
  }
  if (kind == "bottleneck" && shape.size() != 3) {
    throw std::invalid_argument("block bottleneck needs a [C,H,W] site, not " +
                                shape_text(shape) + " (use mlp or channel)");
  }
  return kind;
}

int64_t BlockSpec::params(const std::vector<int64_t>& shape) const {
  const std::string k = resolve(shape);
  if (k == "bottleneck") {
    const int64_t c = shape[0], m = reduced(c, ratio);
    return (c * m + m) + (9 * m * m + m) + (m * c + c);
  }
  if (k == "mlp" || k == "position") {
    const int64_t d = k == "mlp" ? features(shape) : shape.back(), m = reduced(d, ratio);
    return (d * m + m) + (m * d + d);
  }
  return 2 * shape[0];  // channel
}

DenoiserImpl::DenoiserImpl(const BlockSpec& spec, const std::vector<int64_t>& shape)
    : spec_(spec), shape_(shape) {
  spec_.kind = spec.resolve(shape);
  namespace nn = torch::nn;
  if (spec_.kind == "bottleneck") {
    const int64_t c = shape[0];
    width_ = reduced(c, spec_.ratio);
    reduce_ = register_module("reduce", nn::Conv2d(nn::Conv2dOptions(c, width_, 1)));
    mid_ = register_module("mid", nn::Conv2d(nn::Conv2dOptions(width_, width_, 3).padding(1)));
    expand_ = register_module("expand", nn::Conv2d(nn::Conv2dOptions(width_, c, 1)));
    torch::NoGradGuard no_grad;
    expand_->weight.zero_();
    expand_->bias.zero_();
  } else if (spec_.kind == "mlp" || spec_.kind == "position") {
    const int64_t d = spec_.kind == "mlp" ? features(shape) : shape.back();
    width_ = reduced(d, spec_.ratio);
    down_ = register_module("down", nn::Linear(d, width_));
    up_ = register_module("up", nn::Linear(width_, d));
    torch::NoGradGuard no_grad;
    up_->weight.zero_();
    up_->bias.zero_();
  } else {
    scale_ = register_parameter("scale", torch::zeros({shape[0]}));
    shift_ = register_parameter("shift", torch::zeros({shape[0]}));
  }
}

torch::Tensor DenoiserImpl::forward(const torch::Tensor& x) {
  if (spec_.kind == "bottleneck") {
    // CPU float32 and narrow: one pass per image, forward and backward (model/bottleneck.h).
    if (detail::bottleneck_applies(x, reduce_->weight, reduce_->bias, mid_->weight, mid_->bias,
                                   expand_->weight, expand_->bias)) {
      return detail::bottleneck_block(x, reduce_->weight, reduce_->bias, mid_->weight,
                                      mid_->bias, expand_->weight, expand_->bias);
    }
    torch::Tensor h = torch::relu(reduce_->forward(x));
    h = torch::relu(mid_->forward(h));
    return x + expand_->forward(h);
  }
  if (spec_.kind == "mlp") {
    const torch::Tensor flat = x.flatten(1);
    const torch::Tensor h = torch::relu(down_->forward(flat));
    return x + up_->forward(h).view(x.sizes());
  }
  if (spec_.kind == "position") {  // the same small MLP at every position (last dimension)
    return x + up_->forward(torch::relu(down_->forward(x)));
  }
  // channel: broadcast [C] over the trailing dimensions.
  std::vector<int64_t> view(static_cast<size_t>(x.dim()), 1);
  view[1] = shape_[0];
  return x * (1 + scale_.view(view)) + shift_.view(view);
}

}  // namespace quell
