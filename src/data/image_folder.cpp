// Image-folder datasets: scanning root/<class>/<image>, finding the splits, decoding the kept
// files in parallel, the decoded-image cache (memory and disk) and normalisation. Decoding of one
// image is in image_codec.cpp. Every file error is a std::runtime_error "<path>: <problem>".
#include "quell/image_folder.h"

#include "quell/progress.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <climits>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <iterator>
#include <map>
#include <memory>
#include <mutex>
#include <numeric>
#include <optional>
#include <set>
#include <stdexcept>
#include <tuple>

namespace quell {
namespace {

namespace fs = std::filesystem;

// Bumped whenever decoding or the cache file layout changes, so older cache files stop matching.
constexpr const char* kCacheVersion = "quell-image-cache-1";
constexpr std::array<char, 16> kCacheMagic = {'Q', 'U', 'E', 'L', 'L', '-', 'I', 'M',
                                              'G', 'C', 'A', 'C', 'H', 'E', '1', '\n'};
// A cached "<path>: <problem>" longer than this marks a corrupt cache file.
constexpr uint64_t kMaxCachedMessageBytes = 1 << 16;
// Unreadable files named in the one-line report of skipped files.
constexpr size_t kSkipReportFiles = 3;
// Class differences named in the error for splits with different classes.
constexpr size_t kClassDiffReport = 3;
constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;

[[noreturn]] void fail(const std::string& path, const std::string& problem) {
  throw std::runtime_error(path + ": " + problem);
}

bool is_hidden(const fs::path& p) {
  const std::string name = p.filename().string();
  return !name.empty() && name[0] == '.';
}

bool has_image_extension(const fs::path& p) {
  std::string ext = p.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return ext == ".jpg" || ext == ".jpeg" || ext == ".png";
}

std::string without_trailing_slash(std::string s) {
  while (s.size() > 1 && s.back() == '/') s.pop_back();
  return s;
}

/// 64-bit FNV-1a: the cache file name (the whole key is stored in the file and compared too).
uint64_t fnv1a64(const std::string& s) {
  uint64_t h = 14695981039346656037ull;
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

std::string hex64(uint64_t v) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

std::string gib_str(double bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f GiB", bytes / kGiB);
  return buf;
}

/// Hands `line` to the note sink once per process.
void note_once(const std::string& line) {
  static std::mutex mutex;
  static std::set<std::string> printed;
  bool first = false;
  {
    std::lock_guard<std::mutex> lock(mutex);
    first = printed.insert(line).second;
  }
  if (first) note(line);
}

/// The decoded, resized images of a split's kept files.
struct DecodedSplit {
  torch::Tensor images;              // [N, C, H, W] uint8, unreadable files left out
  torch::Tensor labels;              // [N] int64
  std::vector<std::string> skipped;  // "<path>: <problem>" of each unreadable file
};

std::mutex& memory_cache_mutex() {
  static std::mutex mutex;
  return mutex;
}

std::map<std::string, DecodedSplit>& memory_cache() {
  static std::map<std::string, DecodedSplit> cache;
  return cache;
}

// ---------------------------------------------------------------------------------------------
// Disk cache file, native byte order:
//   magic[16] | u64 key bytes | key | u64 N, C, H, W | u64 skipped | (u64 bytes, message)*
//   | int64 labels[N] | uint8 pixels[N*C*H*W] | u32 CRC-32 of everything before it.
// Anything that does not match (size, key, CRC) is ignored and the file rewritten.

/// Reads from a FILE while keeping the CRC-32 of what was read; false once anything is short.
class CrcReader {
 public:
  explicit CrcReader(std::FILE* f) : f_(f) {}
  bool read(void* dst, size_t n) {
    if (!ok_) return false;
    if (n > 0 && std::fread(dst, 1, n, f_) != n) return ok_ = false;
    crc_update(static_cast<const uint8_t*>(dst), n);
    return true;
  }
  bool read_u64(uint64_t& v) { return read(&v, sizeof v); }
  uint32_t crc() const { return static_cast<uint32_t>(crc_); }

 private:
  void crc_update(const uint8_t* p, size_t n) {
    while (n > 0) {
      const uInt chunk = static_cast<uInt>(std::min<size_t>(n, UINT_MAX));
      crc_ = crc32(crc_, p, chunk);
      p += chunk;
      n -= chunk;
    }
  }
  std::FILE* f_;
  bool ok_ = true;
  uLong crc_ = crc32(0L, Z_NULL, 0);
};

/// Writes to a FILE while keeping the CRC-32 of what was written.
class CrcWriter {
 public:
  explicit CrcWriter(std::FILE* f) : f_(f) {}
  bool write(const void* src, size_t n) {
    if (!ok_) return false;
    const auto* p = static_cast<const uint8_t*>(src);
    if (n > 0 && std::fwrite(p, 1, n, f_) != n) return ok_ = false;
    for (size_t left = n; left > 0;) {
      const uInt chunk = static_cast<uInt>(std::min<size_t>(left, UINT_MAX));
      crc_ = crc32(crc_, p, chunk);
      p += chunk;
      left -= chunk;
    }
    return true;
  }
  bool write_u64(uint64_t v) { return write(&v, sizeof v); }
  uint32_t crc() const { return static_cast<uint32_t>(crc_); }

 private:
  std::FILE* f_;
  bool ok_ = true;
  uLong crc_ = crc32(0L, Z_NULL, 0);
};

std::optional<DecodedSplit> read_cache_file(const std::string& path, const std::string& key,
                                            const ImageGeometry& g, int64_t max_samples) {
  std::FILE* raw = std::fopen(path.c_str(), "rb");
  if (raw == nullptr) return std::nullopt;
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> f(raw, &std::fclose);
  CrcReader in(f.get());
  std::array<char, 16> magic{};
  uint64_t key_bytes = 0;
  if (!in.read(magic.data(), magic.size()) || magic != kCacheMagic || !in.read_u64(key_bytes) ||
      key_bytes != key.size()) {
    return std::nullopt;
  }
  std::string stored_key(key.size(), '\0');
  if (!in.read(stored_key.data(), stored_key.size()) || stored_key != key) return std::nullopt;
  uint64_t n = 0, c = 0, h = 0, w = 0, skipped = 0;
  if (!in.read_u64(n) || !in.read_u64(c) || !in.read_u64(h) || !in.read_u64(w) ||
      !in.read_u64(skipped) || n > static_cast<uint64_t>(max_samples) ||
      c != static_cast<uint64_t>(g.channels) || h != static_cast<uint64_t>(g.height) ||
      w != static_cast<uint64_t>(g.width) || n + skipped != static_cast<uint64_t>(max_samples)) {
    return std::nullopt;
  }
  DecodedSplit split;
  for (uint64_t i = 0; i < skipped; ++i) {
    uint64_t bytes = 0;
    if (!in.read_u64(bytes) || bytes > kMaxCachedMessageBytes) return std::nullopt;
    std::string message(bytes, '\0');
    if (!in.read(message.data(), message.size())) return std::nullopt;
    split.skipped.push_back(std::move(message));
  }
  const auto nn = static_cast<int64_t>(n);
  split.labels = torch::empty({nn}, torch::kLong);
  split.images = torch::empty({nn, g.channels, g.height, g.width}, torch::kUInt8);
  uint32_t stored_crc = 0;
  if (!in.read(split.labels.data_ptr<int64_t>(), n * sizeof(int64_t)) ||
      !in.read(split.images.data_ptr<uint8_t>(), static_cast<size_t>(split.images.numel()))) {
    return std::nullopt;
  }
  const uint32_t crc = in.crc();
  if (std::fread(&stored_crc, sizeof stored_crc, 1, f.get()) != 1 || stored_crc != crc ||
      std::fgetc(f.get()) != EOF) {
    return std::nullopt;
  }
  return split;
}

/// Writes the cache file atomically (temporary file, then rename); on failure prints a note and
/// leaves no temporary file behind: the cache only saves time.
void write_cache_file(const std::string& path, const std::string& key, const DecodedSplit& split) {
  static std::atomic<uint64_t> counter{0};
  const std::string tmp = path + ".tmp." + std::to_string(static_cast<long long>(::getpid())) +
                          "." + std::to_string(counter.fetch_add(1));
  std::error_code ec;
  fs::create_directories(fs::path(path).parent_path(), ec);
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  bool ok = f != nullptr;
  int err = errno;
  if (ok) {
    CrcWriter out(f);
    ok = out.write(kCacheMagic.data(), kCacheMagic.size()) && out.write_u64(key.size()) &&
         out.write(key.data(), key.size()) &&
         out.write_u64(static_cast<uint64_t>(split.images.size(0))) &&
         out.write_u64(static_cast<uint64_t>(split.images.size(1))) &&
         out.write_u64(static_cast<uint64_t>(split.images.size(2))) &&
         out.write_u64(static_cast<uint64_t>(split.images.size(3))) &&
         out.write_u64(split.skipped.size());
    for (const auto& s : split.skipped) {
      ok = ok && out.write_u64(s.size()) && out.write(s.data(), s.size());
    }
    ok = ok &&
         out.write(split.labels.data_ptr<int64_t>(), split.labels.numel() * sizeof(int64_t)) &&
         out.write(split.images.data_ptr<uint8_t>(), static_cast<size_t>(split.images.numel()));
    const uint32_t crc = out.crc();
    ok = ok && std::fwrite(&crc, sizeof crc, 1, f) == 1;
    if (!ok) err = errno;
    if (std::fclose(f) != 0 && ok) {
      ok = false;
      err = errno;
    }
    if (ok && std::rename(tmp.c_str(), path.c_str()) != 0) {
      ok = false;
      err = errno;
    }
  }
  if (!ok) {
    std::remove(tmp.c_str());
    note_once("note: cannot write the image cache " + path + " (" + std::strerror(err) +
              "); decoded images are not cached on disk");
  }
}

/// The cache key of a split's kept files: everything that changes the decoded tensors.
std::string cache_key(const ImageFolderIndex& index, const std::vector<int64_t>& kept,
                      const ImageGeometry& g) {
  std::string key = std::string(kCacheVersion) + "\n" + index.root + "\n" +
                    std::to_string(g.channels) + "x" + std::to_string(g.height) + "x" +
                    std::to_string(g.width) + " resize " + std::to_string(g.resize) + " dct " +
                    std::to_string(g.dct_scaling) + "\n";
  for (const auto& c : index.classes) key += c + "/";
  key += "\n";
  for (const int64_t i : kept) {
    struct stat st {};
    const std::string path = index.root + "/" + index.files[i];
    long long size = -1, mtime_ns = -1;
    if (::stat(path.c_str(), &st) == 0) {
      size = static_cast<long long>(st.st_size);
      mtime_ns = static_cast<long long>(st.st_mtim.tv_sec) * 1000000000LL + st.st_mtim.tv_nsec;
    }
    key += index.files[i] + "\t" + std::to_string(size) + "\t" + std::to_string(mtime_ns) + "\t" +
           std::to_string(index.labels[i]) + "\n";
  }
  return key;
}

/// Indices into index.files of the kept samples: a seeded permutation (as the other datasets
/// use), cut to `limit`.
std::vector<int64_t> kept_samples(const ImageFolderIndex& index, const DataOptions& opts) {
  const auto n = static_cast<int64_t>(index.files.size());
  std::vector<int64_t> kept(static_cast<size_t>(n));
  std::iota(kept.begin(), kept.end(), 0);
  if (opts.shuffle_seed != 0) {
    at::Generator gen = at::detail::createCPUGenerator(opts.shuffle_seed);
    const auto perm = torch::randperm(n, gen, torch::kLong);
    std::memcpy(kept.data(), perm.data_ptr<int64_t>(), static_cast<size_t>(n) * sizeof(int64_t));
  }
  if (opts.limit > 0 && opts.limit < n) {
    if (opts.shuffle_seed == 0) {
      // Files come class by class: the first N cover only the first classes.
      note_once("note: a limit of " + std::to_string(opts.limit) + " keeps the first files of " +
                index.root + " in class order (only some classes); shuffle (a shuffle seed) "
                "for a random subset");
    }
    kept.resize(static_cast<size_t>(opts.limit));
  }
  return kept;
}

/// Bytes of memory available: MemAvailable of /proc/meminfo (free memory plus what the kernel
/// can reclaim, e.g. the page cache, which after reading a dataset can be most of the RAM),
/// else free pages (sysconf); 0 if neither is known.
double available_memory_bytes() {
  if (std::FILE* f = std::fopen("/proc/meminfo", "r")) {
    char line[256];
    unsigned long long kib = 0;
    bool found = false;
    while (!found && std::fgets(line, sizeof line, f) != nullptr) {
      found = std::sscanf(line, "MemAvailable: %llu kB", &kib) == 1;
    }
    std::fclose(f);
    if (found) return static_cast<double>(kib) * 1024.0;
  }
  const long pages = ::sysconf(_SC_AVPHYS_PAGES);
  const long page_size = ::sysconf(_SC_PAGESIZE);
  if (pages <= 0 || page_size <= 0) return 0.0;
  return static_cast<double>(pages) * static_cast<double>(page_size);
}

/// Throws if N images of the geometry would not fit in available memory as float32.
void check_fits_in_memory(const std::string& root, int64_t n, const ImageGeometry& g) {
  const double bytes = static_cast<double>(n) * g.channels * g.height * g.width * sizeof(float);
  const double available = available_memory_bytes();
  if (available <= 0.0) return;  // unknown: try
  if (bytes > available) {
    fail(root, std::to_string(n) + " images of " + std::to_string(g.channels) + "x" +
                   std::to_string(g.height) + "x" + std::to_string(g.width) + " take " +
                   gib_str(bytes) + " as float32 but only " + gib_str(available) +
                   " of memory is available; use fewer samples (a limit)");
  }
}

/// Decodes the kept files of `index` (no cache).
DecodedSplit decode_split(const ImageFolderIndex& index, const std::vector<int64_t>& kept,
                          const ImageGeometry& g, bool skip_bad) {
  std::vector<std::string> paths;
  paths.reserve(kept.size());
  for (const int64_t i : kept) paths.push_back(index.root + "/" + index.files[i]);
  DecodedImages decoded = decode_images(paths, g, /*stop_at_error=*/!skip_bad);
  DecodedSplit split;
  std::vector<int64_t> good;
  std::vector<int64_t> labels;
  for (size_t k = 0; k < kept.size(); ++k) {
    if (decoded.errors[k].empty()) {
      good.push_back(static_cast<int64_t>(k));
      labels.push_back(index.labels[kept[k]]);
    } else {
      if (!skip_bad) throw std::runtime_error(decoded.errors[k]);
      split.skipped.push_back(decoded.errors[k]);
    }
  }
  split.labels = torch::tensor(labels, torch::kLong);
  split.images = good.size() == kept.size()
                     ? decoded.images
                     : decoded.images.index_select(0, torch::tensor(good, torch::kLong));
  return split;
}

/// The decoded kept files of `index`: from the memory cache, else the disk cache, else decoded
/// (and then cached) when opts.image_cache.
DecodedSplit decoded_split(const ImageFolderIndex& index, const DataOptions& opts,
                           const ImageGeometry& g) {
  const std::vector<int64_t> kept = kept_samples(index, opts);
  check_fits_in_memory(index.root, static_cast<int64_t>(kept.size()), g);
  std::optional<DecodedSplit> split;
  if (!opts.image_cache) {
    split = decode_split(index, kept, g, opts.skip_bad);
  } else {
    const std::string key = cache_key(index, kept, g);
    {
      std::lock_guard<std::mutex> lock(memory_cache_mutex());
      const auto it = memory_cache().find(key);
      if (it != memory_cache().end()) split = it->second;
    }
    if (!split) {
      const std::string file =
          (fs::path(image_cache_dir()) / ("images-" + hex64(fnv1a64(key)) + ".bin")).string();
      split = read_cache_file(file, key, g, static_cast<int64_t>(kept.size()));
      if (!split) {
        split = decode_split(index, kept, g, opts.skip_bad);
        write_cache_file(file, key, *split);
      }
      std::lock_guard<std::mutex> lock(memory_cache_mutex());
      memory_cache()[key] = *split;
    }
  }
  // A split cached by a run that skipped unreadable files still fails without skip_bad.
  if (!opts.skip_bad && !split->skipped.empty()) throw std::runtime_error(split->skipped.front());
  if (split->labels.size(0) == 0) {
    fail(index.root, "none of the " + std::to_string(kept.size()) +
                         " images is readable (first: " + split->skipped.front() + ")");
  }
  return *split;
}

/// Per-channel mean and population std of uint8 images [N, C, H, W], in [0,1] pixel units,
/// exact: from per-channel histograms. A constant channel gets std 1 (nothing to scale).
std::pair<std::vector<double>, std::vector<double>> pixel_statistics(const torch::Tensor& u8) {
  const int64_t n = u8.size(0), c = u8.size(1), plane = u8.size(2) * u8.size(3);
  const uint8_t* px = u8.data_ptr<uint8_t>();
  std::vector<int64_t> hist(static_cast<size_t>(c) * 256, 0);
  std::mutex mutex;
  at::parallel_for(0, n, 1, [&](int64_t begin, int64_t end) {
    std::vector<int64_t> local(hist.size(), 0);
    for (int64_t i = begin; i < end; ++i) {
      for (int64_t ch = 0; ch < c; ++ch) {
        const uint8_t* p = px + (i * c + ch) * plane;
        int64_t* h = local.data() + ch * 256;
        for (int64_t k = 0; k < plane; ++k) ++h[p[k]];
      }
    }
    std::lock_guard<std::mutex> lock(mutex);
    for (size_t k = 0; k < hist.size(); ++k) hist[k] += local[k];
  });
  std::vector<double> mean(static_cast<size_t>(c)), stddev(static_cast<size_t>(c));
  for (int64_t ch = 0; ch < c; ++ch) {
    double count = 0, sum = 0, sum_sq = 0;
    for (int v = 0; v < 256; ++v) {
      const auto k = static_cast<double>(hist[ch * 256 + v]);
      const double x = v / 255.0;
      count += k;
      sum += k * x;
      sum_sq += k * x * x;
    }
    const double m = sum / count;
    const double var = std::max(0.0, sum_sq / count - m * m);
    mean[ch] = m;
    stddev[ch] = var > 0.0 ? std::sqrt(var) : 1.0;
  }
  return {mean, stddev};
}

std::string class_difference(const std::vector<std::string>& a, const std::vector<std::string>& b,
                             const std::string& a_name, const std::string& b_name) {
  std::vector<std::string> only_a, only_b;
  std::set_difference(a.begin(), a.end(), b.begin(), b.end(), std::back_inserter(only_a));
  std::set_difference(b.begin(), b.end(), a.begin(), a.end(), std::back_inserter(only_b));
  const auto list = [](const std::vector<std::string>& v) {
    std::string s;
    for (size_t i = 0; i < v.size() && i < kClassDiffReport; ++i) {
      s += (i ? ", '" : "'") + v[i] + "'";
    }
    if (v.size() > kClassDiffReport) {
      s += " and " + std::to_string(v.size() - kClassDiffReport) + " more";
    }
    return s;
  };
  std::string s;
  if (!only_a.empty()) s += list(only_a) + " only in " + a_name;
  if (!only_b.empty()) s += (s.empty() ? "" : "; ") + list(only_b) + " only in " + b_name;
  return s;
}

void check_normalisation_options(const DataOptions& opts) {
  if (opts.mean.empty() != opts.stddev.empty()) {
    throw std::invalid_argument(
        "image normalisation: give both mean and std, or neither (computed on the train split)");
  }
  if (opts.mean.empty()) return;
  const auto c = static_cast<size_t>(opts.channels);
  auto fits = [&](size_t n) { return n == c || n == 1; };  // one value: every channel
  if (!fits(opts.mean.size()) || !fits(opts.stddev.size())) {
    throw std::invalid_argument("image normalisation: mean and std need one value per channel (" +
                                std::to_string(c) + ") or one for all, got " +
                                std::to_string(opts.mean.size()) + " and " +
                                std::to_string(opts.stddev.size()));
  }
  for (size_t i = 0; i < c; ++i) {
    const double m = opts.mean[opts.mean.size() == 1 ? 0 : i];
    const double sd = opts.stddev[opts.stddev.size() == 1 ? 0 : i];
    if (!std::isfinite(m) || !std::isfinite(sd) || sd <= 0) {
      throw std::invalid_argument("image normalisation: channel " + std::to_string(i) +
                                  " has mean " + std::to_string(m) + " and std " +
                                  std::to_string(sd) + "; expected finite values and std > 0");
    }
  }
}

}  // namespace

DecodedImages decode_images(const std::vector<std::string>& paths, const ImageGeometry& geometry,
                            bool stop_at_error) {
  geometry.validate();
  const auto n = static_cast<int64_t>(paths.size());
  DecodedImages out;
  out.images = torch::zeros({n, geometry.channels, geometry.height, geometry.width}, torch::kUInt8);
  out.errors.assign(paths.size(), std::string());
  const int64_t sample_bytes = geometry.channels * geometry.height * geometry.width;
  uint8_t* dst = out.images.data_ptr<uint8_t>();
  std::atomic<int64_t> next{0};
  std::atomic<bool> stop{false};
  // One worker per thread, each taking the next file: decode times vary with the image size.
  const int64_t workers = std::max<int64_t>(1, std::min<int64_t>(n, at::get_num_threads()));
  at::parallel_for(0, workers, 1, [&](int64_t begin, int64_t end) {
    torch::NoGradGuard no_grad;
    for (int64_t worker = begin; worker < end; ++worker) {
      while (!stop.load(std::memory_order_relaxed)) {
        const int64_t i = next.fetch_add(1);
        if (i >= n) break;
        try {
          const torch::Tensor img = load_image(paths[i], geometry);
          std::memcpy(dst + i * sample_bytes, img.data_ptr<uint8_t>(), sample_bytes);
        } catch (const c10::Error& e) {
          out.errors[i] = paths[i] + ": " + e.what_without_backtrace();
        } catch (const std::exception& e) {
          // File errors already name the file; others (std::bad_alloc) get its name here.
          const std::string message = e.what();
          out.errors[i] =
              message.rfind(paths[i] + ": ", 0) == 0 ? message : paths[i] + ": " + message;
        }
        if (stop_at_error && !out.errors[i].empty()) stop = true;
      }
    }
  });
  return out;
}

ImageFolderIndex scan_image_folder(const std::string& root) {
  std::error_code ec;
  if (!fs::is_directory(root, ec)) {
    fail(root, fs::exists(root, ec) ? "not a directory, expected a folder of class folders"
                                    : "no such directory");
  }
  ImageFolderIndex index;
  index.root = without_trailing_slash(fs::absolute(root).lexically_normal().string());
  try {
    for (const auto& entry : fs::directory_iterator(root)) {
      if (is_hidden(entry.path())) continue;
      if (entry.is_directory()) {
        index.classes.push_back(entry.path().filename().string());
      } else {
        ++index.ignored;
      }
    }
    std::sort(index.classes.begin(), index.classes.end());
    if (index.classes.empty()) {
      fail(root, "no class folders: expected <root>/<class>/<image> (one sub-folder per class)");
    }
    for (size_t label = 0; label < index.classes.size(); ++label) {
      const fs::path class_dir = fs::path(root) / index.classes[label];
      std::vector<std::string> files;
      // Nested folders inside a class count too, as in torchvision's ImageFolder.
      for (auto it = fs::recursive_directory_iterator(
               class_dir, fs::directory_options::follow_directory_symlink);
           it != fs::recursive_directory_iterator(); ++it) {
        if (is_hidden(it->path())) {
          if (it->is_directory()) it.disable_recursion_pending();
          continue;
        }
        if (it->is_directory()) continue;
        if (it->is_regular_file() && has_image_extension(it->path())) {
          files.push_back(index.classes[label] + "/" +
                          it->path().lexically_relative(class_dir).string());
        } else {
          ++index.ignored;
        }
      }
      std::sort(files.begin(), files.end());
      for (auto& f : files) {
        index.files.push_back(std::move(f));
        index.labels.push_back(static_cast<int64_t>(label));
      }
    }
  } catch (const fs::filesystem_error& e) {
    fail(e.path1().empty() ? root : e.path1().string(), "cannot list: " + e.code().message());
  }
  if (index.files.empty()) {
    fail(root,
         "no images (.jpg, .jpeg, .png) in its " + std::to_string(index.classes.size()) +
             " class folder" + (index.classes.size() == 1 ? "" : "s") +
             (index.ignored > 0 ? " (" + std::to_string(index.ignored) + " other files)" : ""));
  }
  return index;
}

ImageSplits find_image_splits(const std::string& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    fail(dir, fs::exists(dir, ec) ? "not a directory, expected an image folder"
                                  : "no such directory (expected an image folder: "
                                    "<dir>/<class>/<image> or <dir>/{train,val}/<class>/<image>)");
  }
  const fs::path d(dir);
  ImageSplits s;
  const bool has_train = fs::is_directory(d / "train", ec);
  std::string test;
  if (fs::is_directory(d / "val", ec)) {
    test = (d / "val").string();
  } else if (fs::is_directory(d / "test", ec)) {
    test = (d / "test").string();
  }
  if (has_train && !test.empty()) {
    s.train = (d / "train").string();
    s.test = test;
  } else if (has_train) {
    fail(dir, "has a train/ folder but neither val/ nor test/ for the test split");
  } else if (!test.empty()) {
    fail(dir, "has a " + fs::path(test).filename().string() +
                  "/ folder but no train/ folder for the train split");
  } else {
    s.train = s.test = dir;
    s.shared = true;
  }
  return s;
}

std::string image_cache_dir() {
  const auto env = [](const char* name) -> std::string {
    const char* v = std::getenv(name);
    return v != nullptr ? v : "";
  };
  if (!env("QUELL_CACHE_DIR").empty()) return env("QUELL_CACHE_DIR");
  if (!env("XDG_CACHE_HOME").empty()) return (fs::path(env("XDG_CACHE_HOME")) / "quell").string();
  const std::string home = env("HOME").empty() ? "." : env("HOME");
  return (fs::path(home) / ".cache" / "quell").string();
}

void clear_image_memory_cache() {
  std::lock_guard<std::mutex> lock(memory_cache_mutex());
  memory_cache().clear();
}

Dataset load_image_folder(const DataOptions& opts) {
  if (opts.channels == 0 || opts.height == 0 || opts.width == 0) {
    throw std::invalid_argument(
        "dataset 'images' needs the model input size (channels, height, width; an image "
        "size HxW or a checkpoint's), got " +
        std::to_string(opts.channels) + "x" + std::to_string(opts.height) + "x" +
        std::to_string(opts.width));
  }
  if (opts.limit < 0) {
    throw std::invalid_argument("limit must be >= 0 (0 = all samples), got " +
                                std::to_string(opts.limit));
  }
  ImageGeometry g;
  g.channels = opts.channels;
  g.height = opts.height;
  g.width = opts.width;
  g.resize = opts.resize;
  g.validate();
  check_normalisation_options(opts);

  const std::string dir = opts.dir.empty() ? default_data_dir("images") : opts.dir;
  const ImageSplits splits = find_image_splits(dir);
  const ImageFolderIndex train_index = scan_image_folder(splits.train);
  if (splits.shared) {
    note_once("note: " + dir +
              " has no train/ and val/ (or test/) folders: its class folders "
              "serve as both the train and the test split");
  }
  std::optional<ImageFolderIndex> test_index;
  if (!splits.shared) {
    test_index = scan_image_folder(splits.test);
    if (test_index->classes != train_index.classes) {
      fail(splits.train, "class folders differ from " + splits.test + "'s: " +
                             class_difference(train_index.classes, test_index->classes,
                                              splits.train, splits.test) +
                             " (both splits need the same classes, so labels mean the same)");
    }
  }
  const bool use_train = opts.split == Split::kTrain || splits.shared;
  const ImageFolderIndex& index = use_train ? train_index : *test_index;
  const DecodedSplit split = decoded_split(index, opts, g);
  if (!split.skipped.empty()) {
    std::string first;
    for (size_t i = 0; i < split.skipped.size() && i < kSkipReportFiles; ++i) {
      first += (i ? "; " : "") + split.skipped[i];
    }
    note("warning: skipped " + std::to_string(split.skipped.size()) + " unreadable image" +
         (split.skipped.size() == 1 ? "" : "s") + " of " + index.root + ": " + first +
         (split.skipped.size() > kSkipReportFiles ? "; ..." : ""));
  }

  Dataset ds;
  ds.name = "images";
  ds.num_classes = static_cast<int64_t>(index.classes.size());
  ds.targets = split.labels;
  ds.skipped = split.skipped;
  ds.inputs = split.images.to(torch::kFloat).div_(255.0f);
  if (!opts.normalise) {
    ds.mean.assign(static_cast<size_t>(g.channels), 0.0);
    ds.stddev.assign(static_cast<size_t>(g.channels), 1.0);
    return ds;
  }
  if (!opts.mean.empty()) {
    auto per_channel = [&](const std::vector<double>& v) {
      return v.size() == 1 ? std::vector<double>(static_cast<size_t>(g.channels), v[0]) : v;
    };
    ds.mean = per_channel(opts.mean);
    ds.stddev = per_channel(opts.stddev);
  } else if (use_train) {
    std::tie(ds.mean, ds.stddev) = pixel_statistics(split.images);
  } else {
    // The test split is normalised with the train split's statistics, as the model saw them.
    std::tie(ds.mean, ds.stddev) = pixel_statistics(decoded_split(train_index, opts, g).images);
  }
  const auto c = g.channels;
  const auto mean = torch::tensor(ds.mean, torch::kFloat).view({1, c, 1, 1});
  const auto stddev = torch::tensor(ds.stddev, torch::kFloat).view({1, c, 1, 1});
  ds.inputs.sub_(mean).div_(stddev);
  return ds;
}

}  // namespace quell
