#include <algorithm>
#include <cmath>
#include <mutex>
#include <stdexcept>

#include "model/fused.h"
#include "model/internal.h"
#include "quell/models.h"

#include "quell/device.h"
#include "quell/script.h"
#include "util/json.h"

namespace quell {
namespace {

// Max pooling with kernel == stride, no padding, floor mode, on a contiguous CPU tensor:
// LibTorch 1.13's CPU max_pool2d takes about 3 ms for a [256, 6, 28, 28] batch here, more than
// all convolutions of lenet5; this loop gives the same values (NaN propagating like torch's) in
// about 0.2 ms on one thread.
template <typename T>
inline T nan_max(T a, T b) {
  return (a > b || a != a) ? a : b;  // NaN propagates, as in torch
}

// Planes [begin, end) of a [planes, h, w] block. A plain function taking values: inlined into
// the OpenMP region, the same loops ran about 20x slower.
template <typename T>
__attribute__((noinline)) void max_pool_planes(const T* in, T* out, int64_t begin, int64_t end,
                                               int64_t h, int64_t w, int64_t k) {
  const int64_t oh = h / k, ow = w / k;
  for (int64_t p = begin; p < end; ++p) {
    const T* src = in + p * h * w;
    T* dst = out + p * oh * ow;
    for (int64_t y = 0; y < oh; ++y) {
      if (k == 2) {
        const T* r0 = src + 2 * y * w;
        const T* r1 = r0 + w;
        for (int64_t x = 0; x < ow; ++x) {
          dst[y * ow + x] =
              nan_max(nan_max(r0[2 * x], r0[2 * x + 1]), nan_max(r1[2 * x], r1[2 * x + 1]));
        }
        continue;
      }
      for (int64_t x = 0; x < ow; ++x) {
        T m = src[(y * k) * w + x * k];
        for (int64_t i = 0; i < k; ++i) {
          const T* row = src + (y * k + i) * w + x * k;
          for (int64_t j = 0; j < k; ++j) m = nan_max(row[j], m);
        }
        dst[y * ow + x] = m;
      }
    }
  }
}

}  // namespace

torch::Tensor max_pool_2d(const torch::Tensor& x, int64_t kernel, int64_t stride) {
  const bool fast = kernel == stride && x.dim() == 4 && x.device().is_cpu() &&
                    (x.scalar_type() == torch::kFloat || x.scalar_type() == torch::kDouble) &&
                    !(torch::GradMode::is_enabled() && x.requires_grad()) &&
                    x.size(2) >= kernel && x.size(3) >= kernel;
  if (!fast) return torch::max_pool2d(x, kernel, stride);
  const torch::Tensor in = x.contiguous();
  detail::FusedChain pool_only;
  pool_only.pool = true;
  if (kernel == 2 && detail::fused_kernels_available() && detail::fused_applies(pool_only, in)) {
    return detail::run_fused(pool_only, in);
  }
  const int64_t n = in.size(0), c = in.size(1), h = in.size(2), w = in.size(3);
  torch::Tensor out = torch::empty({n, c, h / kernel, w / kernel}, in.options());
  AT_DISPATCH_FLOATING_TYPES(in.scalar_type(), "max_pool_2d", [&] {
    const scalar_t* src = in.data_ptr<scalar_t>();
    scalar_t* dst = out.data_ptr<scalar_t>();
    at::parallel_for(0, n * c, 16, [=](int64_t begin, int64_t end) {
      max_pool_planes<scalar_t>(src, dst, begin, end, h, w, kernel);
    });
  });
  return out;
}

torch::Tensor conv2d(torch::nn::Conv2dImpl& conv, const torch::Tensor& x) {
  const auto& o = conv.options;
  const auto* padding = c10::get_if<torch::ExpandingArray<2>>(&o.padding());
  if (padding != nullptr && c10::get_if<torch::enumtype::kZeros>(&o.padding_mode()) &&
      !o.transposed() &&
      detail::direct_conv_applies(x, conv.weight, conv.bias, *o.stride(), **padding,
                                  *o.dilation(), o.groups())) {
    return detail::direct_conv2d(x, conv.weight, conv.bias, (*padding)->at(0));
  }
  return conv.forward(x);
}

/// The convolution without its bias (an analog tile's product; the bias is digital).
torch::Tensor conv2d_product(torch::nn::Conv2dImpl& conv, const torch::Tensor& x) {
  const auto& o = conv.options;
  const auto* padding = c10::get_if<torch::ExpandingArray<2>>(&o.padding());
  TORCH_CHECK(padding != nullptr && c10::get_if<torch::enumtype::kZeros>(&o.padding_mode()) &&
                  !o.transposed(),
              "analog tiles run convolutions with explicit zero padding only");
  if (detail::direct_conv_applies(x, conv.weight, torch::Tensor(), *o.stride(), **padding,
                                  *o.dilation(), o.groups())) {
    return detail::direct_conv2d(x, conv.weight, torch::Tensor(), (*padding)->at(0));
  }
  return torch::conv2d(x, conv.weight, torch::Tensor(), *o.stride(), **padding, *o.dilation(),
                       o.groups());
}

std::vector<int64_t> ModelSpec::sample_shape() const {
  if (!input_shape.empty()) return input_shape;
  return {in_channels, height, width};
}

torch::ScalarType ModelSpec::input_scalar_type() const {
  if (input_dtype == "float32") return torch::kFloat;
  if (input_dtype == "int64") return torch::kLong;
  throw std::invalid_argument("input dtype '" + input_dtype + "': expected float32 or int64");
}

std::string ModelSpec::input_text() const {
  std::string s;
  for (int64_t d : sample_shape()) s += (s.empty() ? "" : "x") + std::to_string(d);
  return input_dtype == "float32" ? s : s + " " + input_dtype;
}

Json ModelSpec::to_json() const {
  Json j{{"name", name},
         {"in_channels", in_channels},
         {"height", height},
         {"width", width},
         {"num_classes", num_classes}};
  // Written only for non-image inputs: image checkpoints stay as they were.
  if (!input_shape.empty()) j["input_shape"] = input_shape;
  if (input_dtype != "float32") j["input_dtype"] = input_dtype;
  return j;
}

ModelSpec ModelSpec::from_json(const Json& j) {
  // Integers only: a double beyond int64's range does not convert (undefined behaviour).
  auto int_of = [](const Json& v, const std::string& key) {
    return json::integer<int64_t>(v, "model " + key);
  };
  ModelSpec s;
  s.name = j.at("name").get<std::string>();
  s.in_channels = int_of(j.at("in_channels"), "in_channels");
  s.height = int_of(j.at("height"), "height");
  s.width = int_of(j.at("width"), "width");
  s.num_classes = int_of(j.at("num_classes"), "num_classes");
  if (j.contains("input_shape")) {
    const Json& shape = j.at("input_shape");
    if (!shape.is_array()) {
      throw std::invalid_argument("model input_shape must be an array, got " + shape.dump());
    }
    for (const Json& d : shape) s.input_shape.push_back(int_of(d, "input_shape"));
  }
  if (j.contains("input_dtype")) s.input_dtype = j.at("input_dtype").get<std::string>();
  (void)s.input_scalar_type();  // validates
  return s;
}

ModelSpec ModelSpec::for_dataset(const std::string& name, const Dataset& data) {
  const auto shape = data.sample_shape();
  ModelSpec s;
  s.name = name;
  const bool image = shape.size() == 3 && data.inputs.is_floating_point();
  if (image) {
    s.in_channels = shape.at(0);
    s.height = shape.at(1);
    s.width = shape.at(2);
  } else {
    s.in_channels = s.height = s.width = 0;
    s.input_shape = shape;
    s.input_dtype = data.inputs.is_floating_point() ? "float32" : "int64";
  }
  s.num_classes = data.num_classes;
  return s;
}

const char* op_name(OpType op) {
  switch (op) {
    case OpType::kInput:
      return "input";
    case OpType::kConv:
      return "conv";
    case OpType::kLinear:
      return "linear";
    case OpType::kBatchNorm:
      return "batchnorm";
    case OpType::kReLU:
      return "relu";
    case OpType::kMaxPool:
      return "maxpool";
    case OpType::kAvgPool:
      return "avgpool";
    case OpType::kAdd:
      return "add";
    case OpType::kShortcut:
      return "shortcut";
    case OpType::kScript:
      return "script";
  }
  return "?";
}

int64_t SiteInfo::numel() const {
  int64_t n = 1;
  for (auto d : shape) n *= d;
  return n;
}

Node& ModelImpl::add_node(Node node) {
  const int index = static_cast<int>(nodes_.size());
  for (int in : node.inputs) {
    TORCH_INTERNAL_ASSERT(in >= 0 && in < index, "node ", node.name, " reads a later node");
  }
  nodes_.push_back(std::move(node));
  last_use_.push_back(index);
  for (int in : nodes_.back().inputs) last_use_[in] = index;
  return nodes_.back();
}

namespace {
// Module names may not contain dots; site names (layer1.0.conv1) keep theirs.
std::string module_key(std::string name) {
  std::replace(name.begin(), name.end(), '.', '_');
  return name;
}
}  // namespace

std::vector<SiteInfo> ModelImpl::sites() const {
  std::vector<SiteInfo> out;
  for (size_t i = 0; i < nodes_.size(); ++i) {
    const Node& n = nodes_[i];
    SiteInfo s;
    s.index = static_cast<int>(i);
    s.name = n.name;
    s.op = n.op_label();
    s.shape = n.shape;
    s.floating = n.floating;
    auto count = [](const torch::nn::Module& m) {
      int64_t c = 0;
      for (const auto& p : m.parameters()) c += p.numel();
      return c;
    };
    if (n.conv) s.params = count(*n.conv);
    if (n.linear) s.params = count(*n.linear);
    if (n.bn2d) s.params = count(*n.bn2d);
    if (n.bn1d) s.params = count(*n.bn1d);
    if (n.op == OpType::kScript) s.params = n.param_count;
    out.push_back(std::move(s));
  }
  return out;
}

std::vector<std::string> ModelImpl::site_names() const {
  std::vector<std::string> names;
  for (const auto& n : nodes_) names.push_back(n.name);
  return names;
}

int64_t ModelImpl::num_params() const {
  int64_t c = 0;
  for (const auto& p : backbone_parameters()) c += p.numel();
  return c;
}

std::vector<torch::Tensor> ModelImpl::backbone_parameters() const {
  std::vector<torch::Tensor> out;
  for (const auto& p : named_parameters()) {
    if (p.key().rfind("denoisers.", 0) != 0) out.push_back(p.value());
  }
  return out;
}

std::vector<torch::Tensor> ModelImpl::denoiser_parameters() const {
  return block_set_ ? block_set_->parameters() : std::vector<torch::Tensor>{};
}

int64_t ModelImpl::num_denoiser_params() const {
  int64_t c = 0;
  for (const auto& p : denoiser_parameters()) c += p.numel();
  return c;
}

bool ModelImpl::has_denoisers() const {
  for (const auto& b : blocks_) {
    if (b) return true;
  }
  return false;
}

Denoiser ModelImpl::denoiser(int site) const {
  const auto i = static_cast<size_t>(site);
  return i < blocks_.size() ? blocks_[i] : Denoiser(nullptr);
}

std::vector<BlockPlacement> ModelImpl::denoiser_placement() const {
  std::vector<BlockPlacement> out;
  for (size_t i = 0; i < blocks_.size(); ++i) {
    if (blocks_[i]) out.push_back({static_cast<int>(i), blocks_[i]->spec()});
  }
  return out;
}

namespace {

// `make()` run with the global CPU generator seeded by `seed`; the generator's state is restored.
template <typename Make>
auto with_global_seed(uint64_t seed, Make&& make) {
  auto gen = at::detail::getDefaultCPUGenerator();
  torch::Tensor state;
  {
    std::lock_guard<std::mutex> lock(gen.mutex());
    state = gen.get_state();
    gen.set_current_seed(seed);
  }
  auto restore = [&] {
    std::lock_guard<std::mutex> lock(gen.mutex());
    gen.set_state(state);
  };
  try {
    auto out = make();
    restore();
    return out;
  } catch (...) {
    restore();
    throw;
  }
}

// A seed for the block `spec` at `site` (FNV-1a of the three).
uint64_t block_seed(uint64_t init_seed, int site, const std::string& spec) {
  uint64_t h = 1469598103934665603ULL;
  auto mix = [&](uint64_t v) {
    for (int i = 0; i < 8; ++i) h = (h ^ ((v >> (8 * i)) & 0xff)) * 1099511628211ULL;
  };
  mix(init_seed);
  mix(static_cast<uint64_t>(site));
  for (unsigned char c : spec) h = (h ^ c) * 1099511628211ULL;
  return h;
}

}  // namespace

void ModelImpl::set_denoisers(const std::vector<BlockPlacement>& placement,
                              std::optional<uint64_t> init_seed) {
  std::vector<Denoiser> blocks(nodes_.size(), Denoiser(nullptr));
  auto set = std::make_shared<torch::nn::Module>("Denoisers");
  for (const auto& p : placement) {
    if (p.site < 0 || p.site >= num_sites()) {
      throw std::invalid_argument("denoiser site " + std::to_string(p.site) + " is outside 0-" +
                                  std::to_string(num_sites() - 1));
    }
    if (blocks[p.site]) {
      throw std::invalid_argument("two denoisers at site " + nodes_[p.site].name);
    }
    try {
      const auto& shape = nodes_[p.site].shape;
      blocks[p.site] =
          init_seed ? with_global_seed(block_seed(*init_seed, p.site, p.block.str()),
                                       [&] { return Denoiser(p.block, shape); })
                    : Denoiser(p.block, shape);
    } catch (const std::invalid_argument& e) {
      throw std::invalid_argument("site " + nodes_[p.site].name + ": " + e.what());
    }
    set->register_module(module_key(nodes_[p.site].name), blocks[p.site]);
  }
  // Blocks live on the backbone's device, in its mode.
  const auto params = backbone_parameters();
  if (!params.empty()) set->to(params.front().device());
  set->train(is_training());
  if (block_set_) {
    block_set_ = replace_module("denoisers", set);
  } else {
    block_set_ = register_module("denoisers", set);
  }
  blocks_ = std::move(blocks);
}

torch::Tensor ModelImpl::run_node(const Node& node, std::vector<torch::Tensor>& values,
                                  const SiteEngine* engine) {
  auto in = [&](size_t k) -> const torch::Tensor& { return values[node.inputs[k]]; };
  const int index = static_cast<int>(&node - nodes_.data());
  const TileIO* tile = engine != nullptr ? engine->tile(index) : nullptr;
  switch (node.op) {
    case OpType::kInput:
      return values[0];
    case OpType::kConv:
      if (tile != nullptr) {
        auto& conv = *node.conv.ptr();
        return tile_forward(
            *tile, in(0), [&](const torch::Tensor& x) { return conv2d_product(conv, x); },
            conv.weight.detach().abs().max().item<double>(), conv.bias, engine->tile_stream(index),
            3);
      }
      return conv2d(*node.conv.ptr(), in(0));
    case OpType::kLinear:
      if (tile != nullptr) {
        auto& linear = *node.linear.ptr();
        return tile_forward(
            *tile, in(0).flatten(1),
            [&](const torch::Tensor& x) { return torch::linear(x, linear.weight); },
            linear.weight.detach().abs().max().item<double>(), linear.bias,
            engine->tile_stream(index));
      }
      return node.linear.ptr()->forward(in(0).flatten(1));
    case OpType::kBatchNorm:
      return node.bn2d ? node.bn2d.ptr()->forward(in(0)) : node.bn1d.ptr()->forward(in(0));
    case OpType::kReLU:
      return torch::relu(in(0));
    case OpType::kMaxPool:
      return max_pool_2d(in(0), node.kernel, node.stride);
    case OpType::kAvgPool:
      return torch::adaptive_avg_pool2d(in(0), {1, 1}).flatten(1);
    case OpType::kAdd:
      return in(0) + in(1);
    case OpType::kShortcut: {
      using torch::indexing::None;
      using torch::indexing::Slice;
      torch::Tensor y = in(0).index(
          {Slice(), Slice(), Slice(None, None, node.stride), Slice(None, None, node.stride)});
      return torch::constant_pad_nd(y, {0, 0, 0, 0, node.pad_channels, node.pad_channels});
    }
    case OpType::kScript:
      if (tile != nullptr && node.weight.defined()) return run_script_tile(node, values, *tile, *engine);
      return run_script_node(node, values);
  }
  TORCH_INTERNAL_ASSERT(false, "unhandled op");
  return {};
}

torch::Tensor ModelImpl::forward(torch::Tensor x, SiteEngine& engine) {
  engine.begin_forward();
  ForwardState state;
  state.site = 0;
  state.values.resize(nodes_.size());
  state.values[0] = std::move(x);
  return run_from(std::move(state), engine);
}

ForwardState ModelImpl::run_until(const torch::Tensor& x, int site, bool with_site_logic,
                                  SiteEngine& engine) {
  TORCH_CHECK(site >= 0 && site < num_sites(), "site ", site, " is outside 0-", num_sites() - 1);
  engine.begin_forward();
  ForwardState state;
  state.site = site;
  state.values.resize(nodes_.size());
  state.values[0] = x;
  for (int i = 0; i <= site; ++i) {
    if (i > 0) state.values[i] = run_node(nodes_[i], state.values, &engine);
    if (i < site && with_site_logic) state.values[i] = engine.apply(state.values[i], i, i > 0);
    if (i < site) state.values[i] = denoise(i, std::move(state.values[i]));
    // Free values whose last reader was node i (keep those a later node needs).
    for (int in : nodes_[i].inputs) {
      if (last_use_[in] <= i && in != site) state.values[in] = torch::Tensor();
    }
  }
  return state;
}

bool ModelImpl::fusing(const SiteEngine& engine) const {
  return fused_ && !torch::GradMode::is_enabled() && !engine.has_observer() &&
         detail::fused_kernels_available();
}

bool ModelImpl::passes_on(int m) const {
  const bool block = denoisers_enabled_ && static_cast<size_t>(m) < blocks_.size() &&
                     static_cast<bool>(blocks_[m]);
  return m + 1 < num_sites() && !block && last_use_[m] == m + 1 &&
         nodes_[m + 1].inputs.size() == 1 && nodes_[m + 1].inputs[0] == m;
}

int ModelImpl::chain_end(int first, const SiteEngine& engine) const {
  // [batch norm] [ReLU] [2x2 max pool], in this order, each reading only the one before, with
  // nothing happening at the sites in between.
  int last = first - 1;
  int stage = 0;
  for (int m = first; m < num_sites(); ++m) {
    const Node& node = nodes_[m];
    if (m > first && !(passes_on(m - 1) && !engine.active(m - 1))) break;
    int kind = 0;
    if (node.op == OpType::kBatchNorm && node.bn2d) kind = 1;
    if (node.op == OpType::kReLU) kind = 2;
    if (node.op == OpType::kMaxPool && node.kernel == 2 && node.stride == 2) kind = 3;
    if (kind <= stage) break;
    stage = kind;
    last = m;
  }
  return last;
}

detail::FusedChain ModelImpl::chain_of(int first, int last) const {
  detail::FusedChain chain;
  for (int m = first; m <= last; ++m) {
    const Node& node = nodes_[m];
    if (node.op == OpType::kBatchNorm) chain.bn = node.bn2d.get();
    if (node.op == OpType::kReLU) chain.relu = true;
    if (node.op == OpType::kMaxPool) chain.pool = true;
  }
  return chain;
}

int ModelImpl::fused_chain_end(int first, const SiteEngine& engine) const {
  if (!fusing(engine)) return first;
  const int last = chain_end(first, engine);
  return last > first ? last : first;  // one op alone runs as LibTorch's (or quell's pool)
}

torch::Tensor ModelImpl::run_chain(int first, int last, std::vector<torch::Tensor>& values) {
  if (last > first) {
    const detail::FusedChain chain = chain_of(first, last);
    const torch::Tensor& x = values[nodes_[first].inputs[0]];
    if (detail::fused_applies(chain, x)) return detail::run_fused(chain, x);
  }
  // Not fusable after all (dtype, layout, device): the ops one by one.
  for (int m = first; m < last; ++m) values[m] = run_node(nodes_[m], values);
  torch::Tensor out = run_node(nodes_[last], values);
  for (int m = first; m < last; ++m) values[m] = torch::Tensor();
  return out;
}

int ModelImpl::noisy_chain_end(int site, const SiteEngine& engine, detail::FusedChain* chain,
                               const torch::Tensor& x) const {
  if (!fusing(engine) || !passes_on(site)) return site;
  RngStream stream;
  double sigma = 0.0;
  if (!engine.additive_only(site, &stream, &sigma) || sigma == 0.0) return site;
  const int last = chain_end(site + 1, engine);
  if (last <= site) return site;
  *chain = chain_of(site + 1, last);
  chain->noise = true;
  chain->stream = stream;
  chain->sigma = sigma;
  return detail::fused_applies(*chain, x) ? last : site;
}

torch::Tensor ModelImpl::run_from(ForwardState state, SiteEngine& engine) {
  auto& values = state.values;
  const int n = num_sites();
  for (int i = state.site; i < n; ++i) {
    const int first = i;
    if (i > state.site) {
      i = fused_chain_end(first, engine);
      values[i] = first == i ? run_node(nodes_[i], values, &engine) : run_chain(first, i, values);
    }
    // The input site is not a fresh tensor: it may be a view of the caller's data.
    bool owned = i > 0 && (i != state.site || state.site_owned);
    // Additive noise at i followed by a fusable chain: the chain's kernel draws the noise, the
    // noisy value at i is never written, and the site logic continues at the chain's end.
    detail::FusedChain chain;
    const int last = noisy_chain_end(i, engine, &chain, values[i]);
    if (last > i) {
      values[last] = detail::run_fused(chain, values[i]);
      i = last;
      owned = true;
    }
    values[i] = denoise(i, engine.apply(std::move(values[i]), i, owned));
    for (int m = first; m <= i; ++m) {
      for (int in : nodes_[m].inputs) {
        if (last_use_[in] == m) values[in] = torch::Tensor();
      }
    }
  }
  return values[n - 1];
}

void ModelImpl::calibrate(const torch::Tensor& images, int64_t max_samples, int64_t batch) {
  torch::NoGradGuard no_grad;
  const bool was_training = is_training();
  eval();
  const int n = num_sites();
  std::vector<double> sum(n, 0.0), sumsq(n, 0.0), count(n, 0.0);
  std::vector<SiteCalibration> cal(n);
  for (auto& c : cal) {
    c.min = std::numeric_limits<double>::infinity();
    c.max = -std::numeric_limits<double>::infinity();
  }
  const NoiseConfig saved = engine_.config();
  engine_.configure(NoiseConfig{});
  engine_.set_observer([&](int site, const torch::Tensor& x) {
    // Sums accumulate in double without a double copy of the activation.
    sum[site] += x.sum(torch::kDouble).item<double>();
    sumsq[site] += x.square().sum(torch::kDouble).item<double>();
    count[site] += static_cast<double>(x.numel());
    const auto [lo, hi] = torch::aminmax(x);
    cal[site].min = std::min(cal[site].min, lo.item<double>());
    cal[site].max = std::max(cal[site].max, hi.item<double>());
  });
  const int64_t total = std::min<int64_t>(images.size(0), max_samples);
  const torch::Device device =
      parameters().empty() ? torch::Device(torch::kCPU) : parameters().front().device();
  try {
    for (int64_t b = 0; b < total; b += batch) {
      forward(images.narrow(0, b, std::min(batch, total - b)).to(device));
    }
  } catch (...) {
    engine_.set_observer(nullptr);
    engine_.configure(saved);
    throw;
  }
  engine_.set_observer(nullptr);
  engine_.configure(saved);
  for (int i = 0; i < n; ++i) {
    auto& c = cal[i];
    const double mean = sum[i] / count[i];
    c.std = std::sqrt(std::max(0.0, sumsq[i] / count[i] - mean * mean));
    c.absmax = std::max(std::fabs(c.min), std::fabs(c.max));
    c.valid = count[i] > 0;
  }
  engine_.set_calibration(std::move(cal));
  train(was_training);
}

std::vector<std::pair<int, torch::Tensor>> ModelImpl::analog_weights() {
  std::vector<std::pair<int, torch::Tensor>> out;
  for (size_t i = 0; i < nodes_.size(); ++i) {
    if (nodes_[i].conv) out.emplace_back(static_cast<int>(i), nodes_[i].conv->weight);
    if (nodes_[i].linear) out.emplace_back(static_cast<int>(i), nodes_[i].linear->weight);
    if (nodes_[i].weight.defined()) out.emplace_back(static_cast<int>(i), nodes_[i].weight);
  }
  return out;
}

torch::Tensor ModelImpl::run_script_tile(const Node& node, const std::vector<torch::Tensor>& values,
                                         const TileIO& tile, const SiteEngine& engine) {
  // The activation the weight multiplies: the node's floating input. A segment reading several
  // (e.g. an attention projection that reshapes the heads' output using the block input's
  // shape) hides which one feeds the product: quell cannot put its input on a DAC.
  int input = -1;
  for (int k : node.inputs) {
    if (!values[k].defined() || !values[k].is_floating_point()) continue;
    if (input >= 0) {
      throw std::invalid_argument(
          "tile I/O: site " + node.name +
          " of the imported model reads several activations, so quell cannot tell which one "
          "its weight multiplies; leave it off the tiles (--device-layers) or use no --tile");
    }
    input = k;
  }
  if (input < 0) return run_script_node(node, values);
  std::vector<torch::Tensor> local = values;
  const torch::Tensor& x = values[input];
  // Rows are the vectors of a linear layer or matmul that keeps the rank; otherwise (a
  // convolution, a flattening layer) the whole sample is.
  const bool rows = node.label != "conv" && static_cast<int64_t>(node.shape.size()) + 1 == x.dim();
  const int vector_dims = rows ? std::min<int>(1, x.dim() - 1) : static_cast<int>(x.dim()) - 1;
  if (vector_dims < 1) return run_script_node(node, values);
  // The segment ends with the layer, bias included: the tile sees the product without it and
  // adds it digitally afterwards, as for the built-in layers.
  const torch::Tensor bias = node.bias.defined() ? node.bias : torch::Tensor();
  const auto product = [&](const torch::Tensor& xn) {
    local[input] = xn;
    torch::Tensor y = run_script_node(node, local);
    if (!bias.defined()) return y;
    if (node.label == "conv" && y.dim() > 2) {
      std::vector<int64_t> shape{bias.numel()};
      for (int64_t d = 2; d < y.dim(); ++d) shape.push_back(1);
      return y - bias.reshape(shape);
    }
    return y - bias;  // linear: the last dimension
  };
  return tile_forward(tile, x, product, node.weight.detach().abs().max().item<double>(), bias,
                      engine.tile_stream(static_cast<int>(&node - nodes_.data())), vector_dims,
                      /*subsets=*/false);
}

void ModelImpl::train(bool on) {
  torch::nn::Module::train(on);
  if (script_set_training_) script_set_training_(on);
}

const ScriptInfo* ModelImpl::script_info() const { return script_info_.get(); }

void ModelImpl::set_script(std::shared_ptr<void> module_state, std::shared_ptr<ScriptInfo> info,
                           std::function<void(bool)> set_training) {
  script_state_ = std::move(module_state);
  script_info_ = std::move(info);
  script_set_training_ = std::move(set_training);
  if (script_set_training_) script_set_training_(is_training());
}

// ---------------------------------------------------------------------------------------------


GraphBuilder::GraphBuilder(ModelImpl& model) : model_(model) {}

int GraphBuilder::push(Node node) {
  const int index = static_cast<int>(model_.nodes_.size());
  model_.add_node(std::move(node));
  return index;
}

const std::vector<int64_t>& GraphBuilder::shape(int node) const {
  return model_.nodes_.at(node).shape;
}

int GraphBuilder::input(const std::string& name) {
  TORCH_INTERNAL_ASSERT(model_.nodes_.empty(), "input must be the first node");
  Node n;
  n.op = OpType::kInput;
  n.name = name;
  const auto& s = model_.spec_;
  n.shape = {s.in_channels, s.height, s.width};
  return push(std::move(n));
}

int GraphBuilder::conv(const std::string& name, int from, int64_t out_channels, int64_t kernel,
                       int64_t stride, int64_t padding, bool bias) {
  const auto& in = shape(from);
  if (in.size() != 3) throw std::invalid_argument(name + ": conv needs a [C,H,W] input");
  const int64_t h = (in[1] + 2 * padding - kernel) / stride + 1;
  const int64_t w = (in[2] + 2 * padding - kernel) / stride + 1;
  if (h < 1 || w < 1) {
    throw std::invalid_argument(name + ": input " + std::to_string(in[1]) + "x" +
                                std::to_string(in[2]) + " is too small for this model");
  }
  Node n;
  n.op = OpType::kConv;
  n.name = name;
  n.inputs = {from};
  n.conv = model_.register_module(
      module_key(name), torch::nn::Conv2d(torch::nn::Conv2dOptions(in[0], out_channels, kernel)
                                              .stride(stride)
                                              .padding(padding)
                                              .bias(bias)));
  n.shape = {out_channels, h, w};
  return push(std::move(n));
}

int GraphBuilder::linear(const std::string& name, int from, int64_t out_features, bool bias) {
  int64_t in_features = 1;
  for (auto d : shape(from)) in_features *= d;
  Node n;
  n.op = OpType::kLinear;
  n.name = name;
  n.inputs = {from};
  n.linear = model_.register_module(
      module_key(name),
      torch::nn::Linear(torch::nn::LinearOptions(in_features, out_features).bias(bias)));
  n.shape = {out_features};
  return push(std::move(n));
}

int GraphBuilder::batchnorm(const std::string& name, int from) {
  Node n;
  n.op = OpType::kBatchNorm;
  n.name = name;
  n.inputs = {from};
  n.shape = shape(from);
  if (n.shape.size() == 3) {
    n.bn2d = model_.register_module(module_key(name), torch::nn::BatchNorm2d(n.shape[0]));
  } else {
    n.bn1d = model_.register_module(module_key(name), torch::nn::BatchNorm1d(n.shape[0]));
  }
  return push(std::move(n));
}

int GraphBuilder::relu(const std::string& name, int from) {
  Node n;
  n.op = OpType::kReLU;
  n.name = name;
  n.inputs = {from};
  n.shape = shape(from);
  return push(std::move(n));
}

int GraphBuilder::maxpool(const std::string& name, int from, int64_t kernel, int64_t stride) {
  const auto& in = shape(from);
  Node n;
  n.op = OpType::kMaxPool;
  n.name = name;
  n.inputs = {from};
  n.kernel = kernel;
  n.stride = stride;
  if (in[1] < kernel || in[2] < kernel) {
    throw std::invalid_argument(name + ": input is too small for this model");
  }
  n.shape = {in[0], (in[1] - kernel) / stride + 1, (in[2] - kernel) / stride + 1};
  return push(std::move(n));
}

int GraphBuilder::global_avgpool(const std::string& name, int from) {
  Node n;
  n.op = OpType::kAvgPool;
  n.name = name;
  n.inputs = {from};
  n.shape = {shape(from).at(0)};
  return push(std::move(n));
}

int GraphBuilder::add(const std::string& name, int a, int b) {
  TORCH_INTERNAL_ASSERT(shape(a) == shape(b), name, ": add of mismatched shapes");
  Node n;
  n.op = OpType::kAdd;
  n.name = name;
  n.inputs = {a, b};
  n.shape = shape(a);
  return push(std::move(n));
}

int GraphBuilder::shortcut(const std::string& name, int from, int64_t out_channels,
                           int64_t stride) {
  const auto& in = shape(from);
  TORCH_INTERNAL_ASSERT((out_channels - in[0]) % 2 == 0, name, ": odd channel padding");
  Node n;
  n.op = OpType::kShortcut;
  n.name = name;
  n.inputs = {from};
  n.stride = stride;
  n.pad_channels = (out_channels - in[0]) / 2;
  n.shape = {out_channels, (in[1] + stride - 1) / stride, (in[2] + stride - 1) / stride};
  return push(std::move(n));
}

}  // namespace quell
