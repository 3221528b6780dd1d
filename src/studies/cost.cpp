// Analytical cost model of a mixed-signal accelerator (docs/cost.md).
#include "quell/cost.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <iomanip>
#include <sstream>
#include <stdexcept>

#include "quell/models.h"

namespace quell {
namespace {

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

int64_t product(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

// The ISAAC-like default: analog constants of ISAAC (Shafiee et al., ISCA 2016, 32 nm), digital
// constants of Horowitz (ISSCC 2014, 45 nm). Sources next to each value (docs/cost.md).
HardwareConfig isaac_preset() {
  HardwareConfig h;
  h.name = "isaac";
  h.description =
      "ISAAC-like ReRAM crossbars (128x128, 2-bit cells, 1-bit DACs, 8-bit ADCs, 32 nm) with a "
      "8x8 int8 digital unit (45 nm constants)";
  auto& s = h.sources;
  h.node_nm = 32.0;
  h.analog_ref_nm = 32.0;
  h.array_rows = h.array_cols = 128;
  s["array_rows"] = "ISAAC, Shafiee et al. ISCA 2016, Table I: 128x128 crossbars";
  h.input_bits = 8;
  h.dac_bits = 1;
  s["dac_bits"] = "ISAAC Table I: 1-bit DACs, inputs streamed bit-serially";
  h.weight_bits = 8;
  h.cell_bits = 2;
  s["cell_bits"] = "ISAAC Table I: 2 bits per cell";
  h.adc_bits = 8;
  h.adcs_per_array = 1;
  s["adcs_per_array"] = "ISAAC Table I: 8 ADCs per IMA of 8 crossbars";
  // ISAAC: 8 crossbars 2.4 mW at one 100 ns read each: 0.3 mW x 100 ns / 16384 cells.
  h.cell_energy_pj = 0.3e-3 * 100e-9 / 16384.0 * 1e12;
  s["cell_energy_pj"] = "ISAAC Table I: 8 crossbars 2.4 mW, 100 ns read -> 30 pJ / 16384 cells";
  // ISAAC: 8x128 1-bit DACs 4 mW at a 100 ns cycle.
  h.dac_energy_pj = 4e-3 * 100e-9 / 1024.0 * 1e12;
  s["dac_energy_pj"] = "ISAAC Table I: 8x128 1-bit DACs 4 mW, 100 ns cycle -> 0.39 pJ";
  // ISAAC budgets 8 ADCs at 16 mW, 1.2 GS/s each: 1.67 pJ per 8-bit conversion.
  h.adc_fom_fj = 16e-3 / 8.0 / 1.2e9 / 256.0 * 1e15;
  s["adc_fom_fj"] =
      "ISAAC Table I: 8 ADCs (8 bit, 1.2 GS/s) 16 mW -> 1.67 pJ/conversion = 6.5 fJ per 2^8 "
      "steps (Walden FoM over nominal bits; the cited Kull et al. ISSCC 2013 ADC draws 3.1 mW, "
      "2.58 pJ)";
  h.adc_rate_gsps = 1.2;
  s["adc_rate_gsps"] = "ISAAC Table I / Kull et al. ISSCC 2013: 1.2 GS/s";
  h.array_read_ns = 100.0;
  s["array_read_ns"] = "ISAAC: 100 ns crossbar read";
  h.array_area_um2 = 0.0002e6 / 8.0;
  s["array_area_um2"] = "ISAAC Table I: 8 crossbars 0.0002 mm^2";
  h.adc_area_um2 = 0.0096e6 / 8.0;
  s["adc_area_um2"] = "ISAAC Table I: 8 ADCs 0.0096 mm^2";
  h.dac_area_um2 = 0.00017e6 / 1024.0;
  s["dac_area_um2"] = "ISAAC Table I: 8x128 DACs 0.00017 mm^2";

  h.digital_ref_nm = 45.0;
  h.digital_bits = 8;
  // Horowitz ISSCC 2014, 45 nm: int8 mult 0.2 pJ + int32 add 0.1 pJ (accumulator);
  // fp16 mult 1.1 + add 0.4; fp32 mult 3.7 + add 0.9.
  h.mac_energy_pj = {{8, 0.3}, {16, 1.5}, {32, 4.6}};
  s["mac_energy_pj"] =
      "Horowitz ISSCC 2014 (45 nm): 8b mult 0.2 + 32b add 0.1; fp16 1.1 + 0.4; fp32 3.7 + 0.9";
  h.mac_area_um2 = {{8, 282.0 + 137.0}, {16, 1640.0 + 1360.0}, {32, 7700.0 + 4184.0}};
  s["mac_area_um2"] =
      "Horowitz ISSCC 2014 keynote, area column (45 nm): 8b mult 282 + 32b add 137; fp16 1640 + "
      "1360; fp32 7700 + 4184 um^2 (one transcription, not cross-checked)";
  h.op_energy_pj = 0.1;
  s["op_energy_pj"] = "Horowitz ISSCC 2014 (45 nm): 32b int add 0.1 pJ";
  h.sram_energy_pj_per_byte = 10.0 / 8.0;
  s["sram_energy_pj_per_byte"] =
      "Horowitz ISSCC 2014 (45 nm): 64-bit read 10 pJ (8 KB), 20 pJ (32 KB), 100 pJ (1 MB); "
      "sqrt(size) fits all three within 15%";
  h.dram_energy_pj_per_byte = 1300.0 / 8.0;
  s["dram_energy_pj_per_byte"] = "Horowitz ISSCC 2014: DRAM 1.3-2.6 nJ per 64-bit access (low end)";
  h.sram_bit_area_um2 = 0.346 / 0.7;
  s["sram_bit_area_um2"] =
      "Intel 45 nm 6T cell 0.346 um^2 (Intel 153 Mb test chip, 2006) over an assumed 70% array "
      "efficiency";
  h.buffer_kb = 64;
  s["buffer_kb"] = "ISAAC: 64 KB eDRAM buffer per tile";
  h.pe_rows = h.pe_cols = 8;
  h.unit_sram_kb = 32;
  s["pe_rows"] = "quell's choice: an 8x8 PE array with 32 KB SRAM serves blocks of a few % of "
                 "a small CNN's parameters";
  h.clock_mhz = 1000.0;
  h.activation_bits = 8;
  s["scaling"] =
      "digital energy and area: Stillmaker & Baas, Integration 58 (2017), factors from 45 nm at "
      "0.8 V (as tabulated in Accelergy's hwcomponents), log-log interpolated; delay ~ node; "
      "analog cells and converters not scaled (ADC energy at a resolution is noise-limited)";
  return h;
}

HardwareConfig preset_from(const HardwareConfig& base, const std::string& name,
                           const std::string& description, const Json& overrides) {
  HardwareConfig h = HardwareConfig::from_json(overrides, base);
  h.name = name;
  h.description = description;
  return h;
}

std::map<std::string, HardwareConfig> presets() {
  std::map<std::string, HardwareConfig> p;
  const HardwareConfig isaac = isaac_preset();
  p["isaac"] = isaac;
  p["isaac-adc6"] = preset_from(
      isaac, "isaac-adc6", "isaac with 6-bit ADCs (cheaper conversions, coarser outputs)",
      Json{{"adc_bits", 6}});
  p["isaac-16nm"] = preset_from(isaac, "isaac-16nm",
                                "isaac with its digital logic scaled to 16 nm (analog unscaled)",
                                Json{{"node_nm", 16.0}});
  p["bit-parallel"] = preset_from(
      isaac, "bit-parallel",
      "isaac with 8-bit DACs (one input cycle per vector; DAC energy per conversion x 2^7)",
      Json{{"dac_bits", 8}, {"dac_energy_pj", isaac.dac_energy_pj * 128.0}});
  p["fp16-unit"] = preset_from(isaac, "fp16-unit",
                               "isaac with an fp16 denoiser unit",
                               Json{{"digital_bits", 16}});
  return p;
}

void require(bool ok, const std::string& what) {
  if (!ok) throw std::invalid_argument("hardware config: " + what);
}

template <typename T>
void read_field(const Json& j, const char* key, T& field) {
  if (!j.contains(key)) return;
  try {
    field = j.at(key).get<T>();
  } catch (const Json::exception&) {
    throw std::invalid_argument(std::string("hardware config: field '") + key +
                                "' has the wrong type");
  }
}

std::map<int, double> read_table(const Json& j, const char* key, std::map<int, double> table) {
  if (!j.contains(key)) return table;
  const Json& t = j.at(key);
  if (!t.is_object()) {
    throw std::invalid_argument(std::string("hardware config: field '") + key +
                                "' must be an object {\"BITS\": value}");
  }
  for (const auto& [bits, v] : t.items()) {
    try {
      table[std::stoi(bits)] = v.get<double>();
    } catch (const std::exception&) {
      throw std::invalid_argument(std::string("hardware config: bad entry '") + bits + "' in '" +
                                  key + "'");
    }
  }
  return table;
}

const char* kFields[] = {"name", "description", "node_nm", "analog_ref_nm", "array_rows",
                         "array_cols", "input_bits", "dac_bits", "weight_bits", "cell_bits",
                         "adc_bits", "adcs_per_array", "cell_energy_pj", "dac_energy_pj",
                         "adc_fom_fj", "adc_rate_gsps", "array_read_ns", "array_area_um2",
                         "adc_area_um2", "dac_area_um2", "digital_ref_nm", "digital_bits",
                         "mac_energy_pj", "mac_area_um2", "op_energy_pj",
                         "sram_energy_pj_per_byte", "dram_energy_pj_per_byte",
                         "sram_bit_area_um2", "buffer_kb", "pe_rows", "pe_cols", "unit_sram_kb",
                         "clock_mhz", "activation_bits", "scaling", "digital_energy_exponent",
                         "digital_area_exponent", "digital_delay_exponent",
                         "analog_energy_exponent", "analog_area_exponent", "sources", "preset"};

}  // namespace

void HardwareConfig::validate() const {
  require(std::isfinite(node_nm) && node_nm > 0, "node_nm must be > 0");
  require(analog_ref_nm > 0 && digital_ref_nm > 0, "reference nodes must be > 0");
  require(array_rows > 0 && array_cols > 0, "array_rows and array_cols must be > 0");
  require(input_bits > 0 && input_bits <= 32, "input_bits must be in 1..32");
  require(dac_bits > 0 && dac_bits <= input_bits, "dac_bits must be in 1..input_bits");
  require(weight_bits > 0 && weight_bits <= 32, "weight_bits must be in 1..32");
  require(cell_bits > 0 && cell_bits <= weight_bits, "cell_bits must be in 1..weight_bits");
  require(adc_bits > 0 && adc_bits <= 24, "adc_bits must be in 1..24");
  require(adcs_per_array > 0 && adcs_per_array <= array_cols,
          "adcs_per_array must be in 1..array_cols");
  require(adc_rate_gsps > 0 && array_read_ns > 0 && clock_mhz > 0,
          "rates and times must be > 0");
  require(pe_rows > 0 && pe_cols > 0, "pe_rows and pe_cols must be > 0");
  require(unit_sram_kb >= 0 && buffer_kb > 0, "memory sizes must be >= 0 (buffer > 0)");
  require(activation_bits > 0 && activation_bits <= 32, "activation_bits must be in 1..32");
  require(mac_energy_pj.count(digital_bits) && mac_area_um2.count(digital_bits),
          "digital_bits " + std::to_string(digital_bits) +
              " has no entry in mac_energy_pj/mac_area_um2");
  const double values[] = {cell_energy_pj, dac_energy_pj, adc_fom_fj, array_area_um2,
                           adc_area_um2, dac_area_um2, op_energy_pj, sram_energy_pj_per_byte,
                           dram_energy_pj_per_byte, sram_bit_area_um2};
  for (double v : values) require(std::isfinite(v) && v >= 0, "energies and areas must be >= 0");
  for (const auto* t : {&mac_energy_pj, &mac_area_um2}) {
    for (const auto& [b, v] : *t) require(std::isfinite(v) && v >= 0, "MAC table entries >= 0");
  }
  require(scaling == "stillmaker" || scaling == "power",
          "scaling must be 'stillmaker' or 'power', not '" + scaling + "'");
  const double exps[] = {digital_energy_exponent, digital_area_exponent, digital_delay_exponent,
                         analog_energy_exponent, analog_area_exponent};
  for (double e : exps) require(std::isfinite(e), "scaling exponents must be finite");
}

Json HardwareConfig::to_json() const {
  auto table = [](const std::map<int, double>& t) {
    Json j = Json::object();
    for (const auto& [b, v] : t) j[std::to_string(b)] = v;
    return j;
  };
  return Json{{"name", name},
              {"description", description},
              {"node_nm", node_nm},
              {"analog_ref_nm", analog_ref_nm},
              {"array_rows", array_rows},
              {"array_cols", array_cols},
              {"input_bits", input_bits},
              {"dac_bits", dac_bits},
              {"weight_bits", weight_bits},
              {"cell_bits", cell_bits},
              {"adc_bits", adc_bits},
              {"adcs_per_array", adcs_per_array},
              {"cell_energy_pj", cell_energy_pj},
              {"dac_energy_pj", dac_energy_pj},
              {"adc_fom_fj", adc_fom_fj},
              {"adc_rate_gsps", adc_rate_gsps},
              {"array_read_ns", array_read_ns},
              {"array_area_um2", array_area_um2},
              {"adc_area_um2", adc_area_um2},
              {"dac_area_um2", dac_area_um2},
              {"digital_ref_nm", digital_ref_nm},
              {"digital_bits", digital_bits},
              {"mac_energy_pj", table(mac_energy_pj)},
              {"mac_area_um2", table(mac_area_um2)},
              {"op_energy_pj", op_energy_pj},
              {"sram_energy_pj_per_byte", sram_energy_pj_per_byte},
              {"dram_energy_pj_per_byte", dram_energy_pj_per_byte},
              {"sram_bit_area_um2", sram_bit_area_um2},
              {"buffer_kb", buffer_kb},
              {"pe_rows", pe_rows},
              {"pe_cols", pe_cols},
              {"unit_sram_kb", unit_sram_kb},
              {"clock_mhz", clock_mhz},
              {"activation_bits", activation_bits},
              {"scaling", scaling},
              {"digital_energy_exponent", digital_energy_exponent},
              {"digital_area_exponent", digital_area_exponent},
              {"digital_delay_exponent", digital_delay_exponent},
              {"analog_energy_exponent", analog_energy_exponent},
              {"analog_area_exponent", analog_area_exponent},
              {"derived",
               {{"adc_energy_pj", adc_energy_pj()},
                {"cycle_ns", cycle_ns()},
                {"weight_slices", weight_slices()},
                {"input_cycles", input_cycles()},
                {"digital_energy_scale", digital_energy_scale()},
                {"digital_area_scale", digital_area_scale()}}},
              {"sources", sources}};
}

HardwareConfig HardwareConfig::from_json(const Json& j, const HardwareConfig& base) {
  if (!j.is_object()) throw std::invalid_argument("hardware config: expected a JSON object");
  for (const auto& item : j.items()) {
    // A named variable, not a structured binding: C++17 lambdas cannot capture those (clang).
    const std::string& key = item.key();
    if (key == "derived") continue;  // written by to_json; recomputed
    if (std::find_if(std::begin(kFields), std::end(kFields),
                     [&](const char* f) { return key == f; }) == std::end(kFields)) {
      throw std::invalid_argument("hardware config: unknown field '" + key + "'");
    }
  }
  HardwareConfig h = base;
  read_field(j, "name", h.name);
  read_field(j, "description", h.description);
  read_field(j, "node_nm", h.node_nm);
  read_field(j, "analog_ref_nm", h.analog_ref_nm);
  read_field(j, "array_rows", h.array_rows);
  read_field(j, "array_cols", h.array_cols);
  read_field(j, "input_bits", h.input_bits);
  read_field(j, "dac_bits", h.dac_bits);
  read_field(j, "weight_bits", h.weight_bits);
  read_field(j, "cell_bits", h.cell_bits);
  read_field(j, "adc_bits", h.adc_bits);
  read_field(j, "adcs_per_array", h.adcs_per_array);
  read_field(j, "cell_energy_pj", h.cell_energy_pj);
  read_field(j, "dac_energy_pj", h.dac_energy_pj);
  read_field(j, "adc_fom_fj", h.adc_fom_fj);
  read_field(j, "adc_rate_gsps", h.adc_rate_gsps);
  read_field(j, "array_read_ns", h.array_read_ns);
  read_field(j, "array_area_um2", h.array_area_um2);
  read_field(j, "adc_area_um2", h.adc_area_um2);
  read_field(j, "dac_area_um2", h.dac_area_um2);
  read_field(j, "digital_ref_nm", h.digital_ref_nm);
  read_field(j, "digital_bits", h.digital_bits);
  h.mac_energy_pj = read_table(j, "mac_energy_pj", h.mac_energy_pj);
  h.mac_area_um2 = read_table(j, "mac_area_um2", h.mac_area_um2);
  read_field(j, "op_energy_pj", h.op_energy_pj);
  read_field(j, "sram_energy_pj_per_byte", h.sram_energy_pj_per_byte);
  read_field(j, "dram_energy_pj_per_byte", h.dram_energy_pj_per_byte);
  read_field(j, "sram_bit_area_um2", h.sram_bit_area_um2);
  read_field(j, "buffer_kb", h.buffer_kb);
  read_field(j, "pe_rows", h.pe_rows);
  read_field(j, "pe_cols", h.pe_cols);
  read_field(j, "unit_sram_kb", h.unit_sram_kb);
  read_field(j, "clock_mhz", h.clock_mhz);
  read_field(j, "activation_bits", h.activation_bits);
  read_field(j, "scaling", h.scaling);
  read_field(j, "digital_energy_exponent", h.digital_energy_exponent);
  read_field(j, "digital_area_exponent", h.digital_area_exponent);
  read_field(j, "digital_delay_exponent", h.digital_delay_exponent);
  read_field(j, "analog_energy_exponent", h.analog_energy_exponent);
  read_field(j, "analog_area_exponent", h.analog_area_exponent);
  if (j.contains("sources")) {
    for (const auto& [k, v] : j.at("sources").items()) {
      h.sources[k] = v.is_string() ? v.get<std::string>() : v.dump();
    }
  }
  return h;
}

void HardwareConfig::set(const std::string& assignment) {
  const auto eq = assignment.find('=');
  if (eq == std::string::npos || eq == 0) {
    throw std::invalid_argument("cost constant '" + assignment + "': expected FIELD=VALUE");
  }
  std::string key = assignment.substr(0, eq);
  const std::string text = assignment.substr(eq + 1);
  Json value;
  try {
    value = Json::parse(text);
  } catch (const Json::exception&) {
    value = text;  // a string (name, description)
  }
  Json patch;
  const auto dot = key.find('.');
  if (dot != std::string::npos) {
    patch[key.substr(0, dot)] = Json{{key.substr(dot + 1), value}};
  } else {
    patch[key] = value;
  }
  try {
    *this = from_json(patch, *this);
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument("cost constant '" + assignment + "': " + e.what());
  }
  sources[key] = "set by the user";
}

namespace {
// Stillmaker & Baas (2017) factors relative to 45 nm at 0.8 V, as tabulated in Accelergy's
// hwcomponents (techscaling.py): {node, energy, area}.
constexpr double kStillmaker[][3] = {{45, 1.0, 1.0},    {32, 0.66, 0.46}, {20, 0.22, 0.21},
                                     {16, 0.17, 0.19},  {14, 0.14, 0.17}, {10, 0.12, 0.10},
                                     {7, 0.094, 0.059}};

// Factor of `column` at `node` relative to 45 nm: log-log interpolation inside the table, the
// power law node^exponent beyond its ends.
double stillmaker(double node, int column, double exponent) {
  constexpr size_t n = sizeof(kStillmaker) / sizeof(kStillmaker[0]);
  if (node >= kStillmaker[0][0]) return std::pow(node / kStillmaker[0][0], exponent);
  if (node <= kStillmaker[n - 1][0]) {
    return kStillmaker[n - 1][column] * std::pow(node / kStillmaker[n - 1][0], exponent);
  }
  for (size_t i = 0; i + 1 < n; ++i) {
    const double a = kStillmaker[i][0], b = kStillmaker[i + 1][0];
    if (node <= a && node >= b) {
      const double t = std::log(node / a) / std::log(b / a);
      return std::exp((1 - t) * std::log(kStillmaker[i][column]) +
                      t * std::log(kStillmaker[i + 1][column]));
    }
  }
  return 1.0;
}
}  // namespace

double HardwareConfig::digital_energy_scale() const {
  if (scaling == "stillmaker") {
    return stillmaker(node_nm, 1, digital_energy_exponent) /
           stillmaker(digital_ref_nm, 1, digital_energy_exponent);
  }
  return std::pow(node_nm / digital_ref_nm, digital_energy_exponent);
}
double HardwareConfig::digital_area_scale() const {
  if (scaling == "stillmaker") {
    return stillmaker(node_nm, 2, digital_area_exponent) /
           stillmaker(digital_ref_nm, 2, digital_area_exponent);
  }
  return std::pow(node_nm / digital_ref_nm, digital_area_exponent);
}
double HardwareConfig::digital_delay_scale() const {
  return std::pow(node_nm / digital_ref_nm, digital_delay_exponent);
}
double HardwareConfig::analog_energy_scale() const {
  return std::pow(node_nm / analog_ref_nm, analog_energy_exponent);
}
double HardwareConfig::analog_area_scale() const {
  return std::pow(node_nm / analog_ref_nm, analog_area_exponent);
}
double HardwareConfig::adc_energy_pj() const {
  return adc_fom_fj * 1e-3 * std::ldexp(1.0, adc_bits) * analog_energy_scale();
}
namespace {
double entry(const std::map<int, double>& table, int bits, const char* what) {
  const auto it = table.find(bits);
  if (it == table.end()) {
    throw std::invalid_argument(std::string("hardware config: no MAC ") + what + " for " +
                                std::to_string(bits) + "-bit precision");
  }
  return it->second;
}
}  // namespace

double HardwareConfig::mac_energy_at(int bits) const {
  return entry(mac_energy_pj, bits, "energy") * digital_energy_scale();
}
double HardwareConfig::mac_area_at(int bits) const {
  return entry(mac_area_um2, bits, "area") * digital_area_scale();
}
double HardwareConfig::sram_pj_per_byte(double kb) const {
  return sram_energy_pj_per_byte * std::sqrt(std::max(kb, 1.0) / 8.0) * digital_energy_scale();
}
int64_t HardwareConfig::weight_slices() const { return ceil_div(weight_bits, cell_bits); }
int64_t HardwareConfig::input_cycles() const { return ceil_div(input_bits, dac_bits); }
double HardwareConfig::cycle_ns() const {
  const double convert_ns =
      static_cast<double>(ceil_div(array_cols, adcs_per_array)) / adc_rate_gsps;
  return std::max(array_read_ns, convert_ns);
}

std::vector<std::string> hardware_preset_names() {
  std::vector<std::string> names;
  for (const auto& [n, h] : presets()) names.push_back(n);
  return names;
}

HardwareConfig hardware_preset(const std::string& name) {
  const auto all = presets();
  const auto it = all.find(name);
  if (it == all.end()) {
    std::string known;
    for (const auto& [n, h] : all) known += (known.empty() ? "" : ", ") + n;
    throw std::invalid_argument("unknown hardware preset '" + name + "' (known: " + known + ")");
  }
  return it->second;
}

void apply_device(HardwareConfig& h, const DeviceConfig& device) {
  const TileIO& t = device.tile;
  const std::string from = "from the device's tile I/O (" + t.str() + ")";
  if (t.dac_bits > 0) {
    h.input_bits = t.dac_bits + 1;
    h.dac_bits = std::min(h.dac_bits, h.input_bits);
    h.sources["input_bits"] = from + ": a " + std::to_string(t.dac_bits) +
                              "-bit tile DAC (aihwkit's count) drives inputs of that many bits "
                              "and a sign";
  }
  if (t.adc_bits > 0) {
    h.adc_bits = t.adc_bits + 1;
    h.sources["adc_bits"] = from + ": b bits and a sign";
  }
  if (t.rows > 0) {
    h.array_rows = t.rows;
    h.sources["array_rows"] = from;
  }
  if (t.cols > 0) {
    h.array_cols = t.cols;
    h.sources["array_cols"] = from;
  }
  h.validate();
}

HardwareConfig load_hardware_config(const std::string& name_or_file) {
  const bool looks_like_file = name_or_file.find('/') != std::string::npos ||
                               name_or_file.find(".json") != std::string::npos;
  if (!looks_like_file) return hardware_preset(name_or_file);
  std::ifstream in(name_or_file);
  if (!in) throw std::invalid_argument("cannot read hardware config file '" + name_or_file + "'");
  Json j;
  try {
    in >> j;
  } catch (const Json::exception& e) {
    throw std::invalid_argument("hardware config file '" + name_or_file +
                                "' is not valid JSON: " + std::string(e.what()));
  }
  try {
    const std::string base = j.is_object() && j.contains("preset") && j["preset"].is_string()
                                 ? j["preset"].get<std::string>()
                                 : "isaac";
    HardwareConfig h = HardwareConfig::from_json(j, hardware_preset(base));
    if (!j.contains("name")) h.name = name_or_file;
    h.validate();
    return h;
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument("'" + name_or_file + "': " + e.what());
  }
}

void LayerCost::add(const LayerCost& o) {
  macs += o.macs;
  weights += o.weights;
  activations += o.activations;
  tiles += o.tiles;
  dac_conversions += o.dac_conversions;
  adc_conversions += o.adc_conversions;
  digital_ops += o.digital_ops;
  analog_pj += o.analog_pj;
  dac_pj += o.dac_pj;
  adc_pj += o.adc_pj;
  digital_pj += o.digital_pj;
  sram_pj += o.sram_pj;
  dram_pj += o.dram_pj;
  latency_ns += o.latency_ns;
  area_um2 += o.area_um2;
}

Json LayerCost::to_json() const {
  return Json{{"site", site},
              {"name", name},
              {"op", op},
              {"unit", unit},
              {"repeats", repeats},
              {"macs", macs},
              {"weights", weights},
              {"activations", activations},
              {"tiles", tiles},
              {"dac_conversions", dac_conversions},
              {"adc_conversions", adc_conversions},
              {"digital_ops", digital_ops},
              {"energy_pj",
               {{"analog", analog_pj},
                {"dac", dac_pj},
                {"adc", adc_pj},
                {"digital", digital_pj},
                {"sram", sram_pj},
                {"dram", dram_pj},
                {"total", energy_pj()}}},
              {"latency_ns", latency_ns},
              {"area_um2", area_um2}};
}

double CostReport::energy_overhead_pct() const {
  return 100.0 * (total.energy_pj() - base.energy_pj()) / base.energy_pj();
}
double CostReport::latency_overhead_pct() const {
  return 100.0 * (total.latency_ns - base.latency_ns) / base.latency_ns;
}
double CostReport::area_overhead_pct() const {
  return 100.0 * (total.area_um2 - base.area_um2) / base.area_um2;
}

Json CostReport::to_json() const {
  Json rows = Json::array(), blocks = Json::array();
  for (const auto& l : layers) rows.push_back(l.to_json());
  for (const auto& b : denoisers) blocks.push_back(b.to_json());
  return Json{{"config", config.to_json()},
              {"layers", rows},
              {"denoisers", blocks},
              {"base", base.to_json()},
              {"denoiser_total", denoiser_total.to_json()},
              {"total", total.to_json()},
              {"unit_area_um2", unit_area_um2},
              {"block_weights_from_dram", weights_from_dram},
              {"overhead_pct",
               {{"energy", energy_overhead_pct()},
                {"latency", latency_overhead_pct()},
                {"area", area_overhead_pct()}}},
              {"units", "per inference of one sample: energy pJ, latency ns, area um^2"}};
}

namespace {

// An imported recurrent layer's output (lstm, gru, rnn): its products run on the crossbars.
bool is_recurrent(const Node& node) {
  return node.op == OpType::kScript &&
         (node.label == "lstm" || node.label == "gru" || node.label == "rnn") &&
         node.param_count > 0 && !node.shape.empty();
}

// Digital cost of an imported op without an analog weight (by its label).
template <typename Digital>
void script_digital_cost(const Node& node, int64_t in_elems, LayerCost& c, Digital&& digital) {
  const std::string& op = node.label;
  c.unit = "digital";
  if (op == "matmul") {
    // A product of two activations: the arrays hold weights, so it runs on the digital unit.
    c.macs = node.macs;
    digital(node.macs);
  } else if (op == "batchnorm") {
    digital(2 * c.activations);  // scale and shift
  } else if (op == "layernorm" || op == "groupnorm" || op == "instancenorm") {
    digital(4 * c.activations);  // mean, variance, normalise, scale and shift
  } else if (op == "maxpool" || op == "avgpool") {
    digital(in_elems);
  } else {
    digital(c.activations);  // activations, additions, other element-wise ops
  }
}

// Cost of one execution of node `i` (k = 1).
LayerCost node_cost(const ModelImpl& model, int i, const HardwareConfig& hw) {
  const Node& node = model.nodes()[static_cast<size_t>(i)];
  LayerCost c;
  c.site = i;
  c.name = node.name;
  c.op = node.op_label();
  c.activations = product(node.shape);
  const double act_bytes = hw.activation_bits / 8.0;
  const double buf = hw.sram_pj_per_byte(static_cast<double>(hw.buffer_kb));
  const double delay = hw.digital_delay_scale() * 1000.0 / hw.clock_mhz;  // ns per cycle
  const int64_t lanes = hw.pe_rows * hw.pe_cols;
  int64_t in_elems = 0;
  for (int j : node.inputs) in_elems += product(model.nodes()[static_cast<size_t>(j)].shape);
  auto digital = [&](int64_t ops) {
    c.digital_ops = ops;
    c.digital_pj = static_cast<double>(ops) * hw.op_energy_pj * hw.digital_energy_scale();
    c.latency_ns = static_cast<double>(ceil_div(ops, lanes)) * delay;
  };
  c.sram_pj = static_cast<double>(in_elems + c.activations) * act_bytes * buf;

  switch (node.op) {
    case OpType::kInput:
      c.unit = "io";
      c.dram_pj = static_cast<double>(c.activations) * act_bytes * hw.dram_energy_pj_per_byte;
      c.sram_pj = static_cast<double>(c.activations) * act_bytes * buf;
      break;
    case OpType::kScript:
      if (!node.weight.defined() && !is_recurrent(node)) {
        script_digital_cost(node, in_elems, c, digital);
        break;
      }
      [[fallthrough]];  // a conv, linear or matmul with a weight, a recurrent layer: crossbars
    case OpType::kConv:
    case OpType::kLinear: {
      c.unit = "analog";
      int64_t n_out = 0, fan_in = 0, positions = 0;
      if (node.op == OpType::kScript && is_recurrent(node)) {
        // Every step multiplies [x_t, h_{t-1}] by the stacked gate weights [g·H, F + H]
        // (g = 4 LSTM, 3 GRU, 1 RNN), with two bias vectors of g·H: fan-in from the parameter
        // count (exact for one unidirectional layer), one position per step.
        const int64_t gates = node.label == "lstm" ? 4 : node.label == "gru" ? 3 : 1;
        n_out = gates * node.shape.back();
        fan_in = std::max<int64_t>(1, node.param_count / n_out - 2);
        positions = node.shape.size() >= 2 ? node.shape[0] : 1;
      } else {
        const torch::Tensor& w = node.op == OpType::kScript ? node.weight
                                 : node.op == OpType::kConv ? node.conv->weight
                                                            : node.linear->weight;
        n_out = w.size(0);
        fan_in = w.numel() / n_out;
        positions = c.activations / n_out;  // output pixels (1 for linear)
      }
      const int64_t cols_needed = n_out * hw.weight_slices();
      const int64_t row_tiles = ceil_div(fan_in, hw.array_rows);
      const int64_t col_tiles = ceil_div(cols_needed, hw.array_cols);
      const int64_t cycles = positions * hw.input_cycles();
      c.macs = positions * fan_in * n_out;
      c.weights = fan_in * n_out;
      c.tiles = row_tiles * col_tiles;
      c.dac_conversions = cycles * fan_in * col_tiles;
      c.adc_conversions = cycles * cols_needed * row_tiles;
      c.analog_pj = static_cast<double>(cycles * fan_in * cols_needed) * hw.cell_energy_pj *
                    hw.analog_energy_scale();
      c.dac_pj = static_cast<double>(c.dac_conversions) * hw.dac_energy_pj *
                 hw.analog_energy_scale();
      c.adc_pj = static_cast<double>(c.adc_conversions) * hw.adc_energy_pj();
      // Shift-and-add of every conversion into its output, plus the bias.
      c.digital_ops = c.adc_conversions + c.activations;
      c.digital_pj =
          static_cast<double>(c.digital_ops) * hw.op_energy_pj * hw.digital_energy_scale();
      c.latency_ns = static_cast<double>(cycles) * hw.cycle_ns();
      c.area_um2 = static_cast<double>(c.tiles) *
                   (hw.array_area_um2 + static_cast<double>(hw.adcs_per_array) * hw.adc_area_um2 +
                    static_cast<double>(hw.array_rows) * hw.dac_area_um2) *
                   hw.analog_area_scale();
      break;
    }
    case OpType::kBatchNorm:
      c.unit = "digital";
      digital(2 * c.activations);  // scale and shift
      break;
    case OpType::kReLU:
    case OpType::kAdd:
      c.unit = "digital";
      digital(c.activations);
      break;
    case OpType::kMaxPool:
      c.unit = "digital";
      digital(c.activations * node.kernel * node.kernel);
      break;
    case OpType::kAvgPool:
      c.unit = "digital";
      digital(in_elems);
      break;
    case OpType::kShortcut:
      c.unit = "digital";  // data movement only
      break;
  }
  return c;
}

// Cost of block `b` on the digital unit (weights from its SRAM or, when flagged, DRAM).
LayerCost block_cost(const ModelImpl& model, const BlockPlacement& b, const HardwareConfig& hw) {
  const Node& node = model.nodes().at(static_cast<size_t>(b.site));
  const std::vector<int64_t>& shape = node.shape;
  const std::string kind = b.block.resolve(shape);
  LayerCost c;
  c.site = b.site;
  c.name = node.name;
  c.op = kind + (kind == "channel" ? "" : "/" + std::to_string(b.block.ratio));
  c.unit = "denoiser";
  c.weights = b.block.params(shape);
  const int64_t numel = product(shape);
  c.activations = numel;
  int64_t hidden = 0;  // intermediate elements written and read back
  if (kind == "bottleneck") {
    const int64_t ch = shape[0], hw_px = numel / ch, m = (ch + b.block.ratio - 1) / b.block.ratio;
    c.macs = hw_px * (ch * m + 9 * m * m + m * ch);
    hidden = 2 * m * hw_px;
  } else if (kind == "mlp") {
    const int64_t m = (numel + b.block.ratio - 1) / b.block.ratio;
    c.macs = 2 * numel * m;
    hidden = m;
  } else if (kind == "position") {
    const int64_t d = shape.back(), positions = numel / d, m = (d + b.block.ratio - 1) / b.block.ratio;
    c.macs = 2 * numel * m;
    hidden = positions * m;
  } else {
    c.macs = numel;
  }
  c.digital_ops = c.macs + numel;  // + the residual add
  const int bits = hw.digital_bits;
  c.digital_pj = static_cast<double>(c.macs) * hw.mac_energy_at(bits) +
                 static_cast<double>(numel) * hw.op_energy_pj * hw.digital_energy_scale();
  const double unit_sram = hw.sram_pj_per_byte(static_cast<double>(std::max<int64_t>(
      hw.unit_sram_kb, 1)));
  const double bytes = bits / 8.0;
  c.sram_pj = (static_cast<double>(c.weights) + static_cast<double>(2 * numel + 2 * hidden)) *
              bytes * unit_sram;
  const double delay = hw.digital_delay_scale() * 1000.0 / hw.clock_mhz;
  c.latency_ns = static_cast<double>(ceil_div(c.digital_ops, hw.pe_rows * hw.pe_cols)) * delay;
  return c;
}

}  // namespace

CostReport estimate_cost(const ModelImpl& model, const HardwareConfig& hw,
                         const std::vector<int>& repeats) {
  return estimate_cost(model, hw, repeats, model.denoiser_placement());
}

CostReport estimate_cost(const ModelImpl& model, const HardwareConfig& hw,
                         const std::vector<int>& repeats,
                         const std::vector<BlockPlacement>& blocks) {
  hw.validate();
  const int n = model.num_sites();
  if (!repeats.empty() && static_cast<int>(repeats.size()) != n) {
    throw std::invalid_argument("repeat counts: " + std::to_string(repeats.size()) +
                                " given for " + std::to_string(n) + " sites");
  }
  CostReport r;
  r.config = hw;
  r.base.name = r.total.name = "total";
  r.denoiser_total.name = "denoisers";
  const double delay = hw.digital_delay_scale() * 1000.0 / hw.clock_mhz;
  const int64_t lanes = hw.pe_rows * hw.pe_cols;
  for (int i = 0; i < n; ++i) {
    const LayerCost once = node_cost(model, i, hw);
    r.base.add(once);
    const int k = repeats.empty() ? 1 : repeats[static_cast<size_t>(i)];
    if (k < 1) {
      throw std::invalid_argument("repeat count of site " + std::to_string(i) + " is " +
                                  std::to_string(k) + " (must be >= 1)");
    }
    LayerCost l = once;
    l.repeats = k;
    if (k > 1) {
      // k executions on the same arrays (time-multiplexed), then the mean: k-1 adds and one
      // scale per element, on the digital side. Area is unchanged.
      const double kd = static_cast<double>(k);
      l.macs *= k;
      l.dac_conversions *= k;
      l.adc_conversions *= k;
      l.analog_pj *= kd;
      l.dac_pj *= kd;
      l.adc_pj *= kd;
      l.dram_pj *= kd;
      l.sram_pj *= kd;
      l.latency_ns *= kd;
      const int64_t avg_ops = l.activations * k;
      l.digital_ops = l.digital_ops * k + avg_ops;
      l.digital_pj = l.digital_pj * kd +
                     static_cast<double>(avg_ops) * hw.op_energy_pj * hw.digital_energy_scale();
      l.latency_ns += static_cast<double>(ceil_div(avg_ops, lanes)) * delay;
    }
    r.total.add(l);
    r.layers.push_back(l);
  }
  // The activation buffer belongs to the base chip.
  const double buffer_area = static_cast<double>(hw.buffer_kb) * 8192.0 * hw.sram_bit_area_um2 *
                             hw.digital_area_scale();
  r.base.area_um2 += buffer_area;
  r.total.area_um2 += buffer_area;

  if (!blocks.empty()) {
    for (const auto& b : blocks) {
      LayerCost c = block_cost(model, b, hw);
      r.denoiser_total.add(c);
      r.denoisers.push_back(c);
    }
    const int bits = hw.digital_bits;
    const double weight_bytes = static_cast<double>(r.denoiser_total.weights) * bits / 8.0;
    r.weights_from_dram = weight_bytes > static_cast<double>(hw.unit_sram_kb) * 1024.0;
    if (r.weights_from_dram) {
      for (auto& c : r.denoisers) {
        c.dram_pj = static_cast<double>(c.weights) * bits / 8.0 * hw.dram_energy_pj_per_byte;
      }
      r.denoiser_total.dram_pj = weight_bytes * hw.dram_energy_pj_per_byte;
    }
    r.unit_area_um2 = static_cast<double>(lanes) * hw.mac_area_at(bits) +
                      static_cast<double>(hw.unit_sram_kb) * 8192.0 * hw.sram_bit_area_um2 *
                          hw.digital_area_scale();
    r.denoiser_total.area_um2 = r.unit_area_um2;
    // The blocks run after their sites, in sequence with the analog layers (no overlap).
    LayerCost d = r.denoiser_total;
    d.tiles = 0;
    d.activations = 0;
    r.total.add(d);
  }
  return r;
}

std::string format_cost_table(const CostReport& r) {
  std::ostringstream os;
  auto nj = [](double pj) { return fmt_double(pj * 1e-3, 4); };
  auto us = [](double ns) { return fmt_double(ns * 1e-3, 4); };
  auto mm2 = [](double um2) { return fmt_double(um2 * 1e-6, 4); };
  os << std::left << std::setw(6) << "site" << std::setw(18) << "name" << std::setw(15) << "op"
     << std::setw(4) << "k" << std::right << std::setw(12) << "MACs" << std::setw(7) << "tiles"
     << std::setw(11) << "ADC conv" << std::setw(11) << "energy nJ" << std::setw(8) << "ADC %"
     << std::setw(11) << "latency us" << "\n";
  auto row = [&](const LayerCost& l, const std::string& site) {
    const double e = l.energy_pj();
    os << std::left << std::setw(6) << site << std::setw(18) << l.name.substr(0, 17)
       << std::setw(15) << l.op.substr(0, 14) << std::setw(4) << l.repeats << std::right
       << std::setw(12) << l.macs << std::setw(7) << l.tiles << std::setw(11)
       << l.adc_conversions << std::setw(11) << nj(e) << std::setw(8)
       << (e > 0 ? fmt_double(100.0 * l.adc_pj / e, 3) : "0") << std::setw(11)
       << us(l.latency_ns) << "\n";
  };
  for (const auto& l : r.layers) row(l, std::to_string(l.site));
  for (const auto& b : r.denoisers) row(b, "+" + std::to_string(b.site));
  const LayerCost& t = r.total;
  os << "energy " << nj(t.energy_pj()) << " nJ per inference (analog " << nj(t.analog_pj)
     << ", DAC " << nj(t.dac_pj) << ", ADC " << nj(t.adc_pj) << ", digital " << nj(t.digital_pj)
     << ", SRAM " << nj(t.sram_pj) << ", DRAM " << nj(t.dram_pj) << "); latency "
     << us(t.latency_ns) << " us; area " << mm2(t.area_um2) << " mm^2 (" << t.tiles
     << " tiles of " << r.config.array_rows << "x" << r.config.array_cols << ")\n";
  const bool repeated = std::any_of(r.layers.begin(), r.layers.end(),
                                    [](const LayerCost& l) { return l.repeats > 1; });
  if (repeated || !r.denoisers.empty()) {
    os << "base (no blocks, k = 1): energy " << nj(r.base.energy_pj()) << " nJ, latency "
       << us(r.base.latency_ns) << " us, area " << mm2(r.base.area_um2)
       << " mm^2; overhead: energy " << fmt_double(r.energy_overhead_pct(), 4) << "%, latency "
       << fmt_double(r.latency_overhead_pct(), 4) << "%, area "
       << fmt_double(r.area_overhead_pct(), 4) << "%\n";
  }
  if (!r.denoisers.empty()) {
    os << r.denoisers.size() << " denoising block(s) on a " << r.config.pe_rows << "x"
       << r.config.pe_cols << " " << r.config.digital_bits << "-bit unit with "
       << r.config.unit_sram_kb << " KB SRAM (" << mm2(r.unit_area_um2) << " mm^2): "
       << r.denoiser_total.weights << " weights, " << nj(r.denoiser_total.energy_pj())
       << " nJ, " << us(r.denoiser_total.latency_ns) << " us"
       << (r.weights_from_dram ? "; weights exceed the unit's SRAM and stream from DRAM" : "")
       << "\n";
  }
  return os.str();
}

std::string format_cost_csv(const CostReport& r) {
  CsvTable t({"row", "site", "name", "op", "unit", "repeats", "macs", "weights", "activations",
              "tiles", "dac_conversions", "adc_conversions", "digital_ops", "analog_pj", "dac_pj",
              "adc_pj", "digital_pj", "sram_pj", "dram_pj", "energy_pj", "latency_ns",
              "area_um2"});
  auto add = [&](const std::string& kind, const LayerCost& l) {
    t.add_row({kind, std::to_string(l.site), l.name, l.op, l.unit, std::to_string(l.repeats),
               std::to_string(l.macs), std::to_string(l.weights), std::to_string(l.activations),
               std::to_string(l.tiles), std::to_string(l.dac_conversions),
               std::to_string(l.adc_conversions), std::to_string(l.digital_ops),
               fmt_double(l.analog_pj, 9), fmt_double(l.dac_pj, 9), fmt_double(l.adc_pj, 9),
               fmt_double(l.digital_pj, 9), fmt_double(l.sram_pj, 9), fmt_double(l.dram_pj, 9),
               fmt_double(l.energy_pj(), 9), fmt_double(l.latency_ns, 9),
               fmt_double(l.area_um2, 9)});
  };
  for (const auto& l : r.layers) add("layer", l);
  for (const auto& b : r.denoisers) add("denoiser", b);
  add("base", r.base);
  if (!r.denoisers.empty()) add("denoisers", r.denoiser_total);
  add("total", r.total);
  return t.str();
}

}  // namespace quell
