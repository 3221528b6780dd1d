#include "common.h"

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <thread>

#include "quell/dist.h"
#include "quell/metric.h"
#include "quell/runtime.h"
#include "quell/script.h"
#include "quell/train.h"

namespace quell::cli {

void DataArgs::add(CLI::App& app) {
  dataset_option = app.add_option("--dataset", dataset, "Dataset: " + join(dataset_names()))
                       ->check(CLI::IsMember(dataset_names()))
                       ->capture_default_str();
  app.add_option("--data-dir", data_dir,
                 "Directory of the dataset files (default: $QUELL_DATA_DIR/<dataset> if set, else "
                 "/usr/share/datasets/fashion-mnist for fashion-mnist and data/<dataset> for the "
                 "others); for images a folder of class folders, or of train/ and val/ (or test/) "
                 "folders of class folders; for tensors a .pt/.pth/.npz file holding both splits, or a "
                 "folder of train/test tensor files (docs/data.md)");
  app.add_option("--limit", limit, "Use only the first N samples (after shuffling); 0 = all")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("--shuffle-seed", shuffle_seed,
                 "Shuffle the samples with this seed before --limit (0 = file order)")
      ->capture_default_str();
  const std::string images = "Images: ";
  image_size_option =
      app.add_option("--image-size", image_size,
                     images +
                         "model input size H or HxW: images are resized (shorter side "
                         "--resize) and centre-cropped to it (default: the checkpoint's)")
          ->type_name("H[xW]");
  channels_option = app.add_option("--image-channels", image_channels,
                                   images +
                                       "1 (luminance, ITU-R 601) or 3 (RGB); default: the "
                                       "checkpoint's, else 3")
                        ->check(CLI::IsMember({1, 3}));
  resize_option = app.add_option("--resize", resize,
                                 images +
                                     "shorter side after resizing, before the centre crop "
                                     "(default 0 = max(H, W))")
                      ->check(CLI::NonNegativeNumber);
  mean_option = app.add_option("--mean", mean,
                               images +
                                   "per-channel mean to subtract, pixel units [0,1], "
                                   "comma-separated (default: computed on the train split, "
                                   "or the checkpoint's)")
                    ->delimiter(',')
                    ->type_name("M[,M,M]");
  std_option = app.add_option("--std", stddev,
                              images +
                                  "per-channel std to divide by (default: computed on the "
                                  "train split, or the checkpoint's)")
                   ->delimiter(',')
                   ->type_name("S[,S,S]");
  app.add_flag("--skip-bad-images", skip_bad,
               images +
                   "leave unreadable files out (counted and listed on stderr) instead of "
                   "failing on the first");
  app.add_flag("--no-image-cache", no_image_cache,
               images +
                   "decode every run: no decoded-image cache in memory or on disk "
                   "($QUELL_CACHE_DIR, else $XDG_CACHE_HOME/quell, else ~/.cache/quell)");
}

void add_metric_option(CLI::App& cmd, std::string& metric, bool search) {
  cmd.add_option("--metric", metric,
                 search ? "What the search maximises and the report shows: accuracy, top5 (any "
                          "topK) or token-accuracy (default: accuracy for class ids, "
                          "token-accuracy for ids per position; docs/walk.md)"
                        : "What is measured: accuracy, top5 (any topK), token-accuracy, "
                          "cross-entropy, perplexity, mse, relative-mse (default: accuracy for "
                          "class ids, perplexity for ids per position, mse for real targets; "
                          "docs/walk.md)")
      ->check([](const std::string& v) {
        try {
          (void)Metric::parse(v);
          return std::string();
        } catch (const std::exception& e) {
          return std::string(e.what());
        }
      });
}

void GeometryArgs::add(CLI::App& app) {
  app.add_option("--dataset", dataset,
                 "Input geometry of this dataset (fashion-mnist, mnist: 1x28x28; cifar10/100: "
                 "3x32x32; images: give all of the overrides below); no data is read")
      ->check(CLI::IsMember(dataset_names()))
      ->capture_default_str();
  app.add_option("--channels", channels, "Override input channels");
  app.add_option("--height", height, "Override input height");
  app.add_option("--width", width, "Override input width");
  app.add_option("--classes", classes, "Override number of classes");
  app.add_option("--input-shape", input_shape,
                 "Any other input per sample, e.g. 64 (tokens) or 49x40 (frames x features), "
                 "for imported models (replaces --dataset's geometry)")
      ->type_name("DxD...");
  app.add_option("--input-dtype", input_dtype, "Input dtype with --input-shape")
      ->check(CLI::IsMember({"float32", "int64"}))
      ->capture_default_str();
}

ModelSpec GeometryArgs::spec(const std::string& model) const {
  if (dataset == "images" && (channels == 0 || height == 0 || width == 0 || classes == 0)) {
    throw std::invalid_argument(
        "--dataset images has no fixed geometry: give --channels, --height, --width and "
        "--classes");
  }
  ModelSpec spec = spec_for_geometry(model, dataset == "tensors" ? "fashion-mnist" : dataset,
                                     channels, height, width, classes);
  if (dataset == "tensors" && input_shape.empty()) {
    throw std::invalid_argument("--dataset tensors has no fixed geometry: give --input-shape");
  }
  if (!input_shape.empty()) {
    spec.input_shape.clear();
    std::stringstream ss(input_shape);
    for (std::string d; std::getline(ss, d, 'x');) {
      int64_t v = 0;
      try {
        v = std::stoll(d);
      } catch (const std::exception&) {
        v = 0;
      }
      if (v < 1) throw std::invalid_argument("--input-shape " + input_shape + ": expected sizes >= 1 like 64 or 49x40");
      spec.input_shape.push_back(v);
    }
    spec.input_dtype = input_dtype;
    spec.in_channels = spec.height = spec.width = 0;
    if (!classes) spec.num_classes = 0;
  }
  return spec;
}

void DataArgs::add_for_checkpoint(CLI::App& app) {
  add(app);
  dataset_option
      ->description("Dataset (default: the one the checkpoint was trained on): " +
                    join(dataset_names()))
      ->default_str("");
}

void DataArgs::use_checkpoint_dataset(const CheckpointMeta& meta) {
  resolved_ = selection().resolve(meta, Split::kTrain);
  resolved_set_ = true;
}

DataSelection DataArgs::selection() const {
  DataSelection sel;
  DataOptions& o = sel.options;
  o.name = dataset;
  o.dir = data_dir;
  o.limit = limit;
  o.shuffle_seed = shuffle_seed;
  o.channels = image_channels;
  o.height = height;
  o.width = width;
  if (!image_size.empty()) {
    // "H" or "HxW", positive integers.
    const auto x = image_size.find('x');
    const auto parse = [&](const std::string& text) -> int64_t {
      size_t used = 0;
      long long v = 0;
      try {
        v = std::stoll(text, &used);
      } catch (const std::exception&) {
        used = 0;
      }
      if (used == 0 || used != text.size() || v <= 0) {
        throw std::invalid_argument("--image-size '" + image_size +
                                    "': expected H or HxW with positive integers, e.g. 224 or "
                                    "32x48");
      }
      return v;
    };
    o.height = parse(image_size.substr(0, x));
    o.width = x == std::string::npos ? o.height : parse(image_size.substr(x + 1));
  }
  o.resize = resize;
  o.mean = mean;
  o.stddev = stddev;
  o.skip_bad = skip_bad;
  o.image_cache = !no_image_cache;
  sel.dataset_set = dataset_option != nullptr && dataset_option->count() > 0;
  sel.size_set = image_size_option != nullptr && image_size_option->count() > 0;
  sel.channels_set = channels_option != nullptr && channels_option->count() > 0;
  sel.resize_set = resize_option != nullptr && resize_option->count() > 0;
  sel.normalisation_set = (mean_option != nullptr && mean_option->count() > 0) ||
                          (std_option != nullptr && std_option->count() > 0) || !mean.empty() ||
                          !stddev.empty();
  return sel;
}


DataOptions DataArgs::options(Split split) const {
  DataOptions o = resolved_set_ ? resolved_ : selection().options;
  o.split = split;
  return o;
}

void DataArgs::set_normalisation(const std::vector<double>& m, const std::vector<double>& s) {
  mean = m;
  stddev = s;
  if (resolved_set_) {
    resolved_.mean = m;
    resolved_.stddev = s;
  }
}

Dataset DataArgs::load(Split split) const { return load_dataset(options(split)); }

void NoiseArgs::add(CLI::App& app) {
  app.add_option(
         "--noise", noise,
         "Noise rule SITES=COMPONENT[+COMPONENT...], repeatable. SITES: all | names, "
         "indices, ranges a-b, comma-separated. COMPONENT: KIND:SIGMA[:OPTION...] with "
         "KIND add|mul|muladd|addmul (mixed: A/r), OPTIONS static|dynamic|aging, "
         "rel=std|range, age=T, ref=T0, nu=V, per=channel (static/aging: one deviation per channel). Example: 'all=add:0.1:rel=std+mul:0.05:static'")
      ->type_name("RULE");
  app.add_option("--adc", adc, "ADC quantisation rule SITES=BITS, repeatable (needs calibration)")
      ->type_name("RULE");
  app.add_option("--repeat", repeat,
                 "Multi-execution rule SITES=K: average K noisy copies at those sites, repeatable")
      ->type_name("RULE");
  app.add_option("--weight-noise", weight_noise,
                 "Noise on conv/linear weights per chip: SIGMA[:abs|:range|:mul] (default "
                 "additive, relative to the layer's max |w|)")
      ->type_name("SPEC");
  add_device(app);
  app.add_option("--noise-config", config_file,
                 "JSON noise configuration (see docs/noise.md); --noise/--adc/--repeat rules "
                 "apply on top of it")
      ->check(CLI::ExistingFile);
  auto* seed_opt =
      app.add_option("--noise-seed", seed, "Seed of all noise draws (overrides the config file's)")
          ->capture_default_str();
  // Whether the seed was given is known only after parsing.
  seed_opt->each([this](const std::string&) { seed_given = true; });
}

void NoiseArgs::add_device(CLI::App& app) {
  app.add_option("--device-model", device_model,
                 "Analog layers' memory technology: ideal | pcm | reram | a table file "
                 ".json/.csv (docs/devices.md)")
      ->type_name("MODEL");
  app.add_option("--device-layers", device_layers,
                 "Which analog layers (conv, linear, weight matmul) sit on device tiles: all | "
                 "names, indices, ranges (default all)")
      ->type_name("SITES");
  app.add_option("--tile", tile,
                 "Tile I/O of the analog layers: ideal | aihwkit | dac=B:adc=B:out_bound=X:"
                 "out_noise=S:inp_bound=X:nm=on|off:bm=on|off:rows=R:cols=C (on top of ideal or "
                 "a preset)")
      ->type_name("SPEC");
  app.add_option("--g-max", g_max, "Conductance max|w| maps to, in uS (pcm 25, reram 40)")
      ->check(CLI::PositiveNumber);
  app.add_option("--mapping", mapping,
                 "Weight-to-conductance scale per layer or per output channel")
      ->check(CLI::IsMember({"layer", "channel"}));
  app.add_option("--time", time,
                 "Time since programming: seconds or a number with s, min, h, d, w, mo, y "
                 "(default 0)")
      ->type_name("DURATION");
  app.add_option("--read-noise", read_noise,
                 "Device 1/f read noise drawn once per chip and time (time, as aihwkit) or "
                 "afresh for every evaluation draw (draw)")
      ->check(CLI::IsMember({"time", "draw"}));
  app.add_option("--drift-compensation", compensation,
                 compensation_both_allowed
                     ? "Global drift compensation per layer: on | off | both (every time twice)"
                     : "Global drift compensation per layer: on | off")
      ->type_name("on|off");
}

void NoiseArgs::apply_device(DeviceConfig& d, const std::vector<std::string>& site_names) const {
  if (!device_model.empty()) d.model = DeviceModel::parse(device_model);
  if (g_max > 0.0) d.model.g_max = g_max;
  if (!device_layers.empty()) {
    d.all_layers = device_layers == "all";
    d.layers = d.all_layers ? std::vector<int>{} : select_sites(device_layers, site_names);
  }
  if (!tile.empty()) d.tile = TileIO::parse(tile);
  if (!mapping.empty()) d.mapping = mapping;
  if (!read_noise.empty()) d.read_per_draw = read_noise == "draw";
  if (!time.empty()) d.time = parse_duration(time);
  if (!compensation.empty()) {
    if (compensation == "on" || compensation == "off") {
      d.compensation = compensation == "on";
    } else if (!(compensation == "both" && compensation_both_allowed)) {
      throw std::invalid_argument("--drift-compensation: '" + compensation + "' is not " +
                                  (compensation_both_allowed ? "on, off or both" : "on or off"));
    }
  }
  d.validate();
}

NoiseConfig NoiseArgs::build(const std::vector<std::string>& site_names) const {
  NoiseConfig base;
  if (!config_file.empty()) {
    std::ifstream in(config_file);
    Json j;
    try {
      j = Json::parse(in);
    } catch (const std::exception& e) {
      throw std::runtime_error(config_file + ": not valid JSON (" + e.what() + ")");
    }
    try {
      base = noise_config_from_json(j, site_names);
    } catch (const std::exception& e) {
      throw std::runtime_error(config_file + ": " + e.what());
    }
  }
  apply_noise_rules(base, noise, adc, repeat, site_names);
  if (!weight_noise.empty()) base.weight = WeightNoise::parse(weight_noise);
  apply_device(base.device, site_names);
  if (config_file.empty() || seed_given) base.seed = seed;
  return base;
}

void RuntimeArgs::add(CLI::App& app) {
  app.add_option("--threads", threads, "Threads for LibTorch (0 = all cores)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("--device", device, "Device: cpu or cuda[:N]")->capture_default_str();
}

void RuntimeArgs::apply() const {
  // Ranks sharing a machine share its cores (all of them would oversubscribe it).
  set_threads(threads > 0 || dist::size() == 1
                  ? threads
                  : std::max(1, static_cast<int>(std::thread::hardware_concurrency()) /
                                    dist::local_size()));
  (void)torch_device();
}

torch::Device RuntimeArgs::torch_device() const {
  if (device != "cpu" && device.rfind("cuda", 0) != 0) {
    throw std::invalid_argument("unknown device '" + device + "' (known: cpu, cuda, cuda:N)");
  }
  torch::Device d(device);
  if (d.is_cuda() && !torch::cuda::is_available()) {
    throw std::invalid_argument("device '" + device + "' requested but this LibTorch has no CUDA");
  }
  return d;
}

namespace {
// Evaluations without a loss (sweeps) leave it at 0: show it only when there is one.
std::string loss_str(const Progress& p) {
  if (p.loss == 0.0) return "";
  char buf[32];
  std::snprintf(buf, sizeof buf, "loss %.4f ", p.loss);
  return buf;
}
}  // namespace

ProgressFn progress_bar(const std::string& label) {
  const bool tty = ::isatty(2);
  auto start =
      std::make_shared<std::chrono::steady_clock::time_point>(std::chrono::steady_clock::now());
  auto last_pct = std::make_shared<int>(-1);
  return [=](const Progress& p) {
    const double frac = p.total > 0 ? static_cast<double>(p.done) / p.total : 1.0;
    const double elapsed =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - *start).count();
    const double eta = frac > 0 ? elapsed * (1.0 - frac) / frac : 0.0;
    char line[256];
    if (tty) {
      const int width = 30;
      const int filled = static_cast<int>(frac * width);
      std::string bar(filled, '#');
      bar += std::string(width - filled, '.');
      std::snprintf(line, sizeof line, "\r%s %s [%s] %3.0f%% %s%s %.4g ETA %5.0fs ",
                    label.c_str(), p.what.c_str(), bar.c_str(), 100 * frac, loss_str(p).c_str(),
                    p.value_label.c_str(), p.accuracy, eta);
      std::fputs(line, stderr);
      if (p.done >= p.total) std::fputs("\n", stderr);
    } else {
      const int pct = static_cast<int>(frac * 10) * 10;  // a plain line every 10%
      if (pct == *last_pct && p.done < p.total) return;
      *last_pct = pct;
      std::snprintf(line, sizeof line, "%s %s %3d%% %s%s %.4g elapsed %.0fs ETA %.0fs\n",
                    label.c_str(), p.what.c_str(), pct, loss_str(p).c_str(),
                    p.value_label.c_str(), p.accuracy, elapsed, eta);
      std::fputs(line, stderr);
    }
    std::fflush(stderr);
  };
}

void check_writable(const std::string& path) {
  if (path.empty() || path == "-") return;
  if (std::filesystem::is_directory(path)) {
    throw std::runtime_error(path + ": is a directory, expected a file path");
  }
  const auto slash = path.find_last_of('/');
  const std::string dir =
      slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
  if (::access(dir.c_str(), W_OK) != 0) {
    const int err = errno;
    throw std::runtime_error(path + ": cannot write here: directory '" + dir +
                             "' does not exist or is not writable (" + std::strerror(err) + ")");
  }
}

void emit(const std::string& path, const std::string& content) {
  if (path == "-") {
    std::cout << content << std::flush;
  } else {
    write_file_atomic(path, content);
  }
}

}  // namespace quell::cli

namespace quell::cli {
PlotFormats parse_figure_formats(const std::string& text) {
  PlotFormats formats{false, false};
  std::stringstream ss(text);
  for (std::string t; std::getline(ss, t, ',');) {
    if (t == "png") {
      formats.png = true;
    } else if (t == "svg") {
      formats.svg = true;
    } else if (t != "none") {
      throw std::invalid_argument("--figures '" + text + "': expected png, svg or none");
    }
  }
  return formats;
}

Model load_checked(const std::string& checkpoint, const std::string& model_name,
                   CheckpointMeta* meta, const DataArgs* data, const GeometryArgs* geometry) {
  LoadOptions o;
  o.expected_model = model_name;
  if (data) {
    o.import_data = data->options(Split::kTrain);
  } else if (geometry) {
    o.import_spec = geometry->spec(checkpoint);
  }
  try {
    return load_model(checkpoint, meta, o);
  } catch (const std::invalid_argument&) {
    if (data || geometry || !is_torchscript_model(checkpoint)) throw;
    throw std::invalid_argument(checkpoint +
                                ": a TorchScript model, not a quell checkpoint; import it "
                                "with: quell train --model " + checkpoint +
                                " --epochs 0 --out CHECKPOINT");
  }
}

StudyMonitor cli_monitor() {
  StudyMonitor m;
  if (!dist::is_root()) return m;
  m.progress = [](const std::string& label) { return progress_bar(label); };
  m.message = [](const std::string& line) { std::cout << line << std::endl; };
  m.note = [](const std::string& line) { std::cerr << line << "\n"; };
  return m;
}
}  // namespace quell::cli
