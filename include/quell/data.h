// Datasets: real file formats (IDX, CIFAR binary, image folders of JPEG/PNG files, tensor files
// written by torch.save or NumPy) and a synthetic generator that writes them.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "quell/io.h"

namespace quell {

/// What a dataset's targets are (quell/metric.h has the metrics of each).
enum class TargetKind {
  kClass,     ///< [N] int64 class ids in [0, num_classes)
  kSequence,  ///< [N, T] int64 ids per position (tokens) in [0, num_classes); negative = ignored
  kReal,      ///< [N, ...] float32 real values (regression)
};
const char* target_kind_name(TargetKind kind);

/// A dataset held in memory: inputs and targets, sample i being inputs[i] and targets[i].
struct Dataset {
  std::string name;       ///< registry name, e.g. "fashion-mnist"
  /// [N, ...]: images [N, C, H, W] float32 (normalised), features, audio frames [N, T, F]
  /// float32, or token ids [N, T] int64.
  torch::Tensor inputs;
  /// [N] int64 class ids, [N, T] int64 per-position ids, or float32 real values.
  torch::Tensor targets;
  /// Classes (the vocabulary for per-position ids) of integer targets; 0 for real targets.
  int64_t num_classes = 0;
  std::vector<double> mean;    ///< per-channel mean subtracted (in [0,1] pixel units)
  std::vector<double> stddev;  ///< per-channel std divided by
  /// Unreadable images left out (image folders with DataOptions::skip_bad), one
  /// "<path>: <problem>" each.
  std::vector<std::string> skipped;

  int64_t size() const { return targets.defined() ? targets.size(0) : 0; }
  /// Accuracy of guessing: 1 / num_classes (0 for real targets).
  double chance() const { return num_classes > 0 ? 1.0 / static_cast<double>(num_classes) : 0.0; }
  /// Shape of one input, e.g. {C, H, W} or {T}.
  std::vector<int64_t> sample_shape() const;
  /// What the targets are, from their dtype and shape.
  TargetKind target_kind() const;
};

enum class Split { kTrain, kTest };

/// Options for loading a dataset by name.
struct DataOptions {
  /// fashion-mnist | mnist | cifar10 | cifar100 | images | tensors (or a registered name)
  std::string name = "fashion-mnist";
  /// empty: default_data_dir(name). For "tensors": a tensor file holding both splits, or a
  /// folder of split files (read_tensor_dataset()).
  std::string dir;
  Split split = Split::kTrain;
  int64_t limit = 0;          ///< keep the first `limit` samples after shuffling; 0 = all
  uint64_t shuffle_seed = 0;  ///< 0 = keep file order; otherwise a seeded permutation
  bool normalise = true;      ///< subtract per-dataset mean, divide by std

  // Image folders only (name "images", see quell/image_folder.h); the fixed-format datasets
  // ignore these.
  int64_t channels = 0;        ///< 1 (luminance) or 3 (RGB); 0 = not set (an error for images)
  int64_t height = 0;          ///< model input height in pixels; 0 = not set (an error for images)
  int64_t width = 0;           ///< model input width in pixels; 0 = not set (an error for images)
  int64_t resize = 0;          ///< shorter side before the centre crop; 0 = max(height, width)
  std::vector<double> mean;    ///< per channel, [0,1] pixel units; empty = computed on train
  std::vector<double> stddev;  ///< per channel; empty = computed on the train split
  bool skip_bad = false;       ///< drop unreadable images (Dataset::skipped) instead of failing
  bool image_cache = true;     ///< keep decoded images in memory and in the disk cache

  /// The preprocessing of an image dataset, for a checkpoint: {"dataset": "images", "channels",
  /// "height", "width", "resize", "mean", "stddev"}; for tensor files {"dataset": "tensors",
  /// "dir": absolute path}. For other datasets {"dataset": name}.
  Json preprocessing_json() const;
  /// Sets name and the image fields present in `j` (a preprocessing_json()); others stay.
  /// Throws std::runtime_error naming the bad field if `j` is malformed.
  void apply_preprocessing_json(const Json& j);
};

/// Names of the datasets load_dataset() understands: the built-in ones, then those registered.
std::vector<std::string> dataset_names();

/// Loads a dataset for its options (opts.split, limit, shuffle seed, ...).
using DatasetLoader = std::function<Dataset(const DataOptions&)>;
/// Adds (or replaces) a named dataset: load_dataset() with that name calls `loader`. Thread-safe.
void register_dataset(const std::string& name, DatasetLoader loader);

/// Default directory of a dataset: $QUELL_DATA_DIR/<name> if QUELL_DATA_DIR is set, else for
/// fashion-mnist /usr/share/datasets/fashion-mnist, else ./data/<name>.
std::string default_data_dir(const std::string& name);

/// Loads a dataset. IDX datasets (mnist, fashion-mnist) read
/// {train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz] from `dir`; cifar10 reads
/// data_batch_{1..5}.bin / test_batch.bin; cifar100 reads train.bin / test.bin (fine labels);
/// images reads a folder of class folders of JPEG/PNG files (load_image_folder()).
/// Throws std::runtime_error naming the file and the problem on missing, truncated or
/// inconsistent files, or on an unknown name (listing the known ones).
Dataset load_dataset(const DataOptions& opts);

/// A dataset from tensors in memory. `inputs` [N, ...]: floating point (float32 is used without
/// a copy when contiguous on the CPU; other floating dtypes are converted) or integer token ids
/// (int64). `targets`: [N] integer class ids, [N, T] integer per-position ids (negative =
/// ignored), or floating real values [N, ...]; integer targets lie in [0, num_classes)
/// (0 = max + 1). The values are used as given (no normalisation). Throws
/// std::invalid_argument naming the dataset and the problem (shapes, dtypes, lengths, NaN or
/// infinite values, ids out of range).
Dataset dataset_from_tensors(torch::Tensor inputs, torch::Tensor targets,
                             int64_t num_classes = 0, const std::string& name = "tensors");

/// The tensors of a file by name: a torch.save file (.pt, .pth: a tensor, or tuples, lists
/// and dicts of tensors and numbers, flattened to dotted names: {"train": (x, y)} gives
/// "train.0", "train.1"), a NumPy .npy file (one array, named by the file's stem) or .npz
/// archive (stored or deflated). Read without Python. Throws std::runtime_error naming the file
/// and the problem (missing, not such a file, truncated, unsupported dtype or layout).
std::map<std::string, torch::Tensor> read_tensor_file(const std::string& path);
/// Writes a NumPy .npy file (little-endian, C order) of a CPU tensor of a NumPy dtype.
void write_npy(const std::string& path, const torch::Tensor& t);
/// Writes an uncompressed NumPy .npz archive of the named tensors.
void write_npz(const std::string& path, const std::map<std::string, torch::Tensor>& tensors);

/// The "tensors" dataset (docs/data.md, "Tensor files"): `opts.dir` is either one file (.pt,
/// .pth or .npz) holding both splits, e.g. {"train": (x, y), "test": (x, y)} or keys
/// x_train / y_train / x_test / y_test, or a folder with train.{pt,pth,npz} and
/// test.{pt,pth,npz} (each (x, y) or {inputs, targets}) or {train,test}_{inputs,targets}.npy.
/// Inputs and targets are named inputs | x | 0 and targets | y | labels | 1 (with the split
/// as prefix, "train." / "train_", or suffix, "_train"); an optional num_classes entry (a
/// number) sets the classes of integer targets. Validated as dataset_from_tensors();
/// opts.limit and opts.shuffle_seed apply; no normalisation.
Dataset read_tensor_dataset(const DataOptions& opts);

/// Reads a whole file, transparently gunzipping it if it starts with the gzip magic.
std::vector<uint8_t> read_file_maybe_gz(const std::string& path);

/// IDX readers. Validate magic (0x00000803 images / 0x00000801 labels), dims, and that the
/// payload size matches the header exactly.
torch::Tensor read_idx_images(const std::string& path);  ///< -> [N, 1, H, W] uint8
torch::Tensor read_idx_labels(const std::string& path);  ///< -> [N] int64

/// CIFAR binary: records of <label bytes><3072 pixel bytes>. `label_bytes` is 1 (CIFAR-10) or 2
/// (CIFAR-100: coarse, fine; the fine label is used). Returns images [N,3,32,32] uint8 and labels.
std::pair<torch::Tensor, torch::Tensor> read_cifar_bin(const std::string& path, int label_bytes,
                                                       int64_t num_classes);

/// Writers of the same formats (used by tests and the synthetic generator).
void write_idx_images(const std::string& path, const torch::Tensor& images_u8, bool gzip);
void write_idx_labels(const std::string& path, const torch::Tensor& labels, bool gzip);
void write_cifar_bin(const std::string& path, const torch::Tensor& images_u8,
                     const torch::Tensor& labels, int label_bytes);

/// Writes a small learnable synthetic dataset in the IDX layout of Fashion-MNIST into `dir`
/// (train: n_train, test: n_test samples, 28x28, 10 classes; each class is a distinct blob
/// pattern plus pixel noise, so a small network learns it to high accuracy in one epoch).
void write_synthetic_idx(const std::string& dir, int64_t n_train, int64_t n_test, uint64_t seed,
                         bool gzip = true);

/// Per-dataset normalisation constants (mean, std per channel, pixel units in [0,1]). Not
/// defined for "images" (computed from the data or given): throws.
std::pair<std::vector<double>, std::vector<double>> dataset_normalisation(const std::string& name);

}  // namespace quell
