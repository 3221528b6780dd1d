// Shared pieces of the quell subcommands: option groups, progress bar, output files.
#pragma once

#include <CLI/CLI.hpp>
#include <string>
#include <vector>

#include "quell/checkpoint.h"
#include "quell/data.h"
#include "quell/eval.h"
#include "quell/io.h"
#include "quell/load.h"
#include "quell/models.h"
#include "quell/plot.h"
#include "quell/progress.h"
#include "quell/report.h"

namespace quell::cli {

/// --dataset, --data-dir, --limit, --shuffle-seed, and for image folders --image-size,
/// --image-channels, --resize, --mean, --std, --skip-bad-images, --no-image-cache
struct DataArgs {
  std::string dataset = "fashion-mnist";
  std::string data_dir;
  int64_t limit = 0;
  uint64_t shuffle_seed = 0;
  std::string image_size;                 ///< "H" or "HxW"; empty = the checkpoint's input size
  int64_t image_channels = 3;             ///< 1 (luminance) or 3 (RGB)
  int64_t resize = 0;                     ///< shorter side before the centre crop; 0 = max(H, W)
  std::vector<double> mean;               ///< per channel; empty = computed on the train split
  std::vector<double> stddev;             ///< per channel; empty = computed on the train split
  bool skip_bad = false;                  ///< leave unreadable images out instead of failing
  bool no_image_cache = false;            ///< decode every time: no memory or disk cache
  int64_t height = 0, width = 0;          ///< from --image-size or the checkpoint
  CLI::Option* dataset_option = nullptr;  ///< to tell whether --dataset was given
  CLI::Option* image_size_option = nullptr;
  CLI::Option* channels_option = nullptr;
  CLI::Option* resize_option = nullptr;
  CLI::Option* mean_option = nullptr;
  CLI::Option* std_option = nullptr;
  void add(CLI::App& app);
  /// add(), with --dataset defaulting to the checkpoint's dataset (see use_checkpoint_dataset).
  void add_for_checkpoint(CLI::App& app);
  /// Takes the checkpoint's dataset unless --dataset was given; for image folders also its
  /// preprocessing unless given by flags (DataSelection::resolve).
  void use_checkpoint_dataset(const CheckpointMeta& meta);
  /// The flags as a library DataSelection (parses --image-size; records which were given).
  DataSelection selection() const;
  /// The options of `split`: the flags, after use_checkpoint_dataset the resolved ones.
  DataOptions options(Split split) const;
  Dataset load(Split split) const;
  /// Sets the normalisation (image folders: the train split's, for the test split).
  void set_normalisation(const std::vector<double>& m, const std::vector<double>& s);

 private:
  bool resolved_set_ = false;
  DataOptions resolved_;
};

/// --dataset (its input geometry), --channels, --height, --width, --classes: the geometry of a
/// registered model built without data (sites, cost).
struct GeometryArgs {
  std::string dataset = "fashion-mnist";
  int64_t channels = 0, height = 0, width = 0, classes = 0;
  std::string input_shape;              ///< "64" or "49x40": any input per sample
  std::string input_dtype = "float32";  ///< or int64 (token ids)
  void add(CLI::App& app);
  ModelSpec spec(const std::string& model) const;
};

/// --noise, --adc, --repeat, --weight-noise, --noise-config, --noise-seed
struct NoiseArgs {
  std::vector<std::string> noise, adc, repeat;
  std::string weight_noise;
  std::string config_file;
  // Devices (docs/devices.md); empty = not given (the config file's or the default).
  std::string device_model, device_layers, tile, mapping, time, compensation, read_noise;
  double g_max = 0.0;
  /// Whether "--drift-compensation both" is accepted (quell eval).
  bool compensation_both_allowed = false;
  uint64_t seed = 1;
  bool seed_given = false;
  void add(CLI::App& app);
  /// The device flags alone (--device-model, --device-layers, --tile, --g-max, --mapping,
  /// --time, --drift-compensation); add() adds them too.
  void add_device(CLI::App& app);
  /// Applies the device flags given to `d` (and validates it).
  void apply_device(DeviceConfig& d, const std::vector<std::string>& site_names) const;
  NoiseConfig build(const std::vector<std::string>& site_names) const;
};

/// --threads, --device: applied before a subcommand runs.
struct RuntimeArgs {
  int threads = 0;
  std::string device = "cpu";
  void add(CLI::App& app);
  void apply() const;  ///< sets torch's thread count (0 = all cores); validates the device
  torch::Device torch_device() const;
};

/// A progress callback drawing a bar on stderr when it is a terminal, plain lines otherwise.
ProgressFn progress_bar(const std::string& label);

/// The CLI's study monitor: progress bars and notes on stderr, messages on stdout; on rank 0
/// only under mpirun.
StudyMonitor cli_monitor();

/// Figure formats from "png,svg" | "png" | "svg" | "none"; throws naming the text otherwise.
PlotFormats parse_figure_formats(const std::string& text);

/// Throws if `path`'s directory does not exist, so a long run fails before it starts.
void check_writable(const std::string& path);

/// --metric: what the study measures (quell/metric.h), into `metric`; `search`: a study whose
/// searches maximise it (denoise, plan: accuracies only).
void add_metric_option(CLI::App& cmd, std::string& metric, bool search = false);

/// Writes `content` atomically to `path`, or to stdout when path is "-".
void emit(const std::string& path, const std::string& content);

}  // namespace quell::cli

namespace quell::cli {
// Each subcommand registers itself on the app; its callback runs the command.
void add_sites_command(CLI::App& app);
void add_train_command(CLI::App& app);
void add_eval_command(CLI::App& app);
void add_walk_command(CLI::App& app);
void add_denoise_command(CLI::App& app);
void add_inspect_command(CLI::App& app);
void add_cost_command(CLI::App& app);
void add_plan_command(CLI::App& app);
/// Loads a checkpoint; if `model_name` is non-empty it must match the checkpoint's model.
/// A TorchScript model in place of the checkpoint is imported on the spot (docs/models.md):
/// with `data`, its geometry and classes come from the training split, which also calibrates
/// its sites (the meta records the import); without data, from `geometry` (uncalibrated);
/// with neither, it is an error that says how to import it.
Model load_checked(const std::string& checkpoint, const std::string& model_name,
                   CheckpointMeta* meta, const DataArgs* data = nullptr,
                   const GeometryArgs* geometry = nullptr);
}  // namespace quell::cli
