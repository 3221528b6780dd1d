// Image-folder benchmark, every figure a ratio against a baseline measured in the same run:
//  1. decode + resize + centre crop, images/s: 1 thread (the baseline) vs all threads, JPEG vs
//     PNG, to 224x224 and to 32x32, with libjpeg's DCT scaling vs full-size decoding;
//  2. the whole load_dataset("images") path: cold (no cache) vs from the disk cache vs from the
//     memory cache;
//  3. a clean forward pass (quell::run_pass) of a small CNN on inputs of the same size, to tell
//     whether decoding is the bottleneck of an evaluation.
// The data is generated in a temporary directory: JPEGs of ImageNet's typical 500x375 with
// random smooth content (quality 90), and PNGs of the same pictures.
//
// Usage: bench_images [--quick] [--threads N] [--jpegs N (default 2000)] [--pngs N (default 400)]

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <sys/resource.h>
#include <torch/torch.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "quell/data.h"
#include "quell/eval.h"
#include "quell/image_folder.h"
#include "quell/models.h"
#include "quell/runtime.h"

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

constexpr int64_t kClasses = 10;
constexpr int64_t kImageHeight = 375, kImageWidth = 500;  // ImageNet's most common size

/// Minor page faults of the process so far (fresh memory touched: kernel time, not decoding).
long minor_faults() {
  rusage usage{};
  ::getrusage(RUSAGE_SELF, &usage);
  return usage.ru_minflt;
}

long last_faults = 0;  // page faults of the last seconds_of() call

double seconds_of(const std::function<void()>& fn) {
  const long faults0 = minor_faults();
  const auto t0 = Clock::now();
  fn();
  const double s = std::chrono::duration<double>(Clock::now() - t0).count();
  last_faults = minor_faults() - faults0;
  return s;
}

/// A random smooth picture [3, 375, 500]: bilinear upsampling of random 6x8 colours plus mild
/// pixel noise (JPEG sizes like a photo's: ~60-100 KB at quality 90).
torch::Tensor smooth_picture(uint64_t seed) {
  auto gen = at::detail::createCPUGenerator(seed);
  namespace F = torch::nn::functional;
  auto coarse = torch::rand({1, 3, 6, 8}, gen) * 255.0;
  auto img = F::interpolate(coarse, F::InterpolateFuncOptions()
                                        .size(std::vector<int64_t>{kImageHeight, kImageWidth})
                                        .mode(torch::kBilinear)
                                        .align_corners(false));
  img = img + torch::randn({1, 3, kImageHeight, kImageWidth}, gen) * 6.0;
  return img.squeeze(0).round().clamp(0, 255).to(torch::kUInt8);
}

/// root/<class k>/<i>.<ext> for i < n, class i % 10, written in parallel.
std::vector<std::string> write_folder(const fs::path& root, int64_t n, bool png) {
  std::vector<std::string> paths(static_cast<size_t>(n));
  for (int64_t k = 0; k < kClasses; ++k) {
    fs::create_directories(root / ("class" + std::to_string(k)));
  }
  for (int64_t i = 0; i < n; ++i) {
    paths[i] = (root / ("class" + std::to_string(i % kClasses)) /
                (std::to_string(i) + (png ? ".png" : ".jpg")))
                   .string();
  }
  at::parallel_for(0, n, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const auto img = smooth_picture(static_cast<uint64_t>(i) + 1);
      if (png) {
        quell::write_png(paths[i], img);
      } else {
        quell::write_jpeg(paths[i], img, 90);
      }
    }
  });
  return paths;
}

/// Reads a file and drops the bytes (puts it in the page cache).
void read_through(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::vector<char> buf(1 << 16);
  while (in.read(buf.data(), static_cast<std::streamsize>(buf.size())) || in.gcount() > 0) {
  }
}

struct Row {
  std::string what;
  int64_t images;
  int threads;
  double seconds;
  long faults;  // minor page faults during the run
};

double rate(const Row& r) { return r.images / r.seconds; }

}  // namespace

int main(int argc, char** argv) {
  bool quick = false;
  int threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  int64_t n_jpeg = 2000, n_png = 400;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--quick")) {
      quick = true;
      n_jpeg = 300;
      n_png = 100;
    } else if (!std::strcmp(argv[i], "--threads") && i + 1 < argc) {
      threads = std::atoi(argv[++i]);
    } else if (!std::strcmp(argv[i], "--jpegs") && i + 1 < argc) {
      n_jpeg = std::atoll(argv[++i]);
    } else if (!std::strcmp(argv[i], "--pngs") && i + 1 < argc) {
      n_png = std::atoll(argv[++i]);
    } else {
      std::fprintf(stderr, "usage: bench_images [--quick] [--threads N] [--jpegs N] [--pngs N]\n");
      return 2;
    }
  }
  quell::set_threads(threads);
  const int all = at::get_num_threads();
  const fs::path tmp = fs::temp_directory_path() /
                       ("quell-bench-images-" + std::to_string(static_cast<long long>(::getpid())));
  fs::remove_all(tmp);
  ::setenv("QUELL_CACHE_DIR", (tmp / "cache").c_str(), 1);
  const double gen_s = seconds_of([&] {
    write_folder(tmp / "jpeg", n_jpeg, false);
    write_folder(tmp / "png", n_png, true);
  });
  uintmax_t jpeg_bytes = 0, png_bytes = 0;
  std::vector<std::string> jpegs, pngs;
  for (const auto& e : fs::recursive_directory_iterator(tmp)) {
    if (!e.is_regular_file()) continue;
    const bool is_png = e.path().extension() == ".png";
    (is_png ? png_bytes : jpeg_bytes) += e.file_size();
    (is_png ? pngs : jpegs).push_back(e.path().string());
    // Reading every file once puts it in the page cache: the timings below are decoding, not
    // the disk.
    read_through(e.path().string());
  }
  // Other processes on the machine take cores from the multi-threaded rows: say how busy it was.
  double load[1] = {0.0};
  if (::getloadavg(load, 1) != 1) load[0] = -1.0;
  std::printf(
      "%lld JPEGs (%.0f KB each) and %lld PNGs (%.0f KB each) of %lldx%lld, generated in "
      "%.1f s; threads %d, %s; load average %.2f on %u cores before the timings\n\n",
      static_cast<long long>(jpegs.size()), jpeg_bytes / 1024.0 / std::max<size_t>(1, jpegs.size()),
      static_cast<long long>(pngs.size()), png_bytes / 1024.0 / std::max<size_t>(1, pngs.size()),
      static_cast<long long>(kImageWidth), static_cast<long long>(kImageHeight), gen_s, all,
      quick ? "quick" : "full", load[0], std::thread::hardware_concurrency());

  // 1. decode + resize + crop.
  std::vector<Row> rows;
  auto decode = [&](const std::string& what, const std::vector<std::string>& files, int64_t side,
                    bool dct, int nthreads) {
    quell::ImageGeometry g;
    g.height = g.width = side;
    g.dct_scaling = dct;
    quell::set_threads(nthreads);
    quell::DecodedImages out;
    const double s = seconds_of([&] { out = quell::decode_images(files, g, true); });
    for (const auto& e : out.errors) {
      if (!e.empty()) {
        std::fprintf(stderr, "bench_images: %s\n", e.c_str());
        std::exit(1);
      }
    }
    rows.push_back({what, static_cast<int64_t>(files.size()), nthreads, s, last_faults});
    std::fprintf(stderr, "  %s, %d thread(s): %.0f img/s\n", what.c_str(), nthreads,
                 rate(rows.back()));
  };
  decode("JPEG -> 224x224, DCT scaling", jpegs, 224, true, 1);  // the baseline
  decode("JPEG -> 224x224, DCT scaling", jpegs, 224, true, all);
  decode("JPEG -> 224x224, full decode", jpegs, 224, false, 1);
  decode("JPEG -> 224x224, full decode", jpegs, 224, false, all);
  decode("JPEG -> 32x32, DCT scaling", jpegs, 32, true, 1);
  decode("JPEG -> 32x32, DCT scaling", jpegs, 32, true, all);
  decode("JPEG -> 32x32, full decode", jpegs, 32, false, all);
  decode("PNG -> 224x224", pngs, 224, true, 1);
  decode("PNG -> 224x224", pngs, 224, true, all);
  decode("PNG -> 32x32", pngs, 32, true, all);

  // 2. The dataset path (float conversion and normalisation included).
  quell::set_threads(all);
  quell::DataOptions o;
  o.name = "images";
  o.dir = (tmp / "jpeg").string();
  o.channels = 3;
  o.height = o.width = 224;
  o.mean = {0.5, 0.5, 0.5};
  o.stddev = {0.25, 0.25, 0.25};
  auto dataset_row = [&](const std::string& what, bool cache, bool clear) {
    o.image_cache = cache;
    if (clear) quell::clear_image_memory_cache();
    int64_t n = 0;
    const double s = seconds_of([&] { n = quell::load_dataset(o).size(); });
    rows.push_back({what, n, all, s, last_faults});
    std::fprintf(stderr, "  %s: %.0f img/s\n", what.c_str(), rate(rows.back()));
  };
  dataset_row("load_dataset JPEG 224, no cache", false, true);
  dataset_row("load_dataset JPEG 224, cold, writing the cache", true, true);
  dataset_row("load_dataset JPEG 224, from the disk cache", true, true);
  dataset_row("load_dataset JPEG 224, from the memory cache", true, false);

  const double base = rate(rows.front());
  std::printf("## Decode + resize + centre crop (baseline: JPEG -> 224x224 on 1 thread)\n\n");
  std::printf("| case | images | threads | seconds | img/s | x baseline | page faults/img |\n");
  std::printf("|---|---:|---:|---:|---:|---:|---:|\n");
  for (const auto& r : rows) {
    std::printf("| %s | %lld | %d | %.2f | %.0f | %.2f | %.0f |\n", r.what.c_str(),
                static_cast<long long>(r.images), r.threads, r.seconds, rate(r), rate(r) / base,
                static_cast<double>(r.faults) / r.images);
  }

  // 3. A forward pass of a small CNN on inputs of the same sizes.
  std::printf("\n## Clean forward pass (quell::run_pass, batch 64, %d threads) vs decoding\n\n",
              all);
  std::printf(
      "| model | input | images | img/s | decode img/s (all threads, DCT) | decode / forward |\n");
  std::printf("|---|---|---:|---:|---:|---:|\n");
  const double decode224 = rate(rows[1]), decode32 = rate(rows[5]);
  for (const int64_t side : {32, 224}) {
    quell::ModelSpec spec;
    spec.name = "resnet20";
    spec.in_channels = 3;
    spec.height = spec.width = side;
    spec.num_classes = kClasses;
    torch::manual_seed(0);
    quell::Model model = quell::make_model(spec);
    model->eval();
    quell::Dataset data;
    data.name = "random";
    data.num_classes = kClasses;
    const int64_t n = side == 32 ? (quick ? 512 : 2048) : (quick ? 64 : 192);
    data.inputs = torch::randn({n, 3, side, side});
    data.targets = torch::randint(kClasses, {n}, torch::kLong);
    quell::run_pass(*model, data, 64);  // warm-up
    const double s = seconds_of([&] { quell::run_pass(*model, data, 64); });
    const double decode_rate = side == 32 ? decode32 : decode224;
    std::printf("| resnet20 | 3x%lldx%lld | %lld | %.0f | %.0f | %.2f |\n",
                static_cast<long long>(side), static_cast<long long>(side),
                static_cast<long long>(n), n / s, decode_rate, decode_rate / (n / s));
  }
  std::printf(
      "\n(decode / forward > 1: decoding once is faster than one clean pass; an evaluation "
      "makes one pass per noise draw and level over the decoded tensors)\n");
  fs::remove_all(tmp);
  return 0;
}
