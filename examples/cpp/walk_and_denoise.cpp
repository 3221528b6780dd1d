// walk_and_denoise: a small study written against libquell (find_package(quell), docs/cpp.md).
//   1. trains lenet5-bn on Fashion-MNIST (or on a synthetic dataset in the same IDX layout);
//   2. walks it: additive noise at one site at a time over a coarse σ grid, and prints each
//      site's midpoint, the σ where accuracy falls halfway from clean to chance;
//   3. runs the denoising-block study (quell/denoise_study.h) within 5% of the parameters and
//      prints its comparison: accuracy clean / noisy / noisy + blocks / fine-tuned.
//
//   walk_and_denoise [--data-dir DIR | --synthetic DIR] [--limit N] [--epochs E] [--noise RULE]
#include <cstdio>
#include <iostream>
#include <stdexcept>
#include <string>
#include <vector>

#include "quell/data.h"           // load_dataset, write_synthetic_idx
#include "quell/denoise_study.h"  // run_denoise_study
#include "quell/models.h"      // make_model
#include "quell/noise.h"       // build_noise_config
#include "quell/runtime.h"     // set_threads
#include "quell/train.h"       // train
#include "quell/walk.h"        // walk_clean_model

namespace {

struct Args {
  std::string data_dir = "/usr/share/datasets/fashion-mnist";  // Fashion-MNIST, IDX files
  std::string synthetic;  // non-empty: write a synthetic dataset into this folder and use it
  int64_t limit = 0;      // samples per split (after a seeded shuffle); 0 = all
  int epochs = 2;         // training epochs, of the network and of the blocks
  std::string noise = "all=add:0.5:rel=std";  // the noise the blocks must remove (docs/noise.md)
};

Args parse_args(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string opt = argv[i];
    if (i + 1 >= argc) throw std::invalid_argument(opt + ": missing value (or unknown option)");
    const std::string value = argv[++i];
    if (opt == "--data-dir") a.data_dir = value;
    else if (opt == "--synthetic") a.synthetic = value;
    else if (opt == "--limit") a.limit = std::stoll(value);
    else if (opt == "--epochs") a.epochs = std::stoi(value);
    else if (opt == "--noise") a.noise = value;
    else throw std::invalid_argument("unknown option " + opt);
  }
  return a;
}

// ---- Denoising-block study --------------------------------------------------------------------
// Step 3 is one library call: the sites ranked (Taylor criterion, measured drops), placements
// searched under the budget, the chosen blocks trained with the backbone frozen, and the
// comparison with no mitigation and noise-aware fine-tuning on the test set.
void denoise_study(quell::Model backbone, const quell::Dataset& train_set,
                   const quell::Dataset& test, const quell::NoiseConfig& noise, int epochs) {
  quell::DenoiseStudyOptions o;
  o.noise = noise;
  o.budgets = {5.0};          // blocks within 5% of the backbone's parameters
  o.ratios = {4};             // bottleneck width C/4 on feature maps, D/4 on vectors
  o.search_width = 4;         // the measured greedy search re-tries the 4 best candidates a step
  o.search_limit = 2000;      // each tried placement trains on 2000 images ...
  o.val_size = 200;           // ... and is scored on 200 held-out training images
  o.train.epochs = epochs;
  o.train.batch_size = 32;
  o.eval.draws = 3;           // final evaluation: 3 noise draws (dynamic noise: no chips)
  o.eval.chips = 1;
  o.all_sites = false;
  o.robustness_levels = {};  // no robustness curves
  const quell::DenoiseReport report = quell::run_denoise_study(backbone, train_set, test, o);
  std::printf("%s\n", report.table().c_str());
  const quell::DenoiseComparisonRow& none = report.comparison.front();
  for (const quell::DenoiseComparisonRow& row : report.comparison) {
    if (row.model.rfind("chosen", 0) != 0) continue;  // the best placement within the budget
    std::printf("accuracy: clean %.4f  noisy %.4f  noisy+blocks %.4f (%s, %.2f%% parameters)\n",
                none.clean_accuracy, none.noisy.headline().mean, row.noisy.headline().mean,
                row.placement.c_str(), row.overhead_pct);
  }
}

}  // namespace

int main(int argc, char** argv) try {
  const Args a = parse_args(argc, argv);
  quell::set_threads(0);  // all cores for LibTorch, OpenBLAS single-threaded

  // ---- 1. Data and a trained model -------------------------------------------------------------
  quell::DataOptions data;
  data.name = "fashion-mnist";
  data.dir = a.data_dir;
  if (!a.synthetic.empty()) {  // 6000 training and 1000 test images, 10 learnable classes
    data.dir = a.synthetic;
    quell::write_synthetic_idx(data.dir, 6000, 1000, /*seed=*/1);
  }
  data.limit = a.limit;
  data.shuffle_seed = 1;
  const quell::Dataset train_set = quell::load_dataset(data);
  data.split = quell::Split::kTest;
  const quell::Dataset test = quell::load_dataset(data);

  torch::manual_seed(1);  // the initialisation
  quell::Model model = quell::make_model(quell::ModelSpec::for_dataset("lenet5-bn", train_set));
  quell::TrainOptions train_opts;  // Adam, lr 1e-3 with cosine decay
  train_opts.epochs = a.epochs;
  train_opts.batch_size = 32;  // small batches: enough steps on a few hundred samples too
  quell::train(*model, train_set, train_opts);  // also calibrates the sites (for rel=std noise)

  // ---- 2. Walking Noise: one site at a time, σ relative to the site's std ---------------------
  quell::WalkOptions walk;
  for (int s = 0; s < model->num_sites(); ++s) walk.sites.push_back(s);
  walk.noise = quell::WalkNoise::parse("add:rel=std");
  walk.grid = quell::SigmaGrid::parse("0.01:100", /*per_decade=*/1);  // 0.01, 0.1, ..., 100
  walk.repeats = 2;
  walk.validate(model->num_sites());
  const quell::WalkResult result = quell::walk_clean_model(*model, test, walk);
  std::printf("clean accuracy %.4f, chance %.2f, threshold %.4f\n", result.clean_accuracy,
              result.chance, result.threshold);
  for (const quell::SiteCurveSummary& c : result.sites) {
    const quell::Midpoint& m = c.midpoint;
    std::printf("site %2d %-8s midpoint ", c.site, c.name.c_str());
    if (m.crossed()) {
      std::printf("%.4g  [%.4g, %.4g]\n", m.value, m.lo, m.hi);
    } else {
      std::printf("%s\n", quell::crossing_str(m.status));
    }
  }

  // ---- 3. Denoising blocks under the noise rule ------------------------------------------------
  const quell::NoiseConfig noise =
      quell::build_noise_config({a.noise}, {}, {}, /*weight_noise=*/"", /*seed=*/1,
                                model->site_names());
  denoise_study(model, train_set, test, noise, a.epochs);
  return 0;
} catch (const std::exception& e) {
  std::cerr << "walk_and_denoise: error: " << e.what() << "\n";
  return 1;
}
