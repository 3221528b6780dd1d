// Device benchmark (issue 19): accuracy over time of one model on PCM devices, 10 chips x 6
// times (1 s, 1 h, 1 d, 1 mo, 1 y, 10 y), against the same 60 passes over the same data without
// device noise, in the same process, on the same threads. Target: the device model costs at most
// 1.5x a clean evaluation (programming and drift are drawn once per chip and time, not per batch).
// Also timed: the same with aihwkit's tile I/O (7-bit DAC, 9-bit ADC, output noise, bound
// management), which adds work to every analog layer's every batch.
//
// Usage: bench_devices [--checkpoint FILE] [--model resnet20] [--limit N] [--threads N]
//                      [--rounds R] [--data-dir DIR]
//   Without --checkpoint: the model freshly initialised (seed 1) for Fashion-MNIST's geometry
//   (the time does not depend on the weights). Each configuration runs R rounds (default 3),
//   interleaved; the medians are compared.
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "quell/checkpoint.h"
#include "quell/data.h"
#include "quell/device.h"
#include "quell/eval.h"
#include "quell/runtime.h"

namespace {

using Clock = std::chrono::steady_clock;

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  std::string checkpoint, model_name = "resnet20";
  std::string data_dir = "/usr/share/datasets/fashion-mnist";
  int64_t limit = 2000;
  int rounds = 3;
  int threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  for (int i = 1; i < argc; ++i) {
    auto next = [&]() -> const char* { return i + 1 < argc ? argv[++i] : ""; };
    if (!std::strcmp(argv[i], "--checkpoint")) {
      checkpoint = next();
    } else if (!std::strcmp(argv[i], "--model")) {
      model_name = next();
    } else if (!std::strcmp(argv[i], "--limit")) {
      limit = std::atoll(next());
    } else if (!std::strcmp(argv[i], "--rounds")) {
      rounds = std::max(1, std::atoi(next()));
    } else if (!std::strcmp(argv[i], "--threads")) {
      threads = std::atoi(next());
    } else if (!std::strcmp(argv[i], "--data-dir")) {
      data_dir = next();
    } else {
      std::fprintf(stderr,
                   "usage: bench_devices [--checkpoint FILE] [--model NAME] [--limit N] "
                   "[--rounds R] [--threads N] [--data-dir DIR]\n");
      return 2;
    }
  }
  quell::set_threads(threads);
  std::string tmp;
  if (!std::filesystem::exists(data_dir + "/t10k-images-idx3-ubyte.gz")) {
    tmp = (std::filesystem::temp_directory_path() / "quell-bench-devices").string();
    quell::write_synthetic_idx(tmp, 2000, 2000, 1);
    data_dir = tmp;
  }
  quell::DataOptions d;
  d.name = "fashion-mnist";
  d.dir = data_dir;
  d.split = quell::Split::kTest;
  d.limit = limit;
  const quell::Dataset data = quell::load_dataset(d);
  quell::Model model{nullptr};
  if (!checkpoint.empty()) {
    model = quell::load_checkpoint(checkpoint);
  } else {
    torch::manual_seed(1);
    model = quell::make_model(quell::ModelSpec::for_dataset(model_name, data));
    model->calibrate(data.inputs, 512);
  }
  model->eval();
  const std::vector<double> times{1.0, 3600.0, 86400.0, 2592000.0, 31557600.0, 315576000.0};
  const int chips = 10;
  int64_t weights = 0;
  for (const auto& sw : model->analog_weights()) weights += sw.second.numel();
  std::printf("bench_devices: %s (%lld analog weights), %lld test images, %d threads, %d chips x "
              "%zu times, %d rounds\n",
              model->spec().name.c_str(), static_cast<long long>(weights),
              static_cast<long long>(data.size()), threads, chips, times.size(), rounds);

  quell::EvalOptions o;
  o.chips = chips;
  o.draws = 1;
  // Clean: the same number of passes (chips x times) without a device.
  auto clean = [&] {
    double acc = 0.0;
    for (size_t t = 0; t < times.size() * chips; ++t) {
      acc += quell::run_pass(*model, data, o.batch_size).accuracy;
    }
    return acc / static_cast<double>(times.size() * chips);
  };
  auto device = [&](const quell::TileIO& tile) {
    double acc = 0.0;
    for (double t : times) {
      quell::NoiseConfig cfg;
      cfg.device.model = quell::DeviceModel::parse("pcm");
      cfg.device.compensation = true;
      cfg.device.time = t;
      cfg.device.tile = tile;
      acc += quell::evaluate(*model, data, cfg, o).accuracy.mean;
    }
    return acc / static_cast<double>(times.size());
  };
  std::vector<double> t_clean, t_pcm, t_tile, t_nobm;
  double a_clean = 0, a_pcm = 0, a_tile = 0, a_nobm = 0;
  auto timed = [](auto&& fn, double* acc) {
    const auto t0 = Clock::now();
    *acc = fn();
    return std::chrono::duration<double>(Clock::now() - t0).count();
  };
  for (int r = 0; r < rounds; ++r) {
    t_clean.push_back(timed(clean, &a_clean));
    t_pcm.push_back(timed([&] { return device(quell::TileIO()); }, &a_pcm));
    t_tile.push_back(timed([&] { return device(quell::TileIO::parse("aihwkit")); }, &a_tile));
    t_nobm.push_back(
        timed([&] { return device(quell::TileIO::parse("aihwkit:bm=off")); }, &a_nobm));
    std::printf("round %d: clean %.2f s, pcm %.2f s, pcm + aihwkit tile %.2f s (without bound "
                "management %.2f s)\n",
                r + 1, t_clean.back(), t_pcm.back(), t_tile.back(), t_nobm.back());
  }
  const double c = median(t_clean), p = median(t_pcm), t = median(t_tile), nb = median(t_nobm);
  std::printf("\n%-34s %9s %8s %9s\n", "60 passes (10 chips x 6 times)", "median s", "ratio",
              "mean acc");
  std::printf("%-34s %9.2f %8s %9.4f\n", "clean (baseline)", c, "1.00", a_clean);
  std::printf("%-34s %9.2f %8.2f %9.4f   target <= 1.5: %s\n", "pcm, drift compensation", p, p / c,
              a_pcm, p / c <= 1.5 ? "met" : "NOT met");
  std::printf("%-34s %9.2f %8.2f %9.4f\n", "pcm + aihwkit tile I/O", t, t / c, a_tile);
  std::printf("%-34s %9.2f %8.2f %9.4f\n", "  the same, bound management off", nb, nb / c, a_nobm);
  if (!tmp.empty()) std::filesystem::remove_all(tmp);
  return 0;
}
