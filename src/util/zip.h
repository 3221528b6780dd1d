// Zip archives (internal): the reader behind .npz and torch.save files, and the integrity check
// quell runs on its checkpoints and TorchScript archives before LibTorch parses them. LibTorch's
// reader checks no CRC, and its TorchScript importer crashes on some corrupt code (a bit flip in
// `__parameters__` made it dereference a wild pointer), so a damaged file must be refused first.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace quell {

/// The bytes of a file read into memory, without a copy.
struct ByteView {
  const uint8_t* data;
  size_t length;
  size_t size() const { return length; }
  const uint8_t& operator[](size_t i) const { return data[i]; }
  const uint8_t* begin() const { return data; }
};

/// Every member's headers and bounds are checked; the members `want` accepts (all without it)
/// are also inflated, CRC-checked and returned, in the archive's order. With `verify_all` the
/// other members are inflated and CRC-checked too, and dropped. Errors: std::runtime_error
/// "WHERE: what", one line.
std::vector<std::pair<std::string, std::vector<uint8_t>>> read_zip(
    ByteView z, const std::string& where,
    const std::function<bool(const std::string&)>& want = nullptr, bool verify_all = false);

/// Checks every member's headers, bounds and CRC-32 (stored members in place, without a copy).
void verify_zip(ByteView z, const std::string& where);

}  // namespace quell
