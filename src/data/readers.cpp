// Dataset readers and writers: IDX (MNIST / Fashion-MNIST), CIFAR binary, and a synthetic
// IDX generator; image folders live in image_folder.cpp. Every file error is a
// std::runtime_error of one line, "<path>: <problem>".
#include "quell/data.h"

#include <ATen/CPUGeneratorImpl.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <sstream>
#include <stdexcept>

#include "data/loaders.h"
#include "util/json.h"

namespace quell {
namespace {

namespace fs = std::filesystem;

constexpr uint32_t kIdxImagesMagic = 0x00000803;  // unsigned byte, 3 dimensions
constexpr uint32_t kIdxLabelsMagic = 0x00000801;  // unsigned byte, 1 dimension
constexpr size_t kIdxImagesHeaderBytes = 16;      // magic, count, rows, cols
constexpr size_t kIdxLabelsHeaderBytes = 8;       // magic, count
constexpr int64_t kCifarChannels = 3;
constexpr int64_t kCifarSide = 32;
constexpr size_t kCifarPixelBytes = kCifarChannels * kCifarSide * kCifarSide;  // 3072
constexpr int kCifar10Batches = 5;
// deflate cannot expand data by more than ~1032:1 (zlib FAQ); bounds the gzip ISIZE hint.
constexpr size_t kMaxDeflateRatio = 1032;
constexpr size_t kIoChunkBytes = size_t{1} << 20;
// The image-folder dataset: not in the fixed-format registry (its geometry, classes and
// normalisation come from the folder and the options).
constexpr const char* kImagesName = "images";

enum class Format { kIdx, kCifar10, kCifar100 };

/// One entry of the dataset registry.
struct DatasetSpec {
  const char* name;
  Format format;
  int64_t num_classes;
  std::vector<double> mean;    // per channel, pixel units in [0,1]
  std::vector<double> stddev;  // per channel
};

const std::vector<DatasetSpec>& registry() {
  // Constants as published with the datasets' usual torchvision recipes.
  static const std::vector<DatasetSpec> kSpecs = {
      {"fashion-mnist", Format::kIdx, 10, {0.2860}, {0.3530}},
      {"mnist", Format::kIdx, 10, {0.1307}, {0.3081}},
      {"cifar10", Format::kCifar10, 10, {0.4914, 0.4822, 0.4465}, {0.2470, 0.2435, 0.2616}},
      {"cifar100", Format::kCifar100, 100, {0.5071, 0.4865, 0.4409}, {0.2673, 0.2564, 0.2762}},
  };
  return kSpecs;
}

const DatasetSpec& find_spec(const std::string& name) {
  for (const auto& spec : registry()) {
    if (name == spec.name) return spec;
  }
  if (name == kImagesName) {
    throw std::runtime_error(
        "dataset 'images' has no fixed format or normalisation constants: "
        "they come from the image folder and the options");
  }
  std::string known;
  for (const auto& n : dataset_names()) known += (known.empty() ? "" : ", ") + n;
  throw std::runtime_error("unknown dataset '" + name + "'; known datasets: " + known);
}

[[noreturn]] void fail(const std::string& path, const std::string& problem) {
  throw std::runtime_error(path + ": " + problem);
}

struct FileCloser {
  void operator()(std::FILE* f) const { std::fclose(f); }
};
using FilePtr = std::unique_ptr<std::FILE, FileCloser>;

uint32_t read_be32(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}

void append_be32(std::vector<uint8_t>& out, uint32_t v) {
  out.push_back(static_cast<uint8_t>(v >> 24));
  out.push_back(static_cast<uint8_t>(v >> 16));
  out.push_back(static_cast<uint8_t>(v >> 8));
  out.push_back(static_cast<uint8_t>(v));
}

std::string hex32(uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof(buf), "0x%08x", v);
  return buf;
}

std::vector<uint8_t> read_raw_file(const std::string& path) {
  errno = 0;
  FilePtr f(std::fopen(path.c_str(), "rb"));
  if (!f) fail(path, std::string("cannot open: ") + std::strerror(errno ? errno : ENOENT));
  std::vector<uint8_t> bytes;
  std::error_code ec;
  const auto size_hint = fs::file_size(path, ec);
  if (!ec) bytes.reserve(static_cast<size_t>(size_hint));
  // Chunked reads also work for files whose size the filesystem does not report (pipes).
  size_t used = 0;
  while (true) {
    bytes.resize(used + kIoChunkBytes);
    const size_t got = std::fread(bytes.data() + used, 1, kIoChunkBytes, f.get());
    used += got;
    if (got < kIoChunkBytes) break;
  }
  bytes.resize(used);
  if (std::ferror(f.get())) fail(path, std::string("read error: ") + std::strerror(errno));
  return bytes;
}

/// Inflates one or more concatenated gzip members (RFC 1952) held in memory.
std::vector<uint8_t> gunzip(const std::string& path, const std::vector<uint8_t>& in) {
  // ISIZE (last 4 bytes, little endian) is the uncompressed size mod 2^32 of the last member:
  // only a hint for the first allocation, bounded so a corrupt trailer cannot demand 4 GiB.
  size_t hint = in.size() * 4;
  if (in.size() >= 18) {
    const uint8_t* t = in.data() + in.size() - 4;
    const size_t isize =
        uint32_t{t[0]} | (uint32_t{t[1]} << 8) | (uint32_t{t[2]} << 16) | (uint32_t{t[3]} << 24);
    hint = std::min(isize, in.size() * kMaxDeflateRatio);
  }
  std::vector<uint8_t> out(std::max<size_t>(hint, 64));

  z_stream zs{};
  // 16 + MAX_WBITS: expect a gzip header and trailer (CRC-32 and length are verified).
  if (inflateInit2(&zs, 16 + MAX_WBITS) != Z_OK) fail(path, "cannot initialise zlib inflate");
  struct Guard {
    z_stream* zs;
    ~Guard() { inflateEnd(zs); }
  } guard{&zs};

  size_t consumed = 0;  // input bytes handed to zlib so far
  size_t produced = 0;
  zs.next_in = const_cast<Bytef*>(in.data());
  zs.avail_in = 0;
  while (true) {
    if (zs.avail_in == 0 && consumed < in.size()) {
      const size_t n = std::min<size_t>(in.size() - consumed, UINT_MAX);
      zs.next_in = const_cast<Bytef*>(in.data() + consumed);
      zs.avail_in = static_cast<uInt>(n);
      consumed += n;
    }
    if (produced == out.size()) out.resize(out.size() * 2);
    const size_t space = std::min<size_t>(out.size() - produced, UINT_MAX);
    zs.next_out = out.data() + produced;
    zs.avail_out = static_cast<uInt>(space);
    const int ret = inflate(&zs, Z_NO_FLUSH);
    produced += space - zs.avail_out;
    if (ret == Z_STREAM_END) {
      const size_t left = zs.avail_in + (in.size() - consumed);
      if (left == 0) break;
      const uint8_t* next = zs.next_in;
      if (left >= 2 && next[0] == 0x1f && next[1] == 0x8b) {  // another gzip member
        inflateReset(&zs);
        continue;
      }
      fail(path, "corrupt gzip stream: " + std::to_string(left) +
                     " bytes of trailing data after the end of the compressed stream");
    }
    if (ret == Z_OK) continue;
    if (ret == Z_BUF_ERROR && zs.avail_in == 0 && consumed == in.size()) {
      fail(path, "corrupt gzip stream: compressed data ends before the end of the stream "
                 "(truncated .gz file)");
    }
    if (ret == Z_BUF_ERROR) continue;  // output space was exhausted; the loop grows it
    fail(path, std::string("corrupt gzip stream: ") + (zs.msg ? zs.msg : zError(ret)));
  }
  out.resize(produced);
  return out;
}

void write_whole_file(const std::string& path, const std::vector<uint8_t>& payload, bool gzip) {
  std::vector<uint8_t> compressed;
  const std::vector<uint8_t>* bytes = &payload;
  if (gzip) {
    z_stream zs{};
    // 16 + MAX_WBITS: gzip header and trailer instead of the zlib wrapper; 8 = default memLevel.
    if (deflateInit2(&zs, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 16 + MAX_WBITS, 8,
                     Z_DEFAULT_STRATEGY) != Z_OK) {
      fail(path, "cannot initialise zlib deflate");
    }
    compressed.resize(deflateBound(&zs, payload.size()) + 32);
    zs.next_in = const_cast<Bytef*>(payload.data());
    zs.avail_in = static_cast<uInt>(payload.size());
    zs.next_out = compressed.data();
    zs.avail_out = static_cast<uInt>(compressed.size());
    TORCH_CHECK(payload.size() <= UINT_MAX && compressed.size() <= UINT_MAX,
                "write_whole_file: gzip payloads above 4 GiB are not supported");
    const int ret = deflate(&zs, Z_FINISH);
    const size_t n = compressed.size() - zs.avail_out;
    deflateEnd(&zs);
    if (ret != Z_STREAM_END) fail(path, std::string("gzip compression failed: ") + zError(ret));
    compressed.resize(n);
    bytes = &compressed;
  }
  errno = 0;
  FilePtr f(std::fopen(path.c_str(), "wb"));
  if (!f) fail(path, std::string("cannot open for writing: ") + std::strerror(errno));
  if (!bytes->empty() && std::fwrite(bytes->data(), 1, bytes->size(), f.get()) != bytes->size()) {
    fail(path, std::string("write failed: ") + std::strerror(errno));
  }
  if (std::fclose(f.release()) != 0) fail(path, std::string("write failed: ") + std::strerror(errno));
}

/// `dir/base.gz` if it exists, else `dir/base` if it exists, else throws naming both.
std::string resolve_idx_file(const std::string& dir, const std::string& base) {
  const std::string gz = (fs::path(dir) / (base + ".gz")).string();
  const std::string raw = (fs::path(dir) / base).string();
  std::error_code ec;
  if (fs::exists(gz, ec)) return gz;
  if (fs::exists(raw, ec)) return raw;
  fail(gz, std::string("cannot open: ") + std::strerror(ENOENT) + " (nor " + raw + ")");
}

void check_labels_in_range(const std::string& path, const torch::Tensor& labels,
                           int64_t num_classes) {
  const auto bad = ((labels < 0) | (labels >= num_classes)).nonzero();
  if (bad.size(0) == 0) return;
  const int64_t index = bad[0][0].item<int64_t>();
  fail(path, "label " + std::to_string(labels[index].item<int64_t>()) + " at index " +
                 std::to_string(index) + " is out of range for " + std::to_string(num_classes) +
                 " classes (" + std::to_string(bad.size(0)) + " bad labels)");
}

std::string shape_str(const torch::Tensor& t) {
  std::ostringstream os;
  os << t.sizes();
  return os.str();
}

}  // namespace

std::vector<int64_t> Dataset::sample_shape() const {
  if (!inputs.defined() || inputs.dim() < 1) return {};
  return inputs.sizes().slice(1).vec();
}

namespace detail {
std::vector<std::string> fixed_format_dataset_names() {
  std::vector<std::string> names;
  for (const auto& spec : registry()) names.emplace_back(spec.name);
  return names;
}
}  // namespace detail

std::string default_data_dir(const std::string& name) {
  const char* root = std::getenv("QUELL_DATA_DIR");
  if (root != nullptr && root[0] != '\0') return (fs::path(root) / name).string();
  if (name == "fashion-mnist") return "/usr/share/datasets/fashion-mnist";
  return (fs::path("data") / name).string();
}

std::pair<std::vector<double>, std::vector<double>> dataset_normalisation(const std::string& name) {
  const auto& spec = find_spec(name);
  return {spec.mean, spec.stddev};
}

std::vector<uint8_t> read_file_maybe_gz(const std::string& path) {
  std::vector<uint8_t> bytes = read_raw_file(path);
  if (bytes.size() >= 2 && bytes[0] == 0x1f && bytes[1] == 0x8b) return gunzip(path, bytes);
  return bytes;
}

torch::Tensor read_idx_images(const std::string& path) {
  const std::vector<uint8_t> bytes = read_file_maybe_gz(path);
  if (bytes.empty()) fail(path, "empty file, expected an IDX image file");
  if (bytes.size() < kIdxImagesHeaderBytes) {
    fail(path, "truncated: " + std::to_string(bytes.size()) +
                   " bytes is shorter than the 16-byte IDX image header");
  }
  const uint32_t magic = read_be32(bytes.data());
  if (magic != kIdxImagesMagic) {
    fail(path, "bad magic " + hex32(magic) + ", expected " + hex32(kIdxImagesMagic) +
                   " (IDX 3-D unsigned byte images)" +
                   (magic == kIdxLabelsMagic ? "; this looks like an IDX label file" : ""));
  }
  const uint32_t n = read_be32(bytes.data() + 4);
  const uint32_t rows = read_be32(bytes.data() + 8);
  const uint32_t cols = read_be32(bytes.data() + 12);
  const std::string dims = std::to_string(n) + " images of " + std::to_string(rows) + "x" +
                           std::to_string(cols);
  if (n == 0 || rows == 0 || cols == 0) fail(path, "bad dimensions: " + dims + ", all must be > 0");
  // Three 32-bit factors can overflow 64 bits; a real image file is far below 2^63 bytes.
  uint64_t expected = 0;
  if (__builtin_mul_overflow(uint64_t{n}, uint64_t{rows}, &expected) ||
      __builtin_mul_overflow(expected, uint64_t{cols}, &expected) ||
      expected > static_cast<uint64_t>(INT64_MAX)) {
    fail(path, "bad dimensions: " + dims + " is too large");
  }
  const uint64_t payload = bytes.size() - kIdxImagesHeaderBytes;
  if (payload != expected) {
    fail(path, std::string(payload < expected ? "truncated" : "oversized") + ": header says " +
                   dims + " (" + std::to_string(expected) + " bytes) but " +
                   std::to_string(payload) + " bytes follow");
  }
  auto images = torch::empty({static_cast<int64_t>(n), 1, static_cast<int64_t>(rows),
                              static_cast<int64_t>(cols)},
                             torch::kUInt8);
  std::memcpy(images.data_ptr<uint8_t>(), bytes.data() + kIdxImagesHeaderBytes, expected);
  return images;
}

torch::Tensor read_idx_labels(const std::string& path) {
  std::vector<uint8_t> bytes = read_file_maybe_gz(path);
  if (bytes.empty()) fail(path, "empty file, expected an IDX label file");
  if (bytes.size() < kIdxLabelsHeaderBytes) {
    fail(path, "truncated: " + std::to_string(bytes.size()) +
                   " bytes is shorter than the 8-byte IDX label header");
  }
  const uint32_t magic = read_be32(bytes.data());
  if (magic != kIdxLabelsMagic) {
    fail(path, "bad magic " + hex32(magic) + ", expected " + hex32(kIdxLabelsMagic) +
                   " (IDX 1-D unsigned byte labels)" +
                   (magic == kIdxImagesMagic ? "; this looks like an IDX image file" : ""));
  }
  const uint32_t n = read_be32(bytes.data() + 4);
  if (n == 0) fail(path, "bad dimensions: header says 0 labels, must be > 0");
  const uint64_t payload = bytes.size() - kIdxLabelsHeaderBytes;
  if (payload != n) {
    fail(path, std::string(payload < n ? "truncated" : "oversized") + ": header says " +
                   std::to_string(n) + " labels (" + std::to_string(n) + " bytes) but " +
                   std::to_string(payload) + " bytes follow");
  }
  auto u8 = torch::from_blob(bytes.data() + kIdxLabelsHeaderBytes, {static_cast<int64_t>(n)},
                             torch::kUInt8);
  return u8.to(torch::kLong);  // copies, so `bytes` may go
}

std::pair<torch::Tensor, torch::Tensor> read_cifar_bin(const std::string& path, int label_bytes,
                                                       int64_t num_classes) {
  TORCH_CHECK(label_bytes == 1 || label_bytes == 2,
              "read_cifar_bin: label_bytes must be 1 (CIFAR-10) or 2 (CIFAR-100), got ",
              label_bytes);
  TORCH_CHECK(num_classes > 0, "read_cifar_bin: num_classes must be > 0, got ", num_classes);
  const std::vector<uint8_t> bytes = read_file_maybe_gz(path);
  const size_t record = static_cast<size_t>(label_bytes) + kCifarPixelBytes;
  const std::string layout = std::to_string(record) + "-byte CIFAR records (" +
                             std::to_string(label_bytes) + " label byte" +
                             (label_bytes > 1 ? "s" : "") + " + 3x32x32 pixels)";
  if (bytes.empty()) fail(path, "empty file, expected " + layout);
  if (bytes.size() % record != 0) {
    fail(path, "truncated or oversized: " + std::to_string(bytes.size()) +
                   " bytes is not a whole number of " + layout + ": " +
                   std::to_string(bytes.size() / record) + " records and " +
                   std::to_string(bytes.size() % record) + " extra bytes");
  }
  const int64_t n = static_cast<int64_t>(bytes.size() / record);
  auto images = torch::empty({n, kCifarChannels, kCifarSide, kCifarSide}, torch::kUInt8);
  auto labels = torch::empty({n}, torch::kLong);
  uint8_t* img = images.data_ptr<uint8_t>();
  int64_t* lab = labels.data_ptr<int64_t>();
  for (int64_t i = 0; i < n; ++i) {
    const uint8_t* rec = bytes.data() + static_cast<size_t>(i) * record;
    const int64_t label = rec[label_bytes - 1];  // CIFAR-100: <coarse><fine>, we use fine
    if (label >= num_classes) {
      fail(path, "label " + std::to_string(label) + " of record " + std::to_string(i) +
                     " is out of range for " + std::to_string(num_classes) + " classes");
    }
    lab[i] = label;
    std::memcpy(img + static_cast<size_t>(i) * kCifarPixelBytes, rec + label_bytes,
                kCifarPixelBytes);
  }
  return {images, labels};
}

void write_idx_images(const std::string& path, const torch::Tensor& images_u8, bool gzip) {
  TORCH_CHECK(images_u8.scalar_type() == torch::kUInt8,
              "write_idx_images: images must be uint8, got ", images_u8.scalar_type());
  TORCH_CHECK(images_u8.dim() == 3 || (images_u8.dim() == 4 && images_u8.size(1) == 1),
              "write_idx_images: images must be [N, H, W] or [N, 1, H, W], got ",
              shape_str(images_u8));
  const int64_t n = images_u8.size(0);
  const int64_t rows = images_u8.size(-2);
  const int64_t cols = images_u8.size(-1);
  TORCH_CHECK(n <= UINT32_MAX && rows <= UINT32_MAX && cols <= UINT32_MAX,
              "write_idx_images: dimensions do not fit the 32-bit IDX header: ",
              shape_str(images_u8));
  const auto flat = images_u8.contiguous();
  const size_t pixels = static_cast<size_t>(flat.numel());
  std::vector<uint8_t> bytes;
  bytes.reserve(kIdxImagesHeaderBytes + pixels);
  append_be32(bytes, kIdxImagesMagic);
  append_be32(bytes, static_cast<uint32_t>(n));
  append_be32(bytes, static_cast<uint32_t>(rows));
  append_be32(bytes, static_cast<uint32_t>(cols));
  const uint8_t* p = flat.data_ptr<uint8_t>();
  bytes.insert(bytes.end(), p, p + pixels);
  write_whole_file(path, bytes, gzip);
}

void write_idx_labels(const std::string& path, const torch::Tensor& labels, bool gzip) {
  TORCH_CHECK(labels.dim() == 1, "write_idx_labels: labels must be [N], got ", shape_str(labels));
  TORCH_CHECK(labels.size(0) <= UINT32_MAX, "write_idx_labels: too many labels for IDX");
  const auto as_long = labels.to(torch::kLong).contiguous();
  TORCH_CHECK(labels.numel() == 0 || (as_long.min().item<int64_t>() >= 0 &&
                                      as_long.max().item<int64_t>() <= 255),
              "write_idx_labels: labels must lie in [0, 255]");
  const auto u8 = as_long.to(torch::kUInt8);
  std::vector<uint8_t> bytes;
  bytes.reserve(kIdxLabelsHeaderBytes + static_cast<size_t>(u8.numel()));
  append_be32(bytes, kIdxLabelsMagic);
  append_be32(bytes, static_cast<uint32_t>(u8.numel()));
  const uint8_t* p = u8.data_ptr<uint8_t>();
  bytes.insert(bytes.end(), p, p + u8.numel());
  write_whole_file(path, bytes, gzip);
}

void write_cifar_bin(const std::string& path, const torch::Tensor& images_u8,
                     const torch::Tensor& labels, int label_bytes) {
  TORCH_CHECK(label_bytes == 1 || label_bytes == 2,
              "write_cifar_bin: label_bytes must be 1 or 2, got ", label_bytes);
  TORCH_CHECK(images_u8.scalar_type() == torch::kUInt8,
              "write_cifar_bin: images must be uint8, got ", images_u8.scalar_type());
  TORCH_CHECK(images_u8.dim() == 4 && images_u8.size(1) == kCifarChannels &&
                  images_u8.size(2) == kCifarSide && images_u8.size(3) == kCifarSide,
              "write_cifar_bin: images must be [N, 3, 32, 32], got ", shape_str(images_u8));
  TORCH_CHECK(labels.dim() == 1 && labels.size(0) == images_u8.size(0),
              "write_cifar_bin: labels must be [N] with N = ", images_u8.size(0), ", got ",
              shape_str(labels));
  const auto imgs = images_u8.contiguous();
  const auto labs = labels.to(torch::kLong).contiguous();
  const int64_t n = imgs.size(0);
  const size_t record = static_cast<size_t>(label_bytes) + kCifarPixelBytes;
  std::vector<uint8_t> bytes(static_cast<size_t>(n) * record);
  const uint8_t* img = imgs.data_ptr<uint8_t>();
  const int64_t* lab = labs.data_ptr<int64_t>();
  for (int64_t i = 0; i < n; ++i) {
    TORCH_CHECK(lab[i] >= 0 && lab[i] <= 255, "write_cifar_bin: label ", lab[i], " at index ", i,
                " does not fit in a byte");
    uint8_t* rec = bytes.data() + static_cast<size_t>(i) * record;
    // CIFAR-100's coarse label is not known here; fine / 5 is a placeholder in the 20-superclass
    // range (readers use the fine label only).
    if (label_bytes == 2) rec[0] = static_cast<uint8_t>(lab[i] / 5);
    rec[label_bytes - 1] = static_cast<uint8_t>(lab[i]);
    std::memcpy(rec + label_bytes, img + static_cast<size_t>(i) * kCifarPixelBytes,
                kCifarPixelBytes);
  }
  write_whole_file(path, bytes, /*gzip=*/false);
}

namespace {

/// n images [n, 1, 28, 28] uint8 and labels [n] of the synthetic task, drawn from `gen`.
/// Class k is a Gaussian blob (sigma 2 px) centred on the k-th point of a grid with 7 px
/// spacing, jittered by up to +-1 px, with random brightness, over a faint random background
/// and per-pixel noise. Centres 7 px apart with +-1 px jitter never overlap, so the classes are
/// separable by position alone and a small MLP or CNN reaches > 90% within one epoch.
std::pair<torch::Tensor, torch::Tensor> synthetic_split(int64_t n, at::Generator& gen) {
  constexpr int64_t kSide = 28;
  constexpr int64_t kClasses = 10;
  // (row, col) of each class's blob: a 4x3 grid without two corners, 7 px apart.
  static const float kCentres[kClasses][2] = {{5.5f, 6.5f},   {5.5f, 13.5f},  {5.5f, 20.5f},
                                              {12.5f, 6.5f},  {12.5f, 13.5f}, {12.5f, 20.5f},
                                              {19.5f, 6.5f},  {19.5f, 13.5f}, {19.5f, 20.5f},
                                              {26.0f, 13.5f}};
  const auto f32 = torch::TensorOptions().dtype(torch::kFloat);
  // Balanced classes in random order.
  auto labels = torch::randperm(n, gen, torch::kLong).remainder_(kClasses);
  auto centres = torch::from_blob(const_cast<float*>(&kCentres[0][0]), {kClasses, 2}, f32)
                     .index_select(0, labels);  // [n, 2]
  centres = centres + torch::randint(-1, 2, {n, 2}, gen, f32);
  const auto cy = centres.select(1, 0).view({n, 1, 1});
  const auto cx = centres.select(1, 1).view({n, 1, 1});
  const auto coords = torch::arange(kSide, f32);
  const auto yy = coords.view({1, kSide, 1});
  const auto xx = coords.view({1, 1, kSide});
  constexpr float kBlobSigma = 2.0f;
  const auto dist2 = (yy - cy).square() + (xx - cx).square();  // [n, 28, 28]
  const auto brightness = torch::rand({n, 1, 1}, gen, f32) * 0.4f + 0.6f;
  auto img = brightness * torch::exp(dist2 / (-2.0f * kBlobSigma * kBlobSigma));
  img = img + torch::rand({n, 1, 1}, gen, f32) * 0.15f;          // background level
  img = img + torch::randn({n, kSide, kSide}, gen, f32) * 0.08f;  // pixel noise
  auto u8 = img.clamp(0.0f, 1.0f).mul(255.0f).round().to(torch::kUInt8);
  return {u8.view({n, 1, kSide, kSide}).contiguous(), labels};
}

}  // namespace

void write_synthetic_idx(const std::string& dir, int64_t n_train, int64_t n_test, uint64_t seed,
                         bool gzip) {
  TORCH_CHECK(n_train > 0 && n_test > 0, "write_synthetic_idx: n_train and n_test must be > 0, got ",
              n_train, " and ", n_test);
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) fail(dir, "cannot create directory: " + ec.message());
  at::Generator gen = at::detail::createCPUGenerator(seed);
  const std::string ext = gzip ? ".gz" : "";
  const auto write_split = [&](const std::string& prefix, int64_t n) {
    const auto [images, labels] = synthetic_split(n, gen);
    write_idx_images((fs::path(dir) / (prefix + "-images-idx3-ubyte" + ext)).string(), images,
                     gzip);
    write_idx_labels((fs::path(dir) / (prefix + "-labels-idx1-ubyte" + ext)).string(), labels,
                     gzip);
  };
  write_split("train", n_train);
  write_split("t10k", n_test);
}

Json DataOptions::preprocessing_json() const {
  if (name == "tensors" && !dir.empty()) {
    // Tensor files have no usual place: the checkpoint remembers where its data was.
    std::error_code ec;
    const fs::path abs = fs::absolute(dir, ec);
    return Json{{"dataset", name}, {"dir", ec ? dir : abs.lexically_normal().string()}};
  }
  if (name != kImagesName) return Json{{"dataset", name}};
  return Json{{"dataset", name},  {"channels", channels}, {"height", height}, {"width", width},
              {"resize", resize}, {"mean", mean},         {"stddev", stddev}};
}

void DataOptions::apply_preprocessing_json(const Json& j) {
  try {
    if (!j.is_object()) throw std::runtime_error("expected a JSON object, got " + j.dump());
    name = j.at("dataset").get<std::string>();
    if (name == "tensors" && j.contains("dir") && dir.empty()) dir = j.at("dir").get<std::string>();
    if (name != kImagesName) return;
    const auto size_field = [&](const char* key, int64_t& field) {
      if (!j.contains(key)) return;
      const int64_t v = json::integer<int64_t>(j.at(key), key);
      if (v < 0) {
        throw std::runtime_error(std::string(key) + " must be >= 0, got " + j.at(key).dump());
      }
      field = v;
    };
    size_field("channels", channels);
    size_field("height", height);
    size_field("width", width);
    size_field("resize", resize);
    if (j.contains("mean")) mean = j.at("mean").get<std::vector<double>>();
    if (j.contains("stddev")) stddev = j.at("stddev").get<std::vector<double>>();
  } catch (const Json::exception& e) {
    throw std::runtime_error(std::string("bad data preprocessing record: ") + e.what());
  } catch (const std::runtime_error& e) {
    throw std::runtime_error(std::string("bad data preprocessing record: ") + e.what());
  }
}

Dataset detail::load_fixed_format_dataset(const DataOptions& opts) {
  const DatasetSpec& spec = find_spec(opts.name);
  const std::string dir = opts.dir.empty() ? default_data_dir(opts.name) : opts.dir;
  const bool train = opts.split == Split::kTrain;

  torch::Tensor images_u8;
  torch::Tensor labels;
  if (spec.format == Format::kIdx) {
    const std::string prefix = train ? "train" : "t10k";
    const std::string images_path = resolve_idx_file(dir, prefix + "-images-idx3-ubyte");
    const std::string labels_path = resolve_idx_file(dir, prefix + "-labels-idx1-ubyte");
    images_u8 = read_idx_images(images_path);
    labels = read_idx_labels(labels_path);
    if (labels.size(0) != images_u8.size(0)) {
      fail(labels_path, "count mismatch: " + std::to_string(labels.size(0)) + " labels but " +
                            images_path + " has " + std::to_string(images_u8.size(0)) +
                            " images");
    }
    check_labels_in_range(labels_path, labels, spec.num_classes);
  } else {
    const int label_bytes = spec.format == Format::kCifar10 ? 1 : 2;
    std::vector<std::string> files;
    if (spec.format == Format::kCifar10) {
      if (train) {
        for (int b = 1; b <= kCifar10Batches; ++b) {
          files.push_back((fs::path(dir) / ("data_batch_" + std::to_string(b) + ".bin")).string());
        }
      } else {
        files.push_back((fs::path(dir) / "test_batch.bin").string());
      }
    } else {
      files.push_back((fs::path(dir) / (train ? "train.bin" : "test.bin")).string());
    }
    std::vector<torch::Tensor> image_parts;
    std::vector<torch::Tensor> label_parts;
    for (const auto& file : files) {
      auto [imgs, labs] = read_cifar_bin(file, label_bytes, spec.num_classes);
      image_parts.push_back(std::move(imgs));
      label_parts.push_back(std::move(labs));
    }
    images_u8 = image_parts.size() == 1 ? image_parts[0] : torch::cat(image_parts);
    labels = label_parts.size() == 1 ? label_parts[0] : torch::cat(label_parts);
  }

  // Shuffle and cut on the uint8 images: a quarter of the bytes of the float result.
  if (opts.shuffle_seed != 0) {
    at::Generator gen = at::detail::createCPUGenerator(opts.shuffle_seed);
    const auto perm = torch::randperm(images_u8.size(0), gen, torch::kLong);
    images_u8 = images_u8.index_select(0, perm);
    labels = labels.index_select(0, perm);
  }
  if (opts.limit > 0 && opts.limit < images_u8.size(0)) {
    images_u8 = images_u8.narrow(0, 0, opts.limit);
    labels = labels.narrow(0, 0, opts.limit);
  }

  const int64_t channels = images_u8.size(1);
  TORCH_INTERNAL_ASSERT(static_cast<int64_t>(spec.mean.size()) == channels &&
                        static_cast<int64_t>(spec.stddev.size()) == channels);
  Dataset ds;
  ds.name = spec.name;
  ds.num_classes = spec.num_classes;
  ds.targets = labels.contiguous();
  // x = (u8 / 255 - mean[c]) / std[c]; with normalise = false, mean 0 and std 1.
  ds.inputs = images_u8.to(torch::kFloat).div_(255.0f).contiguous();
  if (opts.normalise) {
    ds.mean = spec.mean;
    ds.stddev = spec.stddev;
    const auto mean = torch::tensor(spec.mean, torch::kFloat).view({1, channels, 1, 1});
    const auto stddev = torch::tensor(spec.stddev, torch::kFloat).view({1, channels, 1, 1});
    ds.inputs.sub_(mean).div_(stddev);
  } else {
    ds.mean.assign(static_cast<size_t>(channels), 0.0);
    ds.stddev.assign(static_cast<size_t>(channels), 1.0);
  }
  return ds;
}

}  // namespace quell
