// Models as graphs of ops whose every output is a noise site.
#pragma once

#include <torch/torch.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "quell/blocks.h"
#include "quell/data.h"
#include "quell/site.h"

namespace quell {

/// What a model is built for: registry name and input/output geometry.
struct ModelSpec {
  std::string name = "lenet5-bn";
  // Image input [C, H, W] (the built-in models).
  int64_t in_channels = 1;
  int64_t height = 28;
  int64_t width = 28;
  /// Outputs per position: classes (the vocabulary of a language model); for real targets the
  /// size of the last output dimension. Imported models: 0 = take it from the model's output.
  int64_t num_classes = 10;
  /// Any other input (imported models): its shape per sample, e.g. {T} token ids or {T, F}
  /// frames; empty = the image geometry above.
  std::vector<int64_t> input_shape;
  /// The input's dtype: "float32" or "int64" (token ids).
  std::string input_dtype = "float32";
  /// Shape of one input: input_shape, or {in_channels, height, width}.
  std::vector<int64_t> sample_shape() const;
  /// The input's torch dtype (std::invalid_argument for an unknown input_dtype).
  torch::ScalarType input_scalar_type() const;
  /// Whether the input is an image [C, H, W] of float32.
  bool image_input() const { return input_shape.empty() && input_dtype == "float32"; }
  /// "1x28x28" or "64 int64".
  std::string input_text() const;
  Json to_json() const;
  static ModelSpec from_json(const Json& j);
  /// Spec for `name` with the geometry of `data` (its input shape and dtype, its classes).
  static ModelSpec for_dataset(const std::string& name, const Dataset& data);
};

/// Ops a node can perform.
enum class OpType {
  kInput,
  kConv,
  kLinear,
  kBatchNorm,
  kReLU,
  kMaxPool,
  kAvgPool,
  kAdd,
  kShortcut,
  kScript  ///< a segment of an imported TorchScript graph (quell/script.h)
};
const char* op_name(OpType op);

/// One row of the site table.
struct SiteInfo {
  int index = 0;
  std::string name;
  std::string op;
  std::vector<int64_t> shape;  ///< per sample, e.g. {6, 28, 28}
  int64_t params = 0;          ///< trainable parameters of the op producing the site
  bool floating = true;        ///< false for integer values (token ids): no noise applies
  int64_t numel() const;
};

struct ScriptOp;    // a segment of an imported graph (internal)
struct ScriptInfo;  // quell/script.h
namespace detail {
struct FusedChain;   // internal fused kernels
struct ModelAccess;  // the importer's access
}  // namespace detail

/// One node of the graph; its output is site `index`.
struct Node {
  OpType op = OpType::kInput;
  std::string name;
  std::vector<int> inputs;  ///< indices of earlier nodes
  torch::nn::Conv2d conv{nullptr};
  torch::nn::Linear linear{nullptr};  ///< flattens its input first
  torch::nn::BatchNorm2d bn2d{nullptr};
  torch::nn::BatchNorm1d bn1d{nullptr};
  int64_t kernel = 0, stride = 0;  ///< pooling; shortcut stride
  int64_t pad_channels = 0;        ///< shortcut: zero channels added on each side
  std::vector<int64_t> shape;      ///< per-sample output shape
  bool floating = true;            ///< false: integer values (token ids), no site logic applies
  // Imported nodes (op == kScript): the graph segment computing the site, the op's label
  // (conv, linear, matmul, layernorm, ...), its analog weight (a conv, linear or matmul reading
  // a parameter, as [outputs, fan-in...] sharing the parameter's storage), the trainable
  // parameters it reads and, for a product of two activations, its MACs per sample.
  std::shared_ptr<const ScriptOp> script;
  std::string label;
  torch::Tensor weight;
  torch::Tensor bias;  ///< an imported conv or linear's bias (the tile adds it digitally)
  int64_t param_count = 0;
  int64_t macs = 0;
  /// The op column of the site table: label for imported nodes, op_name(op) otherwise.
  std::string op_label() const { return op == OpType::kScript ? label : op_name(op); }
};

/// The live values at one point of the forward pass: enough to continue from there.
/// values[i] is defined for nodes still needed; `site` is the node whose clean output is held.
struct ForwardState {
  int site = -1;
  std::vector<torch::Tensor> values;
  /// Whether run_from may write the value at `site` in place; false when it is shared (e.g.
  /// with a cache), so the site logic writes a new tensor instead.
  bool site_owned = true;
  const torch::Tensor& at_site() const { return values.at(site); }
};

/// A network whose every op output is a site. Built by the registry (make_model) through
/// GraphBuilder; nodes run in index order.
class ModelImpl : public torch::nn::Module {
 public:
  explicit ModelImpl(ModelSpec spec) : spec_(std::move(spec)) {}

  /// x: [N, C, H, W] -> logits [N, num_classes], with the site logic at every site.
  torch::Tensor forward(torch::Tensor x) { return forward(std::move(x), engine_); }
  /// The same with another engine (e.g. one per thread: the model's modules are only read
  /// in eval mode without gradients, so threads with their own engines can share the model).
  torch::Tensor forward(torch::Tensor x, SiteEngine& engine);
  /// Runs the network up to node `site` (clean: no site logic at any site) and returns the
  /// live values, with the raw output of `site` (before its site logic).
  ForwardState run_until(const torch::Tensor& x, int site, bool with_site_logic = false) {
    return run_until(x, site, with_site_logic, engine_);
  }
  ForwardState run_until(const torch::Tensor& x, int site, bool with_site_logic,
                         SiteEngine& engine);
  /// Continues from a state: applies the site logic at `state.site` and runs the rest.
  /// The state is consumed (its tensors may be modified in place).
  torch::Tensor run_from(ForwardState state) { return run_from(std::move(state), engine_); }
  torch::Tensor run_from(ForwardState state, SiteEngine& engine);

  const ModelSpec& spec() const { return spec_; }
  const std::vector<Node>& nodes() const { return nodes_; }
  std::vector<SiteInfo> sites() const;
  std::vector<std::string> site_names() const;
  int num_sites() const { return static_cast<int>(nodes_.size()); }
  /// Parameters of the backbone (the network without denoising blocks).
  int64_t num_params() const;

  /// Denoising blocks (docs/denoise.md): after site i's logic (noise, ADC, repetitions) the
  /// block at i, if any, maps the value; blocks are digital and noise-free, and run in every
  /// pass (run_until applies those before its site too). Replaces the blocks present; the
  /// backbone is untouched. Throws std::invalid_argument for a site out of range, a site listed
  /// twice or a block that cannot sit at a site. The blocks' random initial weights come from
  /// the global torch generator, or, with `init_seed`, from a generator seeded by (init_seed,
  /// site, block): the same block at the same site starts the same whatever ran before (the
  /// global generator is left as it was; not thread-safe against other users of it).
  void set_denoisers(const std::vector<BlockPlacement>& placement,
                     std::optional<uint64_t> init_seed = std::nullopt);
  /// The blocks present, in site order (kinds resolved).
  std::vector<BlockPlacement> denoiser_placement() const;
  bool has_denoisers() const;
  /// The block after `site`, or an empty holder.
  Denoiser denoiser(int site) const;
  int64_t num_denoiser_params() const;
  std::vector<torch::Tensor> denoiser_parameters() const;
  std::vector<torch::Tensor> backbone_parameters() const;
  /// Bypasses the blocks (the backbone alone) while off; not thread-safe (training only).
  void set_denoisers_enabled(bool on) { denoisers_enabled_ = on; }
  /// Called with (site, block output) after every block, when set; not thread-safe.
  void set_denoiser_observer(std::function<void(int, const torch::Tensor&)> observer) {
    block_observer_ = std::move(observer);
  }
  bool denoisers_enabled() const { return denoisers_enabled_; }

  SiteEngine& engine() { return engine_; }
  const SiteEngine& engine() const { return engine_; }

  /// Fused inference (on by default): without autograd, a batch norm (eval mode), ReLU and
  /// 2x2 max pool whose sites in between do nothing in this pass run as one kernel, with the
  /// same bits as the separate ops (AVX-512 CPUs; elsewhere the separate ops run). Off runs
  /// every op on its own (tests and benchmarks compare the two).
  void set_fused_inference(bool on) { fused_ = on; }
  bool fused_inference() const { return fused_; }

  /// Sets training mode, of an imported graph's modules too.
  void train(bool on = true) override;
  /// The import record of a model loaded from TorchScript (quell/script.h), else null.
  const ScriptInfo* script_info() const;

  /// Measures per-site clean statistics (std, max|x|, min, max) on up to `max_samples` images
  /// in eval mode, and installs them in the engine.
  void calibrate(const torch::Tensor& images, int64_t max_samples = 2048, int64_t batch = 512);

  /// Conv/linear weights, in site order (for weight noise and inspection).
  std::vector<std::pair<int, torch::Tensor>> analog_weights();

 private:
  // Graph building: GraphBuilder and the TorchScript importer (detail::ModelAccess).
  Node& add_node(Node node);
  /// Keeps the TorchScript module alive and records the import.
  void set_script(std::shared_ptr<void> module_state, std::shared_ptr<ScriptInfo> info,
                  std::function<void(bool)> set_training);
  /// Runs one node; an analog layer goes through the tile I/O `engine` configures for it.
  torch::Tensor run_node(const Node& node, std::vector<torch::Tensor>& values,
                         const SiteEngine* engine = nullptr);
  /// An imported analog node on a tile: its activation inputs through the DAC (each sample
  /// scaled by its max |x|), its output (bias included) through output noise and the ADC.
  torch::Tensor run_script_tile(const Node& node, const std::vector<torch::Tensor>& values,
                                const TileIO& tile, const SiteEngine& engine);
  // Fused inference (src/fused.h).
  bool fusing(const SiteEngine& engine) const;
  /// Node m's value goes only to node m + 1, with no block after it.
  bool passes_on(int m) const;
  /// The last node of the longest [batch norm] [ReLU] [2x2 max pool] chain from `first` whose
  /// sites in between do nothing in this pass; first - 1 if none.
  int chain_end(int first, const SiteEngine& engine) const;
  detail::FusedChain chain_of(int first, int last) const;
  /// The last node of a fusable chain of at least two ops starting at `first`, or `first`.
  int fused_chain_end(int first, const SiteEngine& engine) const;
  /// The last node of a chain after `site` that can run in one kernel with site's additive
  /// noise (filled into *chain), or `site`.
  int noisy_chain_end(int site, const SiteEngine& engine, detail::FusedChain* chain,
                      const torch::Tensor& x) const;
  /// Runs nodes first..last and returns the value of `last` (the values between are never
  /// materialised when the fused kernel takes the input).
  torch::Tensor run_chain(int first, int last, std::vector<torch::Tensor>& values);
  ModelSpec spec_;
  std::vector<Node> nodes_;
  std::vector<int> last_use_;  ///< last node reading each node's output
  SiteEngine engine_;
  std::vector<Denoiser> blocks_;                    ///< per site; empty holder = none
  std::shared_ptr<torch::nn::Module> block_set_;  ///< registered as "denoisers"
  bool denoisers_enabled_ = true;
  bool fused_ = true;
  std::function<void(int, const torch::Tensor&)> block_observer_;
  std::shared_ptr<void> script_state_;
  std::shared_ptr<ScriptInfo> script_info_;
  std::function<void(bool)> script_set_training_;
  torch::Tensor denoise(int site, torch::Tensor x) {
    const auto i = static_cast<size_t>(site);
    if (!denoisers_enabled_ || i >= blocks_.size() || !blocks_[i]) return x;
    torch::Tensor y = blocks_[i]->forward(x);
    if (block_observer_) block_observer_(site, y);
    return y;
  }
  friend class GraphBuilder;
  friend struct detail::ModelAccess;
};
TORCH_MODULE(Model);

/// Builds a graph node by node, tracking shapes, registering modules under the node names.
class GraphBuilder {
 public:
  explicit GraphBuilder(ModelImpl& model);
  int input(const std::string& name = "input");
  int conv(const std::string& name, int from, int64_t out_channels, int64_t kernel,
           int64_t stride = 1, int64_t padding = 0, bool bias = true);
  int linear(const std::string& name, int from, int64_t out_features, bool bias = true);
  int batchnorm(const std::string& name, int from);
  int relu(const std::string& name, int from);
  int maxpool(const std::string& name, int from, int64_t kernel, int64_t stride);
  int global_avgpool(const std::string& name, int from);
  int add(const std::string& name, int a, int b);
  /// Parameter-free ResNet "option A" shortcut: subsample by `stride`, zero-pad channels.
  int shortcut(const std::string& name, int from, int64_t out_channels, int64_t stride);
  const std::vector<int64_t>& shape(int node) const;

 private:
  int push(Node node);
  ModelImpl& model_;
};

/// Names of the registered models.
std::vector<std::string> model_names();
/// Builds a registered model (random init from the current torch seed). Unknown names throw
/// std::invalid_argument listing the known ones; unsuitable geometry throws too.
Model make_model(const ModelSpec& spec);

}  // namespace quell
