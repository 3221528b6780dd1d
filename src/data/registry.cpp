// The dataset registry: load_dataset dispatches by name to the fixed-format readers
// (data/readers.cpp), the image-folder reader (data/image_folder.cpp), the tensor-file reader
// (data/tensors.cpp) and the loaders a program
// registers. The readers know nothing of each other.
#include <map>
#include <mutex>
#include <stdexcept>

#include "data/loaders.h"
#include "quell/data.h"
#include "quell/image_folder.h"

namespace quell {
namespace {

struct Registered {
  std::vector<std::string> order;
  std::map<std::string, DatasetLoader> loaders;
};

std::mutex& registry_mutex() {
  static std::mutex m;
  return m;
}

Registered& registered() {
  static Registered r = [] {
    Registered init;
    for (const auto& name : detail::fixed_format_dataset_names()) {
      init.order.push_back(name);
      init.loaders[name] = detail::load_fixed_format_dataset;
    }
    init.order.emplace_back("images");
    init.loaders["images"] = load_image_folder;
    init.order.emplace_back("tensors");
    init.loaders["tensors"] = read_tensor_dataset;
    return init;
  }();
  return r;
}

}  // namespace

void register_dataset(const std::string& name, DatasetLoader loader) {
  if (name.empty()) throw std::invalid_argument("register_dataset: empty name");
  if (!loader) throw std::invalid_argument("register_dataset '" + name + "': no loader");
  std::lock_guard<std::mutex> lock(registry_mutex());
  Registered& r = registered();
  if (r.loaders.count(name) == 0) r.order.push_back(name);
  r.loaders[name] = std::move(loader);
}

std::vector<std::string> dataset_names() {
  std::lock_guard<std::mutex> lock(registry_mutex());
  return registered().order;
}

Dataset load_dataset(const DataOptions& opts) {
  if (opts.limit < 0) {
    throw std::runtime_error("limit must be >= 0 (0 = all samples), got " +
                             std::to_string(opts.limit));
  }
  DatasetLoader loader;
  {
    std::lock_guard<std::mutex> lock(registry_mutex());
    const Registered& r = registered();
    const auto it = r.loaders.find(opts.name);
    if (it == r.loaders.end()) {
      std::string known;
      for (const auto& n : r.order) known += (known.empty() ? "" : ", ") + n;
      throw std::runtime_error("unknown dataset '" + opts.name + "'; known datasets: " + known);
    }
    loader = it->second;
  }
  return loader(opts);
}

}  // namespace quell
