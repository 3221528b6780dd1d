// The demo's lenet5-bn checkpoint, shared by the benchmarks that time it.
#pragma once

#include <string>

#include "quell/models.h"

namespace quell::bench {

/// Loads `checkpoint`, or, when empty, runs/demo/lenet5-bn.pt of the source tree, training it
/// first (5 epochs on Fashion-MNIST, as scripts/demo.sh does) if it does not exist.
Model demo_lenet5_bn(const std::string& checkpoint);

}  // namespace quell::bench
