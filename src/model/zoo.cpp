// The model registry. Site numbering follows the Walking Noise paper for mlp and lenet5
// (docs/models.md lists every model's sites).
#include <functional>
#include <map>
#include <stdexcept>

#include "quell/models.h"
#include "quell/script.h"
#include "util/text.h"

namespace quell {
namespace {

using Builder = std::function<void(GraphBuilder&, const ModelSpec&)>;

// fc -> [bn] -> relu, returning the relu node.
int dense_block(GraphBuilder& g, const std::string& id, int from, int64_t width, bool bn) {
  int x = g.linear("fc" + id, from, width);
  if (bn) x = g.batchnorm("bn" + id, x);
  return g.relu("relu" + id, x);
}

void build_mlp(GraphBuilder& g, const ModelSpec& s, bool bn) {
  // 0 input (flattened by fc1) · fc/bn/relu ×3 (64 wide) · logits.
  int x = g.input();
  for (int i = 1; i <= 3; ++i) x = dense_block(g, std::to_string(i), x, 64, bn);
  g.linear("fc4", x, s.num_classes);
}

void build_lenet5(GraphBuilder& g, const ModelSpec& s, bool bn) {
  // LeNet-5 as in Walking Noise: conv 6@5x5 pad 2, pool, conv 16@5x5, pool, 120, 84, classes.
  int x = g.input();
  x = g.conv("conv1", x, 6, 5, 1, 2);
  if (bn) x = g.batchnorm("bn1", x);
  x = g.relu("relu1", x);
  x = g.maxpool("pool1", x, 2, 2);
  x = g.conv("conv2", x, 16, 5);
  if (bn) x = g.batchnorm("bn2", x);
  x = g.relu("relu2", x);
  x = g.maxpool("pool2", x, 2, 2);
  x = g.linear("fc1", x, 120);
  if (bn) x = g.batchnorm("bn3", x);
  x = g.relu("relu3", x);
  x = g.linear("fc2", x, 84);
  if (bn) x = g.batchnorm("bn4", x);
  x = g.relu("relu4", x);
  g.linear("fc3", x, s.num_classes);
}

void build_vgg_s(GraphBuilder& g, const ModelSpec& s) {
  // A small VGG: [32,32,M,64,64,M,128,128,M] 3x3 convs with BN, then fc 256 + BN, logits.
  int x = g.input();
  int block = 0, layer = 0;
  const std::vector<int64_t> cfg = {32, 32, 0, 64, 64, 0, 128, 128, 0};
  for (int64_t c : cfg) {
    if (c == 0) {
      ++block;
      layer = 0;
      x = g.maxpool("block" + std::to_string(block) + ".pool", x, 2, 2);
      continue;
    }
    const std::string p = "block" + std::to_string(block + 1) + "." + std::to_string(++layer);
    x = g.conv(p + ".conv", x, c, 3, 1, 1, /*bias=*/false);
    x = g.batchnorm(p + ".bn", x);
    x = g.relu(p + ".relu", x);
  }
  x = g.linear("fc1", x, 256, /*bias=*/false);
  x = g.batchnorm("fc1.bn", x);
  x = g.relu("fc1.relu", x);
  g.linear("fc2", x, s.num_classes);
}

void build_resnet20(GraphBuilder& g, const ModelSpec& s) {
  // He et al. 2016, CIFAR layout: 3 stages of 3 basic blocks (16, 32, 64 channels), option-A
  // (parameter-free) shortcuts. Each block: conv1 bn1 relu1 conv2 bn2 [shortcut] add relu.
  int x = g.input();
  x = g.conv("stem.conv", x, 16, 3, 1, 1, false);
  x = g.batchnorm("stem.bn", x);
  x = g.relu("stem.relu", x);
  int64_t channels = 16;
  for (int stage = 0; stage < 3; ++stage) {
    const int64_t out = 16 << stage;
    for (int b = 0; b < 3; ++b) {
      const std::string p = "layer" + std::to_string(stage + 1) + "." + std::to_string(b) + ".";
      const int64_t stride = (stage > 0 && b == 0) ? 2 : 1;
      int y = g.conv(p + "conv1", x, out, 3, stride, 1, false);
      y = g.batchnorm(p + "bn1", y);
      y = g.relu(p + "relu1", y);
      y = g.conv(p + "conv2", y, out, 3, 1, 1, false);
      y = g.batchnorm(p + "bn2", y);
      int skip = x;
      if (stride != 1 || channels != out) skip = g.shortcut(p + "shortcut", x, out, stride);
      y = g.add(p + "add", y, skip);
      x = g.relu(p + "relu2", y);
      channels = out;
    }
  }
  x = g.global_avgpool("pool", x);
  g.linear("fc", x, s.num_classes);
}

const std::map<std::string, Builder>& registry() {
  static const std::map<std::string, Builder> r = {
      {"mlp", [](GraphBuilder& g, const ModelSpec& s) { build_mlp(g, s, false); }},
      {"mlp-bn", [](GraphBuilder& g, const ModelSpec& s) { build_mlp(g, s, true); }},
      {"lenet5", [](GraphBuilder& g, const ModelSpec& s) { build_lenet5(g, s, false); }},
      {"lenet5-bn", [](GraphBuilder& g, const ModelSpec& s) { build_lenet5(g, s, true); }},
      {"vgg-s", build_vgg_s},
      {"resnet20", build_resnet20},
  };
  return r;
}

}  // namespace

std::vector<std::string> model_names() {
  std::vector<std::string> names;
  for (const auto& kv : registry()) names.push_back(kv.first);
  return names;
}

Model make_model(const ModelSpec& spec) {
  const auto& r = registry();
  const auto it = r.find(spec.name);
  if (it == r.end() && looks_like_model_file(spec.name)) return load_script_model(spec);
  if (it == r.end()) {
    std::string known;
    for (const auto& kv : r) known += (known.empty() ? "" : ", ") + kv.first;
    throw std::invalid_argument("unknown model '" + text::printable(spec.name) + "' (known: " +
                                known + ")");
  }
  if (spec.in_channels < 1 || spec.height < 1 || spec.width < 1 || spec.num_classes < 2) {
    throw std::invalid_argument("model " + spec.name + ": bad geometry " + spec.to_json().dump());
  }
  Model model(spec);
  GraphBuilder builder(*model);
  try {
    it->second(builder, spec);
  } catch (const c10::Error& e) {
    // E.g. layers too large to allocate for the geometry (a checkpoint's metadata names it).
    const std::string what = e.what_without_backtrace();
    throw std::invalid_argument("model " + spec.name + ": cannot build it for " +
                                spec.to_json().dump() + " (" + what.substr(0, what.find('\n')) +
                                ")");
  }
  return model;
}

}  // namespace quell
