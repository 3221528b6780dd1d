#include "quell/checkpoint.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "quell/script.h"
#include "util/text.h"
#include "util/zip.h"

namespace quell {
namespace {

constexpr const char* kMetaKey = "quell_meta";
constexpr const char* kScriptKey = "quell_torchscript";  // an imported model's archive
constexpr const char* kFormat = "quell-checkpoint";
constexpr int kFormatVersion = 1;

std::string shape_str(const torch::Tensor& t) {
  std::ostringstream os;
  os << t.sizes();
  return os.str();
}

// A list of quoted names as OutputArchive writes it: `"a", "b", ` (each followed by ", ").
bool is_name_list(const std::string& s) {
  size_t i = 0;
  while (i < s.size()) {
    if (s[i] != '"') return false;
    const size_t close = s.find_first_of("\"\\", i + 1);
    if (close == std::string::npos || s[close] != '"') return false;
    if (s.compare(close + 1, 2, ", ") != 0) return false;
    i = close + 3;
  }
  return true;
}

using text::ends_with;
using text::starts_with;

// One line of the class OutputArchive writes for a checkpoint: its parameters, buffers, their
// Tensor annotations, and attributes typed str (quell_meta) or Tensor (quell_torchscript).
bool is_archive_code_line(const std::string& line) {
  if (line.empty() || line == "class Module(Module):") return true;
  if (!starts_with(line, "  ")) return false;
  const std::string s = line.substr(2);
  for (const char* list : {"__parameters__ = [", "__buffers__ = ["}) {
    const std::string head = list;
    if (starts_with(s, head) && ends_with(s, "]")) {
      return is_name_list(s.substr(head.size(), s.size() - head.size() - 1));
    }
  }
  if (s == "__annotations__ = []") return true;
  const std::string head = "__annotations__[\"", tail = "\"] = Tensor";
  if (starts_with(s, head) && ends_with(s, tail) && s.size() >= head.size() + tail.size()) {
    const std::string name = s.substr(head.size(), s.size() - head.size() - tail.size());
    return name.find_first_of("\"\\") == std::string::npos;
  }
  for (const std::string attr : {" : str", " : Tensor"}) {
    if (!ends_with(s, attr) || s.size() == attr.size()) continue;
    const std::string name = s.substr(0, s.size() - attr.size());
    const auto ident = [](char c) {
      return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
    };
    return std::all_of(name.begin(), name.end(), ident) && !(name[0] >= '0' && name[0] <= '9');
  }
  return false;
}

// The checkpoint file's bytes, refused unless the archive is whole (every member's CRC) and its
// code is the class OutputArchive writes: LibTorch checks no CRC, and its TorchScript importer
// crashes on some damaged code (a flipped bit that turned `__parameters__` into a class constant
// made it read a wild pointer).
std::string read_checked_archive(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(path + ": cannot open checkpoint: No such file or directory");
  std::ostringstream ss;
  ss << in.rdbuf();
  std::string bytes = ss.str();
  const auto is_code = [](const std::string& name) {
    return ends_with(name, ".py") &&
           (starts_with(name, "code/") || name.find("/code/") != std::string::npos);
  };
  std::vector<std::pair<std::string, std::vector<uint8_t>>> code;
  try {
    code = read_zip({reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()}, "", is_code,
                    /*verify_all=*/true);
  } catch (const std::runtime_error& e) {  // ": what"
    throw std::runtime_error(path + ": not a readable checkpoint (" +
                             std::string(e.what()).substr(2) + ")");
  }
  for (const auto& [name, data] : code) {
    const std::string source(data.begin(), data.end());
    std::istringstream lines(source);
    std::string line;
    for (int n = 1; std::getline(lines, line); ++n) {
      if (!is_archive_code_line(line)) {
        throw std::runtime_error(path + ": not a quell checkpoint (unexpected code in " +
                                 text::printable(name) + " line " + std::to_string(n) + ": " +
                                 text::printable(line, 60) + ")");
      }
    }
  }
  return bytes;
}

}  // namespace

void save_checkpoint(const std::string& path, ModelImpl& model, const CheckpointMeta& meta) {
  Json j{{"format", kFormat},
         {"format_version", kFormatVersion},
         {"model", meta.spec.to_json()},
         {"dataset", meta.dataset},
         {"data", meta.data},
         {"train_config", meta.train_config},
         {"metrics", meta.metrics},
         {"provenance", meta.provenance}};
  Json cal = Json::array();
  for (const auto& c : model.engine().calibration()) cal.push_back(c.valid ? c.to_json() : Json());
  j["calibration"] = cal;
  Json blocks = Json::array();
  const auto names = model.site_names();
  for (const auto& b : model.denoiser_placement()) {
    blocks.push_back({{"site", b.site}, {"name", names.at(b.site)}, {"block", b.block.to_json()}});
  }
  j["denoisers"] = blocks;

  torch::serialize::OutputArchive archive;
  for (const auto& p : model.named_parameters()) archive.write(p.key(), p.value().detach().cpu());
  for (const auto& b : model.named_buffers()) archive.write(b.key(), b.value().cpu(), true);
  if (const ScriptInfo* script = model.script_info()) {
    // The imported model's architecture is its TorchScript archive, kept whole.
    const std::string& bytes = script->archive;
    torch::Tensor t = torch::empty({static_cast<int64_t>(bytes.size())}, torch::kUInt8);
    std::copy(bytes.begin(), bytes.end(), reinterpret_cast<char*>(t.data_ptr<uint8_t>()));
    archive.write(kScriptKey, t, /*is_buffer=*/true);
    j["model"]["torchscript"] = script->source;
  }
  archive.write(kMetaKey, c10::IValue(j.dump()));
  std::ostringstream bytes;
  archive.save_to(bytes);
  write_file_atomic(path, bytes.str());
}

namespace {

// The checkpoint's archive, checked (read_checked_archive) and opened by LibTorch, and its
// quell_meta record's text.
std::string open_checkpoint(const std::string& path, torch::serialize::InputArchive& archive) {
  const std::string bytes = read_checked_archive(path);
  try {
    archive.load_from(bytes.data(), bytes.size());
  } catch (const std::exception& e) {
    // c10::Error, or torch::jit::ErrorReport (code in the archive that does not compile), whose
    // message starts with a newline: its first line of text, on one line.
    const auto* c10_error = dynamic_cast<const c10::Error*>(&e);
    std::string what = c10_error ? c10_error->what_without_backtrace() : e.what();
    what = what.substr(std::min(what.size(), what.find_first_not_of(" \n")));
    throw std::runtime_error(path + ": not a readable checkpoint (" +
                             what.substr(0, std::min<size_t>(120, what.find('\n'))) + ")");
  }
  c10::IValue meta_value;
  if (!archive.try_read(kMetaKey, meta_value) || !meta_value.isString()) {
    throw std::runtime_error(path + ": not a quell checkpoint (no " + kMetaKey + " record)");
  }
  return meta_value.toStringRef();
}

}  // namespace

std::string read_checkpoint_meta_text(const std::string& path) {
  torch::serialize::InputArchive archive;
  return open_checkpoint(path, archive);
}

Model load_checkpoint(const std::string& path, CheckpointMeta* meta_out) {
  torch::serialize::InputArchive archive;
  const std::string meta_text = open_checkpoint(path, archive);
  Json j;
  CheckpointMeta meta;
  std::string script_source;  // an imported model's: where its archive came from
  try {
    j = Json::parse(meta_text);
    if (j.value("format", "") != kFormat) throw std::runtime_error("wrong format tag");
    meta.spec = ModelSpec::from_json(j.at("model"));
    meta.dataset = j.value("dataset", "");
    meta.data = j.value("data", Json::object());
    meta.train_config = j.value("train_config", Json::object());
    meta.metrics = j.value("metrics", Json::object());
    meta.provenance = j.value("provenance", Json::object());
    script_source = j.at("model").value("torchscript", "");
  } catch (const std::exception& e) {
    throw std::runtime_error(path + ": corrupt quell checkpoint metadata (" + e.what() + ")");
  }
  Model model{nullptr};
  if (j.at("model").contains("torchscript")) {
    torch::Tensor bytes;
    if (!archive.try_read(kScriptKey, bytes, true) || bytes.scalar_type() != torch::kUInt8) {
      throw std::runtime_error(path + ": imported model without its TorchScript archive");
    }
    bytes = bytes.contiguous();
    std::string archive_bytes(reinterpret_cast<const char*>(bytes.data_ptr<uint8_t>()),
                              static_cast<size_t>(bytes.numel()));
    model = load_script_model(meta.spec, std::move(archive_bytes),
                              path + " (" + script_source + ")");
  } else {
    model = make_model(meta.spec);
  }
  if (j.contains("denoisers") && !j["denoisers"].empty()) {
    std::vector<BlockPlacement> placement;
    try {
      const auto names = model->site_names();
      for (const auto& b : j.at("denoisers")) {
        BlockPlacement p;
        // Range first: a double beyond int's range does not convert (undefined behaviour).
        const Json& site = b.at("site");
        if (!site.is_number_integer() || site.get<double>() < 0 ||
            site.get<double>() >= model->num_sites()) {
          throw std::runtime_error("denoiser site " + b.dump() + " does not match model " +
                                   meta.spec.name);
        }
        p.site = site.get<int>();
        p.block = BlockSpec::from_json(b.at("block"));
        if (names[p.site] != b.value("name", names[p.site])) {
          throw std::runtime_error("denoiser site " + b.dump() + " does not match model " +
                                   meta.spec.name);
        }
        placement.push_back(p);
      }
      model->set_denoisers(placement);
    } catch (const std::exception& e) {
      throw std::runtime_error(path + ": bad denoiser record (" + e.what() + ")");
    }
  }
  torch::NoGradGuard no_grad;
  auto load_tensor = [&](const std::string& key, torch::Tensor& dst, bool buffer) {
    torch::Tensor src;
    if (!archive.try_read(key, src, buffer)) {
      throw std::runtime_error(path + ": checkpoint has no tensor '" + key + "' for model " +
                               meta.spec.name);
    }
    if (src.sizes() != dst.sizes()) {
      throw std::runtime_error(path + ": tensor '" + key + "' has shape " + shape_str(src) +
                               " but model " + meta.spec.name + " expects " + shape_str(dst));
    }
    dst.copy_(src);
  };
  for (auto& p : model->named_parameters()) load_tensor(p.key(), p.value(), false);
  for (auto& b : model->named_buffers()) load_tensor(b.key(), b.value(), true);

  // An empty list: the model was saved before it was ever calibrated.
  if (j.contains("calibration") && j["calibration"].is_array() && !j["calibration"].empty()) {
    const auto& cj = j["calibration"];
    if (static_cast<int>(cj.size()) != model->num_sites()) {
      throw std::runtime_error(path + ": calibration has " + std::to_string(cj.size()) +
                               " sites but model " + meta.spec.name + " has " +
                               std::to_string(model->num_sites()));
    }
    std::vector<SiteCalibration> cal(cj.size());
    try {
      for (size_t i = 0; i < cj.size(); ++i) {
        if (!cj[i].is_null()) cal[i] = SiteCalibration::from_json(cj[i]);
      }
    } catch (const std::exception& e) {
      throw std::runtime_error(path + ": bad calibration record (" + e.what() + ")");
    }
    model->engine().set_calibration(std::move(cal));
  }
  if (meta_out) *meta_out = meta;
  return model;
}

Model clone_model(ModelImpl& model) {
  Model copy{nullptr};
  if (const ScriptInfo* script = model.script_info()) {
    copy = load_script_model(model.spec(), script->archive, script->source);
  } else {
    copy = make_model(model.spec());
  }
  copy->set_denoisers(model.denoiser_placement());
  torch::NoGradGuard no_grad;
  auto params = model.named_parameters();
  auto buffers = model.named_buffers();
  for (auto& p : copy->named_parameters()) p.value().copy_(params[p.key()]);
  for (auto& b : copy->named_buffers()) b.value().copy_(buffers[b.key()]);
  copy->engine().set_calibration(model.engine().calibration());
  copy->eval();
  return copy;
}

}  // namespace quell
