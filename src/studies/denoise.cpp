#include "quell/denoise.h"
#include "quell/metric.h"
#include "quell/walk_study.h"

#include "quell/dist.h"
#include "quell/load.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <fstream>
#include <limits>
#include <random>
#include <stdexcept>

#include "quell/rng.h"
#include "studies/lazy_greedy.h"
#include "util/text.h"
#include "eval/train_loop.h"

namespace quell {
namespace {

constexpr uint64_t kDenoiseChipTag = 0x44454e4f49534543ULL;  // "DENOISEC"

torch::Device device_of(const ModelImpl& model) {
  const auto p = model.backbone_parameters();
  return p.empty() ? torch::Device(torch::kCPU) : p.front().device();
}

// Restores requires_grad flags, the blocks' switch and the observers on scope exit.
class FreezeGuard {
 public:
  /// freeze = false keeps the parameters' flags (a model fed token ids needs them to carry
  /// gradients to its sites; autograd::grad still writes no parameter's .grad).
  explicit FreezeGuard(ModelImpl& model, bool freeze = true)
      : model_(model), was_training_(model.is_training()) {
    if (!freeze) return;
    for (auto& p : model.backbone_parameters()) {
      saved_.emplace_back(p, p.requires_grad());
      p.requires_grad_(false);
    }
  }
  ~FreezeGuard() {
    for (auto& [p, flag] : saved_) p.requires_grad_(flag);
    model_.set_denoisers_enabled(true);
    model_.set_denoiser_observer(nullptr);
    model_.engine().set_observer(nullptr);
    model_.train(was_training_);
  }
  FreezeGuard(const FreezeGuard&) = delete;
  FreezeGuard& operator=(const FreezeGuard&) = delete;

 private:
  ModelImpl& model_;
  bool was_training_;
  std::vector<std::pair<torch::Tensor, bool>> saved_;
};

}  // namespace

Json DenoiseTrainOptions::to_json(const std::vector<std::string>& site_names) const {
  Json j{{"epochs", epochs},
              {"batch_size", batch_size},
              {"optimizer", "adam"},
              {"lr", lr},
              {"cosine", cosine},
              {"seed", seed},
              {"scale_range", {scale_lo, scale_hi}},
              {"feature_weight", feature_weight},
              {"noise", noise.to_json(site_names)}};
  if (chip >= 0) j["chip"] = chip;
  return j;
}

TrainResult train_denoisers(ModelImpl& model, const Dataset& data,
                            const DenoiseTrainOptions& o) {
  if (!model.has_denoisers()) throw std::invalid_argument("the model has no denoising blocks");
  if (o.epochs < 0) throw std::invalid_argument("epochs must be >= 0");
  if (o.batch_size < 1) throw std::invalid_argument("batch size must be >= 1");
  if (!(o.lr > 0.0) || !std::isfinite(o.lr)) {
    throw std::invalid_argument("learning rate must be a positive number");
  }
  if (!(o.scale_lo >= 0.0) || !(o.scale_hi >= o.scale_lo) || !std::isfinite(o.scale_hi)) {
    throw std::invalid_argument("noise scale range must satisfy 0 <= lo <= hi < inf");
  }
  if (!(o.feature_weight >= 0.0) || !std::isfinite(o.feature_weight)) {
    throw std::invalid_argument("feature-loss weight must be a non-negative number");
  }
  if (data.size() == 0) throw std::invalid_argument("training set is empty");
  const torch::Device device = device_of(model);
  FreezeGuard guard(model);
  model.eval();  // BN uses (and keeps) its running statistics; blocks have no mode-dependent ops

  torch::optim::Adam optimizer(model.denoiser_parameters(), torch::optim::AdamOptions(o.lr));
  const int64_t n = data.size();
  const int64_t steps_per_epoch = (n + o.batch_size - 1) / o.batch_size;
  const int64_t total_steps = steps_per_epoch * o.epochs;
  const bool varying = o.scale_hi > o.scale_lo;
  if (!varying) model.engine().configure(o.noise.scaled(o.scale_lo));
  std::mt19937_64 scale_rng(mix_seed(o.seed, kDenoiseChipTag));
  std::uniform_real_distribution<double> scale_dist(o.scale_lo, o.scale_hi);

  // Feature loss: clean activations at the block sites from a backbone-only, noise-free pass.
  const auto placement = model.denoiser_placement();
  std::vector<double> inv_var(static_cast<size_t>(model.num_sites()), 1.0);
  const auto& cal = model.engine().calibration();
  for (const auto& b : placement) {
    const size_t s = static_cast<size_t>(b.site);
    if (s < cal.size() && cal[s].valid && cal[s].std > 0) inv_var[s] = 1.0 / (cal[s].std * cal[s].std);
  }
  SiteEngine clean_engine;
  std::vector<torch::Tensor> clean_at(static_cast<size_t>(model.num_sites()));
  std::vector<torch::Tensor> block_out(static_cast<size_t>(model.num_sites()));
  if (o.feature_weight > 0) {
    clean_engine.set_observer([&](int site, const torch::Tensor& x) {
      if (model.denoiser(site)) clean_at[static_cast<size_t>(site)] = x.detach();
    });
    model.set_denoiser_observer(
        [&](int site, const torch::Tensor& y) { block_out[static_cast<size_t>(site)] = y; });
  }

  const int ranks = o.data_parallel ? dist::size() : 1;
  const int rank = o.data_parallel ? dist::rank() : 0;
  if (ranks > 1) detail::broadcast_parameters(model);
  auto gen = at::detail::createCPUGenerator(o.seed);
  TrainResult result;
  const auto t_start = std::chrono::steady_clock::now();
  int64_t step = 0;
  Progress progress;
  progress.total = total_steps;
  for (int epoch = 0; epoch < o.epochs; ++epoch) {
    const torch::Tensor perm = torch::randperm(n, gen, torch::kLong);
    progress.what = "blocks " + std::to_string(epoch + 1) + "/" + std::to_string(o.epochs);
    detail::EpochMeter meter(epoch + 1, progress, o.progress);
    for (int64_t b = 0; b < n; b += o.batch_size) {
      if (o.cosine) detail::set_lr(optimizer, detail::cosine_lr(o.lr, step, total_steps));
      const int64_t global = std::min(o.batch_size, n - b);
      torch::Tensor idx = perm.narrow(0, b, global);
      if (ranks > 1) {  // data parallel: this rank's contiguous share of the batch
        const int64_t lo = global * rank / ranks, hi = global * (rank + 1) / ranks;
        idx = idx.narrow(0, lo, hi - lo);
      }
      const torch::Tensor x = data.inputs.index_select(0, idx).to(device);
      const torch::Tensor y = data.targets.index_select(0, idx).to(device);
      if (varying) model.engine().configure(o.noise.scaled(scale_dist(scale_rng)));
      if (x.size(0) == 0) {  // a rank's share of a last, tiny batch: no samples, no gradient
        optimizer.zero_grad();
        detail::allreduce_gradients(model);
        optimizer.step();
        ++step;
        continue;
      }
      if (o.feature_weight > 0) {
        torch::NoGradGuard no_grad;
        model.set_denoisers_enabled(false);
        model.forward(x, clean_engine);
        model.set_denoisers_enabled(true);
      }
      // A fresh chip per step, or the calibrated chip with fresh dynamic draws that do not
      // coincide with the evaluation's draws 0, 1, ….
      const uint64_t chip = o.chip >= 0 ? static_cast<uint64_t>(o.chip)
                                        : mix_seed(kDenoiseChipTag, static_cast<uint64_t>(step));
      const uint64_t draw =
          o.chip >= 0 ? mix_seed(kDenoiseChipTag, static_cast<uint64_t>(step)) : 0;
      model.engine().set_draw(chip, draw);
      optimizer.zero_grad();
      torch::Tensor logits, loss;
      {
        WeightNoiseGuard weights(model, o.noise, chip, draw);
        logits = model.forward(x);
        loss = task_loss(logits, y);
        if (o.feature_weight > 0) {
          torch::Tensor feature = torch::zeros({}, logits.options());
          for (const auto& p : placement) {
            const size_t s = static_cast<size_t>(p.site);
            feature = feature + (block_out[s] - clean_at[s]).square().mean() * inv_var[s];
          }
          loss = loss + o.feature_weight * feature / static_cast<double>(placement.size());
        }
        // Summed over the ranks, each rank's mean weighted by its share is the global mean.
        (ranks == 1 ? loss
                    : loss * (static_cast<double>(x.size(0)) / static_cast<double>(global)))
            .backward();
      }
      if (ranks > 1) detail::allreduce_gradients(model);
      optimizer.step();
      meter.add(loss, logits, y, ++step);
    }
    result.epochs.push_back(meter.finish("denoiser training"));
  }
  model.engine().configure(NoiseConfig{});
  result.seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
  return result;
}

void ChipCalibrationOptions::validate() const {
  if (samples < 1) throw std::invalid_argument("calibration samples must be >= 1");
  if (epochs < 1) throw std::invalid_argument("calibration epochs must be >= 1");
  if (!(lr > 0.0) || !std::isfinite(lr)) {
    throw std::invalid_argument("calibration learning rate must be a positive number");
  }
  if (batch_size < 1) throw std::invalid_argument("calibration batch size must be >= 1");
  if (!(feature_weight >= 0.0) || !std::isfinite(feature_weight)) {
    throw std::invalid_argument("calibration feature weight must be a non-negative number");
  }
  if (!(holdout >= 0.0 && holdout <= 0.5)) {
    throw std::invalid_argument("calibration holdout must be a fraction in [0, 0.5]");
  }
  if (check_draws < 1) throw std::invalid_argument("calibration check draws must be >= 1");
}

ChipCalibrationResult calibrate_per_chip(ModelImpl& model, const Dataset& calib,
                                         const Dataset& data, const NoiseConfig& noise,
                                         const ChipCalibrationOptions& opts,
                                         const EvalOptions& eval,
                                         const UncalibratedEval* uncalibrated) {
  opts.validate();
  if (!model.has_denoisers()) throw std::invalid_argument("the model has no denoising blocks");
  if (!noise.has_static()) {
    throw std::invalid_argument(
        "per-chip calibration needs noise that is fixed per chip (static or aging components, "
        "weight noise or a device model); this noise is drawn afresh on every pass");
  }
  if (eval.chips < 1 || eval.first_chip < 0) throw std::invalid_argument("chips must be >= 1");
  const int64_t n = std::min(opts.samples, calib.size());
  if (n < 1) throw std::invalid_argument("calibration set is empty");
  // Fewer samples than 1 / holdout leave none to hold out: then there is no check.
  const int64_t held = static_cast<int64_t>(std::floor(opts.holdout * static_cast<double>(n)));
  const Dataset part = slice_dataset(calib, 0, n - held);
  const Dataset check = held > 0 ? slice_dataset(calib, n - held, held) : Dataset{};
  // The chip-agnostic blocks every chip starts from.
  std::vector<torch::Tensor> live, saved;
  {
    torch::NoGradGuard no_grad;
    for (auto& p : model.denoiser_parameters()) {
      live.push_back(p);
      saved.push_back(p.detach().clone());
    }
  }
  auto restore = [&] {
    torch::NoGradGuard no_grad;
    for (size_t i = 0; i < live.size(); ++i) live[i].copy_(saved[i]);
  };
  ChipCalibrationResult result;
  result.samples = n - held;
  result.held_out = held;
  result.epochs = opts.epochs;
  result.chips = eval.chips;
  std::vector<DrawResult> passes;
  std::vector<double> clean;
  double seconds = 0.0;
  try {
    for (int c = eval.first_chip; c < eval.first_chip + eval.chips; ++c) {
      restore();
      // The check: mean task loss on the held-out calibration samples (never `data`) on this
      // chip, before and after the calibration.
      EvalOptions on_chip = eval;
      on_chip.first_chip = c;
      on_chip.chips = 1;
      on_chip.draws = opts.check_draws;
      on_chip.progress = nullptr;
      auto check_loss = [&] {
        if (held == 0) return 0.0;
        double sum = 0.0;
        const EvalResult r = evaluate(model, check, noise, on_chip);
        for (const auto& d : r.draws) sum += d.loss;
        return sum / static_cast<double>(r.draws.size());
      };
      const auto t0 = std::chrono::steady_clock::now();
      const double before = check_loss();
      DenoiseTrainOptions t;
      t.epochs = opts.epochs;
      t.batch_size = opts.batch_size;
      t.lr = opts.lr;
      t.seed = mix_seed(opts.seed, static_cast<uint64_t>(c));
      t.noise = noise;
      t.feature_weight = opts.feature_weight;
      t.chip = c;
      t.progress = opts.progress;
      train_denoisers(model, part, t);
      const bool kept = held == 0 || check_loss() < before;
      if (kept) {
        ++result.chips_kept;
      } else {
        restore();  // this chip's calibration did not help on its held-out samples
      }
      seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      EvalOptions one = eval;
      one.first_chip = c;
      one.chips = 1;
      if (!kept && uncalibrated != nullptr) {
        // The chip-agnostic blocks again: their own passes on this chip, if all are there.
        const EvalResult known = passes_within(uncalibrated->noisy, noise, one);
        if (!known.draws.empty()) {
          passes.insert(passes.end(), known.draws.begin(), known.draws.end());
          clean.push_back(uncalibrated->clean);
          continue;
        }
      }
      const EvalResult r = evaluate(model, data, noise, one);
      passes.insert(passes.end(), r.draws.begin(), r.draws.end());
      EvalOptions quiet = one;
      quiet.progress = nullptr;
      clean.push_back(evaluate(model, data, NoiseConfig{}, quiet).accuracy.mean);
    }
  } catch (...) {
    restore();
    throw;
  }
  restore();
  result.noisy = summarize_draws(std::move(passes), true, noise.has_dynamic());
  result.clean = summarize(clean);
  result.seconds_per_chip = seconds / eval.chips;
  return result;
}

std::vector<SiteSensitivity> taylor_sensitivity(ModelImpl& model, const Dataset& data,
                                                int64_t max_samples, int64_t batch_size) {
  if (data.size() == 0) throw std::invalid_argument("calibration set is empty");
  const torch::Device device = device_of(model);
  // Integer inputs (token ids) carry no gradient: the sites get theirs through the parameters.
  FreezeGuard guard(model, data.inputs.is_floating_point());
  model.eval();
  model.set_denoisers_enabled(false);
  const int n_sites = model.num_sites();
  SiteEngine engine;  // no noise: the gradient at the clean outputs
  std::vector<torch::Tensor> at(static_cast<size_t>(n_sites));
  engine.set_observer([&](int site, const torch::Tensor& x) { at[static_cast<size_t>(site)] = x; });
  std::vector<double> sum(static_cast<size_t>(n_sites), 0.0);
  const int64_t total = std::min<int64_t>(data.size(), std::max<int64_t>(1, max_samples));
  for (int64_t b = 0; b < total; b += batch_size) {
    const int64_t m = std::min(batch_size, total - b);
    torch::Tensor x = data.inputs.narrow(0, b, m).to(device).clone();
    if (x.is_floating_point()) x.requires_grad_(true);
    const torch::Tensor y = data.targets.narrow(0, b, m).to(device);
    const torch::Tensor logits = model.forward(x, engine);
    // Summed loss: row n of its gradient at a site is the gradient of sample n's own loss.
    const torch::Tensor loss = task_loss_sum(logits, y);
    std::vector<torch::Tensor> wrt;  // the sites whose values carry gradients
    std::vector<int> wrt_site;
    for (int s = 0; s < n_sites; ++s) {
      const auto& v = at[static_cast<size_t>(s)];
      if (v.defined() && v.requires_grad()) {
        wrt.push_back(v);
        wrt_site.push_back(s);
      }
    }
    const auto found = torch::autograd::grad({loss}, wrt, {}, false, false, /*allow_unused=*/true);
    std::vector<torch::Tensor> grads(static_cast<size_t>(n_sites));
    for (size_t i = 0; i < wrt.size(); ++i) grads[static_cast<size_t>(wrt_site[i])] = found[i];
    for (int s = 0; s < n_sites; ++s) {
      const auto& g = grads[static_cast<size_t>(s)];
      if (g.defined()) {
        sum[static_cast<size_t>(s)] += g.flatten(1).norm(2, 1).sum().item<double>();
      }
    }
  }
  std::vector<SiteSensitivity> out;
  const auto names = model.site_names();
  for (int s = 0; s < n_sites; ++s) {
    out.push_back({s, names[s], sum[static_cast<size_t>(s)] / static_cast<double>(total)});
  }
  return out;
}

std::vector<SiteSensitivity> drop_sensitivity(ModelImpl& model, const Dataset& data,
                                              const NoiseConfig& noise,
                                              const std::vector<int>& sites,
                                              const EvalOptions& opts) {
  EvalOptions quiet = opts;
  quiet.progress = nullptr;
  const double clean = evaluate(model, data, NoiseConfig{}, quiet).accuracy.mean;
  const auto names = model.site_names();
  std::vector<SiteSensitivity> out;
  for (int s : sites) {
    const auto it = noise.sites.find(s);
    if (it == noise.sites.end()) continue;
    NoiseConfig one;
    one.seed = noise.seed;
    one.sites[s] = it->second;
    const EvalResult r = evaluate(model, data, one, quiet);
    out.push_back({s, names.at(static_cast<size_t>(s)), clean - r.headline().mean});
  }
  return out;
}

std::vector<SiteSensitivity> walk_sensitivity(const std::string& walk_json,
                                              const std::vector<std::string>& site_names) {
  const WalkReport walk = WalkReport::read(walk_json);
  std::vector<SiteSensitivity> out;
  for (const auto& c : walk.result.sites) {
    const auto it = std::find(site_names.begin(), site_names.end(), c.name);
    if (it == site_names.end()) {
      throw std::runtime_error(walk_json + ": site '" + c.name + "' is not a site of this model");
    }
    double value = 0.0;
    if (c.midpoint.status == CrossingStatus::kCrossed && c.midpoint.value > 0) {
      value = 1.0 / c.midpoint.value;
    } else if (c.midpoint.status == CrossingStatus::kBelowGrid) {
      value = std::numeric_limits<double>::infinity();
    }
    out.push_back({static_cast<int>(it - site_names.begin()), c.name, value});
  }
  return out;
}

std::vector<int> rank_sites(const std::vector<SiteSensitivity>& s) {
  std::vector<SiteSensitivity> sorted = s;
  std::stable_sort(sorted.begin(), sorted.end(), [](const auto& a, const auto& b) {
    if (a.value != b.value) return a.value > b.value;
    return a.site < b.site;
  });
  std::vector<int> out;
  for (const auto& x : sorted) out.push_back(x.site);
  return out;
}

int64_t Placement::params() const {
  int64_t c = 0;
  for (const auto& b : blocks) c += b.params;
  return c;
}

std::vector<BlockPlacement> Placement::placement() const {
  std::vector<BlockPlacement> out;
  for (const auto& b : blocks) out.push_back({b.site, b.block});
  return out;
}

std::string Placement::label(const std::vector<std::string>& site_names) const {
  if (blocks.empty()) return "none";
  std::string s;
  for (const auto& b : blocks) {
    // Compact: "conv1/4" (auto block, r = 4), "fc1/mlp8", "bn1/ch".
    const BlockSpec& k = b.block;
    const std::string r = std::to_string(k.ratio);
    const std::string tag = k.kind == "auto" ? r : k.kind == "channel" ? "ch" : k.kind + r;
    s += (s.empty() ? "" : "+") + site_names.at(static_cast<size_t>(b.site)) + "/" + tag;
  }
  return s;
}

std::vector<BlockPlacement> parse_placement_label(const std::string& label,
                                                  const std::vector<std::string>& site_names) {
  std::vector<BlockPlacement> out;
  if (text::trim(label) == "none" || text::trim(label).empty()) return out;
  for (const std::string& raw : text::split(label, '+')) {
    const std::string item = text::trim(raw);
    const auto slash = item.rfind('/');
    if (slash == std::string::npos || slash == 0 || slash + 1 == item.size()) {
      throw std::invalid_argument("placement '" + label + "': '" + item +
                                  "' is not SITE/TAG (e.g. conv1/4, fc1/mlp8, bn1/ch)");
    }
    const std::string site = item.substr(0, slash), tag = item.substr(slash + 1);
    const auto it = std::find(site_names.begin(), site_names.end(), site);
    if (it == site_names.end()) {
      throw std::invalid_argument("placement '" + label + "': unknown site '" + site + "'");
    }
    BlockPlacement b;
    b.site = static_cast<int>(it - site_names.begin());
    if (tag == "ch") {
      b.block.kind = "channel";
    } else {
      const size_t digits = tag.find_first_of("0123456789");
      const std::string kind = digits == std::string::npos ? tag : tag.substr(0, digits);
      if (digits == std::string::npos) {
        throw std::invalid_argument("placement '" + label + "': block tag '" + tag +
                                    "' has no ratio");
      }
      b.block = BlockSpec::parse((kind.empty() ? "auto" : kind) + ":r=" + tag.substr(digits));
    }
    out.push_back(b);
  }
  return out;
}

namespace {
Placement with(const Placement& p, const Candidate& c) {
  Placement q = p;
  q.blocks.push_back(c);
  std::sort(q.blocks.begin(), q.blocks.end(),
            [](const Candidate& a, const Candidate& b) { return a.site < b.site; });
  return q;
}
bool uses_site(const Placement& p, int site) {
  for (const auto& b : p.blocks) {
    if (b.site == site) return true;
  }
  return false;
}
}  // namespace

Placement greedy_by_rank(const std::vector<int>& ranking, const std::vector<Candidate>& candidates,
                         int64_t budget_params) {
  Placement p;
  for (int site : ranking) {
    const auto it = std::find_if(candidates.begin(), candidates.end(),
                                 [&](const Candidate& c) { return c.site == site; });
    if (it == candidates.end() || uses_site(p, site)) continue;
    if (p.params() + it->params <= budget_params) p = with(p, *it);
  }
  return p;
}

Placement measured_greedy(const std::vector<Candidate>& candidates, int64_t budget_params,
                          const PlacementEvaluator& evaluate, const Summary& start_accuracy,
                          double min_gain, std::vector<PlacementScore>* tried,
                          const ProgressFn& progress, int width) {
  Placement current;
  double current_acc = start_accuracy.mean;
  int step = 0;
  Progress prog;
  // Gain per parameter of each candidate at its last evaluation (+inf: never evaluated).
  std::vector<double> last_ratio(candidates.size(), std::numeric_limits<double>::infinity());
  while (true) {
    std::vector<size_t> fits;
    for (size_t i = 0; i < candidates.size(); ++i) {
      const Candidate& c = candidates[i];
      if (!uses_site(current, c.site) && c.params > 0 &&
          current.params() + c.params <= budget_params) {
        fits.push_back(i);
      }
    }
    if (fits.empty()) break;
    ++step;
    detail::keep_most_promising(fits, last_ratio, width, step);
    double best_ratio = -std::numeric_limits<double>::infinity();
    Placement best;
    Summary best_acc;
    prog.done = 0;
    prog.total = static_cast<int64_t>(fits.size());
    prog.what = "step " + std::to_string(step);
    for (size_t i : fits) {
      const Candidate& c = candidates[i];
      const Placement p = with(current, c);
      const Summary acc = evaluate(p);
      if (tried) tried->push_back({p, acc, "search", step});
      const double gain = acc.mean - current_acc;
      const double ratio = gain / static_cast<double>(c.params);
      last_ratio[i] = ratio;
      if (gain > min_gain && ratio > best_ratio) {
        best_ratio = ratio;
        best = p;
        best_acc = acc;
      }
      ++prog.done;
      prog.accuracy = acc.mean;
      if (progress) progress(prog);
    }
    if (best.blocks.empty()) break;
    current = best;
    current_acc = best_acc.mean;
  }
  return current;
}

std::vector<size_t> pareto_front(const std::vector<double>& overhead,
                                 const std::vector<double>& accuracy) {
  TORCH_CHECK(overhead.size() == accuracy.size(), "pareto_front: sizes differ");
  std::vector<size_t> order(overhead.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    if (overhead[a] != overhead[b]) return overhead[a] < overhead[b];
    return accuracy[a] > accuracy[b];
  });
  std::vector<size_t> front;
  double best = -std::numeric_limits<double>::infinity();
  for (size_t i : order) {
    if (accuracy[i] > best) {
      front.push_back(i);
      best = accuracy[i];
    }
  }
  return front;
}

}  // namespace quell
