// Imported-model benchmark: what running a TorchScript export through quell's interpreter
// costs against the built-in model, on the same weights, data and threads, in the same run.
//
// The built-in lenet5-bn (runs/demo/lenet5-bn.pt, trained first as scripts/demo.sh does if it
// is missing) and the lenet5_bn TorchScript fixture (tests/fixtures) loaded with the built-in's
// weights are timed on the 10,000 Fashion-MNIST test images:
//   clean pass     one evaluation without noise;
//   noisy eval     5 draws of additive noise at every site (rel=std);
//   walk           a Walking Noise sweep with prefix caching (all sites, 1e-2..1e4 at 4 per
//                  decade, 1 repeat, early stop);
// and a torchvision-style ResNet fixture and a one-block transformer fixture are timed per
// forward pass of a batch against LibTorch's own TorchScript interpreter (module.forward), the
// way a LibTorch user would run the export. Prints times, ratios and whether the accuracies
// agree exactly.
//
// Usage: bench_import [--checkpoint FILE] [--threads N] [--draws N]

#include <torch/script.h>
#include <torch/torch.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <string>

#include "bench_paths.h"  // QUELL_SOURCE_DIR
#include "demo_model.h"
#include "quell/checkpoint.h"
#include "quell/data.h"
#include "quell/eval.h"
#include "quell/noise.h"
#include "quell/runtime.h"
#include "quell/script.h"
#include "quell/train.h"
#include "quell/walk.h"

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

double timed(const std::function<void()>& fn) {
  const auto t0 = Clock::now();
  fn();
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// The fastest of `reps` runs of `fn`, in seconds.
double best_of(int reps, const std::function<void()>& fn) {
  double best = 1e300;
  for (int i = 0; i < reps; ++i) best = std::min(best, timed(fn));
  return best;
}

std::string fixture(const std::string& name) {
  return std::string(QUELL_SOURCE_DIR) + "/tests/fixtures/" + name;
}

}  // namespace

int main(int argc, char** argv) {
  std::string checkpoint;
  int threads = 0, draws = 5;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "bench_import: %s needs a value\n", arg.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (arg == "--checkpoint") {
      checkpoint = value();
    } else if (arg == "--threads") {
      threads = std::stoi(value());
    } else if (arg == "--draws") {
      draws = std::stoi(value());
    } else {
      std::fprintf(stderr,
                   "usage: bench_import [--checkpoint FILE] [--threads N] [--draws N]\n");
      return 2;
    }
  }
  quell::set_threads(threads);
  torch::NoGradGuard no_grad;

  quell::DataOptions d;
  d.split = quell::Split::kTest;
  const quell::Dataset test = quell::load_dataset(d);
  quell::Model builtin = quell::bench::demo_lenet5_bn(checkpoint);
  quell::Model imported =
      quell::load_script_model(quell::ModelSpec::for_dataset(fixture("lenet5_bn.script.pt"),
                                                              test));
  {
    std::map<std::string, torch::Tensor> src;
    for (const auto& p : builtin->named_parameters()) src[p.key()] = p.value();
    for (const auto& b : builtin->named_buffers()) src[b.key()] = b.value();
    for (auto& p : imported->named_parameters()) p.value().copy_(src.at(p.key()));
    for (auto& b : imported->named_buffers()) b.value().copy_(src.at(b.key()));
  }
  imported->engine().set_calibration(builtin->engine().calibration());
  builtin->eval();
  imported->eval();
  std::printf("lenet5-bn on Fashion-MNIST test (%lld images), %d threads: built-in vs the "
              "TorchScript fixture with the same weights\n\n",
              static_cast<long long>(test.size()), at::get_num_threads());
  std::printf("%-34s %10s %10s %8s  %s\n", "task", "built-in", "imported", "ratio", "same result");

  auto row = [](const char* task, double a, double b, bool same) {
    std::printf("%-34s %9.3fs %9.3fs %7.2fx  %s\n", task, a, b, b / a, same ? "yes" : "NO");
  };
  double acc_a = 0, acc_b = 0;
  quell::run_pass(*builtin, test, 256);  // warm-up (kernels, first touch)
  quell::run_pass(*imported, test, 256);
  const double clean_a = best_of(3, [&] { acc_a = quell::run_pass(*builtin, test, 256).accuracy; });
  const double clean_b =
      best_of(3, [&] { acc_b = quell::run_pass(*imported, test, 256).accuracy; });
  row("clean pass", clean_a, clean_b, acc_a == acc_b);

  const quell::NoiseConfig noise = quell::build_noise_config(
      {"all=add:0.3:rel=std"}, {}, {}, "", 1, builtin->site_names());
  quell::EvalOptions eo;
  eo.draws = draws;
  quell::EvalResult ea, eb;
  const double noisy_a = timed([&] { ea = quell::evaluate(*builtin, test, noise, eo); });
  const double noisy_b = timed([&] { eb = quell::evaluate(*imported, test, noise, eo); });
  bool same = ea.draws.size() == eb.draws.size();
  for (size_t i = 0; same && i < ea.draws.size(); ++i) {
    same = ea.draws[i].accuracy == eb.draws[i].accuracy;
  }
  char task[64];
  std::snprintf(task, sizeof task, "noisy eval (%d draws, all sites)", draws);
  row(task, noisy_a, noisy_b, same);

  quell::WalkOptions wo;
  for (int s = 0; s < builtin->num_sites(); ++s) wo.sites.push_back(s);
  wo.noise = quell::WalkNoise::parse("add");
  wo.grid = quell::SigmaGrid::parse("1e-2:1e4", 4);
  wo.repeats = 1;
  quell::WalkResult wa, wb;
  const double walk_a = timed([&] { wa = quell::walk_clean_model(*builtin, test, wo); });
  const double walk_b = timed([&] { wb = quell::walk_clean_model(*imported, test, wo); });
  same = wa.sites.size() == wb.sites.size();
  for (size_t i = 0; same && i < wa.sites.size(); ++i) {
    same = wa.sites[i].accuracy.size() == wb.sites[i].accuracy.size();
    for (size_t k = 0; same && k < wa.sites[i].accuracy.size(); ++k) {
      same = wa.sites[i].accuracy[k].mean == wb.sites[i].accuracy[k].mean;
    }
  }
  std::snprintf(task, sizeof task, "walk (%lld evaluations)",
                static_cast<long long>(wa.evaluations));
  row(task, walk_a, walk_b, same);

  // Per forward pass of a batch: quell (site logic off) against LibTorch's own interpreter.
  std::printf("\nforward pass of a batch of 256, no noise: quell's imported model vs LibTorch's "
              "TorchScript interpreter (module.forward)\n");
  std::printf("%-34s %10s %10s %8s  %s\n", "model", "LibTorch", "quell", "ratio", "max |diff|");
  for (const auto& [file, c, s] : std::vector<std::tuple<std::string, int64_t, int64_t>>{
           {"lenet5_bn.script.pt", 1, 28},
           {"resnet_small.script.pt", 3, 32},
           {"vit_tiny.script.pt", 1, 28}}) {
    quell::ModelSpec spec;
    spec.name = fixture(file);
    spec.in_channels = c;
    spec.height = spec.width = s;
    spec.num_classes = 0;
    quell::Model m = quell::load_script_model(spec);
    m->eval();
    torch::jit::Module jm = torch::jit::load(fixture(file));
    jm.eval();
    const torch::Tensor x = torch::randn({256, c, s, s});
    torch::Tensor ya, yb;
    for (int w = 0; w < 2; ++w) {  // warm-up (the profiling executor optimises after runs)
      ya = jm.forward({x}).toTensor();
      yb = m->forward(x);
    }
    const double t_jit = best_of(5, [&] { ya = jm.forward({x}).toTensor(); });
    const double t_quell = best_of(5, [&] { yb = m->forward(x); });
    std::printf("%-34s %9.2fms %9.2fms %7.2fx  %.2g\n", file.c_str(), 1e3 * t_jit, 1e3 * t_quell,
                t_quell / t_jit, (ya - yb).abs().max().item<double>());
  }
  return 0;
}
