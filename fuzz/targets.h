// The bodies of the fuzz targets (fuzz/fuzz_*.cpp) and of their regression test
// (tests/test_fuzz_regressions.cpp): each feeds one input to the library code the CLI calls for
// that file format, through the public API in include/quell. A target returns normally or throws;
// outcome() tells a deliberate error (std::invalid_argument or std::runtime_error, one line) from
// a finding (any other exception, or a message that is empty or spans lines). Crashes, hangs,
// leaks and sanitizer reports are findings the fuzzer sees by itself.
#pragma once

#include <torch/torch.h>
#include <unistd.h>
#include <zlib.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <set>
#include <tuple>
#include <sstream>
#include <stdexcept>
#include <string>
#include <typeinfo>
#include <vector>

#include "quell/checkpoint.h"
#include "quell/data.h"
#include "quell/device.h"
#include "quell/denoise_study.h"
#include "quell/image_folder.h"
#include "quell/journal.h"
#include "quell/models.h"
#include "quell/noise.h"
#include "quell/plan_study.h"
#include "quell/script.h"
#include "quell/walk.h"
#include "quell/walk_study.h"

namespace quell::fuzz {

/// A scratch directory of this process for the files the readers open, removed at exit.
inline const std::string& scratch_dir() {
  // Never destroyed: the exit handler below still needs it.
  static const std::string* dir = [] {
    const char* base = std::getenv("QUELL_FUZZ_TMP");
    std::filesystem::path root = base ? base
                                 : std::filesystem::exists("/dev/shm") ? "/dev/shm"
                                                                       : "/tmp";
    auto d = root / ("quell-fuzz-" + std::to_string(::getpid()));
    std::filesystem::create_directories(d);
    auto* s = new std::string(d.string());
    std::atexit([] {
      std::error_code ec;
      std::filesystem::remove_all(scratch_dir(), ec);
    });
    return s;
  }();
  return *dir;
}

/// Writes `data` to <scratch>/<name> and returns the path.
inline std::string write_input(const uint8_t* data, size_t size, const std::string& name) {
  const std::string path = scratch_dir() + "/" + name;
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  out.close();
  if (!out) throw std::logic_error("fuzz: cannot write " + path);  // not quell's: a finding
  return path;
}

inline std::string gzip(const uint8_t* data, size_t size) {
  z_stream z{};
  if (deflateInit2(&z, 1, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) std::abort();
  std::string out(deflateBound(&z, size) + 32, '\0');
  z.next_in = const_cast<Bytef*>(data);
  z.avail_in = static_cast<uInt>(size);
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  if (deflate(&z, Z_FINISH) != Z_STREAM_END) std::abort();
  out.resize(z.total_out);
  deflateEnd(&z);
  return out;
}

inline std::vector<std::string> split_lines(const uint8_t* data, size_t size) {
  std::vector<std::string> lines;
  std::string cur;
  for (size_t i = 0; i < size; ++i) {
    if (data[i] == '\n') {
      lines.push_back(cur);
      cur.clear();
    } else {
      cur += static_cast<char>(data[i]);
    }
  }
  lines.push_back(cur);
  return lines;
}

// ---- the targets ---------------------------------------------------------------------------

/// IDX images or labels (first byte: bit 0 labels, bit 1 gzip the rest first), read from a file
/// like load_dataset does (read_file_maybe_gz gunzips by magic, so .gz seeds arrive raw too).
inline void idx(const uint8_t* data, size_t size) {
  if (size < 1) return;
  const bool labels = data[0] & 1;
  std::string path;
  if (data[0] & 2) {
    const std::string z = gzip(data + 1, size - 1);
    path = write_input(reinterpret_cast<const uint8_t*>(z.data()), z.size(), "idx.gz");
  } else {
    path = write_input(data + 1, size - 1, "idx");
  }
  torch::Tensor t = labels ? read_idx_labels(path) : read_idx_images(path);
  (void)t.sum().item<int64_t>();
}

/// CIFAR binary (first byte: bit 0 CIFAR-100's two label bytes and 100 classes).
inline void cifar(const uint8_t* data, size_t size) {
  if (size < 1) return;
  const bool c100 = data[0] & 1;
  const std::string path = write_input(data + 1, size - 1, "cifar.bin");
  auto [images, labels] = read_cifar_bin(path, c100 ? 2 : 1, c100 ? 100 : 10);
  (void)images.sum().item<int64_t>();
  (void)labels.max().item<int64_t>();
}

/// A JPEG or PNG decoded and resized/cropped as an image folder does: first 4 bytes pick the
/// channels, crop height/width (1..32), the resize target and DCT scaling; the rest is the file.
inline void image(const uint8_t* data, size_t size) {
  if (size < 4) return;
  ImageGeometry g;
  g.channels = (data[0] & 1) ? 3 : 1;
  g.height = 1 + data[1] % 32;
  g.width = 1 + data[2] % 32;
  g.resize = (data[3] & 0x80) ? 0 : std::max(g.height, g.width) + data[3] % 16;
  g.dct_scaling = data[0] & 2;
  g.validate();
  const DecodedImage d = decode_image(data + 4, size - 4, "fuzz.img", g.channels,
                                      g.dct_scaling ? g.resize_target() : 0);
  const torch::Tensor out = resize_center_crop(d.pixels, g, d.full_height, d.full_width);
  if (out.size(0) != g.channels || out.size(1) != g.height || out.size(2) != g.width) {
    throw std::logic_error("fuzz: resize_center_crop returned the wrong shape");
  }
}

/// A quell checkpoint: load_checkpoint (metadata, spec, tensors, calibration), then one
/// forward pass of a zero input when the loaded model is small.
inline void checkpoint(const uint8_t* data, size_t size) {
  const std::string path = write_input(data, size, "model.pt");
  CheckpointMeta meta;
  Model m = load_checkpoint(path, &meta);
  const ModelSpec& s = m->spec();
  if (s.in_channels * s.height * s.width <= 1 << 16) {
    torch::NoGradGuard no_grad;
    m->eval();  // as the studies run it (batch norm in training mode refuses a batch of one)
    const torch::Tensor y = m->forward(torch::zeros({1, s.in_channels, s.height, s.width}));
    (void)y.sum().item<double>();
  }
  (void)m->site_names();
  (void)meta.spec.to_json().dump();
}

/// The archive of a quell checkpoint with its tensors fixed and any metadata. A byte mutation of a
/// whole checkpoint rarely survives the zip's CRCs, so `checkpoint` seldom reaches the metadata
/// parser; `checkpoint_meta` mutates the metadata text and packs it into a valid archive here.
/// Template 0 holds lenet5-bn's tensors, template 1 also a bottleneck block after site 2 (bn1)
/// and a channel block after site 9 (fc1), as a denoise study saves them; both are calibrated.
struct CheckpointTemplate {
  Model model{nullptr};
  std::string meta;  ///< the metadata save_checkpoint wrote for it (the seed)
};

inline const CheckpointTemplate& checkpoint_template(int which) {
  static const std::vector<CheckpointTemplate> templates = [] {
    std::vector<CheckpointTemplate> t(2);
    for (int i = 0; i < 2; ++i) {
      ModelSpec spec;
      spec.name = "lenet5-bn";
      t[i].model = make_model(spec);
      t[i].model->calibrate(torch::linspace(0.0, 1.0, 16 * 28 * 28).reshape({16, 1, 28, 28}));
      if (i == 1) {
        t[i].model->set_denoisers(
            {{2, BlockSpec::parse("bottleneck")}, {9, BlockSpec::parse("channel")}}, 1);
      }
      CheckpointMeta meta;
      meta.spec = spec;
      meta.dataset = "fashion-mnist";
      const std::string path = scratch_dir() + "/template.pt";
      save_checkpoint(path, *t[i].model, meta);
      torch::serialize::InputArchive archive;
      archive.load_from(path);
      c10::IValue v;
      // The record's name, as src/model/checkpoint.cpp writes it: a rename must show up here.
      if (!archive.try_read("quell_meta", v) || !v.isString()) {
        throw std::logic_error("fuzz: a checkpoint's metadata is no longer the quell_meta record");
      }
      t[i].meta = v.toStringRef();
    }
    return t;
  }();
  return templates.at(which);
}

/// The bytes of a checkpoint holding template `which`'s tensors and the metadata `meta`.
inline std::string checkpoint_with_meta(int which, const std::string& meta) {
  const CheckpointTemplate& t = checkpoint_template(which);
  torch::serialize::OutputArchive archive;
  for (const auto& p : t.model->named_parameters()) archive.write(p.key(), p.value().detach());
  for (const auto& b : t.model->named_buffers()) archive.write(b.key(), b.value(), true);
  archive.write("quell_meta", c10::IValue(meta));
  std::ostringstream out;
  archive.save_to(out);
  return out.str();
}

/// First byte: bit 0 the template; the rest, the checkpoint's metadata (JSON). Then as
/// `checkpoint`: load_checkpoint and one forward pass.
inline void checkpoint_meta(const uint8_t* data, size_t size) {
  if (size < 1) return;
  const std::string bytes = checkpoint_with_meta(
      data[0] & 1, std::string(reinterpret_cast<const char*>(data + 1), size - 1));
  checkpoint(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
}

/// A TorchScript archive imported as a model (site discovery), tried with the geometries of the
/// test fixtures (1x28x28, then 3x32x32), then one forward pass.
inline void script(const uint8_t* data, size_t size) {
  const std::string path = write_input(data, size, "model.script.pt");
  if (!is_torchscript_model(path)) return;
  Model m{nullptr};
  for (int64_t c : {1, 3}) {
    ModelSpec spec;
    spec.name = path;
    spec.in_channels = c;
    spec.height = spec.width = c == 1 ? 28 : 32;
    spec.num_classes = 0;
    try {
      m = load_script_model(spec);
      break;
    } catch (const std::runtime_error&) {
      if (c == 3) throw;
    }
  }
  torch::NoGradGuard no_grad;
  const ModelSpec& s = m->spec();
  (void)m->forward(torch::zeros({2, s.in_channels, s.height, s.width})).sum().item<double>();
  (void)m->site_names();
}

/// Site names of a small model (lenet5-bn's) for the selectors.
inline const std::vector<std::string>& lenet_sites() {
  static const std::vector<std::string> names = make_model(ModelSpec{})->site_names();
  return names;
}

/// The noise-rule grammar as the CLI's flags hand it over: line 1 a site selector, then lines
/// "noise RULE", "adc RULE", "repeat RULE", "weight SPEC", "spec COMPONENT", "grid TEXT",
/// "walk TEXT", "block TEXT" (unknown prefixes are noise rules).
inline void noise_rules(const uint8_t* data, size_t size) {
  const std::vector<std::string> lines = split_lines(data, size);
  const auto& names = lenet_sites();
  std::vector<std::string> noise, adc, repeat;
  std::string weight;
  for (size_t i = 0; i < lines.size(); ++i) {
    const std::string& l = lines[i];
    auto rest = [&](size_t n) { return l.substr(n); };
    if (i == 0) {
      (void)select_sites(l, names);
    } else if (l.rfind("adc ", 0) == 0) {
      adc.push_back(rest(4));
    } else if (l.rfind("repeat ", 0) == 0) {
      repeat.push_back(rest(7));
    } else if (l.rfind("weight ", 0) == 0) {
      weight = rest(7);
    } else if (l.rfind("spec ", 0) == 0) {
      const NoiseSpec s = NoiseSpec::parse(rest(5));
      (void)NoiseSpec::from_json(s.to_json());
    } else if (l.rfind("grid ", 0) == 0) {
      (void)SigmaGrid::parse(rest(5), 4).to_json().dump();
    } else if (l.rfind("walk ", 0) == 0) {
      (void)WalkNoise::parse(rest(5)).str();
    } else if (l.rfind("block ", 0) == 0) {
      (void)BlockSpec::parse(rest(6));
    } else {
      noise.push_back(l.rfind("noise ", 0) == 0 ? rest(6) : l);
    }
  }
  const NoiseConfig c = build_noise_config(noise, adc, repeat, weight, 1, names);
  const Json j = c.to_json(names);
  (void)noise_config_from_json(j, names);
}

/// A JSON noise configuration (--noise-config) against lenet5-bn's sites.
inline void noise_json(const uint8_t* data, size_t size) {
  Json j;
  try {
    j = Json::parse(data, data + size);
  } catch (const Json::exception&) {
    return;  // the CLI reports invalid JSON itself (NoiseArgs::build)
  }
  const auto& names = lenet_sites();
  const NoiseConfig c = noise_config_from_json(j, names);
  (void)c.to_json(names).dump();
  (void)c.scaled(0.5).to_json(names);
}

/// walk.json, a denoise report.json and a plan.json: each reader on every input, then
/// the report's writers (to_json, csv, table) on what was read.
inline void reports(const uint8_t* data, size_t size) {
  const std::string path = write_input(data, size, "report.json");
  std::string first_error;
  int ok = 0;
  for (int kind = 0; kind < 3; ++kind) {
    try {
      if (kind == 0) {
        const WalkReport r = WalkReport::read(path);
        (void)r.to_json().dump();
        (void)r.csv();
        (void)r.table();
      } else if (kind == 1) {
        const DenoiseReport r = DenoiseReport::read(path);
        (void)r.to_json().dump();
        (void)r.report_csv();
        (void)r.points_csv();
        (void)r.rankings_csv();
        (void)r.table();
      } else {
        const PlanReport r = PlanReport::read(path);
        (void)r.to_json().dump();
        (void)r.allocations_csv();
        (void)r.table();
      }
      ++ok;
    } catch (const std::runtime_error& e) {
      if (first_error.empty()) first_error = e.what();
    }
  }
  if (ok == 0) throw std::runtime_error(first_error);
}

/// A walk journal (journal.jsonl): read, then opened for resuming with its own fingerprint
/// (drops a torn last line), a record appended, and read back.
inline void walk_journal(const uint8_t* data, size_t size) {
  const std::string path = write_input(data, size, "journal.jsonl");
  auto [fingerprint, records] = WalkJournal::read(path);
  WalkJournal j(path, fingerprint);
  for (const auto& r : j.records()) (void)j.find(r.site, r.sigma, r.repeat);
  WalkRecord extra;
  extra.site = 12345;
  extra.sigma = 0.5;
  extra.accuracy = 0.25;
  j.append({extra});
  // read() returns every line (a record present twice too); the journal holds each key once.
  auto [fp2, again] = WalkJournal::read(path);
  std::set<std::tuple<int, double, int>> keys;
  for (const auto& r : again) keys.insert({r.site, r.sigma, r.repeat});
  if (keys.size() != j.records().size() || fp2 != fingerprint) {
    throw std::logic_error("fuzz: a walk journal reads back " + std::to_string(keys.size()) +
                           " records after holding " + std::to_string(j.records().size()));
  }
}

/// The study journal of the denoise and plan studies: opened for resuming with the fingerprint
/// of its first line (drops a torn last line), a result appended, and opened again.
inline void study_journal(const uint8_t* data, size_t size) {
  const std::string path = write_input(data, size, "study.jsonl");
  Json fingerprint = Json::object();
  std::string kind = "denoise";
  const std::vector<std::string> lines = split_lines(data, size);
  try {
    const Json head = Json::parse(lines.at(0));
    if (head.is_object() && head.contains("fingerprint")) fingerprint = head.at("fingerprint");
    if (head.is_object() && head.contains("kind") && head.at("kind").is_string()) {
      kind = head.at("kind").get<std::string>();
    }
  } catch (const Json::exception&) {
  }
  size_t n = 0;
  {
    StudyJournal j(path, kind, fingerprint);
    (void)j.find("ranking:taylor");
    j.append("fuzz:extra", Json{{"x", 1}});
    n = j.size();
  }
  StudyJournal again(path, kind, fingerprint, false);
  if (again.size() != n) {
    throw std::logic_error("fuzz: a study journal reads back " + std::to_string(again.size()) +
                           " results after holding " + std::to_string(n));
  }
}

/// Tensor files (torch.save, .npy, .npz): the first byte picks the type (bits 0-1: npy, npz, pt)
/// and whether the file is also read as a "tensors" dataset holding both splits (bit 2).
inline void tensors(const uint8_t* data, size_t size) {
  if (size < 1) return;
  static const char* const kExt[] = {"in.npy", "in.npz", "in.pt", "in.pth"};
  const std::string path = write_input(data + 1, size - 1, kExt[data[0] & 3]);
  for (const auto& [name, t] : read_tensor_file(path)) {
    if (t.numel() > 0 && t.numel() < (int64_t{1} << 22)) (void)t.sum().item<double>();
  }
  if (data[0] & 4) {
    DataOptions o;
    o.name = "tensors";
    o.dir = path;
    o.split = (data[0] & 8) ? Split::kTest : Split::kTrain;
    const Dataset d = load_dataset(o);
    (void)d.target_kind();
  }
}

/// Device descriptions (docs/devices.md): the first byte picks a device table file (bit 0: .csv,
/// else .json) or, with bit 1, a noise configuration's "device" object read against lenet5-bn's
/// sites; a tile spec on its first line with bit 2. What parses programs a small weight tensor a
/// day after programming, with drift compensation.
inline void devices(const uint8_t* data, size_t size) {
  if (size < 1) return;
  const uint8_t mode = data[0];
  DeviceConfig cfg;
  if (mode & 2) {
    Json j;
    try {
      j = Json::parse(data + 1, data + size);
    } catch (const Json::exception&) {
      return;  // the CLI reports invalid JSON itself
    }
    cfg = DeviceConfig::from_json(j, lenet_sites());
  } else if (mode & 4) {
    const auto lines = split_lines(data + 1, size - 1);
    if (!lines.empty()) cfg.tile = TileIO::parse(lines.front());
    cfg.model = DeviceModel::parse("pcm");
  } else {
    cfg.model = DeviceModel::parse(write_input(data + 1, size - 1, (mode & 1) ? "dev.csv" : "dev.json"));
  }
  cfg.time = 86400.0;
  cfg.compensation = true;
  const torch::Tensor w = torch::linspace(-1.0, 1.0, 24).reshape({4, 6});
  const ProgrammedWeight p = program_weight(w, cfg, 1, 0, 1);
  if (p.weight.sizes() != w.sizes()) throw std::logic_error("fuzz: programmed weight changed shape");
  if (const TileIO* io = cfg.tile_of(1)) {
    (void)tile_forward(*io, w, [](const torch::Tensor& v) { return v; }, 1.0, {}, RngStream{1, 1});
  }
}

/// Every target by name (the folder names under tests/fixtures/fuzz/).
inline const std::map<std::string, std::function<void(const uint8_t*, size_t)>>& targets() {
  static const std::map<std::string, std::function<void(const uint8_t*, size_t)>> t = {
      {"idx", idx},
      {"cifar", cifar},
      {"image", image},
      {"checkpoint", checkpoint},
      {"checkpoint_meta", checkpoint_meta},
      {"script", script},
      {"noise_rules", noise_rules},
      {"noise_json", noise_json},
      {"reports", reports},
      {"walk_journal", walk_journal},
      {"study_journal", study_journal},
      {"tensors", tensors},
      {"devices", devices},
  };
  return t;
}

/// Runs target `name` on one input: "" if it returned or threw a deliberate error, else what
/// was wrong (the exception's type and message).
inline std::string outcome(const std::string& name, const uint8_t* data, size_t size) {
  auto one_line = [](const std::string& kind, const char* what) -> std::string {
    const std::string m = what;
    if (m.empty()) return kind + " with an empty message";
    if (m.find('\n') != std::string::npos) return kind + " spanning lines: " + m;
    return "";
  };
  try {
    targets().at(name)(data, size);
    return "";
  } catch (const std::invalid_argument& e) {
    return one_line("std::invalid_argument", e.what());
  } catch (const std::runtime_error& e) {
    return one_line("std::runtime_error", e.what());
  } catch (const std::exception& e) {
    return std::string("uncaught ") + typeid(e).name() + ": " + e.what();
  }
}

}  // namespace quell::fuzz
