#include "quell/site.h"

#include <cmath>
#include <stdexcept>

#include "quell/rng.h"

namespace quell {
namespace {

// Tags that keep the random streams of different uses apart.
constexpr uint64_t kStaticTag = 0x5354415449434e53ULL;   // static / aging patterns
constexpr uint64_t kDynamicTag = 0x44594e414d494353ULL;  // per-forward noise
constexpr uint64_t kTileTag = 0x54494c454f55544eULL;     // tile output noise, per forward

bool all_dynamic_additive(const SiteConfig& cfg) {
  if (cfg.adc_bits > 0) return false;
  for (const auto& s : cfg.noise) {
    if (s.is_zero()) continue;
    if (s.kind != NoiseKind::kAdditive || s.temporal != Temporal::kDynamic) return false;
  }
  return true;
}

}  // namespace

Json SiteCalibration::to_json() const {
  return Json{{"std", std}, {"absmax", absmax}, {"min", min}, {"max", max}};
}

SiteCalibration SiteCalibration::from_json(const Json& j) {
  SiteCalibration c;
  c.std = j.at("std").get<double>();
  c.absmax = j.at("absmax").get<double>();
  c.min = j.at("min").get<double>();
  c.max = j.at("max").get<double>();
  c.valid = true;
  return c;
}

void SiteEngine::configure(NoiseConfig config) {
  for (const auto& kv : config.sites) kv.second.validate();
  config.weight.validate();
  config.device.validate();
  config_ = std::move(config);
  static_cache_.clear();
  repeated_tiles_.clear();
  forward_index_ = 0;
}

void SiteEngine::set_calibration(std::vector<SiteCalibration> calibration) {
  calibration_ = std::move(calibration);
}

void SiteEngine::set_draw(uint64_t chip, uint64_t draw) {
  if (chip != chip_) static_cache_.clear();
  chip_ = chip;
  draw_ = draw;
  forward_index_ = 0;
}

bool SiteEngine::active(int site) const {
  const auto it = config_.sites.find(site);
  return it != config_.sites.end() && !it->second.is_identity();
}

bool SiteEngine::additive_only(int site, RngStream* stream, double* sigma) const {
  const auto it = config_.sites.find(site);
  if (it == config_.sites.end() || it->second.is_identity() || observer_) return false;
  const SiteConfig& cfg = it->second;
  if (cfg.adc_bits > 0 || (cfg.repeats > 1 && !all_dynamic_additive(cfg))) return false;
  int component = -1;
  for (size_t c = 0; c < cfg.noise.size(); ++c) {
    if (cfg.noise[c].is_zero()) continue;
    if (component >= 0) return false;  // two components
    component = static_cast<int>(c);
  }
  if (component < 0) return false;
  NoiseSpec spec = cfg.noise[static_cast<size_t>(component)];
  if (spec.kind != NoiseKind::kAdditive || spec.temporal != Temporal::kDynamic) return false;
  // As apply(): σ/√k for k repetitions, then apply_once's scale and stream for repetition 0.
  if (cfg.repeats > 1) spec.sigma_add /= std::sqrt(static_cast<double>(cfg.repeats));
  *sigma = effective_sigma(spec.sigma_add, spec, site);
  *stream = dynamic_stream(site, /*repetition=*/0, static_cast<size_t>(component));
  return true;
}

RngStream SiteEngine::dynamic_stream(int site, int repetition, size_t component) const {
  const uint64_t key = mix_seed(config_.seed, chip_, mix_seed(draw_, kDynamicTag));
  const uint64_t base = mix_seed(static_cast<uint64_t>(site), forward_index_);
  return RngStream{key, mix_seed(base, static_cast<uint64_t>(repetition), component)};
}

const TileIO* SiteEngine::tile(int site) const {
  const TileIO* io = config_.device.tile_of(site);
  if (io == nullptr || io->out_noise == 0.0) return io;
  const auto it = config_.sites.find(site);
  if (it == config_.sites.end() || it->second.repeats <= 1) return io;
  // Per site and repetition count, kept for the engine's lifetime (configure() clears them).
  auto& averaged = repeated_tiles_[site];
  averaged = *io;
  averaged.out_noise = io->out_noise / std::sqrt(static_cast<double>(it->second.repeats));
  return &averaged;
}

RngStream SiteEngine::tile_stream(int site) const {
  const uint64_t key = mix_seed(config_.seed, chip_, mix_seed(draw_, kTileTag));
  return RngStream{key, mix_seed(static_cast<uint64_t>(site), forward_index_)};
}

const SiteCalibration& SiteEngine::calib(int site, const char* why) const {
  if (site < 0 || site >= static_cast<int>(calibration_.size()) || !calibration_[site].valid) {
    throw std::invalid_argument(std::string(why) + " at site " + std::to_string(site) +
                                " needs a calibrated model (train or calibrate it first)");
  }
  return calibration_[site];
}

double SiteEngine::effective_sigma(double sigma, const NoiseSpec& spec, int site) const {
  double s = sigma * spec.temporal_factor();
  if (s == 0.0) return 0.0;
  if (spec.scale == SigmaScale::kStd) s *= calib(site, "relative (std) sigma").std;
  if (spec.scale == SigmaScale::kRange) s *= calib(site, "relative (range) sigma").absmax;
  return s;
}

const torch::Tensor& SiteEngine::static_pattern(int site, int component,
                                                const torch::Tensor& like, bool per_channel) {
  auto& slot = static_cache_[{site, component}];
  std::vector<int64_t> sample_shape = like.sizes().slice(1).vec();
  // Per channel: [C,H,W] -> [C,1,1], [T,D] -> [1,D] (a column serves every position).
  if (per_channel && sample_shape.size() == 3) {
    sample_shape[1] = sample_shape[2] = 1;
  } else if (per_channel && sample_shape.size() == 2) {
    sample_shape[0] = 1;
  }
  if (!slot.defined() || slot.sizes() != c10::IntArrayRef(sample_shape) || slot.device() != like.device() ||
      slot.scalar_type() != like.scalar_type()) {
    torch::NoGradGuard no_grad;
    slot = torch::empty(sample_shape, like.options().requires_grad(false));
    normal_fill_(slot, RngStream{mix_seed(config_.seed, chip_, kStaticTag),
                                 mix_seed(static_cast<uint64_t>(site), component)});
  }
  return slot;
}

torch::Tensor SiteEngine::apply(torch::Tensor x, int site, bool owned) {
  if (observer_) observer_(site, x);
  const auto it = config_.sites.find(site);
  if (it == config_.sites.end() || it->second.is_identity()) return x;
  // Integer values (token ids entering an embedding) are digital: nothing applies to them.
  if (!x.is_floating_point()) return x;
  const SiteConfig& cfg = it->second;
  const bool differentiable = torch::GradMode::is_enabled() && x.requires_grad();

  const int k = cfg.repeats;
  if (k == 1) return apply_once(std::move(x), site, cfg, 0, differentiable, owned);
  if (all_dynamic_additive(cfg)) {
    // The mean of k copies of x + N(0, σ²) is x + N(0, σ²/k): one draw, same distribution.
    SiteConfig one = cfg;
    for (auto& s : one.noise) s.sigma_add /= std::sqrt(static_cast<double>(k));
    one.repeats = 1;
    return apply_once(std::move(x), site, one, 0, differentiable, owned);
  }
  // k noisy copies of the same clean value. The differentiable path never writes in place;
  // otherwise the last copy may write x when it is ours, and the others write new tensors.
  torch::Tensor acc = apply_once(x, site, cfg, 0, differentiable, /*owned=*/false);
  if (!differentiable && acc.is_same(x)) acc = acc.clone();  // accumulated in place below
  for (int r = 1; r < k; ++r) {
    torch::Tensor copy = apply_once(x, site, cfg, r, differentiable, owned && r == k - 1);
    acc = differentiable ? acc + copy : acc.add_(copy);
  }
  return differentiable ? acc / static_cast<double>(k) : acc.div_(static_cast<double>(k));
}

torch::Tensor SiteEngine::apply_once(torch::Tensor x, int site, const SiteConfig& cfg,
                                     int repetition, bool differentiable, bool owned) {
  // Without autograd, noise is written in place into a tensor that is ours. A tensor that is
  // not (the caller's input, a cached activation) gets the first dynamic noise out of place,
  // which writes a new tensor in the same pass; anything else writes a copy.
  if (!differentiable && !x.is_contiguous()) {
    x = x.contiguous();
    owned = true;
  }
  auto own = [&]() {
    if (!owned) x = x.clone();
    owned = true;
  };
  for (size_t c = 0; c < cfg.noise.size(); ++c) {
    const NoiseSpec& spec = cfg.noise[c];
    if (spec.is_zero()) continue;
    // rel= scales the additive part; the multiplicative σ is already relative to x.
    const double sa = effective_sigma(spec.sigma_add, spec, site);
    const double sm = spec.sigma_mul * spec.temporal_factor();
    const bool has_add = spec.kind != NoiseKind::kMultiplicative;
    const bool has_mul = spec.kind != NoiseKind::kAdditive;

    if (spec.temporal == Temporal::kDynamic) {
      const RngStream s = dynamic_stream(site, repetition, c);
      if (!differentiable && !owned) {
        switch (spec.kind) {
          case NoiseKind::kAdditive:
            x = add_normal(x, s, sa);
            break;
          case NoiseKind::kMultiplicative:
            x = mul_normal(x, s, sm);
            break;
          case NoiseKind::kMulAdd:
            x = mul_add_normal(x, s, sm, sa);
            break;
          case NoiseKind::kAddMul:
            x = add_mul_normal(x, s, sm, sa);
            break;
        }
        owned = true;
        continue;
      }
      if (!differentiable) {
        switch (spec.kind) {
          case NoiseKind::kAdditive:
            add_normal_(x, s, sa);
            break;
          case NoiseKind::kMultiplicative:
            mul_normal_(x, s, sm);
            break;
          case NoiseKind::kMulAdd:
            mul_add_normal_(x, s, sm, sa);
            break;
          case NoiseKind::kAddMul:
            add_mul_normal_(x, s, sm, sa);
            break;
        }
        continue;
      }
      // Out of place, differentiable: y = x ⊙ η + ε or y = (x + ε) ⊙ η.
      torch::Tensor eta, eps;
      {
        torch::NoGradGuard no_grad;
        if (has_mul) {
          eta = torch::empty_like(x, x.options().requires_grad(false));
          normal_fill_(eta, RngStream{s.key, mix_seed(s.stream, 1)}, 1.0, sm);
        }
        if (has_add) {
          eps = torch::empty_like(x, x.options().requires_grad(false));
          normal_fill_(eps, RngStream{s.key, mix_seed(s.stream, 2)}, 0.0, sa);
        }
      }
      if (spec.kind == NoiseKind::kAddMul) {
        x = (x + eps) * eta;
      } else {
        if (has_mul) x = x * eta;
        if (has_add) x = x + eps;
      }
      continue;
    }

    // Static / aging: a per-chip pattern of the sample's shape, broadcast over the batch.
    torch::Tensor eps, eta;
    if (has_add) eps = static_pattern(site, static_cast<int>(2 * c), x, spec.per_channel) * sa;
    if (has_mul) {
      eta = static_pattern(site, static_cast<int>(2 * c + 1), x, spec.per_channel) * sm + 1.0;
    }
    if (differentiable) {
      if (spec.kind == NoiseKind::kAddMul) {
        x = (x + eps) * eta;
      } else {
        if (has_mul) x = x * eta;
        if (has_add) x = x + eps;
      }
    } else {
      own();
      if (spec.kind == NoiseKind::kAddMul) {
        x.add_(eps).mul_(eta);
      } else {
        if (has_mul) x.mul_(eta);
        if (has_add) x.add_(eps);
      }
    }
  }

  if (cfg.adc_bits > 0) {
    const SiteCalibration& cal = calib(site, "ADC quantisation");
    const double levels = std::ldexp(1.0, cfg.adc_bits) - 1.0;
    const double step = (cal.max - cal.min) / levels;
    if (step > 0.0) {
      // Uniform quantiser over the calibrated [min, max], clipping outside it.
      if (differentiable) {
        torch::Tensor q;
        {
          torch::NoGradGuard no_grad;
          q = ((x.clamp(cal.min, cal.max) - cal.min) / step).round_() * step + cal.min;
        }
        x = x + (q - x).detach();  // straight-through estimator
      } else {
        own();
        x.clamp_(cal.min, cal.max).sub_(cal.min).div_(step).round_().mul_(step).add_(cal.min);
      }
    }
  }
  return x;
}

}  // namespace quell
