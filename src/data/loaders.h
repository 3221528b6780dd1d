// The dataset loaders behind the registry (data/registry.cpp). Internal to the library.
#pragma once

#include <string>
#include <vector>

#include "quell/data.h"

namespace quell::detail {

/// The fixed-format datasets (IDX and CIFAR binary) in registry order.
std::vector<std::string> fixed_format_dataset_names();
/// Loads a fixed-format dataset (opts.name one of fixed_format_dataset_names()).
Dataset load_fixed_format_dataset(const DataOptions& opts);

}  // namespace quell::detail
