// Zip archives as NumPy (.npz) and LibTorch (torch.save, TorchScript, quell checkpoints) write
// them: stored and deflated members, zip64 sizes.
#include "util/zip.h"

#include <zlib.h>

#include <algorithm>
#include <stdexcept>

#include "util/text.h"

namespace quell {
namespace {

uint32_t le32(const uint8_t* p) {
  return p[0] | (uint32_t{p[1]} << 8) | (uint32_t{p[2]} << 16) | (uint32_t{p[3]} << 24);
}
uint16_t le16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
uint64_t le64(const uint8_t* p) { return le32(p) | (uint64_t{le32(p + 4)} << 32); }

}  // namespace

std::vector<std::pair<std::string, std::vector<uint8_t>>> read_zip(
    ByteView z, const std::string& where, const std::function<bool(const std::string&)>& want,
    bool verify_all) {
  auto bad = [&](const std::string& what) -> std::runtime_error {
    return std::runtime_error(where + ": " + what);
  };
  if (z.size() < 22) throw bad("not a zip archive (too short)");
  size_t eocd = std::string::npos;
  const size_t stop = z.size() > 65557 ? z.size() - 65557 : 0;
  for (size_t i = z.size() - 22 + 1; i-- > stop;) {
    if (le32(&z[i]) == 0x06054b50) {
      eocd = i;
      break;
    }
  }
  if (eocd == std::string::npos) throw bad("not a zip archive (no end of central directory)");
  uint64_t entries = le16(&z[eocd + 10]);
  uint64_t cd_offset = le32(&z[eocd + 16]);
  if (cd_offset == 0xffffffffu || entries == 0xffff) {
    // zip64 end of central directory locator just before the EOCD.
    if (eocd < 20 || le32(&z[eocd - 20]) != 0x07064b50) throw bad("truncated zip64 archive");
    const uint64_t z64 = le64(&z[eocd - 20 + 8]);
    if (z.size() < 56 || z64 > z.size() - 56 || le32(&z[z64]) != 0x06064b50) {
      throw bad("corrupt zip64 directory");
    }
    entries = le64(&z[z64 + 32]);
    cd_offset = le64(&z[z64 + 48]);
  }
  std::vector<std::pair<std::string, std::vector<uint8_t>>> out;
  size_t p = cd_offset;
  for (uint64_t e = 0; e < entries; ++e) {
    if (p > z.size() || z.size() - p < 46 || le32(&z[p]) != 0x02014b50) {
      throw bad("corrupt zip central directory");
    }
    const uint16_t method = le16(&z[p + 10]);
    uint64_t csize = le32(&z[p + 20]), usize = le32(&z[p + 24]);
    const uint32_t crc = le32(&z[p + 16]);
    const size_t name_len = le16(&z[p + 28]), extra_len = le16(&z[p + 30]),
                 comment_len = le16(&z[p + 32]);
    uint64_t local = le32(&z[p + 42]);
    if (z.size() - p - 46 < name_len + extra_len + comment_len) throw bad("corrupt zip central directory");
    std::string name(reinterpret_cast<const char*>(&z[p + 46]), name_len);
    const std::string shown = text::printable(name);  // for messages
    // zip64 extra field: the 64-bit values of the fields that are 0xffffffff, in order.
    for (size_t x = p + 46 + name_len; x + 4 <= p + 46 + name_len + extra_len;) {
      const uint16_t id = le16(&z[x]), len = le16(&z[x + 2]);
      if (x + 4 + len > p + 46 + name_len + extra_len) break;
      if (id == 0x0001) {
        size_t q = x + 4;
        auto take = [&](uint64_t& v) {
          if (v == 0xffffffffu && q + 8 <= x + 4 + len) {
            v = le64(&z[q]);
            q += 8;
          }
        };
        take(usize);
        take(csize);
        take(local);
      }
      x += 4 + len;
    }
    p += 46 + name_len + extra_len + comment_len;
    if (local > z.size() || z.size() - local < 30 || le32(&z[local]) != 0x04034b50) {
      throw bad("corrupt zip member " + shown);
    }
    const uint64_t start = local + 30 + le16(&z[local + 26]) + le16(&z[local + 28]);
    if (start > z.size() || csize > z.size() - start) throw bad("truncated zip member " + shown);
    if (usize > (uint64_t{1} << 40)) throw bad("zip member " + shown + " is too large");
    // Deflate expands at most 1032:1: a larger size is a corrupt header, not memory to reserve.
    if (method == 8 && usize > csize * 1032 + 1032) {
      throw bad("corrupt deflated zip member " + shown + " (" + std::to_string(csize) +
                " bytes cannot inflate to " + std::to_string(usize) + ")");
    }
    if (method == 0 && csize != usize) throw bad("corrupt stored zip member " + shown);
    if (method != 0 && method != 8) {
      throw bad("zip member " + shown + " uses compression method " + std::to_string(method) +
                " (only stored and deflated are supported)");
    }
    const bool keep = !want || want(name);
    if (!keep && !verify_all) continue;
    if (!keep && method == 0) {  // checked in place, in pieces of at most 1 GiB (zlib's uInt)
      uLong sum = crc32(0L, Z_NULL, 0);
      for (uint64_t at = 0; at < csize;) {
        const uint64_t piece = std::min<uint64_t>(csize - at, uint64_t{1} << 30);
        sum = crc32(sum, &z[start + at], static_cast<uInt>(piece));
        at += piece;
      }
      if (sum != crc) throw bad("zip member " + shown + " fails its CRC check (corrupt file)");
      continue;
    }
    std::vector<uint8_t> data;
    if (method == 0) {
      data.assign(z.begin() + static_cast<std::ptrdiff_t>(start),
                  z.begin() + static_cast<std::ptrdiff_t>(start + csize));
    } else if (method == 8) {
      data.resize(static_cast<size_t>(usize));
      z_stream s{};
      if (inflateInit2(&s, -MAX_WBITS) != Z_OK) throw bad("zlib failed to initialise");
      s.next_in = const_cast<Bytef*>(&z[start]);
      s.avail_in = static_cast<uInt>(std::min<uint64_t>(csize, UINT32_MAX));
      s.next_out = data.data();
      s.avail_out = static_cast<uInt>(std::min<uint64_t>(usize, UINT32_MAX));
      const int rc = inflate(&s, Z_FINISH);
      const uint64_t produced = s.total_out;
      inflateEnd(&s);
      if (rc != Z_STREAM_END || produced != usize) throw bad("corrupt deflated zip member " + shown);
    }
    if (crc32(0L, data.data(), static_cast<uInt>(data.size())) != crc) {
      throw bad("zip member " + shown + " fails its CRC check (corrupt file)");
    }
    if (keep) out.emplace_back(std::move(name), std::move(data));
  }
  return out;
}

void verify_zip(ByteView z, const std::string& where) {
  read_zip(z, where, [](const std::string&) { return false; }, true);
}

}  // namespace quell
