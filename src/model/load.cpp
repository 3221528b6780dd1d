// Models from checkpoints or TorchScript files, the data a checkpoint was trained on.
#include "quell/load.h"
#include "quell/metric.h"

#include <cstdio>
#include <fstream>
#include <stdexcept>

#include "quell/io.h"
#include "quell/report.h"
#include "quell/script.h"
#include "quell/train.h"

namespace quell {

Model load_model(const std::string& path, CheckpointMeta* meta, const LoadOptions& opts) {
  // A quell checkpoint is read once; only a file that is not one is probed for TorchScript.
  Model model{nullptr};
  try {
    model = load_checkpoint(path, meta);
  } catch (const std::runtime_error&) {
    if (!is_torchscript_model(path)) throw;
  }
  if (model) {
    if (!opts.expected_model.empty() && opts.expected_model != model->spec().name) {
      throw std::invalid_argument(path + ": checkpoint holds model '" + model->spec().name +
                                  "' but model '" + opts.expected_model + "' was expected");
    }
    return model;
  }
  if (!opts.expected_model.empty() && opts.expected_model != path) {
    throw std::invalid_argument(path + ": a TorchScript model, but model '" +
                                opts.expected_model + "' was expected");
  }
  CheckpointMeta m;
  if (opts.import_data) {
    DataOptions train_options = *opts.import_data;
    train_options.split = Split::kTrain;
    const Dataset train = load_dataset(train_options);
    ModelSpec spec = ModelSpec::for_dataset(path, train);
    // Class ids of images must match the model's classes; other tasks take the model's outputs
    // (a vocabulary may hold tokens the data never uses), checked against the data below.
    if (!spec.image_input() || train.target_kind() != TargetKind::kClass) spec.num_classes = 0;
    model = load_script_model(spec);
    check_model_fits(*model, train, path);
    model->calibrate(train.inputs, TrainOptions{}.calib_samples);
    m.dataset = train.name;
  } else if (opts.import_spec) {
    model = load_script_model(*opts.import_spec);
  } else {
    throw std::invalid_argument(path +
                                ": a TorchScript model, not a quell checkpoint; importing it "
                                "needs its data or its input geometry");
  }
  m.spec = model->spec();
  m.train_config = Json{{"imported", path}};
  m.provenance = provenance();
  if (meta) *meta = m;
  return model;
}

DataOptions DataSelection::resolve(const CheckpointMeta& meta, Split split) const {
  DataOptions o = options;
  o.split = split;
  if (!dataset_set && !meta.dataset.empty()) o.name = meta.dataset;
  if (o.name == "tensors" && o.dir.empty() && meta.data.is_object() &&
      meta.data.value("dataset", "") == "tensors" && meta.data.contains("dir")) {
    o.dir = meta.data.at("dir").get<std::string>();  // where the checkpoint's data was
  }
  if (o.name != "images") return o;
  // How the checkpoint's images were preprocessed; without a record (trained on another
  // dataset), at least its model's input geometry.
  DataOptions recorded;
  if (meta.data.is_object() && meta.data.value("dataset", "") == "images") {
    recorded.apply_preprocessing_json(meta.data);
  } else {
    recorded.channels = meta.spec.in_channels;
    recorded.height = meta.spec.height;
    recorded.width = meta.spec.width;
  }
  if (!size_set) {
    o.height = recorded.height;
    o.width = recorded.width;
  }
  if (!channels_set && recorded.channels > 0) o.channels = recorded.channels;
  if (!resize_set) o.resize = recorded.resize;
  if (!normalisation_set) {
    o.mean = recorded.mean;
    o.stddev = recorded.stddev;
  }
  return o;
}

void check_model_fits(const ModelSpec& spec, const Dataset& data, const std::string& what) {
  const auto shape = data.sample_shape();
  const bool integer_inputs = data.inputs.defined() && !data.inputs.is_floating_point();
  if (spec.image_input() && !integer_inputs && data.target_kind() == TargetKind::kClass) {
    if (shape != spec.sample_shape() || data.num_classes != spec.num_classes) {
      std::string s;
      for (int64_t d : shape) s += (s.empty() ? "" : "x") + std::to_string(d);
      throw std::invalid_argument(what + ": model expects " + spec.to_json().dump() +
                                  " but dataset " + data.name + " has samples " + s + " and " +
                                  std::to_string(data.num_classes) + " classes");
    }
    return;
  }
  ModelSpec given = spec;
  given.input_shape = shape;
  given.input_dtype = integer_inputs ? "int64" : "float32";
  if (shape != spec.sample_shape() || given.input_dtype != spec.input_dtype) {
    throw std::invalid_argument(what + ": model expects inputs " + spec.input_text() +
                                " per sample but dataset " + data.name + " has " +
                                given.input_text());
  }
  if (data.target_kind() != TargetKind::kReal && data.num_classes > spec.num_classes) {
    throw std::invalid_argument(what + ": model has " + std::to_string(spec.num_classes) +
                                " outputs per position but dataset " + data.name + " has " +
                                std::to_string(data.num_classes) + " classes");
  }
}

void check_model_fits(const ModelImpl& model, const Dataset& data, const std::string& what) {
  // The inputs first; when they fit, the output says more than a class count would.
  const bool integer_inputs = data.inputs.defined() && !data.inputs.is_floating_point();
  const bool inputs_fit = data.sample_shape() == model.spec().sample_shape() &&
                          integer_inputs == (model.spec().input_dtype == "int64");
  if (inputs_fit && !model.nodes().empty()) {
    check_output_fits(model.nodes().back().shape, data, what);
  }
  check_model_fits(model.spec(), data, what);
}

ModelSpec spec_for_geometry(const std::string& name, const std::string& dataset,
                            int64_t channels, int64_t height, int64_t width, int64_t classes) {
  if (dataset == "images" && (channels == 0 || height == 0 || width == 0 || classes == 0)) {
    throw std::invalid_argument(
        "dataset 'images' has no fixed geometry: give the channels, height, width and classes");
  }
  ModelSpec spec;
  spec.name = name;
  if (dataset == "cifar10" || dataset == "cifar100") {
    spec.in_channels = 3;
    spec.height = spec.width = 32;
    spec.num_classes = dataset == "cifar10" ? 10 : 100;
  }
  if (channels) spec.in_channels = channels;
  if (height) spec.height = height;
  if (width) spec.width = width;
  if (classes) spec.num_classes = classes;
  // An imported model knows its classes unless told.
  if (looks_like_model_file(name) && !classes) spec.num_classes = 0;
  return spec;
}

std::string file_digest(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(path + ": cannot read");
  uint64_t h = 1469598103934665603ULL;
  char buf[1 << 16];
  while (in) {
    in.read(buf, sizeof buf);
    for (std::streamsize i = 0; i < in.gcount(); ++i) {
      h = (h ^ static_cast<unsigned char>(buf[i])) * 1099511628211ULL;
    }
  }
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(h));
  return hex;
}

std::string tensor_digest(const std::vector<torch::Tensor>& tensors) {
  uint64_t h = 1469598103934665603ULL;
  for (const auto& t : tensors) {
    const torch::Tensor c = t.detach().to(torch::kCPU).contiguous();
    const auto* bytes = static_cast<const unsigned char*>(c.data_ptr());
    const size_t n = static_cast<size_t>(c.numel()) * c.element_size();
    for (size_t i = 0; i < n; ++i) h = (h ^ bytes[i]) * 1099511628211ULL;
  }
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(h));
  return hex;
}

Dataset slice_dataset(const Dataset& data, int64_t start, int64_t count) {
  Dataset s = data;
  s.inputs = data.inputs.narrow(0, start, count);
  s.targets = data.targets.narrow(0, start, count);
  return s;
}

}  // namespace quell
