// Core benchmark, every figure a ratio against a baseline measured in the same run:
//  1. inference: images/s of each registered model, clean vs additive dynamic noise on every
//     site (target: noisy time <= 1.10x clean);
//  2. training: `quell::train` on lenet5-bn vs a plain LibTorch loop over the same network,
//     data, optimizer and batch size (target: <= 1.05x the plain loop).
// Timings alternate between the two sides of each ratio and report medians, so load from other
// processes hits both sides alike.
//
// Usage: bench_core [--quick] [--threads N] [--batch B (inference, default 256)]
//                   [--models a,b (inference)] [--data-dir DIR]
//   Uses Fashion-MNIST from /usr/share/datasets/fashion-mnist when present (else synthetic).

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "quell/data.h"
#include "quell/eval.h"
#include "quell/models.h"
#include "quell/rng.h"
#include "quell/runtime.h"
#include "timing.h"
#include "quell/train.h"

// Internal to src/rng.cpp (as in tests/test_rng.cpp): one block of 256 normals by one code path
// (0 generic, 1 AVX2, 2 AVX-512); false if this CPU lacks it.
namespace quell::detail {
bool normal_block_on_path(int path, RngStream s, uint32_t substream, uint64_t block, float* out);
}  // namespace quell::detail

namespace {

using quell::bench::median;
using quell::bench::paired;
using quell::bench::seconds_of;

// The same LeNet-5-BN as the zoo's, written as a plain LibTorch module (the baseline a LibTorch
// user would write by hand).
struct PlainLenetImpl : torch::nn::Module {
  torch::nn::Conv2d conv1{torch::nn::Conv2dOptions(1, 6, 5).padding(2)};
  torch::nn::BatchNorm2d bn1{6};
  torch::nn::Conv2d conv2{torch::nn::Conv2dOptions(6, 16, 5)};
  torch::nn::BatchNorm2d bn2{16};
  torch::nn::Linear fc1{400, 120};
  torch::nn::BatchNorm1d bn3{120};
  torch::nn::Linear fc2{120, 84};
  torch::nn::BatchNorm1d bn4{84};
  torch::nn::Linear fc3{84, 10};
  PlainLenetImpl() {
    register_module("conv1", conv1);
    register_module("bn1", bn1);
    register_module("conv2", conv2);
    register_module("bn2", bn2);
    register_module("fc1", fc1);
    register_module("bn3", bn3);
    register_module("fc2", fc2);
    register_module("bn4", bn4);
    register_module("fc3", fc3);
  }
  torch::Tensor forward(torch::Tensor x) {
    x = torch::max_pool2d(torch::relu(bn1(conv1(x))), 2, 2);
    x = torch::max_pool2d(torch::relu(bn2(conv2(x))), 2, 2);
    x = torch::relu(bn3(fc1(x.flatten(1))));
    x = torch::relu(bn4(fc2(x)));
    return fc3(x);
  }
};
TORCH_MODULE(PlainLenet);

quell::Dataset load_data(const std::string& dir, quell::Split split, int64_t limit) {
  quell::DataOptions o;
  o.dir = dir;
  o.split = split;
  o.limit = limit;
  return quell::load_dataset(o);
}

}  // namespace

int main(int argc, char** argv) {
  bool quick = false;
  int64_t batch = 256;
  std::string only;  // comma-separated model names; empty = all
  int threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  std::string data_dir = "/usr/share/datasets/fashion-mnist";
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--quick"))
      quick = true;
    else if (!std::strcmp(argv[i], "--threads") && i + 1 < argc)
      threads = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--data-dir") && i + 1 < argc)
      data_dir = argv[++i];
    else if (!std::strcmp(argv[i], "--batch") && i + 1 < argc)
      batch = std::atoll(argv[++i]);
    else if (!std::strcmp(argv[i], "--models") && i + 1 < argc)
      only = argv[++i];
    else {
      std::fprintf(stderr,
                   "usage: bench_core [--quick] [--threads N] [--batch B] [--models a,b] "
                   "[--data-dir DIR]\n");
      return 2;
    }
  }
  quell::set_threads(threads);
  const int reps = quick ? 3 : 7;
  std::string tmp;
  if (!std::filesystem::exists(data_dir + "/t10k-images-idx3-ubyte.gz")) {
    tmp = (std::filesystem::temp_directory_path() / "quell-bench-data").string();
    quell::write_synthetic_idx(tmp, 10000, 2000, 1);
    data_dir = tmp;
    std::printf("(Fashion-MNIST not found: synthetic data in the same format)\n");
  }
  std::printf("threads %d, %s\n\n", at::get_num_threads(), quick ? "quick" : "full");

  // 1. Inference.
  std::printf("## Inference: clean vs additive dynamic noise (sigma 0.1) on every site\n\n");
  std::printf(
      "| model | sites | batch | clean img/s | noisy img/s | noisy/clean time | "
      "noise kernel alone / clean time | normals alone / clean time | floor |\n");
  std::printf("|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
  // The fastest generator path of this CPU, for the normals-alone column.
  int path = 2;
  {
    alignas(64) float probe[256];
    while (path > 0 && !quell::detail::normal_block_on_path(path, {1, 1}, 0, 0, probe)) --path;
  }
  double worst_floor = 0.0;
  const quell::Dataset test28 = load_data(data_dir, quell::Split::kTest, quick ? 2000 : 10000);
  double worst = 0.0;
  for (const auto& name : quell::model_names()) {
    if (!only.empty() && ("," + only + ",").find("," + name + ",") == std::string::npos) continue;
    const bool colour = name == "vgg-s" || name == "resnet20";
    quell::ModelSpec spec;
    spec.name = name;
    int64_t n = test28.size();
    quell::Dataset data = test28;
    if (colour) {
      // 32x32 colour input of the CIFAR layout (random pixels: speed does not depend on them).
      spec.in_channels = 3;
      spec.height = spec.width = 32;
      n = quick ? 256 : 1000;
      data.inputs = torch::randn({n, 3, 32, 32});
      data.targets = torch::randint(10, {n}, torch::kLong);
    }
    torch::manual_seed(0);
    quell::Model model = quell::make_model(spec);
    model->eval();
    const quell::NoiseConfig noisy =
        quell::build_noise_config({"all=add:0.1"}, {}, {}, "", 1, model->site_names());
    auto run = [&](const quell::NoiseConfig& cfg) {
      return [&, cfg] {
        model->engine().configure(cfg);
        quell::run_pass(*model, data, batch);
      };
    };
    const auto [clean_s, noisy_s] = paired(reps, run(quell::NoiseConfig{}), run(noisy));
    // The noise kernel alone over tensors of the site shapes, for the same number of images:
    // how much of the difference is drawing the normals.
    std::vector<torch::Tensor> acts;
    for (const auto& site : model->sites()) {
      std::vector<int64_t> shape{batch};
      shape.insert(shape.end(), site.shape.begin(), site.shape.end());
      acts.push_back(torch::zeros(shape));
    }
    auto kernel_pass = [&] {
      for (int64_t b = 0; b < (n + batch - 1) / batch; ++b) {
        for (auto& a : acts) quell::add_normal_(a, {1, static_cast<uint64_t>(b)}, 0.1);
      }
    };
    const auto [kernel_s, unused] = paired(reps, kernel_pass, [] {});
    (void)unused;
    // Drawing the same number of normals into one L1-resident block, on all threads: the
    // generator's arithmetic without any memory traffic. A noisy pass does the clean pass's
    // work plus at least this, so 1 + normals/clean is a floor for its time ratio.
    int64_t per_image = 0;
    for (const auto& site : model->sites()) per_image += site.numel();
    const int64_t blocks = (per_image * n + 255) / 256;
    std::vector<float> sink(static_cast<size_t>(at::get_num_threads()), 0.0f);
    auto normals_pass = [&] {
      at::parallel_for(0, blocks, 64, [&](int64_t b0, int64_t b1) {
        alignas(64) float buf[256];
        float acc = 0.0f;  // keeps the draws alive; written once (no shared cache line)
        for (int64_t b = b0; b < b1; ++b) {
          quell::detail::normal_block_on_path(path, {1, 7}, 0, static_cast<uint64_t>(b), buf);
          acc += buf[b & 255];
        }
        sink[static_cast<size_t>(at::get_thread_num())] += acc;
      });
    };
    const auto [normals_s, unused2] = paired(reps, normals_pass, [] {});
    (void)unused2;
    const double floor = 1.0 + normals_s / clean_s;
    worst = std::max(worst, noisy_s / clean_s);
    worst_floor = std::max(worst_floor, floor);
    std::printf("| %s | %d | %lld | %.0f | %.0f | %.3f | %.3f | %.3f | %.3f |\n", name.c_str(),
                model->num_sites(), static_cast<long long>(batch), n / clean_s, n / noisy_s,
                noisy_s / clean_s, kernel_s / clean_s, normals_s / clean_s, floor);
    std::fflush(stdout);
  }
  std::printf("\nworst noisy/clean time ratio: %.3f (target <= 1.10); worst floor %.3f "
              "(generator path %s)\n\n",
              worst, worst_floor, path == 2 ? "AVX-512" : path == 1 ? "AVX2" : "generic");

  // 2. Training.
  std::printf("## Training lenet5-bn: quell train vs a plain LibTorch loop (Adam, batch 128)\n\n");
  const quell::Dataset train_set =
      load_data(data_dir, quell::Split::kTrain, quick ? 6000 : 0);  // full: one whole epoch
  const int64_t bs = 128;
  auto plain = [&] {
    torch::manual_seed(1);
    PlainLenet net;
    net->train();
    torch::optim::Adam opt(net->parameters(), torch::optim::AdamOptions(1e-3));
    auto gen = at::detail::createCPUGenerator(1);
    const int64_t n = train_set.size();
    const torch::Tensor perm = torch::randperm(n, gen, torch::kLong);
    double loss_sum = 0.0;
    for (int64_t b = 0; b < n; b += bs) {
      const torch::Tensor idx = perm.narrow(0, b, std::min(bs, n - b));
      const torch::Tensor x = train_set.inputs.index_select(0, idx);
      const torch::Tensor y = train_set.targets.index_select(0, idx);
      opt.zero_grad();
      const torch::Tensor loss = torch::nn::functional::cross_entropy(net->forward(x), y);
      loss.backward();
      opt.step();
      loss_sum += loss.item<double>();
    }
    if (!std::isfinite(loss_sum)) std::abort();
  };
  auto ours = [&] {
    torch::manual_seed(1);
    quell::ModelSpec spec;
    quell::Model model = quell::make_model(spec);
    quell::TrainOptions o;
    o.epochs = 1;
    o.batch_size = bs;
    quell::train(*model, train_set, o);
  };
  const auto [plain_s, ours_s] = paired(quick ? 2 : 3, plain, ours);
  std::printf("| loop | samples/s | time ratio |\n|---|---:|---:|\n");
  std::printf("| plain LibTorch | %.0f | 1.000 |\n", train_set.size() / plain_s);
  std::printf("| quell train | %.0f | %.3f |\n", train_set.size() / ours_s, ours_s / plain_s);
  std::printf("\nquell train / plain loop time: %.3f (target <= 1.05)\n", ours_s / plain_s);
  if (!tmp.empty()) std::filesystem::remove_all(tmp);
  return 0;
}
