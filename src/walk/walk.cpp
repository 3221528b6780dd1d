#include "quell/walk.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <stdexcept>

#include "quell/checkpoint.h"
#include "quell/inspect.h"
#include "quell/journal.h"
#include "quell/rng.h"
#include "quell/runtime.h"
#include "util/json.h"
#include "util/text.h"

namespace quell {
namespace {

using text::parse_number;
using text::split;
using text::trim;

constexpr uint64_t kWalkTag = 0x57414c4b4e4f4953ULL;  // noise streams of walk evaluations
constexpr uint64_t kInitTag = 0x494e495457414c4bULL;  // noisy training: initialisation
constexpr int kJournalVersion = 1;

uint64_t bits_of(double v) {
  uint64_t b = 0;
  std::memcpy(&b, &v, sizeof b);
  return b;
}

/// The (chip, draw) of one evaluation: a function of σ and the repeat only, so the same point
/// gets the same noise whatever grid, order or shard evaluates it.
uint64_t draw_id(double sigma, int repeat) {
  return mix_seed(bits_of(sigma), static_cast<uint64_t>(repeat), kWalkTag);
}

std::string num(double v) { return fmt_double(v, 6); }

double mean_of(const std::vector<double>& v) {
  double s = 0.0;
  for (double x : v) s += x;
  return v.empty() ? std::numeric_limits<double>::quiet_NaN() : s / static_cast<double>(v.size());
}

double quantile(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  const double pos = p * static_cast<double>(v.size() - 1);
  const auto i = static_cast<size_t>(std::floor(pos));
  const size_t j = std::min(i + 1, v.size() - 1);
  return v[i] + (pos - static_cast<double>(i)) * (v[j] - v[i]);
}

Json nan_to_null(double v) { return std::isfinite(v) ? Json(v) : Json(nullptr); }

}  // namespace

// ---------------------------------------------------------------------------------------------
// Grid and noise

SigmaGrid SigmaGrid::parse(const std::string& text_in, int per_decade) {
  SigmaGrid g;
  g.text = text_in;
  const std::string t = trim(text_in);
  const std::string what = "sigma grid '" + text_in + "'";
  if (t.empty()) throw std::invalid_argument("sigma grid is empty");
  auto value = [&](const std::string& s) {
    const double v = parse_number(s, what);
    if (!std::isfinite(v)) throw std::invalid_argument(what + ": '" + s + "' is not finite");
    if (v < 0) throw std::invalid_argument(what + ": '" + s + "' is negative");
    return v;
  };
  if (t.find(',') != std::string::npos || t.find(':') == std::string::npos) {
    g.spacing = Spacing::kList;
    for (const auto& s : split(t, ',')) g.values.push_back(value(s));
    std::sort(g.values.begin(), g.values.end());
    g.values.erase(std::unique(g.values.begin(), g.values.end()), g.values.end());
    return g;
  }
  const auto parts = split(t, ':');
  if (parts.size() == 2) {
    if (per_decade < 1) {
      throw std::invalid_argument("points per decade must be >= 1, got " +
                                  std::to_string(per_decade));
    }
    const double lo = value(parts[0]), hi = value(parts[1]);
    if (lo <= 0) {
      throw std::invalid_argument(what + ": a log grid MIN:MAX needs MIN > 0 (for a grid from 0 "
                                         "use a linear one, MIN:MAX:STEP)");
    }
    if (hi <= lo) throw std::invalid_argument(what + ": MAX must be larger than MIN");
    const double points = std::floor(std::log10(hi / lo) * per_decade + 1e-9);
    if (points > 10000) throw std::invalid_argument(what + ": more than 10000 points");
    g.spacing = Spacing::kLog;
    g.step = std::pow(10.0, 1.0 / per_decade);
    for (int i = 0; i <= static_cast<int>(points); ++i) {
      g.values.push_back(lo * std::pow(10.0, static_cast<double>(i) / per_decade));
    }
    return g;
  }
  if (parts.size() == 3) {
    const double lo = value(parts[0]), hi = value(parts[1]), step = value(parts[2]);
    if (step <= 0) throw std::invalid_argument(what + ": STEP must be positive");
    if (hi <= lo) throw std::invalid_argument(what + ": MAX must be larger than MIN");
    const double points = std::floor((hi - lo) / step + 1e-9);
    if (points > 10000) throw std::invalid_argument(what + ": more than 10000 points");
    g.spacing = Spacing::kLinear;
    g.step = step;
    for (int i = 0; i <= static_cast<int>(points); ++i) g.values.push_back(lo + i * step);
    return g;
  }
  throw std::invalid_argument(what + ": expected MIN:MAX (log), MIN:MAX:STEP (linear) or a "
                                     "comma-separated list");
}

double SigmaGrid::beyond(int k) const {
  if (values.empty()) return std::numeric_limits<double>::quiet_NaN();
  switch (spacing) {
    case Spacing::kLog:
      return values.back() * std::pow(step, k);
    case Spacing::kLinear:
      return values.back() + k * step;
    case Spacing::kList:
      return k == 0 ? values.back() : std::numeric_limits<double>::quiet_NaN();
  }
  return std::numeric_limits<double>::quiet_NaN();
}

Json SigmaGrid::to_json() const {
  const char* sp = spacing == Spacing::kLog ? "log" : spacing == Spacing::kLinear ? "linear" : "list";
  return Json{{"text", text}, {"spacing", sp}, {"step", step}, {"values", values}};
}

WalkNoise WalkNoise::parse(const std::string& text_in) {
  const std::string what = "walked noise '" + text_in + "'";
  auto parts = split(trim(text_in), ':');
  const std::string kind = trim(parts[0]);
  const bool mixed = kind == "muladd" || kind == "addmul";
  WalkNoise w;
  std::string rest;
  for (size_t i = 1; i < parts.size(); ++i) {
    const std::string opt = trim(parts[i]);
    if (opt.rfind("r=", 0) == 0) {
      if (!mixed) throw std::invalid_argument(what + ": r= applies to mixed noise only");
      w.ratio = parse_number(opt.substr(2), what);
      continue;
    }
    if (!opt.empty() && (std::isdigit(static_cast<unsigned char>(opt[0])) || opt[0] == '.')) {
      throw std::invalid_argument(what + ": give no sigma here; the sweep's grid sets it");
    }
    rest += ":" + opt;
  }
  if (mixed && !(w.ratio >= 0.0 && w.ratio <= 1.0)) {
    throw std::invalid_argument(what + ": the ratio r must lie in [0, 1]");
  }
  // Reuse the component grammar (kinds and options) with a placeholder level.
  const std::string level = mixed ? "1/" + fmt_double(w.ratio, 17) : "1";
  w.base = NoiseSpec::parse(kind + ":" + level + rest);
  return w;
}

NoiseSpec WalkNoise::at(double sigma) const {
  NoiseSpec s = base;
  switch (base.kind) {
    case NoiseKind::kAdditive:
      s.sigma_add = sigma;
      s.sigma_mul = 0.0;
      break;
    case NoiseKind::kMultiplicative:
      s.sigma_add = 0.0;
      s.sigma_mul = sigma;
      break;
    case NoiseKind::kMulAdd:
    case NoiseKind::kAddMul: {
      const NoiseSpec m = NoiseSpec::mixed(sigma, ratio, base.kind == NoiseKind::kMulAdd);
      s.sigma_add = m.sigma_add;
      s.sigma_mul = m.sigma_mul;
      break;
    }
  }
  return s;
}

Json WalkNoise::to_json() const {
  Json j = base.to_json();
  j.erase("sigma_add");
  j.erase("sigma_mul");
  if (base.kind == NoiseKind::kMulAdd || base.kind == NoiseKind::kAddMul) j["ratio"] = ratio;
  return j;
}

std::string WalkNoise::str() const {
  // "add:σ:opts" with the level dropped.
  std::string s = at(1.0).str();
  const auto parts = split(s, ':');
  std::string out = parts[0];
  if (base.kind == NoiseKind::kMulAdd || base.kind == NoiseKind::kAddMul) {
    out += ":r=" + fmt_double(ratio, 6);
  }
  for (size_t i = 2; i < parts.size(); ++i) out += ":" + parts[i];
  return out;
}

// ---------------------------------------------------------------------------------------------
// Records and midpoints

Json WalkRecord::to_json(const std::string& key) const {
  Json j{{"site", site}, {"sigma", sigma}, {"repeat", repeat}, {key, accuracy},
         {"loss", loss}};
  if (!extra.is_null()) j["extra"] = extra;
  return j;
}

WalkRecord WalkRecord::from_json(const Json& j) {
  // get<int>() of a number out of int's range (1e20) is undefined behaviour (UBSan, found by
  // fuzz_walk_journal): an integer in range or an error.
  WalkRecord r;
  r.site = json::integer(j.at("site"), "site");
  r.sigma = j.at("sigma").get<double>();
  r.repeat = json::integer(j.at("repeat"), "repeat");
  // The value under its metric's key ("accuracy", "perplexity", ...).
  bool found = false;
  for (const auto& [k, v] : j.items()) {
    if (k == "site" || k == "sigma" || k == "repeat" || k == "loss" || k == "extra") continue;
    if (!v.is_number()) continue;
    r.accuracy = v.get<double>();
    found = true;
    break;
  }
  if (!found) throw std::invalid_argument("walk record without a value: " + j.dump());
  r.loss = j.at("loss").is_null() ? std::numeric_limits<double>::quiet_NaN()
                                  : j.at("loss").get<double>();
  if (j.contains("extra")) r.extra = j.at("extra");
  return r;
}

const char* crossing_str(CrossingStatus s) {
  switch (s) {
    case CrossingStatus::kCrossed:
      return "crossed";
    case CrossingStatus::kNotCrossed:
      return "not crossed";
    case CrossingStatus::kBelowGrid:
      return "below grid";
  }
  return "?";
}

Json Midpoint::to_json() const {
  return Json{{"status", crossing_str(status)},
              {"value", nan_to_null(value)},
              {"ci_low", nan_to_null(lo)},
              {"ci_high", nan_to_null(hi)},
              {"bootstrap_crossed_fraction", crossed_fraction}};
}

double crossing_point(const std::vector<double>& sigma, const std::vector<double>& mean,
                      double threshold, CrossingStatus* status) {
  TORCH_CHECK(sigma.size() == mean.size(), "crossing_point: sizes differ");
  auto set = [&](CrossingStatus s) {
    if (status) *status = s;
  };
  set(CrossingStatus::kNotCrossed);
  if (sigma.empty() || !std::isfinite(threshold)) return std::numeric_limits<double>::quiet_NaN();
  if (mean[0] < threshold) {
    set(CrossingStatus::kBelowGrid);
    return std::numeric_limits<double>::quiet_NaN();
  }
  for (size_t i = 0; i + 1 < sigma.size(); ++i) {
    if (mean[i] >= threshold && mean[i + 1] < threshold) {
      set(CrossingStatus::kCrossed);
      const double t = (mean[i] - threshold) / (mean[i] - mean[i + 1]);
      if (sigma[i] <= 0.0) return sigma[i] + t * (sigma[i + 1] - sigma[i]);
      const double a = std::log(sigma[i]), b = std::log(sigma[i + 1]);
      return std::exp(a + t * (b - a));
    }
  }
  return std::numeric_limits<double>::quiet_NaN();
}

Midpoint estimate_midpoint(const std::vector<double>& sigma,
                           const std::vector<std::vector<double>>& samples, double threshold,
                           int resamples, uint64_t seed) {
  TORCH_CHECK(sigma.size() == samples.size(), "estimate_midpoint: sizes differ");
  Midpoint m;
  std::vector<double> means;
  for (const auto& s : samples) means.push_back(mean_of(s));
  m.value = crossing_point(sigma, means, threshold, &m.status);
  m.crossed_fraction = m.crossed() ? 1.0 : 0.0;
  if (!m.crossed() || resamples < 1) return m;
  // The variance of a mean accuracy over R repeats, pooled over the points around the crossing
  // (the bracketing pair and one neighbour on each side): with R = 3 a single point's sample
  // variance has 2 degrees of freedom and is often far too small; pooling gives 6-8.
  size_t k = 0;
  while (!(means[k] >= threshold && means[k + 1] < threshold)) ++k;
  double ss = 0.0;
  int dof = 0;
  for (size_t i = (k > 0 ? k - 1 : 0); i <= std::min(k + 2, samples.size() - 1); ++i) {
    const auto& s = samples[i];
    if (s.size() < 2) continue;
    for (double x : s) ss += (x - means[i]) * (x - means[i]);
    dof += static_cast<int>(s.size()) - 1;
  }
  if (dof == 0) return m;  // single repeats: no spread to go on
  const double pooled_sd = std::sqrt(ss / dof);
  // Parametric bootstrap: every point's mean redrawn as mean + sd / sqrt(n) · t_dof (Student's
  // t accounts for the pooled variance being an estimate); μ of each redrawn curve; the 2.5%
  // and 97.5% percentiles are the interval.
  std::mt19937_64 gen(seed);
  std::student_t_distribution<double> t(dof);
  std::vector<double> found;
  std::vector<double> boot(means.size());
  for (int b = 0; b < resamples; ++b) {
    for (size_t i = 0; i < samples.size(); ++i) {
      const double n = static_cast<double>(std::max<size_t>(samples[i].size(), 1));
      boot[i] = means[i] + pooled_sd / std::sqrt(n) * t(gen);
    }
    const double v = crossing_point(sigma, boot, threshold);
    if (std::isfinite(v)) found.push_back(v);
  }
  m.crossed_fraction = static_cast<double>(found.size()) / resamples;
  if (!found.empty()) {
    m.lo = quantile(found, 0.025);
    m.hi = quantile(found, 0.975);
  }
  return m;
}

// ---------------------------------------------------------------------------------------------
// Options

double WalkOptions::margin_for(double chance_level, int64_t n_test) const {
  if (chance_margin >= 0.0) return chance_margin;
  if (!metric.is_fraction()) return std::numeric_limits<double>::quiet_NaN();  // margin_between
  const double n = static_cast<double>(std::max<int64_t>(n_test, 1));
  return std::max(0.02, 3.0 * std::sqrt(chance_level * (1.0 - chance_level) / n));
}

double WalkOptions::margin_between(double clean, double floor_value, int64_t n_test) const {
  if (metric.is_fraction()) return margin_for(floor_value, n_test);
  if (chance_margin >= 0.0) return chance_margin;
  return 0.02 * std::abs(metric.score(clean) - metric.score(floor_value));
}

Json WalkOptions::fingerprint() const {
  Json j{{"sites", sites},         {"global", global},
         {"noise", noise.to_json()}, {"grid", grid.to_json()},
         {"repeats", repeats},     {"early_stop", early_stop},
         {"chance", chance},       {"chance_margin", chance_margin},
         {"max_extend", max_extend}, {"seed", seed},
         {"batch_size", batch_size}, {"adaptive", adaptive}};
  if (adaptive) j["tolerance"] = tolerance;
  if (!metric.is_accuracy()) j["metric"] = metric.name();  // accuracy: as before metrics
  if (device) {
    j.erase("noise");
    j["device"] = device->to_json({});
    j["device_sweep"] = device_sweep == DeviceSweep::kTime ? "time" : "scale";
  }
  return j;
}

NoiseConfig WalkOptions::device_config(const std::vector<int>& layers, double value) const {
  NoiseConfig cfg;
  cfg.seed = seed;
  if (!device) return cfg;
  cfg.device = *device;
  cfg.device.all_layers = false;
  cfg.device.layers = layers;
  if (device_sweep == DeviceSweep::kTime) {
    cfg.device.time = value;
  } else {
    cfg.device.scale = value;
  }
  return cfg;
}

void WalkOptions::validate(int num_sites) const {
  if (sites.empty() && !global) throw std::invalid_argument("no sites to walk");
  for (int s : sites) {
    if (s < 0 || s >= num_sites) {
      throw std::invalid_argument("site " + std::to_string(s) + " is outside 0-" +
                                  std::to_string(num_sites - 1));
    }
  }
  if (repeats < 1) throw std::invalid_argument("repeats must be >= 1");
  if (batch_size < 1) throw std::invalid_argument("batch size must be >= 1");
  if (grid.values.empty()) throw std::invalid_argument("the sigma grid is empty");
  if (max_extend < 0) throw std::invalid_argument("max-extend must be >= 0");
  if (metric.is_fraction() && !(chance >= 0.0 && chance < 1.0)) {
    throw std::invalid_argument("chance must lie in [0, 1)");
  }
  if (!std::isfinite(chance)) throw std::invalid_argument("chance (the metric's floor) is not finite");
  if (std::isnan(chance_margin)) throw std::invalid_argument("chance margin is NaN");
  if (shard_count < 1 || shard_index < 0 || shard_index >= shard_count) {
    throw std::invalid_argument("shard " + std::to_string(shard_index + 1) + "/" +
                                std::to_string(shard_count) + " is not valid");
  }
  if (adaptive) {
    if (!(tolerance > 0.0 && tolerance < 1.0)) {
      throw std::invalid_argument("tolerance must lie in (0, 1)");
    }
    if (grid.values.back() <= 0.0) {
      throw std::invalid_argument("adaptive search needs a grid with a value above 0");
    }
  }
  noise.base.validate();
  if (device) {
    device->validate();
    if (device->model.ideal() && device->tile.ideal() && device->tile_by_site.empty()) {
      throw std::invalid_argument("a device walk needs a device model or tile I/O to walk");
    }
  }
}

Json NoisyTrainingOptions::fingerprint() const {
  Json j = train.to_json({});
  j.erase("noise");
  j.erase("seed");
  return Json{{"model", spec.to_json()}, {"train", j}, {"eval_draws", eval_draws}};
}

// ---------------------------------------------------------------------------------------------
// Journal

namespace {

struct JournalContent {
  Json fingerprint;
  std::vector<WalkRecord> records;
  std::uintmax_t good_bytes = 0;  ///< length of the well-formed prefix
};

JournalContent read_journal(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(path + ": cannot open walk journal");
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string all = ss.str();
  JournalContent c;
  size_t pos = 0;
  int line_no = 0;
  while (pos < all.size()) {
    const size_t nl = all.find('\n', pos);
    ++line_no;
    if (nl == std::string::npos) break;  // torn last line: written partly when killed
    const std::string line = all.substr(pos, nl - pos);
    Json j;
    try {
      j = Json::parse(line);
    } catch (const Json::exception&) {
      throw std::runtime_error(path + ": line " + std::to_string(line_no) +
                               " is not valid JSON (corrupt walk journal)");
    }
    if (line_no == 1) {
      // Compared as a JSON value: value() would throw nlohmann's type_error on another type.
      if (!j.is_object() || j["quell_walk_journal"] != Json(kJournalVersion) ||
          !j.contains("fingerprint")) {
        throw std::runtime_error(path + ": not a quell walk journal (version " +
                                 std::to_string(kJournalVersion) + ")");
      }
      c.fingerprint = j.at("fingerprint");
    } else {
      try {
        c.records.push_back(WalkRecord::from_json(j));
      } catch (const std::exception& e) {  // Json::exception or std::invalid_argument
        throw std::runtime_error(path + ": line " + std::to_string(line_no) +
                                 " is not a walk record (" + e.what() + ")");
      }
    }
    pos = nl + 1;
    c.good_bytes = pos;
  }
  if (line_no == 0 || c.fingerprint.is_null()) {
    throw std::runtime_error(path + ": empty or truncated walk journal");
  }
  return c;
}

std::string header_line(const Json& fingerprint) {
  return Json{{"quell_walk_journal", kJournalVersion}, {"fingerprint", fingerprint}}.dump() + "\n";
}


}  // namespace

namespace {
// The key of a journal's values: its metric's (a sweep's fingerprint names a metric other than
// accuracy).
std::string record_key(const Json& fingerprint) {
  return fingerprint.is_object() && fingerprint.contains("metric")
             ? Metric::parse(fingerprint.at("metric").get<std::string>()).key()
             : std::string("accuracy");
}
}  // namespace

WalkJournal::WalkJournal(std::string path, Json fingerprint)
    : path_(std::move(path)), fingerprint_(std::move(fingerprint)) {
  if (std::filesystem::exists(path_)) {
    JournalContent c = read_journal(path_);
    if (c.fingerprint != fingerprint_) {
      throw std::runtime_error(path_ + " holds a different sweep (" +
                               json_difference(c.fingerprint, fingerprint_) +
                               "); use another output directory or restart the sweep");
    }
    if (std::filesystem::file_size(path_) != c.good_bytes) {
      std::filesystem::resize_file(path_, c.good_bytes);  // drop a torn last line
    }
    for (auto& r : c.records) {
      const auto key = std::make_tuple(r.site, r.sigma, r.repeat);
      if (index_.count(key)) continue;
      index_[key] = records_.size();
      records_.push_back(std::move(r));
    }
  } else {
    write_file_atomic(path_, header_line(fingerprint_));
  }
}

const WalkRecord* WalkJournal::find(int site, double sigma, int repeat) const {
  const auto it = index_.find(std::make_tuple(site, sigma, repeat));
  return it == index_.end() ? nullptr : &records_[it->second];
}

void WalkJournal::append(const std::vector<WalkRecord>& records) {
  std::string text;
  for (const auto& r : records) {
    const auto key = std::make_tuple(r.site, r.sigma, r.repeat);
    if (index_.count(key)) continue;
    text += r.to_json(record_key(fingerprint_)).dump() + "\n";
    index_[key] = records_.size();
    records_.push_back(r);
  }
  if (!text.empty()) append_file_durably(path_, text);
}

void WalkJournal::preload(const std::vector<WalkRecord>& records) {
  for (const auto& r : records) {
    const auto key = std::make_tuple(r.site, r.sigma, r.repeat);
    if (index_.count(key)) continue;
    index_[key] = records_.size();
    records_.push_back(r);
  }
}

std::pair<Json, std::vector<WalkRecord>> WalkJournal::read(const std::string& path) {
  JournalContent c = read_journal(path);
  return {c.fingerprint, c.records};
}

size_t merge_journals(const std::vector<std::string>& inputs, const std::string& out) {
  if (inputs.empty()) throw std::invalid_argument("nothing to merge");
  Json fingerprint;
  std::string first;
  std::map<std::tuple<int, double, int>, std::pair<WalkRecord, std::string>> merged;
  std::vector<std::tuple<int, double, int>> order;
  for (const auto& path : inputs) {
    JournalContent c = read_journal(path);
    if (first.empty()) {
      fingerprint = c.fingerprint;
      first = path;
    } else if (c.fingerprint != fingerprint) {
      throw std::runtime_error(path + " is from a different sweep than " + first + " (" +
                               json_difference(fingerprint, c.fingerprint) + ")");
    }
    for (auto& r : c.records) {
      const auto key = std::make_tuple(r.site, r.sigma, r.repeat);
      const auto it = merged.find(key);
      if (it == merged.end()) {
        order.push_back(key);
        merged.emplace(key, std::make_pair(std::move(r), path));
      } else if (it->second.first.accuracy != r.accuracy) {
        throw std::runtime_error("conflicting results for site " + std::to_string(r.site) +
                                 ", sigma " + num(r.sigma) + ", repeat " +
                                 std::to_string(r.repeat) + " in " + it->second.second +
                                 " and " + path);
      }
    }
  }
  std::string text = header_line(fingerprint);
  for (const auto& key : order) {
    text += merged.at(key).first.to_json(record_key(fingerprint)).dump() + "\n";
  }
  write_file_atomic(out, text);
  return order.size();
}

// ---------------------------------------------------------------------------------------------
// The sweep

namespace {

using EvalFn = std::function<WalkRecord(int site, double sigma, int repeat)>;

/// One independently walkable part of the sweep: a site (or the global reference) with the
/// repeats it evaluates at each σ. Noisy training walks each repeat as its own unit.
struct Unit {
  int site = 0;
  std::vector<int> repeats;
  bool single_point = false;  ///< clean reference: σ = 0 only
};

// The Walker decides in score units (Metric::score: oriented so that higher is better, in the
// scale where "halfway" is meant); for accuracy a score is the accuracy itself.
class Walker {
 public:
  Walker(const WalkOptions& o, double chance_line, double threshold, WalkJournal* journal,
         ProgressFn progress, int64_t total)
      : o_(o), chance_line_(chance_line), threshold_(threshold), journal_(journal),
        progress_fn_(std::move(progress)) {
    progress_.total = total;
    progress_.what = "walk";
    if (!o.metric.is_accuracy()) progress_.value_label = o.metric.key();
  }

  /// Walks one unit; `eval` null = only read the journal. Returns false if the journal lacked
  /// a record needed to go on (dry mode).
  bool walk(const Unit& u, const EvalFn* eval, std::vector<WalkRecord>& out) {
    eval_ = eval;
    out_ = &out;
    progress_.what = u.site >= 0 ? "site " + std::to_string(u.site)
                                 : (u.site == WalkRecord::kGlobalSite ? "global" : "clean");
    const int64_t budget = unit_budget(u);
    const int64_t done_before = progress_.done;
    bool ok = true;
    if (u.single_point) {
      std::vector<double> accs;
      ok = point(u, 0.0, &accs);
    } else if (o_.adaptive) {
      ok = adaptive(u);
    } else {
      ok = grid(u);
    }
    if (ok) advance(done_before + budget - progress_.done);
    return ok;
  }

  int64_t unit_budget(const Unit& u) const {
    const int64_t reps = static_cast<int64_t>(u.repeats.size());
    return u.single_point ? reps : reps * static_cast<int64_t>(o_.grid.values.size());
  }
  int64_t evaluations() const { return evaluations_; }

 private:
  void advance(int64_t n) {
    progress_.done += std::max<int64_t>(n, 0);
    progress_.total = std::max(progress_.total, progress_.done);  // grids may be extended
    if (progress_fn_ && n > 0) progress_fn_(progress_);
  }

  bool point(const Unit& u, double sigma, std::vector<double>* accs) {
    std::vector<WalkRecord> fresh;
    for (int r : u.repeats) {
      const WalkRecord* have = journal_ ? journal_->find(u.site, sigma, r) : nullptr;
      if (have) {
        out_->push_back(*have);
      } else {
        if (!eval_) return false;
        fresh.push_back((*eval_)(u.site, sigma, r));
        out_->push_back(fresh.back());
        ++evaluations_;
      }
      accs->push_back(o_.metric.score(out_->back().accuracy));
    }
    if (journal_ && !fresh.empty()) journal_->append(fresh);
    progress_.accuracy = o_.metric.from_score(mean_of(*accs));
    advance(static_cast<int64_t>(u.repeats.size()));
    return true;
  }

  bool grid(const Unit& u) {
    const auto& g = o_.grid.values;
    const int n = static_cast<int>(g.size());
    int at_chance = 0;
    for (int k = 0;; ++k) {
      double sigma = 0.0;
      if (k < n) {
        sigma = g[k];
      } else {
        // Past the grid: go on until two points are at chance, so every site can cross.
        if (at_chance >= 2 || !o_.grid.extendable() || k - n >= o_.extend_limit()) break;
        sigma = o_.grid.beyond(k - n + 1);
      }
      std::vector<double> accs;
      if (!point(u, sigma, &accs)) return false;
      at_chance = mean_of(accs) <= chance_line_ ? at_chance + 1 : 0;
      if (o_.early_stop && at_chance >= 2 && k < n - 1) break;
    }
    return true;
  }

  // Adaptive search for the crossing of the mean accuracy with the threshold T, in log σ:
  //  1. bracket: start at the geometric middle of the grid, step up (or down) by factors
  //     growing 10^0.5, 10, 100, ... until the mean accuracy is on the other side of T;
  //  2. refine: interpolate the crossing μ̂ linearly in log σ between the bracket ends and
  //     evaluate the pair μ̂ / sqrt(1 + tol), μ̂ · sqrt(1 + tol); when the curve is close to
  //     linear there (it is, near the midpoint) the pair is the new bracket, of ratio 1 + tol.
  //     A step that does not halve the bracket (in log σ) is followed by a bisection.
  // Every point depends only on the grid, the tolerance and the accuracies of the unit itself,
  // so resumed and sharded runs evaluate the same points.
  bool adaptive(const Unit& u) {
    const auto& g = o_.grid.values;
    double first = 0.0;
    for (double v : g) {
      if (v > 0.0) {
        first = v;
        break;
      }
    }
    const double limit = o_.grid.extendable() && o_.extend_limit() > 0
                             ? o_.grid.beyond(o_.extend_limit())
                             : g.back();
    std::map<double, double> mean;  // σ -> mean accuracy
    auto at = [&](double sigma, double* m) {
      const auto it = mean.find(sigma);
      if (it != mean.end()) {
        *m = it->second;
        return true;
      }
      std::vector<double> accs;
      if (!point(u, sigma, &accs)) return false;
      *m = mean[sigma] = mean_of(accs);
      return true;
    };
    double lo = 0.0, hi = 0.0, m_lo = 0.0, m_hi = 0.0, m = 0.0;
    const double start = std::sqrt(first * std::max(first, g.back()));
    if (!at(start, &m)) return false;
    double factor = std::sqrt(10.0);
    if (m >= threshold_) {
      lo = start;
      m_lo = m;
      for (;;) {
        if (lo >= limit * (1.0 - 1e-12)) return true;  // not crossed within the limit
        const double s = std::min(lo * factor, limit);
        if (!at(s, &m)) return false;
        if (m < threshold_) {
          hi = s;
          m_hi = m;
          break;
        }
        lo = s;
        m_lo = m;
        factor = factor < 10.0 ? 10.0 : factor * factor;
      }
    } else {
      hi = start;
      m_hi = m;
      for (;;) {
        if (hi <= first * (1.0 + 1e-12)) return true;  // below the grid
        const double s = std::max(hi / factor, first);
        if (!at(s, &m)) return false;
        if (m >= threshold_) {
          lo = s;
          m_lo = m;
          break;
        }
        hi = s;
        m_hi = m;
        factor = factor < 10.0 ? 10.0 : factor * factor;
      }
    }
    const double half = std::sqrt(1.0 + o_.tolerance);
    while (hi / lo > 1.0 + o_.tolerance * (1.0 + 1e-9)) {
      const double width = std::log(hi / lo);
      const double t = (m_lo - threshold_) / (m_lo - m_hi);
      const double guess = std::exp(std::log(lo) + std::clamp(t, 0.0, 1.0) * width);
      for (double s : {guess / half, guess * half}) {
        if (s <= lo * (1.0 + 1e-12) || s >= hi * (1.0 - 1e-12)) continue;
        if (!at(s, &m)) return false;
        (m >= threshold_ ? lo : hi) = s;
        (m >= threshold_ ? m_lo : m_hi) = m;
      }
      if (hi / lo > 1.0 + o_.tolerance * (1.0 + 1e-9) && std::log(hi / lo) > 0.5 * width) {
        const double mid = std::sqrt(lo * hi);
        if (!at(mid, &m)) return false;
        (m >= threshold_ ? lo : hi) = mid;
        (m >= threshold_ ? m_lo : m_hi) = m;
      }
    }
    return true;
  }

  const WalkOptions& o_;
  double chance_line_, threshold_;
  WalkJournal* journal_;
  const EvalFn* eval_ = nullptr;
  std::vector<WalkRecord>* out_ = nullptr;
  ProgressFn progress_fn_;
  Progress progress_;
  int64_t evaluations_ = 0;
};

/// Evaluations of a trained model with the walked noise at one site: the clean prefix up to the
/// site is computed once per batch and reused for every σ and repeat when it fits the budget.
class CleanModelEvaluator {
 public:
  CleanModelEvaluator(ModelImpl& model, const Dataset& test, const WalkOptions& o)
      : model_(model), o_(o) {
    const torch::Device device = model.parameters().empty() ? torch::Device(torch::kCPU)
                                                            : model.parameters().front().device();
    for (int64_t b = 0; b < test.size(); b += o.batch_size) {
      const int64_t m = std::min(o.batch_size, test.size() - b);
      xs_.push_back(test.inputs.narrow(0, b, m).to(device));
      ys_.push_back(test.targets.narrow(0, b, m).to(device));
    }
    n_ = test.size();
  }

  WalkRecord operator()(int site, double sigma, int repeat) {
    torch::NoGradGuard no_grad;
    const bool cached = site >= 0 && o_.prefix_cache;
    // A device changes the walked layer's weights, so its clean prefix ends before the layer.
    const int cache_at = o_.device ? site - 1 : site;
    if (cached) prepare(cache_at);  // clean prefixes: run_until applies no site logic
    NoiseConfig cfg;
    const uint64_t d = draw_id(sigma, repeat);
    std::optional<WeightNoiseGuard> programmed;
    if (o_.device) {
      cfg = o_.device_config(site == WalkRecord::kGlobalSite ? o_.sites : std::vector<int>{site},
                             sigma);
      // Chip `repeat`: the same programmed devices at every time of a time sweep.
      programmed.emplace(model_, cfg, static_cast<uint64_t>(repeat));
    } else {
      cfg.seed = o_.seed;
      SiteConfig sc;
      sc.noise = {o_.noise.at(sigma)};
      if (site == WalkRecord::kGlobalSite) {
        for (int s : o_.sites) cfg.sites[s] = sc;
      } else {
        cfg.sites[site] = sc;
      }
    }
    SiteEngine engine = model_.engine();  // calibration
    engine.configure(std::move(cfg));
    engine.set_draw(d, d);
    // Batches run in parallel, one thread each, every thread with its own engine: the ops of one
    // batch are small, so this beats intra-op threads (no fork/join per op). Batch b is the
    // (b+1)-th pass after set_draw whichever thread runs it, so the noise (and the result) is
    // that of a sequential pass.
    const int64_t batches = static_cast<int64_t>(xs_.size());
    const int threads = static_cast<int>(std::max<int64_t>(
        1, std::min<int64_t>(at::get_num_threads(), batches)));
    std::vector<SiteEngine> engines(threads, engine);
    std::vector<Metric::Sums> sums(threads);
    const auto run_batch = [&](int t, int64_t b) {
      SiteEngine& e = engines[t];
      torch::Tensor logits;
      if (!cached) {
        e.set_forward_index(static_cast<uint64_t>(b));
        logits = model_.forward(xs_[b], e);
      } else {
        ForwardState s =
            cache_[b].site >= 0 ? cache_[b] : model_.run_until(xs_[b], cache_at, false, e);
        // Shares the cached tensors, which run_from only reads: the walked value gets its noise
        // out of place.
        if (cache_[b].site >= 0) s.site_owned = false;
        e.set_forward_index(static_cast<uint64_t>(b) + 1);
        logits = model_.run_from(std::move(s), e);
      }
      sums[t] += o_.metric.measure(logits, ys_[b]);
    };
    parallel_items(batches, threads, run_batch);
    Metric::Sums total;
    for (int t = 0; t < threads; ++t) total += sums[t];
    WalkRecord r;
    r.site = site;
    r.sigma = sigma;
    r.repeat = repeat;
    r.accuracy = n_ > 0 ? o_.metric.value(total) : 0.0;
    r.loss = n_ > 0 ? Metric::loss(total) : 0.0;
    // Outputs that are no longer finite (a loss-based metric under overwhelming noise: NaN or
    // infinite perplexity) carry no information: the metric's floor, the value the walk calls
    // "at chance" (an accuracy gets there by itself).
    if (!std::isfinite(r.accuracy)) r.accuracy = floor_;
    if (!std::isfinite(r.loss)) r.loss = std::numeric_limits<double>::max();
    return r;
  }

  void set_floor(double floor) { floor_ = floor; }

 private:
  void prepare(int site) {
    if (site == cached_site_) return;
    cache_.clear();
    cached_site_ = site;
    int64_t bytes = 0;
    for (const auto& x : xs_) {
      ForwardState s = model_.run_until(x, site);
      int64_t need = 0;
      for (size_t i = 1; i < s.values.size(); ++i) {
        if (s.values[i].defined()) need += s.values[i].numel() * s.values[i].element_size();
      }
      if (bytes + need <= o_.cache_bytes) {
        bytes += need;
        cache_.push_back(std::move(s));
      } else {
        cache_.push_back(ForwardState{});  // recomputed on every evaluation
      }
    }
  }

  ModelImpl& model_;
  const WalkOptions& o_;
  std::vector<torch::Tensor> xs_, ys_;
  int64_t n_ = 0;
  int cached_site_ = -1000;
  std::vector<ForwardState> cache_;
  double floor_ = 0.0;
};

SiteCurveSummary summarize_unit(int site, const std::string& name,
                                const std::vector<WalkRecord>& records, const WalkOptions& o,
                                double chance_line, double threshold, int expected_repeats) {
  SiteCurveSummary c;
  c.site = site;
  c.name = name;
  c.expected_repeats = expected_repeats;
  std::map<double, std::vector<double>> by_sigma;
  for (const auto& r : records) {
    if (r.site == site) by_sigma[r.sigma].push_back(r.accuracy);
  }
  // The midpoint and the early stop in score units (the identity for accuracy).
  std::vector<std::vector<double>> samples;
  std::vector<double> score_means;
  for (const auto& [s, accs] : by_sigma) {
    c.sigma.push_back(s);
    c.accuracy.push_back(summarize(accs));
    std::vector<double> scores;
    for (double v : accs) scores.push_back(o.metric.score(v));
    score_means.push_back(mean_of(scores));
    samples.push_back(std::move(scores));
    if (static_cast<int>(accs.size()) < expected_repeats) c.complete = false;
  }
  c.midpoint = estimate_midpoint(c.sigma, samples, o.metric.score(threshold), 2000,
                                 mix_seed(o.seed, static_cast<uint64_t>(site + 3)));
  const double last_grid = o.grid.values.back();
  for (double s : c.sigma) {
    if (s > last_grid * (1.0 + 1e-12)) ++c.extended;
  }
  const size_t n = c.sigma.size();
  c.early_stopped = !o.adaptive && n >= 2 && c.sigma.back() < last_grid &&
                    score_means[n - 1] <= chance_line && score_means[n - 2] <= chance_line;
  return c;
}

/// Runs the units (this shard's with `eval`, the others dry) and summarises.
WalkResult run_units(const std::vector<Unit>& units, const WalkOptions& o, const EvalFn& eval,
                     WalkJournal* journal, const std::vector<std::string>& names,
                     double clean_accuracy, double chance, double margin, int expected_repeats,
                     bool clean_from_records) {
  const auto t0 = std::chrono::steady_clock::now();
  WalkResult res;
  res.chance = chance;
  res.margin = margin;
  res.clean_accuracy = clean_accuracy;
  res.metric = o.metric;
  const Metric& metric = o.metric;
  // Halfway from clean to the floor, in the metric's score scale (accuracy: (clean + chance) / 2).
  const auto halfway = [&](double clean) {
    return metric.from_score(0.5 * (metric.score(clean) + metric.score(chance)));
  };
  res.threshold = halfway(clean_accuracy);
  if (std::isnan(margin)) margin = o.margin_between(clean_accuracy, chance, 0);
  res.margin = margin;
  double chance_line = metric.score(chance) + margin;
  res.units_total = static_cast<int>(units.size());
  int64_t total = 0;
  {
    Walker probe(o, chance_line, metric.score(res.threshold), nullptr, nullptr, 0);
    for (size_t u = 0; u < units.size(); ++u) {
      if (static_cast<int>(u) % o.shard_count == o.shard_index) total += probe.unit_budget(units[u]);
    }
  }
  // Clean references first (noisy training): the threshold needs them.
  Walker walker(o, chance_line, metric.score(res.threshold), journal, o.progress, total);
  std::vector<std::vector<WalkRecord>> per_unit(units.size());
  // With claim(), the k-th unit of this shard is ours when claim() handed out k (claims only
  // grow, so one pass in unit order meets them all).
  int64_t next_claim = o.claim && o.evaluate ? o.claim() : -1;
  int64_t position = 0;
  for (size_t u = 0; u < units.size(); ++u) {
    const bool in_shard = static_cast<int>(u) % o.shard_count == o.shard_index;
    bool mine = in_shard && o.evaluate;
    if (mine && o.claim) mine = position == next_claim;
    if (in_shard) ++position;
    if (walker.walk(units[u], mine ? &eval : nullptr, per_unit[u])) ++res.units_done;
    if (mine && o.claim) next_claim = o.claim();
  }
  for (auto& recs : per_unit) {
    for (auto& r : recs) res.records.push_back(std::move(r));
  }
  if (clean_from_records) {
    std::vector<double> clean;
    for (const auto& r : res.records) {
      if (r.site == WalkRecord::kCleanSite) clean.push_back(r.accuracy);
    }
    res.clean_accuracy = mean_of(clean);
    res.threshold = halfway(res.clean_accuracy);
    if (std::isnan(res.margin)) {  // other metrics under noisy training: now that clean is known
      res.margin = o.margin_between(res.clean_accuracy, chance, 0);
      chance_line = metric.score(chance) + res.margin;
    }
  }
  for (int s : o.sites) {
    res.sites.push_back(summarize_unit(s, names.at(s), res.records, o, chance_line,
                                       res.threshold, expected_repeats));
  }
  if (o.global) {
    res.global = summarize_unit(WalkRecord::kGlobalSite, "global", res.records, o,
                                chance_line, res.threshold, expected_repeats);
  }
  res.evaluations = walker.evaluations();
  res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return res;
}

}  // namespace

WalkResult walk_clean_model(ModelImpl& model, const Dataset& test, const WalkOptions& opts,
                            WalkJournal* journal) {
  opts.validate(model.num_sites());
  if (test.size() == 0) throw std::invalid_argument("the test set is empty");
  torch::NoGradGuard no_grad;
  const bool was_training = model.is_training();
  model.eval();
  const NoiseConfig saved = model.engine().config();

  const double chance =
      opts.chance > 0.0 ? opts.chance : opts.metric.floor(test, model.spec().num_classes);
  model.engine().configure(NoiseConfig{});
  const double clean = run_pass(model, test, opts.batch_size, opts.metric).accuracy;
  const double margin = opts.margin_between(clean, chance, test.size());

  std::vector<Unit> units;
  std::vector<int> reps(opts.repeats);
  for (int r = 0; r < opts.repeats; ++r) reps[r] = r;
  for (int s : opts.sites) units.push_back(Unit{s, reps, false});
  if (opts.global) units.push_back(Unit{WalkRecord::kGlobalSite, reps, false});

  CleanModelEvaluator evaluator(model, test, opts);
  evaluator.set_floor(chance);
  const EvalFn eval = [&](int site, double sigma, int r) { return evaluator(site, sigma, r); };
  WalkResult res;
  try {
    res = run_units(units, opts, eval, journal, model.site_names(), clean, chance, margin,
                    opts.repeats, false);
  } catch (...) {
    model.engine().configure(saved);
    if (was_training) model.train();
    throw;
  }
  model.engine().configure(saved);
  if (was_training) model.train();
  return res;
}

WalkResult walk_noisy_training(const Dataset& train_data, const Dataset& test,
                               const NoisyTrainingOptions& nt, const WalkOptions& opts,
                               const std::vector<std::string>& site_names,
                               WalkJournal* journal) {
  opts.validate(static_cast<int>(site_names.size()));
  if (opts.adaptive) {
    throw std::invalid_argument("adaptive midpoint search is not available with noisy training");
  }
  if (nt.eval_draws < 1) throw std::invalid_argument("eval draws must be >= 1");
  const double chance =
      opts.chance > 0.0 ? opts.chance : opts.metric.floor(test, nt.spec.num_classes);
  // Accuracy: from the test size; other metrics: from the clean references, once known.
  const double margin = opts.metric.is_fraction() ? opts.margin_for(chance, test.size())
                                                  : std::nan("");

  std::vector<Unit> units;
  for (int r = 0; r < opts.repeats; ++r) units.push_back(Unit{WalkRecord::kCleanSite, {r}, true});
  for (int s : opts.sites) {
    for (int r = 0; r < opts.repeats; ++r) units.push_back(Unit{s, {r}, false});
  }
  if (opts.global) {
    for (int r = 0; r < opts.repeats; ++r) {
      units.push_back(Unit{WalkRecord::kGlobalSite, {r}, false});
    }
  }
  const EvalFn eval = [&](int site, double sigma, int r) {
    NoiseConfig cfg;
    cfg.seed = mix_seed(opts.seed, static_cast<uint64_t>(r));
    if (site != WalkRecord::kCleanSite) {
      SiteConfig sc;
      sc.noise = {opts.noise.at(sigma)};
      if (site == WalkRecord::kGlobalSite) {
        for (int s : opts.sites) cfg.sites[s] = sc;
      } else {
        cfg.sites[site] = sc;
      }
    }
    // The same initialisation for every site and σ of a repeat (common random numbers).
    const uint64_t init = mix_seed(opts.seed, static_cast<uint64_t>(r), kInitTag);
    torch::manual_seed(init);
    Model model = make_model(nt.spec);
    TrainOptions t = nt.train;
    t.seed = init;
    t.noise = cfg;
    t.progress = nullptr;
    train(*model, train_data, t);
    EvalOptions e;
    e.draws = nt.eval_draws;
    e.batch_size = opts.batch_size;
    e.metric = opts.metric;
    const EvalResult er = evaluate(*model, test, cfg, e);
    WalkRecord rec;
    rec.site = site;
    rec.sigma = sigma;
    rec.repeat = r;
    rec.accuracy = er.accuracy.mean;
    double loss = 0.0;
    for (const auto& d : er.draws) loss += d.loss;
    rec.loss = er.draws.empty() ? 0.0 : loss / static_cast<double>(er.draws.size());
    Json layers = Json::array();
    for (const auto& w : weight_stats(*model)) layers.push_back(w.to_json());
    rec.extra = Json{{"weights", layers}, {"all", aggregate_weight_stats(*model).to_json()}};
    if (!nt.save_dir.empty()) {
      CheckpointMeta meta;
      meta.spec = nt.spec;
      meta.dataset = train_data.name;
      meta.train_config = t.to_json(site_names);
      meta.metrics = Json{{"noisy_accuracy", rec.accuracy}};
      meta.provenance = provenance();
      const std::string file = "site" + std::to_string(site) + "-sigma" + fmt_double(sigma, 6) +
                               "-rep" + std::to_string(r) + ".pt";
      save_checkpoint((std::filesystem::path(nt.save_dir) / file).string(), *model, meta);
    }
    return rec;
  };
  return run_units(units, opts, eval, journal, site_names, std::nan(""), chance, margin,
                   opts.repeats, true);
}

}  // namespace quell
