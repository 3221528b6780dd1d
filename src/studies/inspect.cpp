#include "quell/inspect.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <sstream>

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

const char* const kBinarizationDefinition =
    "(pi/2 - E[w^2]/E[|w|]^2) / (pi/2 - 1), clamped to [0,1]: 0 = Gaussian-shaped weights, "
    "1 = constant magnitude (binarised); empty or all-zero weights: 0";

namespace {

std::string table_row(const WeightStats& s) {
  char line[256];
  std::snprintf(line, sizeof line, "%-5s %-22s %-7s %10lld %12.6g %12.6g %12.6g %13.4f\n",
                s.site < 0 ? "-" : std::to_string(s.site).c_str(), s.name.c_str(), s.op.c_str(),
                static_cast<long long>(s.count), s.mean_abs, s.rms, s.max_abs, s.binarization);
  return line;
}

std::vector<std::string> csv_row(const WeightStats& s) {
  return {std::to_string(s.site),       s.name,
          s.op,                         std::to_string(s.count),
          fmt_double(s.mean_abs, 0),    fmt_double(s.rms, 0),
          fmt_double(s.max_abs, 0),     fmt_double(s.binarization, 0)};
}

}  // namespace

Json InspectReport::to_json() const {
  Json rows = Json::array();
  for (const auto& s : layers) rows.push_back(s.to_json());
  return Json{{"checkpoint", checkpoint},
              {"model", model.to_json()},
              {"dataset", dataset},
              {"train_config", train_config},
              {"binarization_definition", kBinarizationDefinition},
              {"layers", rows},
              {"all", all.to_json()},
              {"provenance", provenance}};
}

std::string InspectReport::csv() const {
  // The aggregate is the last row, site -1, name "all".
  CsvTable t({"site", "name", "op", "count", "mean_abs", "rms", "max_abs", "binarization"});
  for (const auto& s : layers) t.add_row(csv_row(s));
  t.add_row(csv_row(all));
  return t.str();
}

std::string InspectReport::table() const {
  std::ostringstream os;
  os << "checkpoint " << checkpoint << ": model " << model.name;
  if (!dataset.empty()) os << " trained on " << dataset;
  os << "; " << layers.size() << " conv/linear layers, " << all.count << " weights\n";
  char header[256];
  std::snprintf(header, sizeof header, "%-5s %-22s %-7s %10s %12s %12s %12s %13s\n", "site",
                "name", "op", "count", "mean|w|", "rms", "max|w|", "binarisation");
  os << header;
  for (const auto& s : layers) os << table_row(s);
  os << table_row(all);
  os << "binarisation = " << kBinarizationDefinition << "\n";
  os << "all = every conv/linear weight pooled; its binarisation first divides each layer by "
        "its own mean|w|\n";
  return os.str();
}

InspectReport inspect_model(ModelImpl& model, const std::string& checkpoint,
                            const std::string& dataset, const Json& train_config,
                            const std::string& device) {
  InspectReport r;
  r.provenance = RunContext::capture(device).to_json();
  r.checkpoint = checkpoint;
  r.model = model.spec();
  r.dataset = dataset;
  r.train_config = train_config;
  r.layers = weight_stats(model);
  r.all = aggregate_weight_stats(model);
  return r;
}

}  // namespace quell
