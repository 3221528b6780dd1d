// Imported models: a PyTorch network exported as TorchScript (torch.jit.script or
// torch.jit.trace) becomes a quell Model whose sites are discovered from its graph
// (docs/models.md, "Imported models"). The sites run through the same ModelImpl as the
// built-in models, so noise, repetitions, capture, denoisers and gradients are shared.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "quell/models.h"

namespace quell {

/// An op of an imported graph after which quell places no site, listed by `quell sites`.
struct UnplacedOp {
  std::string op;      ///< e.g. "aten::mean"
  std::string where;   ///< module path, e.g. "block.attn" ("" at the top level)
  std::string reason;  ///< e.g. "not a site kind", "inside control flow"
};

/// What an imported model keeps besides its nodes.
struct ScriptInfo {
  std::string source;   ///< the file it was imported from, as given
  std::string archive;  ///< the TorchScript archive's bytes (checkpoints embed them)
  std::vector<UnplacedOp> unplaced;
};

/// True if a --model value names a file rather than a registered model: it contains a '/' or
/// ends in .pt, .pth, .ts, .jit or .zip.
bool looks_like_model_file(const std::string& name);

/// True if `path` is a TorchScript archive with a forward method (a quell checkpoint is not).
bool is_torchscript_model(const std::string& path);

/// Imports the TorchScript file `spec.name` with the input geometry of `spec` (channels,
/// height, width). spec.num_classes = 0 takes the class count from the model's output;
/// otherwise it must match. Throws std::runtime_error naming the file and the problem: not a
/// TorchScript archive, a forward that does not take one tensor and return one tensor, an op
/// the interpreter cannot run, an input geometry the model rejects.
Model load_script_model(ModelSpec spec);
/// The same from an archive already in memory (a checkpoint's); `source` names it in errors.
Model load_script_model(ModelSpec spec, std::string archive, const std::string& source);

}  // namespace quell
