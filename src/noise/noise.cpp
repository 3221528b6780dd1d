#include "quell/noise.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <initializer_list>
#include <sstream>
#include <stdexcept>

#include "util/json.h"
#include "util/text.h"

namespace quell {
namespace {
using text::parse_int;
using text::parse_number;
using text::split;
using text::trim;
using json::check_keys;

void check_sigma(double s, const char* what) {
  if (std::isnan(s)) throw std::invalid_argument(std::string(what) + " is NaN");
  if (std::isinf(s)) throw std::invalid_argument(std::string(what) + " is infinite");
  if (s < 0) {
    throw std::invalid_argument(std::string(what) + " is negative (" + std::to_string(s) + ")");
  }
}

const char* kind_str(NoiseKind k) {
  switch (k) {
    case NoiseKind::kAdditive:
      return "add";
    case NoiseKind::kMultiplicative:
      return "mul";
    case NoiseKind::kMulAdd:
      return "muladd";
    case NoiseKind::kAddMul:
      return "addmul";
  }
  return "?";
}
const char* scale_str(SigmaScale s) {
  switch (s) {
    case SigmaScale::kAbsolute:
      return "abs";
    case SigmaScale::kStd:
      return "std";
    case SigmaScale::kRange:
      return "range";
  }
  return "?";
}
const char* temporal_str(Temporal t) {
  switch (t) {
    case Temporal::kDynamic:
      return "dynamic";
    case Temporal::kStatic:
      return "static";
    case Temporal::kAging:
      return "aging";
  }
  return "?";
}

NoiseKind kind_from(const std::string& s) {
  if (s == "add") return NoiseKind::kAdditive;
  if (s == "mul") return NoiseKind::kMultiplicative;
  if (s == "muladd") return NoiseKind::kMulAdd;
  if (s == "addmul") return NoiseKind::kAddMul;
  throw std::invalid_argument("unknown noise kind '" + s + "' (known: add, mul, muladd, addmul)");
}
SigmaScale scale_from(const std::string& s) {
  if (s == "abs") return SigmaScale::kAbsolute;
  if (s == "std") return SigmaScale::kStd;
  if (s == "range") return SigmaScale::kRange;
  throw std::invalid_argument("unknown sigma scale '" + s + "' (known: abs, std, range)");
}
Temporal temporal_from(const std::string& s) {
  if (s == "dynamic") return Temporal::kDynamic;
  if (s == "static") return Temporal::kStatic;
  if (s == "aging") return Temporal::kAging;
  throw std::invalid_argument("unknown temporal mode '" + s + "' (known: dynamic, static, aging)");
}

// Splits "add:0.1+mul:1e+3" into components at '+' signs that start a new component (followed
// by a letter), so exponents like 1e+3 stay intact.
std::vector<std::string> split_components(const std::string& s) {
  std::vector<std::string> out;
  std::string cur;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '+' && i + 1 < s.size() && std::isalpha(static_cast<unsigned char>(s[i + 1]))) {
      out.push_back(cur);
      cur.clear();
    } else {
      cur += s[i];
    }
  }
  out.push_back(cur);
  return out;
}

}  // namespace

NoiseSpec NoiseSpec::mixed(double amplitude, double ratio, bool mul_first) {
  check_sigma(amplitude, "mixed-noise amplitude A");
  if (!(ratio >= 0.0 && ratio <= 1.0)) {
    throw std::invalid_argument("mixed-noise ratio r must be in [0, 1], got " +
                                std::to_string(ratio));
  }
  NoiseSpec s;
  s.kind = mul_first ? NoiseKind::kMulAdd : NoiseKind::kAddMul;
  s.sigma_add = amplitude * ratio;
  s.sigma_mul = amplitude * (1.0 - ratio);
  return s;
}

double NoiseSpec::temporal_factor() const {
  if (temporal != Temporal::kAging) return 1.0;
  return std::pow(age / age_ref, age_exponent);
}

void NoiseSpec::validate() const {
  check_sigma(sigma_add, "additive sigma");
  check_sigma(sigma_mul, "multiplicative sigma");
  if (temporal == Temporal::kAging) {
    if (!(age >= 0.0) || std::isinf(age)) {
      throw std::invalid_argument("aging: age must be finite and >= 0, got " + std::to_string(age));
    }
    if (!(age_ref > 0.0) || std::isinf(age_ref)) {
      throw std::invalid_argument("aging: reference age must be > 0, got " +
                                  std::to_string(age_ref));
    }
    if (!(age_exponent >= 0.0) || std::isinf(age_exponent)) {
      throw std::invalid_argument("aging: exponent nu must be >= 0, got " +
                                  std::to_string(age_exponent));
    }
  }
  if (per_channel && temporal == Temporal::kDynamic) {
    throw std::invalid_argument(
        "per=channel applies to static and aging noise (a chip's fixed column deviations); "
        "dynamic noise is drawn per element");
  }
}

Json NoiseSpec::to_json() const {
  Json j{
      {"kind", kind_str(kind)}, {"scale", scale_str(scale)}, {"temporal", temporal_str(temporal)}};
  if (kind != NoiseKind::kMultiplicative) j["sigma_add"] = sigma_add;
  if (kind != NoiseKind::kAdditive) j["sigma_mul"] = sigma_mul;
  if (temporal == Temporal::kAging) {
    j["age"] = age;
    j["age_ref"] = age_ref;
    j["age_exponent"] = age_exponent;
  }
  if (per_channel) j["per"] = "channel";
  return j;
}

NoiseSpec NoiseSpec::from_json(const Json& j) {
  check_keys(j,
             {"kind", "sigma", "sigma_add", "sigma_mul", "amplitude", "ratio", "scale", "temporal",
              "age", "age_ref", "age_exponent", "per"},
             "noise component");
  NoiseSpec s;
  s.kind = kind_from(j.value("kind", std::string("add")));
  if (j.contains("sigma")) {
    const double v = j.at("sigma").get<double>();
    if (s.kind == NoiseKind::kAdditive)
      s.sigma_add = v;
    else if (s.kind == NoiseKind::kMultiplicative)
      s.sigma_mul = v;
    else
      throw std::invalid_argument("mixed noise takes amplitude/ratio or sigma_add/sigma_mul");
  }
  const bool mixed_kind = s.kind == NoiseKind::kMulAdd || s.kind == NoiseKind::kAddMul;
  if ((j.contains("amplitude") || j.contains("ratio")) && !mixed_kind) {
    throw std::invalid_argument(
        "noise component: amplitude/ratio apply to mixed noise only "
        "(muladd, addmul), not '" +
        std::string(kind_str(s.kind)) + "'");
  }
  if (j.contains("ratio") && !j.contains("amplitude")) {
    throw std::invalid_argument("noise component: 'ratio' needs 'amplitude'");
  }
  if ((s.kind == NoiseKind::kAdditive && j.contains("sigma_mul")) ||
      (s.kind == NoiseKind::kMultiplicative && j.contains("sigma_add"))) {
    throw std::invalid_argument(std::string("noise component: '") + kind_str(s.kind) +
                                "' noise has no " +
                                (s.kind == NoiseKind::kAdditive ? "sigma_mul" : "sigma_add"));
  }
  if (j.contains("amplitude")) {
    const NoiseSpec m =
        mixed(j.at("amplitude").get<double>(), j.value("ratio", 0.5), s.kind != NoiseKind::kAddMul);
    s.sigma_add = m.sigma_add;
    s.sigma_mul = m.sigma_mul;
  }
  s.sigma_add = j.value("sigma_add", s.sigma_add);
  s.sigma_mul = j.value("sigma_mul", s.sigma_mul);
  s.scale = scale_from(j.value("scale", std::string("abs")));
  s.temporal = temporal_from(j.value("temporal", std::string("dynamic")));
  s.age = j.value("age", s.age);
  s.age_ref = j.value("age_ref", s.age_ref);
  s.age_exponent = j.value("age_exponent", s.age_exponent);
  const std::string per = j.value("per", std::string("element"));
  if (per != "element" && per != "channel") {
    throw std::invalid_argument("noise component: per '" + per + "' (known: element, channel)");
  }
  s.per_channel = per == "channel";
  s.validate();
  return s;
}

NoiseSpec NoiseSpec::parse(const std::string& text) {
  const auto parts = split(trim(text), ':');
  if (parts.size() < 2) {
    throw std::invalid_argument("noise component '" + text +
                                "': expected KIND:SIGMA[:OPTION...], e.g. add:0.1");
  }
  NoiseSpec s;
  s.kind = kind_from(trim(parts[0]));
  const std::string what = "noise component '" + text + "'";
  if (s.kind == NoiseKind::kAdditive) {
    s.sigma_add = parse_number(parts[1], what);
  } else if (s.kind == NoiseKind::kMultiplicative) {
    s.sigma_mul = parse_number(parts[1], what);
  } else {
    const auto ar = split(parts[1], '/');
    if (ar.size() != 2) {
      throw std::invalid_argument(what + ": mixed noise takes AMPLITUDE/RATIO, e.g. " +
                                  kind_str(s.kind) + ":0.5/0.3");
    }
    check_sigma(parse_number(ar[0], what), "mixed-noise amplitude A");
    const NoiseSpec m =
        mixed(parse_number(ar[0], what), parse_number(ar[1], what), s.kind == NoiseKind::kMulAdd);
    s.sigma_add = m.sigma_add;
    s.sigma_mul = m.sigma_mul;
  }
  for (size_t i = 2; i < parts.size(); ++i) {
    const std::string opt = trim(parts[i]);
    const auto eq = opt.find('=');
    const std::string key = opt.substr(0, eq);
    const std::string val = eq == std::string::npos ? "" : opt.substr(eq + 1);
    if (key == "static" || key == "dynamic" || key == "aging") {
      s.temporal = temporal_from(key);
    } else if (key == "rel") {
      s.scale = scale_from(val);
    } else if (key == "abs") {
      s.scale = SigmaScale::kAbsolute;
    } else if (key == "age") {
      s.age = parse_number(val, what);
    } else if (key == "ref") {
      s.age_ref = parse_number(val, what);
    } else if (key == "nu") {
      s.age_exponent = parse_number(val, what);
    } else if (key == "per" && (val == "channel" || val == "element")) {
      s.per_channel = val == "channel";
    } else {
      throw std::invalid_argument(what + ": unknown option '" + opt +
                                  "' (known: static, dynamic, aging, rel=std|range, abs, "
                                  "age=, ref=, nu=, per=element|channel)");
    }
  }
  try {
    s.validate();
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument(what + ": " + e.what());
  }
  return s;
}

std::string NoiseSpec::str() const {
  std::ostringstream os;
  os << kind_str(kind) << ':';
  if (kind == NoiseKind::kAdditive)
    os << sigma_add;
  else if (kind == NoiseKind::kMultiplicative)
    os << sigma_mul;
  else
    os << (sigma_add + sigma_mul) << '/'
       << (sigma_add + sigma_mul > 0 ? sigma_add / (sigma_add + sigma_mul) : 0.0);
  if (scale != SigmaScale::kAbsolute) os << ":rel=" << scale_str(scale);
  if (temporal != Temporal::kDynamic) os << ':' << temporal_str(temporal);
  if (temporal == Temporal::kAging)
    os << ":age=" << age << ":ref=" << age_ref << ":nu=" << age_exponent;
  if (per_channel) os << ":per=channel";
  return os.str();
}

bool SiteConfig::is_identity() const {
  if (adc_bits > 0) return false;
  return std::all_of(noise.begin(), noise.end(), [](const NoiseSpec& s) { return s.is_zero(); });
}

bool SiteConfig::has_static() const {
  return std::any_of(noise.begin(), noise.end(), [](const NoiseSpec& s) {
    return s.temporal != Temporal::kDynamic && !s.is_zero();
  });
}

void SiteConfig::validate() const {
  for (const auto& s : noise) s.validate();
  if (adc_bits < 0 || adc_bits > 24) {
    throw std::invalid_argument("ADC bits must be in 1..24 (0 = off), got " +
                                std::to_string(adc_bits));
  }
  if (repeats < 1 || repeats > 1000) {
    throw std::invalid_argument("repeats must be in 1..1000, got " + std::to_string(repeats));
  }
}

Json SiteConfig::to_json() const {
  Json comps = Json::array();
  for (const auto& s : noise) comps.push_back(s.to_json());
  return Json{{"noise", comps}, {"adc_bits", adc_bits}, {"repeats", repeats}};
}

SiteConfig SiteConfig::from_json(const Json& j) {
  check_keys(j, {"sites", "name", "noise", "adc_bits", "repeats"}, "noise rule");
  SiteConfig c;
  if (j.contains("noise")) {
    const Json& n = j.at("noise");
    if (n.is_array()) {
      for (const auto& e : n) c.noise.push_back(NoiseSpec::from_json(e));
    } else {
      c.noise.push_back(NoiseSpec::from_json(n));
    }
  }
  c.adc_bits = json::integer_or(j, "adc_bits", 0);
  c.repeats = json::integer_or(j, "repeats", 1);
  c.validate();
  return c;
}

void WeightNoise::validate() const {
  check_sigma(sigma, "weight-noise sigma");
  if (multiplicative && !relative) {
    throw std::invalid_argument("weight noise: multiplicative noise is always relative");
  }
}

Json WeightNoise::to_json() const {
  return Json{{"sigma", sigma},
              {"kind", multiplicative ? "mul" : "add"},
              {"scale", multiplicative ? "rel" : (relative ? "range" : "abs")}};
}

WeightNoise WeightNoise::from_json(const Json& j) {
  check_keys(j, {"sigma", "kind", "scale"}, "weight_noise");
  WeightNoise w;
  w.sigma = j.value("sigma", 0.0);
  const std::string kind = j.value("kind", std::string("add"));
  if (kind != "add" && kind != "mul") {
    throw std::invalid_argument("weight_noise: unknown kind '" + kind + "' (known: add, mul)");
  }
  w.multiplicative = kind == "mul";
  const std::string scale = j.value("scale", std::string(w.multiplicative ? "rel" : "range"));
  if (scale != "abs" && scale != "range" && scale != "rel") {
    throw std::invalid_argument("weight_noise: unknown scale '" + scale +
                                "' (known: abs, range, rel)");
  }
  w.relative = scale != "abs";
  w.validate();
  return w;
}

WeightNoise WeightNoise::parse(const std::string& text) {
  WeightNoise w;
  if (trim(text).empty()) return w;
  const auto parts = split(trim(text), ':');
  const std::string what = "weight noise '" + text + "'";
  w.sigma = parse_number(parts[0], what);
  for (size_t i = 1; i < parts.size(); ++i) {
    const std::string opt = trim(parts[i]);
    if (opt == "abs")
      w.relative = false;
    else if (opt == "range" || opt == "rel")
      w.relative = true;
    else if (opt == "mul")
      w.multiplicative = true;
    else if (opt == "add")
      w.multiplicative = false;
    else
      throw std::invalid_argument(what + ": unknown option '" + opt +
                                  "' (known: abs, range, rel, mul, add)");
  }
  try {
    w.validate();
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument(what + ": " + e.what());
  }
  return w;
}

bool NoiseConfig::empty() const {
  if (weight.enabled() || device.enabled()) return false;
  return std::all_of(sites.begin(), sites.end(), [](const auto& kv) {
    return kv.second.is_identity() && kv.second.repeats == 1;
  });
}

bool NoiseConfig::has_static() const {
  if (weight.enabled() || (device.programs_weights() && device.scale > 0.0)) return true;
  return std::any_of(sites.begin(), sites.end(),
                     [](const auto& kv) { return kv.second.has_static(); });
}

bool NoiseConfig::has_dynamic() const {
  if (device.enabled() && device.scale > 0.0) {
    if (device.read_per_draw && device.programs_weights() &&
        (device.model.kind == DeviceModel::Kind::kPCM ||
         device.model.kind == DeviceModel::Kind::kTable)) {
      return true;  // the read noise is drawn afresh per draw (ReRAM has none)
    }
    if (device.tile.out_noise > 0.0 && (device.all_layers || !device.layers.empty())) return true;
    for (const auto& kv : device.tile_by_site) {
      if (kv.second.out_noise > 0.0 && device.on(kv.first)) return true;
    }
  }
  return std::any_of(sites.begin(), sites.end(), [](const auto& kv) {
    return std::any_of(kv.second.noise.begin(), kv.second.noise.end(), [](const NoiseSpec& s) {
      return s.temporal == Temporal::kDynamic && !s.is_zero();
    });
  });
}

NoiseConfig NoiseConfig::scaled(double factor) const {
  check_sigma(factor, "noise level factor");
  NoiseConfig c = *this;
  for (auto& kv : c.sites) {
    for (auto& s : kv.second.noise) {
      s.sigma_add *= factor;
      s.sigma_mul *= factor;
    }
  }
  c.weight.sigma *= factor;
  c.device.scale *= factor;
  return c;
}

Json NoiseConfig::to_json(const std::vector<std::string>& site_names) const {
  // One rule per configured site: the output reads back with noise_config_from_json.
  Json s = Json::array();
  for (const auto& kv : sites) {
    Json e = kv.second.to_json();
    e["sites"] = std::to_string(kv.first);
    if (kv.first >= 0 && kv.first < static_cast<int>(site_names.size())) {
      e["name"] = site_names[kv.first];
    }
    s.push_back(e);
  }
  Json j{{"seed", seed}, {"rules", s}, {"weight_noise", weight.to_json()}};
  if (device.enabled()) j["device"] = device.to_json(site_names);
  return j;
}

std::vector<int> select_sites(const std::string& selector, const std::vector<std::string>& names) {
  const int n = static_cast<int>(names.size());
  std::vector<int> out;
  const std::string sel = trim(selector);
  auto known = [&]() {
    std::string k;
    for (int i = 0; i < n; ++i) k += (i ? ", " : "") + std::to_string(i) + " " + names[i];
    return k;
  };
  if (sel == "all") {
    for (int i = 0; i < n; ++i) out.push_back(i);
    return out;
  }
  for (const std::string& raw : split(sel, ',')) {
    const std::string item = trim(raw);
    if (item.empty())
      throw std::invalid_argument("site selector '" + selector + "' has an empty item");
    const auto it = std::find(names.begin(), names.end(), item);
    if (it != names.end()) {
      out.push_back(static_cast<int>(it - names.begin()));
      continue;
    }
    const bool numeric = item.find_first_not_of("0123456789-") == std::string::npos;
    if (!numeric) {
      throw std::invalid_argument("unknown site '" + item + "' (sites: " + known() + ")");
    }
    const auto dash = item.find('-', 1);
    int lo = 0, hi = 0;
    if (dash == std::string::npos) {
      lo = hi = parse_int(item, "site index");
    } else {
      lo = parse_int(item.substr(0, dash), "site range");
      hi = parse_int(item.substr(dash + 1), "site range");
    }
    if (lo < 0 || hi >= n || lo > hi) {
      throw std::invalid_argument("site index/range '" + item + "' is outside 0-" +
                                  std::to_string(n - 1));
    }
    for (int i = lo; i <= hi; ++i) out.push_back(i);
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

namespace {
std::pair<std::string, std::string> split_rule(const std::string& rule, const char* what) {
  const auto eq = rule.find('=');
  if (eq == std::string::npos) {
    throw std::invalid_argument(std::string(what) + " rule '" + rule + "': expected SITES=VALUE");
  }
  return {rule.substr(0, eq), rule.substr(eq + 1)};
}
}  // namespace

void apply_noise_rules(NoiseConfig& cfg, const std::vector<std::string>& noise_rules,
                       const std::vector<std::string>& adc_rules,
                       const std::vector<std::string>& repeat_rules,
                       const std::vector<std::string>& site_names) {
  for (const auto& rule : noise_rules) {
    // Selectors never contain '=': the first one ends the selector (options like rel=std follow).
    const auto [sel, rhs] = split_rule(rule, "noise");
    std::vector<NoiseSpec> comps;
    for (const auto& c : split_components(rhs)) comps.push_back(NoiseSpec::parse(c));
    for (int s : select_sites(sel, site_names)) cfg.sites[s].noise = comps;
  }
  for (const auto& rule : adc_rules) {
    const auto [sel, rhs] = split_rule(rule, "ADC");
    const int bits = parse_int(rhs, "ADC rule '" + rule + "'");
    for (int s : select_sites(sel, site_names)) cfg.sites[s].adc_bits = bits;
  }
  for (const auto& rule : repeat_rules) {
    const auto [sel, rhs] = split_rule(rule, "repeat");
    const int k = parse_int(rhs, "repeat rule '" + rule + "'");
    if (k < 1 || k > 1000) {
      throw std::invalid_argument("repeat rule '" + rule + "': K must be in 1..1000");
    }
    for (int s : select_sites(sel, site_names)) cfg.sites[s].repeats = k;
  }
  for (auto& kv : cfg.sites) kv.second.validate();
}

NoiseConfig build_noise_config(const std::vector<std::string>& noise_rules,
                               const std::vector<std::string>& adc_rules,
                               const std::vector<std::string>& repeat_rules,
                               const std::string& weight_noise, uint64_t seed,
                               const std::vector<std::string>& site_names) {
  NoiseConfig cfg;
  cfg.seed = seed;
  apply_noise_rules(cfg, noise_rules, adc_rules, repeat_rules, site_names);
  cfg.weight = WeightNoise::parse(weight_noise);
  return cfg;
}

NoiseConfig noise_config_from_json(const Json& j, const std::vector<std::string>& site_names) {
  check_keys(j, {"seed", "weight_noise", "rules", "device"}, "noise configuration");
  // A value of the wrong JSON type is nlohmann's error, which names no field: name the part.
  auto in = [](const std::string& part, auto&& read) {
    return json::part("noise configuration: " + part, read);
  };
  NoiseConfig cfg;
  cfg.seed = in("seed", [&] { return json::integer_or<uint64_t>(j, "seed", 1); });
  if (j.contains("weight_noise")) {
    cfg.weight = in("weight_noise", [&] { return WeightNoise::from_json(j.at("weight_noise")); });
  }
  if (j.contains("device")) cfg.device = DeviceConfig::from_json(j.at("device"), site_names);
  if (j.contains("rules")) {
    if (!j.at("rules").is_array()) {
      throw std::invalid_argument("noise configuration: rules must be a JSON array");
    }
    size_t index = 0;
    for (const auto& r : j.at("rules")) {
      const std::string part = "rules[" + std::to_string(index++) + "]";
      const SiteConfig sc = in(part, [&] { return SiteConfig::from_json(r); });
      if (!r.contains("sites")) {
        throw std::invalid_argument("noise rule " + r.dump() +
                                    " has no \"sites\" (use \"all\" for every site)");
      }
      const std::string sites = in(part + ".sites", [&] { return r.at("sites").get<std::string>(); });
      for (int s : select_sites(sites, site_names)) {
        SiteConfig& dst = cfg.sites[s];
        if (r.contains("noise")) dst.noise = sc.noise;
        if (r.contains("adc_bits")) dst.adc_bits = sc.adc_bits;
        if (r.contains("repeats")) dst.repeats = sc.repeats;
      }
    }
  }
  return cfg;
}

}  // namespace quell
