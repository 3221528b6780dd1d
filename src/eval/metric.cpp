#include "quell/metric.h"

#include "util/text.h"

#include <cmath>
#include <limits>
#include <stdexcept>

namespace quell {
namespace F = torch::nn::functional;
namespace {


// Cross-entropy of [M, C] logits against [M] ids, summed (ids of -100 are ignored), with the
// number of rows it counts, `counted`.
std::pair<double, double> ce_sum(const torch::Tensor& logits, const torch::Tensor& ids,
                                 double counted) {
  if (counted == 0.0) return {0.0, 0.0};
  const double s =
      F::cross_entropy(logits, ids, F::CrossEntropyFuncOptions().reduction(torch::kSum).ignore_index(-100))
          .item<double>();
  return {s, counted};
}

// [N, T, C] outputs and [N, T] ids as [N·T, C] and [N·T], ignored positions as -100.
std::pair<torch::Tensor, torch::Tensor> positions(const torch::Tensor& output,
                                                  const torch::Tensor& target) {
  const torch::Tensor y = target.reshape({-1});
  return {output.reshape({y.size(0), -1}), torch::where(y.ge(0), y, torch::full_like(y, -100))};
}

}  // namespace

Metric::Sums& Metric::Sums::operator+=(const Sums& o) {
  value += o.value;
  count += o.count;
  loss += o.loss;
  loss_count += o.loss_count;
  return *this;
}

std::vector<std::string> Metric::names() {
  return {"accuracy", "top5", "token-accuracy", "cross-entropy", "perplexity", "mse",
          "relative-mse"};
}

Metric Metric::parse(const std::string& text) {
  Metric m;
  std::string t = text::lower(text);
  for (auto& c : t) {
    if (c == '_') c = '-';
  }
  if (t == "accuracy" || t == "acc" || t == "top1" || t == "top-1") {
    m.kind_ = Kind::kAccuracy;
  } else if (t.rfind("top", 0) == 0) {
    std::string k = t.substr(3);
    if (!k.empty() && k[0] == '-') k = k.substr(1);
    if (k.empty() || k.size() > 6 || k.find_first_not_of("0123456789") != std::string::npos) {
      throw std::invalid_argument("unknown metric '" + text + "'; top-k accuracy is written top5");
    }
    m.kind_ = Kind::kTopK;
    m.k_ = std::stoi(k);
    if (m.k_ < 1) throw std::invalid_argument("metric '" + text + "': k must be >= 1");
    if (m.k_ == 1) m.kind_ = Kind::kAccuracy;
  } else if (t == "token-accuracy" || t == "token-acc") {
    m.kind_ = Kind::kTokenAccuracy;
  } else if (t == "cross-entropy" || t == "ce" || t == "nll" || t == "loss") {
    m.kind_ = Kind::kCrossEntropy;
  } else if (t == "perplexity" || t == "ppl") {
    m.kind_ = Kind::kPerplexity;
  } else if (t == "mse") {
    m.kind_ = Kind::kMse;
  } else if (t == "relative-mse" || t == "rel-mse" || t == "nmse") {
    m.kind_ = Kind::kRelativeMse;
  } else {
    std::string known;
    for (const auto& n : names()) known += (known.empty() ? "" : ", ") + n;
    throw std::invalid_argument("unknown metric '" + text + "'; known metrics: " + known +
                                " (top5: any top-k)");
  }
  return m;
}

Metric Metric::default_for(TargetKind kind) {
  Metric m;
  if (kind == TargetKind::kSequence) m.kind_ = Kind::kPerplexity;
  if (kind == TargetKind::kReal) m.kind_ = Kind::kMse;
  return m;
}

Metric Metric::choose(const std::string& text, TargetKind kind) {
  return text.empty() || text == "auto" ? default_for(kind) : parse(text);
}

std::string Metric::name() const {
  switch (kind_) {
    case Kind::kAccuracy:
      return "accuracy";
    case Kind::kTopK:
      return "top" + std::to_string(k_);
    case Kind::kTokenAccuracy:
      return "token-accuracy";
    case Kind::kCrossEntropy:
      return "cross-entropy";
    case Kind::kPerplexity:
      return "perplexity";
    case Kind::kMse:
      return "mse";
    case Kind::kRelativeMse:
      return "relative-mse";
  }
  return "?";
}

std::string Metric::key() const {
  if (kind_ == Kind::kTopK) return "top" + std::to_string(k_) + "_accuracy";
  std::string n = name();
  for (auto& c : n) {
    if (c == '-') c = '_';
  }
  return n;
}

std::string Metric::label() const {
  switch (kind_) {
    case Kind::kAccuracy:
      return "accuracy";
    case Kind::kTopK:
      return "top-" + std::to_string(k_) + " accuracy";
    case Kind::kTokenAccuracy:
      return "token accuracy";
    case Kind::kCrossEntropy:
      return "cross-entropy";
    case Kind::kPerplexity:
      return "perplexity";
    case Kind::kMse:
      return "MSE";
    case Kind::kRelativeMse:
      return "relative MSE";
  }
  return "?";
}

bool Metric::higher_is_better() const {
  return kind_ == Kind::kAccuracy || kind_ == Kind::kTopK || kind_ == Kind::kTokenAccuracy;
}

bool Metric::is_fraction() const { return higher_is_better(); }

void Metric::check(TargetKind kind, int64_t classes) const {
  const std::string what = "metric " + name() + " ";
  switch (kind_) {
    case Kind::kAccuracy:
    case Kind::kTopK:
      if (kind != TargetKind::kClass) {
        throw std::invalid_argument(what + "needs class ids as targets, the data has " +
                                    target_kind_name(kind) +
                                    (kind == TargetKind::kSequence ? " (use token-accuracy)" : " (use mse)"));
      }
      if (kind_ == Kind::kTopK && classes > 0 && k_ >= classes) {
        throw std::invalid_argument(what + "needs more than " + std::to_string(k_) +
                                    " classes, the data has " + std::to_string(classes));
      }
      return;
    case Kind::kTokenAccuracy:
      if (kind != TargetKind::kSequence) {
        throw std::invalid_argument(what + "needs per-position ids as targets, the data has " +
                                    target_kind_name(kind));
      }
      return;
    case Kind::kCrossEntropy:
    case Kind::kPerplexity:
      if (kind == TargetKind::kReal) {
        throw std::invalid_argument(what + "needs class or per-position ids as targets, the data "
                                    "has real values (use mse)");
      }
      return;
    case Kind::kMse:
    case Kind::kRelativeMse:
      if (kind != TargetKind::kReal) {
        throw std::invalid_argument(what + "needs real values as targets, the data has " +
                                    target_kind_name(kind));
      }
      return;
  }
}

double Metric::floor(const Dataset& data, int64_t classes) const {
  const double c = static_cast<double>(std::max(classes, data.num_classes));
  switch (kind_) {
    case Kind::kAccuracy:
    case Kind::kTokenAccuracy:
      return c > 0 ? 1.0 / c : 0.0;
    case Kind::kTopK:
      return c > 0 ? std::min(1.0, k_ / c) : 0.0;
    case Kind::kCrossEntropy:
      return c > 0 ? std::log(c) : std::numeric_limits<double>::quiet_NaN();
    case Kind::kPerplexity:
      return c > 0 ? c : std::numeric_limits<double>::quiet_NaN();
    case Kind::kMse:
      return data.targets.defined() && data.targets.numel() > 1
                 ? data.targets.to(torch::kDouble).var(/*unbiased=*/false).item<double>()
                 : std::numeric_limits<double>::quiet_NaN();
    case Kind::kRelativeMse:
      return 1.0;
  }
  return std::numeric_limits<double>::quiet_NaN();
}

Metric Metric::bind(const Dataset& data) const {
  Metric m = *this;
  if (kind_ == Kind::kRelativeMse && data.targets.defined() && data.targets.is_floating_point()) {
    m.variance_ = data.targets.to(torch::kDouble).var(/*unbiased=*/false).item<double>();
    if (!(m.variance_ > 0.0)) {
      throw std::invalid_argument("metric relative-mse: the targets have no variance");
    }
  }
  return m;
}

Metric::Sums Metric::measure(const torch::Tensor& output, const torch::Tensor& target) const {
  Sums s;
  if (target.is_floating_point()) {
    const torch::Tensor out = output.reshape(target.sizes()).to(torch::kFloat);
    const double se = (out - target).pow(2).sum().item<double>();
    s.loss = s.value = se;
    s.loss_count = s.count = static_cast<double>(target.numel());
    return s;
  }
  if (target.dim() == 2) {  // per-position ids
    const auto [logits, ids] = positions(output, target);
    const torch::Tensor keep = ids.ge(0);
    std::tie(s.loss, s.loss_count) =
        ce_sum(logits, ids, static_cast<double>(keep.sum().item<int64_t>()));
    if (kind_ == Kind::kTokenAccuracy || kind_ == Kind::kAccuracy) {
      s.value = static_cast<double>(logits.argmax(1).eq(ids).logical_and(keep).sum().item<int64_t>());
      s.count = s.loss_count;
    } else {
      s.value = s.loss;
      s.count = s.loss_count;
    }
    return s;
  }
  // Class ids are never negative (dataset_from_tensors checks): every row counts.
  std::tie(s.loss, s.loss_count) = ce_sum(output, target, static_cast<double>(target.size(0)));
  switch (kind_) {
    case Kind::kAccuracy:
      s.value = static_cast<double>(output.argmax(1).eq(target).sum().item<int64_t>());
      s.count = static_cast<double>(target.size(0));
      break;
    case Kind::kTopK: {
      const int64_t k = std::min<int64_t>(k_, output.size(1));
      const torch::Tensor top = std::get<1>(output.topk(k, 1));
      s.value = static_cast<double>(top.eq(target.unsqueeze(1)).any(1).sum().item<int64_t>());
      s.count = static_cast<double>(target.size(0));
      break;
    }
    default:
      s.value = s.loss;
      s.count = s.loss_count;
  }
  return s;
}

double Metric::value(const Sums& s) const {
  if (s.count <= 0.0) return std::numeric_limits<double>::quiet_NaN();
  const double mean = s.value / s.count;
  switch (kind_) {
    case Kind::kPerplexity:
      return std::exp(mean);
    case Kind::kRelativeMse:
      return mean / variance_;
    default:
      return mean;
  }
}

double Metric::loss(const Sums& s) {
  return s.loss_count > 0.0 ? s.loss / s.loss_count : 0.0;
}

double Metric::score(double value) const {
  if (kind_ == Kind::kPerplexity) return -std::log(value);
  return higher_is_better() ? value : -value;
}

double Metric::from_score(double score) const {
  if (kind_ == Kind::kPerplexity) return std::exp(-score);
  return higher_is_better() ? score : -score;
}

Metric resolve_metric(const std::string& text, const Dataset& data, int64_t classes) {
  const Metric m = Metric::choose(text, data.target_kind());
  m.check(data.target_kind(), std::max(classes, data.num_classes));
  return m.bind(data);
}

Metric resolve_search_metric(const std::string& text, const Dataset& data, int64_t classes,
                             const std::string& study) {
  const bool sequence = data.target_kind() == TargetKind::kSequence;
  const Metric m = resolve_metric(
      (text.empty() || text == "auto") && sequence ? std::string("token-accuracy") : text, data,
      classes);
  if (!m.higher_is_better()) {
    throw std::invalid_argument(study + " searches maximise an accuracy; metric " + m.name() +
                                " is not one (use accuracy, topK or token-accuracy)");
  }
  return m;
}

TargetKind target_kind(const torch::Tensor& targets) {
  if (!targets.defined()) throw std::invalid_argument("targets are undefined");
  if (targets.is_floating_point()) return TargetKind::kReal;
  if (targets.is_complex() || targets.scalar_type() == torch::kBool) {
    throw std::invalid_argument("targets must be integer ids or real values");
  }
  return targets.dim() == 2 ? TargetKind::kSequence : TargetKind::kClass;
}

torch::Tensor task_loss(const torch::Tensor& output, const torch::Tensor& target) {
  if (target.is_floating_point()) return F::mse_loss(output.reshape(target.sizes()), target);
  if (target.dim() == 2) {
    const auto [logits, ids] = positions(output, target);
    return F::cross_entropy(logits, ids, F::CrossEntropyFuncOptions().ignore_index(-100));
  }
  return F::cross_entropy(output, target);
}

torch::Tensor task_loss_sum(const torch::Tensor& output, const torch::Tensor& target) {
  const int64_t n = target.size(0);
  if (target.is_floating_point()) {
    return (output.reshape(target.sizes()) - target).square().reshape({n, -1}).mean(1).sum();
  }
  if (target.dim() == 2) {
    const auto [logits, ids] = positions(output, target);
    const torch::Tensor per = F::cross_entropy(
        logits, ids, F::CrossEntropyFuncOptions().reduction(torch::kNone).ignore_index(-100));
    const torch::Tensor keep = target.ge(0).to(per.scalar_type());
    return (per.reshape({n, -1}).sum(1) / keep.sum(1).clamp_min(1.0)).sum();
  }
  return F::cross_entropy(output, target, F::CrossEntropyFuncOptions().reduction(torch::kSum));
}

void check_output_fits(const std::vector<int64_t>& out, const Dataset& data,
                       const std::string& what) {
  const TargetKind kind = data.target_kind();
  const auto t = data.targets.sizes().slice(1).vec();
  auto fail = [&](const std::string& need) {
    throw std::invalid_argument(what + ": the model's output " + text::shape(out) +
                                " per sample does not fit " + target_kind_name(kind) + " " +
                                text::shape(t) + " per sample (" + need + ")");
  };
  if (kind == TargetKind::kClass) {
    if (out.size() != 1) fail("class ids need [classes] outputs");
    if (out[0] < data.num_classes) fail("fewer outputs than the data's " + std::to_string(data.num_classes) + " classes");
  } else if (kind == TargetKind::kSequence) {
    if (out.size() != 2 || out[0] != t.at(0)) fail("ids per position need [T, classes] outputs");
    if (out[1] < data.num_classes) fail("fewer outputs than the data's " + std::to_string(data.num_classes) + " classes");
  } else {
    int64_t a = 1, b = 1;
    for (auto d : out) a *= d;
    for (auto d : t) b *= d;
    if (a != b) fail("real targets need as many outputs as target values");
  }
}

}  // namespace quell
