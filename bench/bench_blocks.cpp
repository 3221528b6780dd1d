// Denoising blocks' speed, as ratios against a baseline measured in the same run: a bottleneck
// block (quell/blocks.h) at each of lenet5-bn's convolutional sites (and vgg-s's without
// --quick) against the same block's parameters through three LibTorch conv2d calls (what blocks
// too wide for the one-pass kernel of src/model/bottleneck.h still run), evaluation (no
// autograd) and one training step (forward, backward to the input and the block's
// parameters). Timings alternate between the two sides and report medians.
//
// Usage: bench_blocks [--quick] [--threads N] [--batch B (default 128)]
//   --threads 1 is what an evaluation runs per batch (quell::parallel_items).

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <thread>
#include <vector>

#include "quell/blocks.h"
#include "quell/runtime.h"
#include "timing.h"

namespace {

using quell::bench::median;
using quell::bench::paired;
using quell::bench::seconds_of;

// The block's function through LibTorch's convolutions: x + expand(relu(mid(relu(reduce(x))))).
torch::Tensor conv_block(quell::DenoiserImpl& block, const torch::Tensor& x) {
  auto p = block.named_parameters();
  torch::Tensor h = torch::relu(torch::conv2d(x, p["reduce.weight"], p["reduce.bias"]));
  h = torch::relu(torch::conv2d(h, p["mid.weight"], p["mid.bias"], 1, 1));
  return x + torch::conv2d(h, p["expand.weight"], p["expand.bias"]);
}

}  // namespace

int main(int argc, char** argv) {
  bool quick = false;
  int64_t batch = 128;
  int threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--quick")) {
      quick = true;
    } else if (!std::strcmp(argv[i], "--threads") && i + 1 < argc) {
      threads = std::atoi(argv[++i]);
    } else if (!std::strcmp(argv[i], "--batch") && i + 1 < argc) {
      batch = std::atoll(argv[++i]);
    } else {
      std::fprintf(stderr, "usage: bench_blocks [--quick] [--threads N] [--batch B]\n");
      return 2;
    }
  }
  quell::set_threads(threads);
  const int reps = quick ? 5 : 15;
  std::printf("bottleneck blocks, batch %lld, %d thread(s), medians of %d; ratio = conv2d / block\n",
              static_cast<long long>(batch), threads, reps);
  std::printf("%-16s %5s | %10s %10s %6s | %10s %10s %6s\n", "site shape", "ratio", "eval conv",
              "eval block", "x", "train conv", "train block", "x");
  struct Case {
    std::vector<int64_t> shape;
    int ratio;
  };
  // lenet5-bn: input, conv1..relu1, pool1, conv2..relu2, pool2; vgg-s on 28x28 images: its
  // three stages (32, 64 and 128 channels); the study's ratios 4 and 16.
  std::vector<Case> cases = {{{1, 28, 28}, 4},  {{6, 28, 28}, 16}, {{6, 28, 28}, 4},
                             {{6, 14, 14}, 16}, {{16, 10, 10}, 16}, {{16, 10, 10}, 4},
                             {{16, 5, 5}, 4}};
  if (!quick) {
    cases.insert(cases.end(), {{{32, 28, 28}, 16}, {{32, 28, 28}, 4}, {{64, 14, 14}, 16},
                               {{64, 14, 14}, 4}, {{128, 7, 7}, 16}});
  }
  double worst_eval = 1e9, worst_train = 1e9;
  for (const auto& c : cases) {
    torch::manual_seed(0);
    quell::DenoiserImpl block(quell::BlockSpec::parse("bottleneck:r=" + std::to_string(c.ratio)),
                              c.shape);
    {
      // Non-zero expand weights (a fresh block's are zero): both sides compute a real function.
      torch::NoGradGuard no_grad;
      for (auto& p : block.parameters()) p.normal_(0, 0.1);
    }
    std::vector<int64_t> full = {batch};
    full.insert(full.end(), c.shape.begin(), c.shape.end());
    const torch::Tensor x = torch::randn(full);
    {
      torch::NoGradGuard no_grad;
      const double diff = (conv_block(block, x) - block.forward(x)).abs().max().item<double>();
      if (diff > 1e-4) {
        std::fprintf(stderr, "block and conv2d disagree by %g\n", diff);
        return 1;
      }
    }
    const auto [eval_conv, eval_block] = paired(
        reps,
        [&] {
          torch::NoGradGuard no_grad;
          (void)conv_block(block, x).sum().item<float>();
        },
        [&] {
          torch::NoGradGuard no_grad;
          (void)block.forward(x).sum().item<float>();
        });
    const torch::Tensor xg = x.clone().requires_grad_(true);
    const auto [train_conv, train_block] = paired(
        reps, [&] { conv_block(block, xg).square().mean().backward(); },
        [&] { block.forward(xg).square().mean().backward(); });
    char shape[32];
    std::snprintf(shape, sizeof shape, "[%lld,%lld,%lld]", static_cast<long long>(c.shape[0]),
                  static_cast<long long>(c.shape[1]), static_cast<long long>(c.shape[2]));
    std::printf("%-16s %5d | %8.2fms %8.2fms %5.2fx | %8.2fms %8.2fms %5.2fx\n", shape, c.ratio,
                eval_conv * 1e3, eval_block * 1e3, eval_conv / eval_block, train_conv * 1e3,
                train_block * 1e3, train_conv / train_block);
    worst_eval = std::min(worst_eval, eval_conv / eval_block);
    worst_train = std::min(worst_train, train_conv / train_block);
  }
  std::printf("worst ratio: eval %.2fx, train %.2fx (target: >= 0.9x everywhere)\n", worst_eval,
              worst_train);
  return 0;
}
