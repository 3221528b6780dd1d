// Datasets from tensors in memory (a Python caller's, or a program's own).
#include <cmath>
#include <stdexcept>

#include "quell/data.h"

namespace quell {
namespace {

std::string shape_text(const torch::Tensor& t) {
  std::string s = "[";
  for (int64_t i = 0; i < t.dim(); ++i) s += (i ? ", " : "") + std::to_string(t.size(i));
  return s + "]";
}

}  // namespace

Dataset dataset_from_tensors(torch::Tensor images, torch::Tensor labels, int64_t num_classes,
                             const std::string& name) {
  if (!images.defined() || !labels.defined()) {
    throw std::invalid_argument("dataset '" + name + "': inputs and targets are both needed");
  }
  if (images.dim() != 4) {
    throw std::invalid_argument("dataset '" + name + "': inputs must be [N, C, H, W], got " +
                                shape_text(images));
  }
  if (!images.is_floating_point()) {
    throw std::invalid_argument("dataset '" + name + "': inputs must be floating point, got " +
                                std::string(c10::toString(images.scalar_type())));
  }
  if (labels.dim() != 1 || labels.size(0) != images.size(0)) {
    throw std::invalid_argument("dataset '" + name + "': targets must be [N] with N = " +
                                std::to_string(images.size(0)) + " (the inputs'), got " +
                                shape_text(labels));
  }
  if (labels.is_floating_point() || labels.is_complex() ||
      labels.scalar_type() == torch::kBool) {
    throw std::invalid_argument("dataset '" + name + "': targets must be integer class ids, got " +
                                std::string(c10::toString(labels.scalar_type())));
  }
  if (images.size(0) == 0) throw std::invalid_argument("dataset '" + name + "': no samples");
  if (num_classes < 0) {
    throw std::invalid_argument("dataset '" + name + "': num_classes must be >= 0, got " +
                                std::to_string(num_classes));
  }
  Dataset d;
  d.name = name;
  // No copy when the tensors are already float32 / int64, contiguous, on the CPU.
  d.images = images.to(torch::kCPU).to(torch::kFloat).contiguous();
  d.labels = labels.to(torch::kCPU).to(torch::kLong).contiguous();
  if (!torch::isfinite(d.images).all().item<bool>()) {
    throw std::invalid_argument("dataset '" + name + "': inputs hold NaN or infinite values");
  }
  const int64_t lo = d.labels.min().item<int64_t>(), hi = d.labels.max().item<int64_t>();
  if (num_classes == 0) num_classes = hi + 1;
  if (lo < 0 || hi >= num_classes) {
    throw std::invalid_argument("dataset '" + name + "': targets must be class ids in [0, " +
                                std::to_string(num_classes) + "), got values in [" +
                                std::to_string(lo) + ", " + std::to_string(hi) + "]");
  }
  d.num_classes = num_classes;
  const int64_t c = d.images.size(1);
  d.mean.assign(static_cast<size_t>(c), 0.0);  // as given: no normalisation applied
  d.stddev.assign(static_cast<size_t>(c), 1.0);
  return d;
}

}  // namespace quell
