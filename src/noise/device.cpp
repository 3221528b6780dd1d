// Device models, weight programming over time and the tile I/O. docs/devices.md.
#include "quell/device.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "quell/noise.h"
#include "util/json.h"
#include "util/text.h"

namespace quell {
namespace {
using text::lower;
using text::parse_int;
using text::parse_number;
using text::split;
using text::trim;
using json::check_keys;

constexpr uint64_t kDeviceTag = 0x4445564943455331ULL;  // programming, exponents, read noise
constexpr uint64_t kReadTag = 0x5245414431665354ULL;    // read noise, per time
constexpr double kZeroClip = 1e-7;                      // aihwkit's _ZERO_CLIP for ln g_T

// PCM programming-noise polynomial (µS at g_max = 25 µS), ascending powers of g_T.
constexpr double kPcmProg[3] = {0.26348, 1.9650, -1.1731};
constexpr double kPcmReference = 25.0;
// ReRAM (Wan et al. 2022 as fitted in aihwkit): µS at g_max = 40 µS, ascending powers of g_T,
// 1 s, 1 day and 2 days after programming.
constexpr double kReramTimes[3] = {1.0, 86400.0, 172800.0};
constexpr double kReramCoeff[3][5] = {{0.348, 16.030, -43.853, 45.393, -16.815},
                                      {0.701, 22.086, -50.773, 47.095, -16.458},
                                      {0.782, 20.274, -43.507, 37.062, -11.934}};
constexpr double kReramReference = 40.0;

std::string first_line(const std::string& s) { return s.substr(0, s.find('\n')); }

void check_nonneg(double v, const std::string& what) {
  if (!std::isfinite(v) || v < 0.0) {
    throw std::invalid_argument(what + " must be a finite number >= 0, got " + fmt_double(v));
  }
}

void check_positive(double v, const std::string& what) {
  if (!std::isfinite(v) || v <= 0.0) {
    throw std::invalid_argument(what + " must be a finite number > 0, got " + fmt_double(v));
  }
}

bool parse_switch(const std::string& v, const std::string& what) {
  const std::string s = lower(trim(v));
  if (s == "on" || s == "1" || s == "true" || s == "yes") return true;
  if (s == "off" || s == "0" || s == "false" || s == "no") return false;
  throw std::invalid_argument(what + ": '" + v + "' is not on or off");
}

// Piecewise-linear interpolation of one column of a table at g, held at the ends.
torch::Tensor interpolate(const std::vector<DeviceModel::Point>& table,
                          double DeviceModel::Point::*col, const torch::Tensor& g) {
  std::vector<double> xs, ys;
  for (const auto& p : table) {
    xs.push_back(p.g);
    ys.push_back(p.*col);
  }
  const auto opts = g.options().dtype(torch::kDouble);
  if (xs.size() == 1) return torch::full_like(g, ys[0], opts);
  const torch::Tensor x = torch::tensor(xs, opts), y = torch::tensor(ys, opts);
  const torch::Tensor gc = g.to(torch::kDouble).clamp(xs.front(), xs.back()).contiguous();
  const int64_t last = static_cast<int64_t>(xs.size()) - 2;
  const torch::Tensor k = (torch::searchsorted(x, gc, false, true) - 1).clamp(0, last);
  const torch::Tensor x0 = x.index({k}), x1 = x.index({k + 1});
  const torch::Tensor y0 = y.index({k}), y1 = y.index({k + 1});
  return y0 + (y1 - y0) * (gc - x0) / (x1 - x0);
}

torch::Tensor polynomial(const double* c, int n, const torch::Tensor& x) {
  torch::Tensor r = torch::full_like(x, c[n - 1]);
  for (int i = n - 2; i >= 0; --i) r = r * x + c[i];
  return r;
}

const char* kind_name(DeviceModel::Kind k) {
  switch (k) {
    case DeviceModel::Kind::kIdeal:
      return "ideal";
    case DeviceModel::Kind::kPCM:
      return "pcm";
    case DeviceModel::Kind::kReRAM:
      return "reram";
    case DeviceModel::Kind::kTable:
      return "table";
  }
  return "?";
}

std::string read_text(const std::string& path, const std::string& what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::invalid_argument(what + " " + path + ": cannot open");
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// A CSV table: a header naming the columns g, sigma_prog, nu_mean, nu_std, q_s (any order),
// one row per point; '#' starts a comment line; "# g_max = 25" (also t0, t_read) sets a field.
DeviceModel read_table_csv(const std::string& path) {
  std::istringstream in(read_text(path, "device table"));
  DeviceModel m;
  m.kind = DeviceModel::Kind::kTable;
  m.name = path;
  m.g_max = 0.0;
  std::vector<std::string> header;
  std::string line;
  int line_no = 0;
  const std::vector<std::string> need{"g", "sigma_prog", "nu_mean", "nu_std", "q_s"};
  while (std::getline(in, line)) {
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    const std::string t = trim(line);
    if (t.empty()) continue;
    const std::string where = path + " line " + std::to_string(line_no);
    if (t[0] == '#') {
      const auto eq = t.find('=');
      if (eq == std::string::npos) continue;
      const std::string key = lower(trim(t.substr(1, eq - 1)));
      const std::string value = t.substr(eq + 1);
      if (key == "g_max") m.g_max = parse_number(value, where + ": g_max");
      if (key == "t0") m.t0 = parse_number(value, where + ": t0");
      if (key == "t_read") m.t_read = parse_number(value, where + ": t_read");
      if (key == "name") m.name = trim(value);
      continue;
    }
    std::vector<std::string> cells = split(t, ',');
    for (auto& c : cells) c = lower(trim(c));
    if (header.empty()) {
      header = cells;
      for (const auto& n : need) {
        if (std::find(header.begin(), header.end(), n) == header.end()) {
          throw std::invalid_argument(where + ": the header has no column '" + n +
                                      "' (need g, sigma_prog, nu_mean, nu_std, q_s)");
        }
      }
      continue;
    }
    if (cells.size() != header.size()) {
      throw std::invalid_argument(where + ": " + std::to_string(cells.size()) + " cells, the header has " +
                                  std::to_string(header.size()));
    }
    DeviceModel::Point p;
    for (size_t i = 0; i < header.size(); ++i) {
      const std::string what = where + ": " + header[i];
      if (header[i] == "g") p.g = parse_number(cells[i], what);
      if (header[i] == "sigma_prog") p.sigma_prog = parse_number(cells[i], what);
      if (header[i] == "nu_mean") p.nu_mean = parse_number(cells[i], what);
      if (header[i] == "nu_std") p.nu_std = parse_number(cells[i], what);
      if (header[i] == "q_s") p.q_s = parse_number(cells[i], what);
    }
    m.table.push_back(p);
  }
  if (header.empty()) throw std::invalid_argument(path + ": no header line (g, sigma_prog, nu_mean, nu_std, q_s)");
  if (m.g_max == 0.0 && !m.table.empty()) m.g_max = m.table.back().g;
  try {
    m.validate();
  } catch (const std::exception& e) {
    throw std::invalid_argument(path + ": " + e.what());
  }
  return m;
}

DeviceModel read_table_json(const std::string& path) {
  Json j;
  try {
    j = Json::parse(read_text(path, "device table"));
  } catch (const Json::exception& e) {
    throw std::invalid_argument(path + ": not valid JSON (" + first_line(e.what()) + ")");
  }
  if (!j.is_object()) throw std::invalid_argument(path + ": a device table is a JSON object");
  if (!j.contains("kind")) j["kind"] = "table";
  if (!j.contains("name")) j["name"] = path;
  try {
    DeviceModel m = DeviceModel::from_json(j);
    m.source = path;
    return m;
  } catch (const std::exception& e) {
    throw std::invalid_argument(path + ": " + first_line(e.what()));
  }
}

double quantise_step(double bound, int bits) { return bound / (std::ldexp(1.0, bits) - 2.0); }

// round(x / step) * step; the gradient passes straight through under autograd.
torch::Tensor quantise(const torch::Tensor& x, double step) {
  torch::Tensor q = torch::round(x / step) * step;
  return x.requires_grad() ? x + (q - x).detach() : q;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Durations

double parse_duration(const std::string& text_in) {
  const std::string t = lower(trim(text_in));
  size_t end = 0;
  while (end < t.size() && (std::isdigit(static_cast<unsigned char>(t[end])) || t[end] == '.' ||
                            t[end] == 'e' || t[end] == '+' || t[end] == '-')) {
    // An 'e' is an exponent only when a digit or sign follows ("1e3"), not a unit.
    if (t[end] == 'e' && (end + 1 >= t.size() ||
                          !(std::isdigit(static_cast<unsigned char>(t[end + 1])) ||
                            t[end + 1] == '-' || t[end + 1] == '+'))) {
      break;
    }
    ++end;
  }
  const std::string unit = trim(t.substr(end));
  const double v = parse_number(t.substr(0, end), "time '" + text_in + "'");
  static const std::vector<std::pair<std::string, double>> units{
      {"", 1.0},        {"s", 1.0},          {"sec", 1.0},      {"min", 60.0},
      {"h", 3600.0},    {"d", 86400.0},      {"day", 86400.0},  {"days", 86400.0},
      {"w", 604800.0},  {"mo", 2592000.0},   {"month", 2592000.0}, {"y", 31557600.0},
      {"year", 31557600.0}, {"years", 31557600.0}};
  for (const auto& [name, factor] : units) {
    if (unit == name) {
      const double s = v * factor;
      if (!std::isfinite(s) || s < 0.0) {
        throw std::invalid_argument("time '" + text_in + "' must be finite and >= 0");
      }
      return s;
    }
  }
  throw std::invalid_argument("time '" + text_in +
                              "': unknown unit '" + unit + "' (known: s, min, h, d, w, mo, y)");
}

std::vector<double> parse_durations(const std::string& text_in) {
  std::vector<double> out;
  for (const auto& part : split(text_in, ',')) {
    if (trim(part).empty()) throw std::invalid_argument("times '" + text_in + "': an empty entry");
    out.push_back(parse_duration(part));
  }
  return out;
}

std::string durations_as_seconds(const std::string& grid) {
  std::string out, part;
  auto flush = [&] {
    out += fmt_double(parse_duration(part), 12);
    part.clear();
  };
  for (char c : grid) {
    if (c == ':' || c == ',') {
      flush();
      out += c;
    } else {
      part += c;
    }
  }
  flush();
  return out;
}

std::string duration_str(double s) {
  static const std::vector<std::pair<const char*, double>> units{
      {"y", 31557600.0}, {"mo", 2592000.0}, {"w", 604800.0}, {"d", 86400.0},
      {"h", 3600.0},     {"min", 60.0}};
  if (s > 0.0) {
    for (const auto& [name, f] : units) {
      const double k = s / f;
      if (k >= 1.0 && std::fabs(k - std::round(k)) < 1e-9 * k) {
        return fmt_double(std::round(k)) + " " + name;
      }
    }
  }
  return fmt_double(s) + " s";
}

// ---------------------------------------------------------------------------------------------
// DeviceModel

DeviceModel DeviceModel::parse(const std::string& text_in) {
  const std::string t = trim(text_in);
  const std::string l = lower(t);
  DeviceModel m;
  if (l == "ideal") return m;
  if (l == "pcm") {
    m.kind = Kind::kPCM;
    m.name = "pcm";
    return m;
  }
  if (l == "reram") {
    m.kind = Kind::kReRAM;
    m.name = "reram";
    m.g_max = kReramReference;
    return m;
  }
  auto ends_with = [&](const std::string& suffix) {
    return l.size() > suffix.size() && l.compare(l.size() - suffix.size(), suffix.size(), suffix) == 0;
  };
  if (ends_with(".json")) return read_table_json(t);
  if (ends_with(".csv")) {
    DeviceModel c = read_table_csv(t);
    c.source = t;
    return c;
  }
  throw std::invalid_argument("unknown device model '" + t +
                              "' (known: ideal, pcm, reram, or a table file .json/.csv)");
}

void DeviceModel::validate() const {
  check_positive(g_max, "device g_max (µS)");
  check_positive(t0, "device t0 (s)");
  check_positive(t_read, "device t_read (s)");
  if (kind != Kind::kTable) return;
  if (table.empty()) throw std::invalid_argument("a device table needs at least one point");
  for (size_t i = 0; i < table.size(); ++i) {
    const Point& p = table[i];
    const std::string where = "device table point " + std::to_string(i + 1);
    check_nonneg(p.g, where + ": g");
    check_nonneg(p.sigma_prog, where + ": sigma_prog");
    check_nonneg(p.nu_mean, where + ": nu_mean");
    check_nonneg(p.nu_std, where + ": nu_std");
    check_nonneg(p.q_s, where + ": q_s");
    if (i > 0 && !(p.g > table[i - 1].g)) {
      throw std::invalid_argument(where + ": g must increase from point to point (" +
                                  fmt_double(table[i - 1].g) + " then " + fmt_double(p.g) + ")");
    }
  }
}

Json DeviceModel::to_json() const {
  Json j{{"kind", kind_name(kind)}, {"name", name}, {"g_max", g_max}};
  if (kind == Kind::kPCM || kind == Kind::kTable) {
    j["t0"] = t0;
    j["t_read"] = t_read;
  }
  if (!source.empty()) j["source"] = source;
  if (kind == Kind::kTable) {
    Json pts = Json::array();
    for (const auto& p : table) {
      pts.push_back({{"g", p.g},
                     {"sigma_prog", p.sigma_prog},
                     {"nu_mean", p.nu_mean},
                     {"nu_std", p.nu_std},
                     {"q_s", p.q_s}});
    }
    j["points"] = pts;
  }
  return j;
}

DeviceModel DeviceModel::from_json(const Json& j) {
  if (j.is_string()) return parse(j.get<std::string>());
  check_keys(j, {"kind", "name", "g_max", "t0", "t_read", "source", "points"}, "device model");
  return json::part("device model", [&] {
    const std::string kind = lower(j.value("kind", std::string("pcm")));
    DeviceModel m;
    if (kind == "table") {
      m.kind = Kind::kTable;
      m.name = "table";
    } else if (kind == "pcm" || kind == "reram" || kind == "ideal") {
      m = parse(kind);
    } else {
      throw std::invalid_argument("device model: unknown kind '" + kind +
                                  "' (known: ideal, pcm, reram, table)");
    }
    m.name = j.value("name", m.name);
    m.source = j.value("source", std::string());
    m.t0 = j.value("t0", m.t0);
    m.t_read = j.value("t_read", m.t_read);
    if (m.kind == Kind::kTable) {
      if (!j.contains("points") || !j.at("points").is_array()) {
        throw std::invalid_argument("device table: 'points' must be an array of "
                                    "{g, sigma_prog, nu_mean, nu_std, q_s}");
      }
      size_t i = 0;
      for (const auto& p : j.at("points")) {
        ++i;
        check_keys(p, {"g", "sigma_prog", "nu_mean", "nu_std", "q_s"},
                   "device table point " + std::to_string(i));
        for (const char* k : {"g", "sigma_prog", "nu_mean", "nu_std", "q_s"}) {
          if (!p.contains(k) || !p.at(k).is_number()) {
            throw std::invalid_argument("device table point " + std::to_string(i) + ": '" + k +
                                        "' must be a number");
          }
        }
        m.table.push_back({p.at("g").get<double>(), p.at("sigma_prog").get<double>(),
                           p.at("nu_mean").get<double>(), p.at("nu_std").get<double>(),
                           p.at("q_s").get<double>()});
      }
      m.g_max = m.table.empty() ? 0.0 : m.table.back().g;
    }
    m.g_max = j.value("g_max", m.g_max);
    m.validate();
    return m;
  });
}

torch::Tensor DeviceModel::sigma_prog(const torch::Tensor& g) const {
  switch (kind) {
    case Kind::kIdeal:
      return torch::zeros_like(g, g.options().dtype(torch::kDouble));
    case Kind::kPCM:
      return (polynomial(kPcmProg, 3, g.to(torch::kDouble) / g_max).clamp_min(0.0) *
              (g_max / kPcmReference));
    case Kind::kReRAM:
      return reram_sigma(g, kReramTimes[0]);
    case Kind::kTable:
      return interpolate(table, &Point::sigma_prog, g);
  }
  return {};
}

torch::Tensor DeviceModel::nu_mean(const torch::Tensor& g) const {
  if (kind == Kind::kTable) return interpolate(table, &Point::nu_mean, g);
  if (kind != Kind::kPCM) return torch::zeros_like(g, g.options().dtype(torch::kDouble));
  const torch::Tensor lg = torch::log((g.to(torch::kDouble) / g_max).abs().clamp_min(kZeroClip));
  return (-0.0155 * lg + 0.0244).clamp(0.049, 0.1);
}

torch::Tensor DeviceModel::nu_std(const torch::Tensor& g) const {
  if (kind == Kind::kTable) return interpolate(table, &Point::nu_std, g);
  if (kind != Kind::kPCM) return torch::zeros_like(g, g.options().dtype(torch::kDouble));
  const torch::Tensor lg = torch::log((g.to(torch::kDouble) / g_max).abs().clamp_min(kZeroClip));
  return (-0.0125 * lg - 0.0059).clamp(0.008, 0.045);
}

torch::Tensor DeviceModel::q_s(const torch::Tensor& g) const {
  if (kind == Kind::kTable) return interpolate(table, &Point::q_s, g.abs());
  if (kind != Kind::kPCM) return torch::zeros_like(g, g.options().dtype(torch::kDouble));
  return (0.0088 / torch::pow((g.to(torch::kDouble) / g_max).abs(), 0.65).clamp_min(1e-3))
      .clamp_max(0.2);
}

torch::Tensor DeviceModel::reram_sigma(const torch::Tensor& g, double t) const {
  const torch::Tensor gt = g.to(torch::kDouble) / g_max;
  auto fit = [&](int k) { return polynomial(kReramCoeff[k], 5, gt) * (g_max / kReramReference); };
  if (!(t > kReramTimes[0])) return fit(0);
  for (int k = 0; k < 2; ++k) {
    if (t <= kReramTimes[k + 1]) {
      const double a = (std::log(t) - std::log(kReramTimes[k])) /
                       (std::log(kReramTimes[k + 1]) - std::log(kReramTimes[k]));
      return fit(k) * (1.0 - a) + fit(k + 1) * a;
    }
  }
  return fit(2);
}

// ---------------------------------------------------------------------------------------------
// TileIO

TileIO TileIO::parse(const std::string& text_in) {
  TileIO io;
  const auto parts = split(trim(text_in), ':');
  for (size_t i = 0; i < parts.size(); ++i) {
    const std::string p = lower(trim(parts[i]));
    if (p.empty()) throw std::invalid_argument("tile '" + text_in + "': an empty part");
    const auto eq = p.find('=');
    if (eq == std::string::npos) {
      if (i > 0) {
        throw std::invalid_argument("tile '" + text_in + "': '" + p +
                                    "' needs a value (KEY=VALUE), or is a preset out of place");
      }
      if (p == "ideal") continue;
      if (p == "aihwkit") {
        io.dac_bits = 7;
        io.adc_bits = 9;
        io.inp_bound = 1.0;
        io.out_bound = 12.0;
        io.out_noise = 0.06;
        io.noise_management = true;
        io.bound_management = true;
        continue;
      }
      throw std::invalid_argument("tile '" + text_in + "': unknown preset '" + p +
                                  "' (known: ideal, aihwkit)");
    }
    const std::string key = trim(p.substr(0, eq)), value = p.substr(eq + 1);
    const std::string what = "tile '" + text_in + "': " + key;
    if (key == "dac") {
      io.dac_bits = parse_int(value, what);
    } else if (key == "adc") {
      io.adc_bits = parse_int(value, what);
    } else if (key == "inp_bound") {
      io.inp_bound = parse_number(value, what);
    } else if (key == "out_bound") {
      io.out_bound = parse_number(value, what);
    } else if (key == "out_noise") {
      io.out_noise = parse_number(value, what);
    } else if (key == "nm") {
      io.noise_management = parse_switch(value, what);
    } else if (key == "bm") {
      io.bound_management = parse_switch(value, what);
    } else if (key == "rows") {
      io.rows = parse_int(value, what);
    } else if (key == "cols") {
      io.cols = parse_int(value, what);
    } else {
      throw std::invalid_argument("tile '" + text_in + "': unknown key '" + text::printable(key) +
                                  "' (known: dac, adc, inp_bound, out_bound, out_noise, nm, bm, "
                                  "rows, cols)");
    }
  }
  try {
    io.validate();
  } catch (const std::exception& e) {
    throw std::invalid_argument("tile '" + text_in + "': " + e.what());
  }
  return io;
}

void TileIO::validate() const {
  if (dac_bits < 0 || dac_bits > 24) {
    throw std::invalid_argument("dac bits must be 0 (ideal) or 2-24, got " + std::to_string(dac_bits));
  }
  if (adc_bits < 0 || adc_bits > 24) {
    throw std::invalid_argument("adc bits must be 0 (ideal) or 2-24, got " + std::to_string(adc_bits));
  }
  if (dac_bits == 1 || adc_bits == 1) {
    throw std::invalid_argument("1-bit converters are not modelled (2^b - 2 = 0 steps); use 2 or more");
  }
  check_positive(inp_bound, "inp_bound");
  check_nonneg(out_bound, "out_bound");
  check_nonneg(out_noise, "out_noise");
  if (adc_bits > 0 && out_bound == 0.0) {
    throw std::invalid_argument("an ADC needs out_bound > 0 (its full scale)");
  }
  if (bound_management && out_bound == 0.0) {
    throw std::invalid_argument("bound management needs out_bound > 0");
  }
  if (rows < 0 || cols < 0) throw std::invalid_argument("tile rows and cols must be >= 0");
}

Json TileIO::to_json() const {
  return Json{{"dac_bits", dac_bits},           {"inp_bound", inp_bound},
              {"noise_management", noise_management}, {"out_noise", out_noise},
              {"adc_bits", adc_bits},           {"out_bound", out_bound},
              {"bound_management", bound_management}, {"rows", rows}, {"cols", cols}};
}

TileIO TileIO::from_json(const Json& j) {
  if (j.is_string()) return parse(j.get<std::string>());
  check_keys(j, {"dac_bits", "inp_bound", "noise_management", "out_noise", "adc_bits", "out_bound",
                 "bound_management", "rows", "cols", "sites"},
             "tile");
  return json::part("tile", [&] {
    TileIO io;
    io.dac_bits = j.value("dac_bits", io.dac_bits);
    io.inp_bound = j.value("inp_bound", io.inp_bound);
    io.noise_management = j.value("noise_management", io.noise_management);
    io.out_noise = j.value("out_noise", io.out_noise);
    io.adc_bits = j.value("adc_bits", io.adc_bits);
    io.out_bound = j.value("out_bound", io.out_bound);
    io.bound_management = j.value("bound_management", io.bound_management);
    io.rows = j.value("rows", io.rows);
    io.cols = j.value("cols", io.cols);
    io.validate();
    return io;
  });
}

std::string TileIO::str() const {
  if (ideal()) return "ideal";
  std::string s;
  auto add = [&](const std::string& part) { s += (s.empty() ? "" : ":") + part; };
  if (dac_bits > 0) add("dac=" + std::to_string(dac_bits) + ":inp_bound=" + fmt_double(inp_bound));
  if (!noise_management) add("nm=off");
  if (out_noise > 0.0) add("out_noise=" + fmt_double(out_noise));
  if (adc_bits > 0) add("adc=" + std::to_string(adc_bits));
  if (out_bound > 0.0) add("out_bound=" + fmt_double(out_bound));
  if (bound_management) add("bm=on");
  if (rows > 0) add("rows=" + std::to_string(rows));
  if (cols > 0) add("cols=" + std::to_string(cols));
  return s.empty() ? "ideal" : s;
}

// ---------------------------------------------------------------------------------------------
// DeviceConfig

bool DeviceConfig::enabled() const {
  if (!all_layers && layers.empty()) return false;
  if (!model.ideal()) return true;
  if (!tile.ideal()) return true;
  return std::any_of(tile_by_site.begin(), tile_by_site.end(),
                     [&](const auto& kv) { return !kv.second.ideal() && on(kv.first); });
}

bool DeviceConfig::on(int site) const {
  return all_layers || std::find(layers.begin(), layers.end(), site) != layers.end();
}

const TileIO* DeviceConfig::tile_of(int site) const {
  if (!on(site)) return nullptr;
  const auto it = tile_by_site.find(site);
  const TileIO& io = it != tile_by_site.end() ? it->second : tile;
  return io.ideal() ? nullptr : &io;
}

void DeviceConfig::validate() const {
  model.validate();
  if (mapping != "layer" && mapping != "channel") {
    throw std::invalid_argument("device mapping must be layer or channel, got '" + mapping + "'");
  }
  check_nonneg(time, "device time (s)");
  check_nonneg(prog_scale, "device prog_scale");
  check_nonneg(drift_scale, "device drift_scale");
  check_nonneg(read_scale, "device read_scale");
  check_nonneg(scale, "device noise scale");
  tile.validate();
  for (const auto& kv : tile_by_site) kv.second.validate();
}

Json DeviceConfig::to_json(const std::vector<std::string>& site_names) const {
  auto name_of = [&](int s) {
    return s >= 0 && s < static_cast<int>(site_names.size()) ? site_names[s] : std::to_string(s);
  };
  Json layer_list = Json::array();
  for (int s : layers) layer_list.push_back(name_of(s));
  Json per_site = Json::array();
  for (const auto& [s, io] : tile_by_site) {
    Json e = io.to_json();
    e["sites"] = name_of(s);
    per_site.push_back(e);
  }
  Json j{{"model", model.to_json()},
         {"mapping", mapping},
         {"time", time},
         {"compensation", compensation},
         {"prog_scale", prog_scale},
         {"drift_scale", drift_scale},
         {"read_scale", read_scale},
         {"read_noise", read_per_draw ? "draw" : "time"},
         {"scale", scale},
         {"tile", tile.to_json()},
         {"layers", all_layers ? Json("all") : layer_list}};
  if (!per_site.empty()) j["tile_layers"] = per_site;
  return j;
}

DeviceConfig DeviceConfig::from_json(const Json& j, const std::vector<std::string>& site_names) {
  check_keys(j, {"model", "mapping", "time", "compensation", "prog_scale", "drift_scale",
                 "read_scale", "read_noise", "scale", "tile", "layers", "tile_layers", "g_max"},
             "device");
  return json::part("device", [&] {
    DeviceConfig c;
    if (j.contains("model")) c.model = DeviceModel::from_json(j.at("model"));
    if (j.contains("g_max")) c.model.g_max = j.at("g_max").get<double>();
    c.mapping = j.value("mapping", c.mapping);
    if (j.contains("time")) {
      c.time = j.at("time").is_string() ? parse_duration(j.at("time").get<std::string>())
                                        : j.at("time").get<double>();
    }
    c.compensation = j.value("compensation", c.compensation);
    c.prog_scale = j.value("prog_scale", c.prog_scale);
    c.drift_scale = j.value("drift_scale", c.drift_scale);
    c.read_scale = j.value("read_scale", c.read_scale);
    c.scale = j.value("scale", c.scale);
    const std::string read = j.value("read_noise", std::string("time"));
    if (read != "time" && read != "draw") {
      throw std::invalid_argument("device: read_noise must be time or draw, got '" + read + "'");
    }
    c.read_per_draw = read == "draw";
    if (j.contains("tile")) c.tile = TileIO::from_json(j.at("tile"));
    if (j.contains("layers")) {
      const Json& l = j.at("layers");
      std::string selector;
      if (l.is_string()) {
        selector = l.get<std::string>();
      } else if (l.is_array()) {
        for (const auto& e : l) {
          selector += (selector.empty() ? "" : ",") +
                      (e.is_string() ? e.get<std::string>()
                                     : std::to_string(json::integer(e, "device: layers[]")));
        }
      } else {
        throw std::invalid_argument("device: layers must be a selector string or an array");
      }
      c.all_layers = trim(selector) == "all";
      if (!c.all_layers) c.layers = select_sites(selector, site_names);
    }
    if (j.contains("tile_layers")) {
      if (!j.at("tile_layers").is_array()) {
        throw std::invalid_argument("device: tile_layers must be an array of {sites, ...tile}");
      }
      for (const auto& e : j.at("tile_layers")) {
        if (!e.is_object() || !e.contains("sites") || !e.at("sites").is_string()) {
          throw std::invalid_argument("device: each tile_layers entry needs \"sites\": SELECTOR");
        }
        Json io = e;
        io.erase("sites");
        const TileIO t = TileIO::from_json(io);
        for (int s : select_sites(e.at("sites").get<std::string>(), site_names)) {
          c.tile_by_site[s] = t;
        }
      }
    }
    c.validate();
    return c;
  });
}

// ---------------------------------------------------------------------------------------------
// Programming

ProgrammedWeight program_weight(const torch::Tensor& w, const DeviceConfig& cfg, uint64_t seed,
                                uint64_t chip, int site, uint64_t draw) {
  torch::NoGradGuard no_grad;
  ProgrammedWeight out;
  const DeviceModel& m = cfg.model;
  const torch::Tensor W = w.detach().to(torch::kDouble);
  const double g_max = m.g_max;
  // The mapping's full scale: max|W| of the layer or of each output channel (0 → 1).
  torch::Tensor s;
  if (cfg.mapping == "channel" && W.dim() >= 1) {
    std::vector<int64_t> shape(static_cast<size_t>(W.dim()), 1);
    shape[0] = W.size(0);
    s = W.reshape({W.size(0), -1}).abs().amax(1).reshape(shape);
  } else {
    s = W.abs().max();
  }
  s = torch::where(s > 0, s, torch::ones_like(s));
  const torch::Tensor target_plus = W.clamp_min(0.0) / s * g_max;
  const torch::Tensor target_minus = (-W).clamp_min(0.0) / s * g_max;
  const torch::Tensor target = torch::stack({target_plus, target_minus});
  if (m.ideal()) {
    out.weight = w.detach().clone();
    out.g_plus = target_plus;
    out.g_minus = target_minus;
    return out;
  }
  const uint64_t key = mix_seed(seed, chip, kDeviceTag);
  const auto stream = [&](uint64_t part) {
    return RngStream{key, mix_seed(static_cast<uint64_t>(site), part)};
  };
  auto normals = [&](RngStream st) {
    torch::Tensor z = torch::empty_like(target);
    normal_fill_(z, st);
    return z;
  };
  const double k = cfg.scale;
  torch::Tensor programmed, final_g;
  if (m.kind == DeviceModel::Kind::kReRAM) {
    // One deviation per device; its size follows the fits at the time (no drift law).
    const torch::Tensor z = normals(stream(1));
    programmed = (target + m.reram_sigma(target, 1.0) * (cfg.prog_scale * k) * z).clamp_min(0.0);
    final_g = (target + m.reram_sigma(target, std::max(cfg.time, 1.0)) * (cfg.prog_scale * k) * z)
                  .clamp_min(0.0);
  } else {
    programmed =
        (target + m.sigma_prog(target) * (cfg.prog_scale * k) * normals(stream(1))).clamp_min(0.0);
    const torch::Tensor nu =
        (m.nu_mean(target) + m.nu_std(target) * k * normals(stream(2))).abs() * cfg.drift_scale;
    const double t = cfg.time + m.t0;
    const torch::Tensor drifted = cfg.time > 0.0 ? programmed * torch::pow(t / m.t0, -nu) : programmed;
    const double accumulated = std::sqrt(std::log((t + m.t_read) / (2.0 * m.t_read)));
    uint64_t time_bits = 0;
    std::memcpy(&time_bits, &cfg.time, sizeof time_bits);
    const uint64_t read_key = mix_seed(kReadTag, time_bits);
    const torch::Tensor read =
        normals(stream(cfg.read_per_draw ? mix_seed(read_key, draw + 1) : read_key));
    final_g = (drifted + drifted.abs() * (m.q_s(programmed) * (accumulated * cfg.read_scale * k)) * read)
                  .clamp_min(0.0);
  }
  torch::Tensor effective = (final_g[0] - final_g[1]) * s / g_max;
  if (cfg.compensation) {
    // Global drift compensation: the layer's response to an all-ones input, summed in absolute
    // value over the outputs, right after programming against now.
    auto readout = [](const torch::Tensor& v) { return v.reshape({v.size(0), -1}).sum(1).abs().sum(); };
    const torch::Tensor reference = (programmed[0] - programmed[1]) * s / g_max;
    const double now = readout(effective).item<double>();
    const double then = readout(reference).item<double>();
    out.compensation = now > 0.0 ? then / now : 1.0;
    effective = effective * out.compensation;
  }
  out.g_plus = final_g[0];
  out.g_minus = final_g[1];
  out.weight = effective.to(w.scalar_type());
  return out;
}

// ---------------------------------------------------------------------------------------------
// Tile I/O

namespace {

// The tile I/O of an evaluation (no autograd, float32 on the CPU) in two passes over the input
// and two over the output instead of a dozen tensor ops (the element-wise work otherwise costs
// more than the convolutions it wraps). The same arithmetic as the tensor path below, up to the
// order of float operations.
torch::Tensor tile_forward_fused(const TileIO& io, const torch::Tensor& x_in,
                                 const std::function<torch::Tensor(const torch::Tensor&)>& mvm,
                                 double ws, const torch::Tensor& bias, RngStream noise,
                                 int vector_dims, bool subsets) {
  const torch::Tensor x = x_in.contiguous();
  int64_t len = 1;
  for (int d = 0; d < vector_dims; ++d) len *= x.size(x.dim() - 1 - d);
  const int64_t vectors = len > 0 ? x.numel() / len : 0;
  const int64_t per_sample = x.size(0) > 0 ? vectors / x.size(0) : 1;
  std::vector<float> scale(static_cast<size_t>(vectors), 1.0f);
  // The quantised input lives in a buffer each thread keeps: a fresh tensor per layer and batch
  // would be fresh pages from the kernel every time (page faults cost more than the loops).
  thread_local torch::Tensor buffer;
  if (!buffer.defined() || buffer.numel() < x.numel()) buffer = torch::empty({x.numel()}, torch::kFloat);
  torch::Tensor xq = buffer.narrow(0, 0, x.numel()).view(x.sizes());
  const float* in = x.data_ptr<float>();
  float* q = xq.data_ptr<float>();
  const bool dac = io.dac_bits > 0;
  const float bound = static_cast<float>(io.inp_bound);
  const float step = dac ? static_cast<float>(quantise_step(io.inp_bound, io.dac_bits)) : 1.0f;
  at::parallel_for(0, vectors, 1, [&](int64_t begin, int64_t end) {
    for (int64_t v = begin; v < end; ++v) {
      const float* xv = in + v * len;
      float* qv = q + v * len;
      float m = 1.0f;
      if (io.noise_management) {
        m = 0.0f;
        for (int64_t i = 0; i < len; ++i) m = std::max(m, std::fabs(xv[i]));
        m = std::max(m, 1e-30f);
      }
      scale[static_cast<size_t>(v)] = m;
      for (int64_t i = 0; i < len; ++i) {
        float t = xv[i] / m;
        if (dac) t = std::nearbyint(std::min(std::max(t, -bound), bound) / step) * step;
        qv[i] = t;
      }
    }
  });
  torch::Tensor y = mvm(xq).contiguous();
  if (y.storage().is_alias_of(buffer.storage())) y = y.clone();  // not the reused buffer
  const int64_t out_len = vectors > 0 ? y.numel() / vectors : 0;
  TORCH_CHECK(vectors == 0 || out_len * vectors == y.numel(),
              "tile_forward: the product does not keep the input's vectors");
  const float fws = static_cast<float>(ws);
  std::vector<float> factor(static_cast<size_t>(vectors), 1.0f);
  if (io.bound_management && io.out_bound > 0.0) {
    const float* yp = y.data_ptr<float>();
    const float ob = static_cast<float>(io.out_bound);
    std::vector<int64_t> rerun;
    for (int64_t v = 0; v < vectors; ++v) {
      float peak = 0.0f;
      for (int64_t i = 0; i < out_len; ++i) peak = std::max(peak, std::fabs(yp[v * out_len + i] / fws));
      if (peak > ob) {
        factor[static_cast<size_t>(v)] = std::exp2(std::ceil(std::log2(peak / ob)));
        const int64_t sample = v / per_sample;
        if (rerun.empty() || rerun.back() != sample) rerun.push_back(sample);
      }
    }
    if (!rerun.empty() && !subsets) {  // the whole batch (unclipped vectors keep factor 1)
      rerun.resize(static_cast<size_t>(x.size(0)));
      for (int64_t i = 0; i < x.size(0); ++i) rerun[static_cast<size_t>(i)] = i;
    }
    if (!rerun.empty()) {
      // The clipping samples again with their input divided by the factor, then quantised.
      const torch::Tensor idx = torch::tensor(rerun, torch::kLong);
      // Per-vector scale and factor of the chosen samples, broadcast over each vector.
      std::vector<float> div;
      for (int64_t sample : rerun) {
        for (int64_t k = 0; k < per_sample; ++k) {
          const size_t v = static_cast<size_t>(sample * per_sample + k);
          div.push_back(scale[v] * factor[v]);
        }
      }
      std::vector<int64_t> vshape(x.sizes().begin(), x.sizes().end() - vector_dims);
      vshape[0] = static_cast<int64_t>(rerun.size());
      for (int d = 0; d < vector_dims; ++d) vshape.push_back(1);
      const torch::Tensor d = torch::tensor(div, torch::kFloat).reshape(vshape);
      torch::Tensor xr = x.index_select(0, idx) / d;
      if (dac) xr = torch::round(xr.clamp(-bound, bound) / step) * step;
      if (subsets) {
        y.index_copy_(0, idx, mvm(xr).contiguous());
      } else {
        y = mvm(xr).contiguous();
      }
    }
  }
  if (io.out_noise > 0.0) add_normal_(y, noise, io.out_noise * ws);
  float* yp = y.data_ptr<float>();
  const bool clip = io.out_bound > 0.0;
  const float ob = static_cast<float>(io.out_bound);
  const bool adc = io.adc_bits > 0;
  const float astep = adc ? static_cast<float>(quantise_step(io.out_bound, io.adc_bits)) : 1.0f;
  const torch::Tensor b = bias.defined() ? bias.detach().to(torch::kFloat).contiguous() : bias;
  const float* bp = b.defined() ? b.data_ptr<float>() : nullptr;
  const int64_t nb = b.defined() ? b.numel() : 1;
  // A channel bias sits on dim 1 of a convolution's [N, C, H, W] (whole-sample vectors, the
  // rank kept); otherwise (a row's outputs, a flattening layer) on the last dimension.
  const bool channel_bias = vector_dims > 1 && y.dim() == x.dim();
  const int64_t stride = channel_bias ? std::max<int64_t>(1, out_len / nb) : 1;
  at::parallel_for(0, vectors, 1, [&](int64_t begin, int64_t end) {
    for (int64_t v = begin; v < end; ++v) {
      float* yv = yp + v * out_len;
      const float back = fws * scale[static_cast<size_t>(v)] * factor[static_cast<size_t>(v)];
      for (int64_t i = 0; i < out_len; ++i) {
        float t = yv[i] / fws;
        if (clip) t = std::min(std::max(t, -ob), ob);
        if (adc) t = std::nearbyint(t / astep) * astep;
        t *= back;
        if (bp != nullptr) t += bp[(i / stride) % nb];
        yv[i] = t;
      }
    }
  });
  return y;
}

}  // namespace

torch::Tensor tile_forward(const TileIO& io, const torch::Tensor& x,
                           const std::function<torch::Tensor(const torch::Tensor&)>& mvm,
                           double w_scale, const torch::Tensor& bias, RngStream noise,
                           int vector_dims, bool subsets) {
  TORCH_CHECK(vector_dims >= 1 && vector_dims < x.dim(), "tile_forward: ", vector_dims,
              " vector dimensions for an input of ", x.dim());
  if (!torch::GradMode::is_enabled() && x.scalar_type() == torch::kFloat && x.device().is_cpu() &&
      x.numel() > 0) {
    return tile_forward_fused(io, x, mvm, w_scale > 0.0 ? w_scale : 1.0, bias, noise, vector_dims,
                              subsets);
  }
  std::vector<int64_t> dims;
  for (int d = 0; d < vector_dims; ++d) dims.push_back(x.dim() - 1 - d);
  // Noise management: each input vector divided by its max |x|.
  const torch::Tensor sx = io.noise_management
                               ? x.detach().abs().amax(dims, true).clamp_min(1e-30)
                               : torch::ones({1}, x.options().requires_grad(false));
  const torch::Tensor xn = x / sx;
  auto dac = [&](const torch::Tensor& v) {
    if (io.dac_bits == 0) return v;
    return quantise(v.clamp(-io.inp_bound, io.inp_bound), quantise_step(io.inp_bound, io.dac_bits));
  };
  const double ws = w_scale > 0.0 ? w_scale : 1.0;
  torch::Tensor y = mvm(dac(xn)) / ws;
  // A product of another rank (a flattening linear layer) is scaled per sample.
  const bool same_rank = y.dim() == x.dim();
  TORCH_CHECK(same_rank || vector_dims == x.dim() - 1,
              "tile_forward: the product changed the rank; scale per sample (vector_dims = ",
              x.dim() - 1, ")");
  auto as_rank = [](const torch::Tensor& t, int64_t rank) {
    if (t.dim() == rank || t.numel() == 1) return t;
    std::vector<int64_t> shape(static_cast<size_t>(rank), 1);
    shape[0] = t.size(0);
    return t.reshape(shape);
  };
  std::vector<int64_t> out_dims = dims;
  if (!same_rank) {
    out_dims.clear();
    for (int64_t d = 1; d < y.dim(); ++d) out_dims.push_back(d);
  }
  torch::Tensor factor;  // bound management: per-vector input reduction
  if (io.bound_management && io.out_bound > 0.0) {
    const torch::Tensor peak = y.detach().abs().amax(out_dims, true);
    if (peak.max().item<double>() > io.out_bound) {
      factor = torch::where(peak > io.out_bound,
                            torch::exp2(torch::ceil(torch::log2(peak / io.out_bound))),
                            torch::ones_like(peak));
      // Only the samples with a clipping vector run again (their other vectors keep factor 1,
      // so they repeat their first result). Rows (linear, matmul) share the input's leading
      // shape; a convolution's factor is per sample, which broadcasts over its input as well.
      if (subsets) {
        const torch::Tensor rerun =
            std::get<0>(factor.reshape({factor.size(0), -1}).max(1)).gt(1.0).nonzero().flatten();
        const torch::Tensor f = as_rank(factor, x.dim()).index_select(0, rerun);
        const torch::Tensor again = mvm(dac(xn.index_select(0, rerun) / f)) / ws;
        y = y.index_copy(0, rerun, again);
      } else {
        y = mvm(dac(xn / as_rank(factor, x.dim()))) / ws;
      }
    }
  }
  const bool grad = torch::GradMode::is_enabled() && y.requires_grad();
  if (io.out_noise > 0.0) {
    if (grad) {
      torch::Tensor e = torch::zeros_like(y, y.options().requires_grad(false));
      add_normal_(e, noise, io.out_noise);
      y = y + e;
    } else {
      y = y.contiguous();
      add_normal_(y, noise, io.out_noise);
    }
  }
  if (io.out_bound > 0.0) y = y.clamp(-io.out_bound, io.out_bound);
  if (io.adc_bits > 0) y = quantise(y, quantise_step(io.out_bound, io.adc_bits));
  torch::Tensor back = as_rank(sx, y.dim()) * ws;
  if (factor.defined()) back = back * factor;
  y = y * back.to(y.scalar_type());
  if (bias.defined()) {
    std::vector<int64_t> bshape{bias.numel()};
    if (vector_dims > 1 && same_rank) {
      for (int64_t d = 2; d < y.dim(); ++d) bshape.push_back(1);  // [C, 1, 1] for convolutions
    }
    y = y + bias.reshape(bshape);
  }
  return y;
}

}  // namespace quell
