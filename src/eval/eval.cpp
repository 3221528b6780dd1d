#include "quell/eval.h"

#include "quell/dist.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <optional>

#include "quell/rng.h"
#include "quell/runtime.h"

namespace quell {
namespace {
constexpr uint64_t kWeightTag = 0x5745494748544e53ULL;
}  // namespace

const Summary& EvalResult::headline() const { return chip_level ? chip_accuracy : accuracy; }

WeightNoiseGuard::WeightNoiseGuard(ModelImpl& model, const WeightNoise& noise, uint64_t seed,
                                   uint64_t chip)
    : WeightNoiseGuard(model, [&] {
        NoiseConfig c;
        c.weight = noise;
        c.seed = seed;
        return c;
      }(), chip) {}

WeightNoiseGuard::WeightNoiseGuard(ModelImpl& model, const NoiseConfig& config, uint64_t chip,
                                   uint64_t draw) {
  const WeightNoise& noise = config.weight;
  const DeviceConfig& device = config.device;
  const bool programs = device.programs_weights();
  if (!noise.enabled() && !programs) return;
  noise.validate();
  torch::NoGradGuard no_grad;
  const auto weights = model.analog_weights();
  if (programs && !device.all_layers) {
    const auto names = model.site_names();
    for (int s : device.layers) {
      const bool analog = std::any_of(weights.begin(), weights.end(),
                                      [&](const auto& sw) { return sw.first == s; });
      if (!analog) {
        throw std::invalid_argument("device layers: site " + std::to_string(s) + " (" +
                                    names.at(s) +
                                    ") is not an analog layer (conv, linear or a matmul with "
                                    "a weight)");
      }
    }
  }
  for (auto [site, w] : weights) {
    const bool on_device = programs && device.on(site);
    if (!noise.enabled() && !on_device) continue;
    saved_.emplace_back(w, w.detach().clone());
    torch::Tensor data = w.detach();
    if (noise.enabled()) {
      const RngStream s{mix_seed(config.seed, chip, kWeightTag), static_cast<uint64_t>(site)};
      if (noise.multiplicative) {
        mul_normal_(data, s, noise.sigma);
      } else {
        const double scale = noise.relative ? data.abs().max().item<double>() : 1.0;
        add_normal_(data, s, noise.sigma * scale);
      }
    }
    if (on_device) data.copy_(program_weight(data, device, config.seed, chip, site, draw).weight);
  }
}

WeightNoiseGuard::~WeightNoiseGuard() {
  torch::NoGradGuard no_grad;
  for (auto& [live, clean] : saved_) live.detach().copy_(clean);
}

DrawResult run_pass(ModelImpl& model, const Dataset& data, int64_t batch_size,
                    const Metric& metric) {
  torch::NoGradGuard no_grad;
  const torch::Device device =
      model.parameters().empty() ? torch::Device(torch::kCPU) : model.parameters().front().device();
  const int64_t n = data.size();
  const int64_t batches = (n + batch_size - 1) / batch_size;
  const int threads =
      static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), batches)));
  std::vector<Metric::Sums> sums(threads);
  auto run_batch = [&](int t, int64_t b, SiteEngine& engine) {
    const int64_t m = std::min(batch_size, n - b * batch_size);
    const torch::Tensor x = data.inputs.narrow(0, b * batch_size, m).to(device);
    const torch::Tensor y = data.targets.narrow(0, b * batch_size, m).to(device);
    sums[t] += metric.measure(model.forward(x, engine), y);
  };
  SiteEngine& engine = model.engine();
  if (threads == 1 || !device.is_cpu() || engine.has_observer()) {
    for (int64_t b = 0; b < batches; ++b) run_batch(0, b, engine);
  } else {
    // One batch per thread, each thread with its own engine (the ops of one batch are small:
    // this beats splitting every op over the threads). Batch b gets the forward index it would
    // get in a sequential pass, so the noise and the result are the same.
    const uint64_t base = engine.forward_index();
    std::vector<SiteEngine> engines(threads, engine);
    parallel_items(batches, threads, [&](int t, int64_t b) {
      engines[t].set_forward_index(base + static_cast<uint64_t>(b));
      run_batch(t, b, engines[t]);
    });
    engine.set_forward_index(base + static_cast<uint64_t>(batches));
  }
  Metric::Sums total;
  for (int t = 0; t < threads; ++t) total += sums[t];
  DrawResult r;
  r.accuracy = n > 0 ? metric.value(total) : 0.0;
  r.loss = n > 0 ? Metric::loss(total) : 0.0;
  return r;
}

EvalResult evaluate(ModelImpl& model, const Dataset& data, const NoiseConfig& config,
                    const EvalOptions& opts) {
  TORCH_CHECK(opts.draws >= 1, "draws must be >= 1, got ", opts.draws);
  TORCH_CHECK(opts.chips >= 1, "chips must be >= 1, got ", opts.chips);
  TORCH_CHECK(opts.first_chip >= 0, "first chip must be >= 0, got ", opts.first_chip);
  TORCH_CHECK(opts.batch_size >= 1, "batch size must be >= 1, got ", opts.batch_size);
  const bool was_training = model.is_training();
  model.eval();
  const NoiseConfig saved = model.engine().config();
  model.engine().configure(config);

  EvalResult result;
  // Draws matter only with dynamic noise, chips only with per-chip noise; without either
  // (no noise, ADC only) one pass is exact.
  const bool chips_matter = config.has_static();
  const bool draws_matter = config.has_dynamic();
  const int chips = chips_matter ? opts.chips : 1;
  const int first_chip = chips_matter ? opts.first_chip : 0;
  const int draws = draws_matter ? opts.draws : 1;
  Progress progress;
  progress.total = static_cast<int64_t>(chips) * draws;
  progress.what = "eval";
  if (!opts.metric.is_accuracy()) progress.value_label = opts.metric.key();
  const int ranks = opts.distributed ? dist::size() : 1;
  const int rank = opts.distributed ? dist::rank() : 0;
  auto mine = [&](int c, int d) { return (c * draws + d) % ranks == rank; };
  try {
    for (int c = 0; c < chips; ++c) {
      const uint64_t chip = static_cast<uint64_t>(first_chip + c);
      bool any = false;
      for (int d = 0; d < draws; ++d) any = any || mine(c, d);
      if (!any) continue;
      // The device's read noise drawn per draw re-programs the chip for every draw.
      const bool per_draw = config.device.read_per_draw && config.device.programs_weights();
      std::optional<WeightNoiseGuard> weights;
      if (!per_draw) weights.emplace(model, config, chip);
      for (int d = 0; d < draws; ++d) {
        if (!mine(c, d)) continue;
        if (per_draw) {
          weights.reset();
          weights.emplace(model, config, chip, static_cast<uint64_t>(d));
        }
        model.engine().set_draw(chip, static_cast<uint64_t>(d));
        DrawResult r = run_pass(model, data, opts.batch_size, opts.metric);
        r.chip = first_chip + c;
        r.draw = d;
        if (!std::isfinite(r.accuracy)) {
          throw std::invalid_argument(
              "the " + opts.metric.name() + " is " + (std::isnan(r.accuracy) ? "NaN" : "infinite") +
              " at chip " + std::to_string(first_chip + c) + ", draw " + std::to_string(d) +
              ": the model's outputs are not finite under this noise (too strong for a "
              "loss-based metric; accuracy still counts, or lower the level)");
        }
        result.draws.push_back(r);
        if (opts.progress) {
          ++progress.done;
          progress.accuracy = r.accuracy;
          progress.loss = r.loss;
          opts.progress(progress);
        }
      }
    }
  } catch (...) {
    model.engine().configure(saved);
    model.train(was_training);
    throw;
  }
  model.engine().configure(saved);
  model.train(was_training);
  if (ranks > 1) {
    // Every pass's accuracy and loss from the rank that ran it (the others add zeros).
    torch::Tensor packed = torch::zeros({2 * chips * draws}, torch::kDouble);
    for (const auto& r : result.draws) {
      packed[2 * ((r.chip - first_chip) * draws + r.draw)] = r.accuracy;
      packed[2 * ((r.chip - first_chip) * draws + r.draw) + 1] = r.loss;
    }
    dist::allreduce_sum(packed);
    result.draws.clear();
    for (int c = 0; c < chips; ++c) {
      for (int d = 0; d < draws; ++d) {
        DrawResult r;
        r.chip = first_chip + c;
        r.draw = d;
        r.accuracy = packed[2 * (c * draws + d)].item<double>();
        r.loss = packed[2 * (c * draws + d) + 1].item<double>();
        result.draws.push_back(r);
      }
    }
  }
  return summarize_draws(std::move(result.draws), chips_matter, draws_matter);
}

EvalResult passes_within(const EvalResult& from, const NoiseConfig& config, const EvalOptions& o) {
  const bool chips_matter = config.has_static(), draws_matter = config.has_dynamic();
  const int chips = chips_matter ? o.chips : 1, draws = draws_matter ? o.draws : 1;
  const int first = chips_matter ? o.first_chip : 0;
  std::vector<DrawResult> picked;
  for (const auto& d : from.draws) {
    if (d.chip >= first && d.chip < first + chips && d.draw < draws) picked.push_back(d);
  }
  if (static_cast<int64_t>(picked.size()) != static_cast<int64_t>(chips) * draws) return {};
  return summarize_draws(std::move(picked), chips_matter, draws_matter);
}

EvalResult summarize_draws(std::vector<DrawResult> draws, bool chips_matter, bool draws_matter) {
  EvalResult result;
  result.deterministic = !chips_matter && !draws_matter;
  std::vector<double> all, chip_means;
  std::map<int, std::pair<double, int>> per_chip;  // chip -> (sum, count), in chip order
  int chips = 0;
  for (const auto& d : draws) {
    all.push_back(d.accuracy);
    auto& [sum, count] = per_chip[d.chip];
    sum += d.accuracy;
    ++count;
  }
  for (const auto& [chip, sc] : per_chip) {
    chip_means.push_back(sc.first / sc.second);
    ++chips;
  }
  result.draws = std::move(draws);
  result.accuracy = summarize(all);
  result.chip_accuracy = summarize(chip_means);
  result.chip_level = chips_matter && chips > 1;
  return result;
}

}  // namespace quell
