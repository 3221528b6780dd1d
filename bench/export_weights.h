// Exports a quell model's parameters and buffers for a framework-neutral peer (bench/walk_peer.py).
#pragma once

#include <string>

#include "quell/models.h"

namespace quell::bench {

/// Writes into `dir` (created if missing):
///   weights.bin  every tensor of model.named_parameters() then model.named_buffers(), in that
///                order, as float32 little-endian, contiguous, concatenated without padding;
///   weights.json {"format": "quell-weights", "version": 1, "model": spec json,
///                 "byte_order": "little", "total_bytes": N,
///                 "tensors": [{"name", "kind" ("parameter"|"buffer"), "shape", "offset" (bytes),
///                              "numel", "dtype": "float32", "source_dtype"}...]}.
/// Integer buffers (BatchNorm's num_batches_tracked, int64) are stored as float32 too, with
/// source_dtype "int64". Both files are written atomically. Throws std::runtime_error naming the
/// file on failure.
void export_weights(ModelImpl& model, const std::string& dir);

}  // namespace quell::bench
