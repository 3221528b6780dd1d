#include "export_weights.h"

#include <cstring>
#include <filesystem>
#include <stdexcept>

#include "quell/io.h"

namespace quell::bench {
namespace {

bool little_endian() {
  const uint32_t one = 1;
  unsigned char first = 0;
  std::memcpy(&first, &one, 1);
  return first == 1;
}

std::string dtype_name(const torch::Tensor& t) {
  switch (t.scalar_type()) {
    case torch::kFloat:
      return "float32";
    case torch::kDouble:
      return "float64";
    case torch::kLong:
      return "int64";
    case torch::kInt:
      return "int32";
    default:
      return std::string(c10::toString(t.scalar_type()));
  }
}

}  // namespace

void export_weights(ModelImpl& model, const std::string& dir) {
  if (!little_endian()) throw std::runtime_error("export_weights: big-endian hosts unsupported");
  torch::NoGradGuard no_grad;
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) throw std::runtime_error(dir + ": cannot create directory: " + ec.message());

  std::string blob;
  Json tensors = Json::array();
  auto add = [&](const std::string& name, const torch::Tensor& t, const char* kind) {
    const torch::Tensor f = t.detach().to(torch::kCPU, torch::kFloat).contiguous();
    const size_t bytes = static_cast<size_t>(f.numel()) * sizeof(float);
    tensors.push_back({{"name", name},
                       {"kind", kind},
                       {"shape", f.sizes().vec()},
                       {"numel", f.numel()},
                       {"offset", blob.size()},
                       {"dtype", "float32"},
                       {"source_dtype", dtype_name(t)}});
    blob.append(reinterpret_cast<const char*>(f.data_ptr<float>()), bytes);
  };
  for (const auto& p : model.named_parameters()) add(p.key(), p.value(), "parameter");
  for (const auto& b : model.named_buffers()) add(b.key(), b.value(), "buffer");

  const Json j{{"format", "quell-weights"},       {"version", 1},
               {"model", model.spec().to_json()}, {"byte_order", "little"},
               {"total_bytes", blob.size()},      {"tensors", tensors}};
  const std::string base = (std::filesystem::path(dir) / "weights").string();
  write_file_atomic(base + ".bin", blob);
  write_file_atomic(base + ".json", j.dump(2) + "\n");
}

}  // namespace quell::bench
