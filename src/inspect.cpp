#include "quell/inspect.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace quell {
namespace {

constexpr double kHalfPi = 1.57079632679489661923;  // E[w²]/E[|w|]² of a zero-mean Gaussian

// Moments of one flattened double tensor, scaled by max|w| so that neither squaring tiny
// weights underflows nor squaring huge ones overflows.
struct Moments {
  int64_t count = 0;
  double max_abs = 0.0;
  double mean_abs = 0.0;  ///< of w / max_abs
  double mean_sq = 0.0;   ///< of (w / max_abs)²
};

Moments moments(const torch::Tensor& w) {
  torch::NoGradGuard no_grad;
  Moments m;
  const torch::Tensor d = w.detach().to(torch::kDouble).reshape({-1});
  m.count = d.numel();
  if (m.count == 0) return m;
  const torch::Tensor a = d.abs();
  // max() propagates NaN, so a NaN anywhere shows up here.
  m.max_abs = a.max().item<double>();
  if (!std::isfinite(m.max_abs) || m.max_abs == 0.0) return m;
  const torch::Tensor s = a / m.max_abs;
  m.mean_abs = s.mean().item<double>();
  m.mean_sq = s.square().mean().item<double>();
  return m;
}

double index_from(const Moments& m) {
  if (std::isnan(m.max_abs) || std::isinf(m.max_abs)) {
    return std::numeric_limits<double>::quiet_NaN();
  }
  if (m.count == 0 || m.max_abs == 0.0) return 0.0;            // no shape to measure: defined as 0
  const double ratio = m.mean_sq / (m.mean_abs * m.mean_abs);  // >= 1 (Cauchy-Schwarz)
  return std::clamp((kHalfPi - ratio) / (kHalfPi - 1.0), 0.0, 1.0);
}

WeightStats stats_from(const Moments& m, int site, const std::string& name, const std::string& op) {
  WeightStats s;
  s.site = site;
  s.name = name;
  s.op = op;
  s.count = m.count;
  s.max_abs = m.max_abs;
  if (!std::isfinite(m.max_abs)) {
    // inf or NaN among the weights: the means are not meaningful either.
    s.mean_abs = s.rms = m.max_abs;
  } else {
    s.mean_abs = m.max_abs * m.mean_abs;
    s.rms = m.max_abs * std::sqrt(m.mean_sq);
  }
  s.binarization = index_from(m);
  return s;
}

Json number_or_null(double v) { return std::isnan(v) ? Json(nullptr) : Json(v); }

}  // namespace

Json WeightStats::to_json() const {
  return Json{{"site", site},
              {"name", name},
              {"op", op},
              {"count", count},
              {"mean_abs", number_or_null(mean_abs)},
              {"rms", number_or_null(rms)},
              {"max_abs", number_or_null(max_abs)},
              {"binarization", number_or_null(binarization)}};
}

double binarization_index(const torch::Tensor& w) { return index_from(moments(w)); }

WeightStats tensor_weight_stats(const torch::Tensor& w, int site, const std::string& name,
                                const std::string& op) {
  return stats_from(moments(w), site, name, op);
}

std::vector<WeightStats> weight_stats(ModelImpl& model) {
  std::vector<WeightStats> out;
  const auto& nodes = model.nodes();
  for (const auto& [site, w] : model.analog_weights()) {
    const Node& node = nodes.at(static_cast<size_t>(site));
    out.push_back(tensor_weight_stats(w, site, node.name, node.op_label()));
  }
  return out;
}

WeightStats aggregate_weight_stats(ModelImpl& model) {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> raw, shape_only;
  for (const auto& sw : model.analog_weights()) {
    const torch::Tensor d = sw.second.detach().to(torch::kDouble).reshape({-1});
    raw.push_back(d);
    // Each layer in units of its own mean |w|, so that the index measures the shape of the
    // layers' distributions, not the spread of scales between layers. All-zero layers stay
    // zeros; non-finite ones stay non-finite (and make the index NaN).
    const double mean_abs = d.numel() > 0 ? d.abs().mean().item<double>() : 0.0;
    shape_only.push_back(std::isfinite(mean_abs) && mean_abs > 0.0 ? d / mean_abs : d);
  }
  auto pool = [](const std::vector<torch::Tensor>& parts) {
    return parts.empty() ? torch::empty({0}, torch::kDouble) : torch::cat(parts);
  };
  WeightStats s = tensor_weight_stats(pool(raw), -1, "all", "all");
  s.binarization = binarization_index(pool(shape_only));
  return s;
}

}  // namespace quell
