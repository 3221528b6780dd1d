// Denoising blocks: exact parameter counts, identity at initialisation, blocks inside the forward
// paths, checkpoints with blocks, training with a frozen backbone, the Taylor criterion against
// its closed form, rankings from walk results and measured drops, the searches' budgets, the
// Pareto front.
#include <gtest/gtest.h>

#include <map>
#include <random>
#include <set>

#include "quell/checkpoint.h"
#include "quell/denoise.h"
#include "quell/load.h"
#include "test_util.h"

namespace quell {
namespace {

using quell::testing::blob_dataset;
using quell::testing::ScratchDir;
using quell::testing::write_file;

int64_t count_params(torch::nn::Module& m) {
  int64_t c = 0;
  for (const auto& p : m.parameters()) c += p.numel();
  return c;
}

// Random values in every block parameter, so a block is no longer the identity.
void randomize_blocks(ModelImpl& m, double scale = 0.1) {
  torch::NoGradGuard no_grad;
  for (auto& p : m.denoiser_parameters()) p.copy_(torch::randn(p.sizes()) * scale);
}

ModelSpec lenet_spec() { return ModelSpec{"lenet5-bn", 1, 28, 28, 10}; }

TEST(BlockSpec, ParsesPrintsAndRejects) {
  EXPECT_EQ(BlockSpec::parse("bottleneck").str(), "bottleneck:r=4");
  EXPECT_EQ(BlockSpec::parse("mlp:r=8").ratio, 8);
  EXPECT_EQ(BlockSpec::parse("channel").str(), "channel");
  EXPECT_EQ(BlockSpec::from_json(BlockSpec::parse("auto:r=2").to_json()),
            BlockSpec::parse("auto:r=2"));
  EXPECT_THROW(BlockSpec::parse("resblock"), std::invalid_argument);
  EXPECT_THROW(BlockSpec::parse("mlp:r=0"), std::invalid_argument);
  EXPECT_THROW(BlockSpec::parse("mlp:k=2"), std::invalid_argument);
  EXPECT_THROW(BlockSpec::parse("mlp:r=x"), std::invalid_argument);
  EXPECT_THROW(BlockSpec::parse("bottleneck").params({120}), std::invalid_argument);
  EXPECT_EQ(BlockSpec::parse("auto").resolve({6, 28, 28}), "bottleneck");
  EXPECT_EQ(BlockSpec::parse("auto").resolve({120}), "mlp");
}

TEST(BlockSpec, ParameterCountsAreExact) {
  // Hand-computed: bottleneck C=6, r=2 -> m=3: (6*3+3) + (9*9+3) + (3*6+6) = 129.
  EXPECT_EQ(BlockSpec::parse("bottleneck:r=2").params({6, 28, 28}), 129);
  // mlp D=120, r=8 -> m=15: (120*15+15) + (15*120+120) = 3735.
  EXPECT_EQ(BlockSpec::parse("mlp:r=8").params({120}), 3735);
  // r larger than the width still keeps one channel: C=6, r=16 -> m=1: 7 + 10 + 12 = 29.
  EXPECT_EQ(BlockSpec::parse("bottleneck:r=16").params({6, 28, 28}), 29);
  EXPECT_EQ(BlockSpec::parse("channel").params({16, 10, 10}), 32);
  // The modules have exactly the counted parameters, for every kind and a range of shapes.
  for (const std::string kind : {"bottleneck", "mlp", "channel"}) {
    for (int r : {1, 2, 3, 4, 8}) {
      for (const std::vector<int64_t>& shape :
           {std::vector<int64_t>{1, 28, 28}, {6, 14, 14}, {16, 5, 5}, {120}, {10}}) {
        const BlockSpec b = BlockSpec::parse(kind + ":r=" + std::to_string(r));
        if (kind == "bottleneck" && shape.size() != 3) continue;
        Denoiser d(b, shape);
        EXPECT_EQ(count_params(*d), b.params(shape)) << b.str() << " shape size " << shape.size();
      }
    }
  }
}

TEST(Denoisers, UntrainedBlocksAreTheIdentity) {
  torch::manual_seed(1);
  Model m = make_model(lenet_spec());
  m->eval();
  const torch::Tensor x = torch::randn({8, 1, 28, 28});
  torch::NoGradGuard no_grad;
  const torch::Tensor before = m->forward(x).clone();
  std::vector<BlockPlacement> all;
  for (int s = 0; s < m->num_sites(); ++s) all.push_back({s, BlockSpec::parse("auto:r=2")});
  m->set_denoisers(all);
  EXPECT_TRUE(m->has_denoisers());
  EXPECT_EQ(m->denoiser_placement().size(), all.size());
  EXPECT_TRUE(torch::equal(m->forward(x), before));
  // Every block changes the output once it is not zero.
  randomize_blocks(*m);
  EXPECT_FALSE(torch::allclose(m->forward(x), before));
  // Disabled blocks give the backbone back.
  m->set_denoisers_enabled(false);
  EXPECT_TRUE(torch::equal(m->forward(x), before));
  m->set_denoisers_enabled(true);
}

// Bottleneck blocks run as one kernel per image on the CPU (model/bottleneck.h; before, as
// matrix products and LibTorch's convolution, which wider blocks still use): the same function
// and the same gradients of the input and of every parameter as the three convolutions, on
// large and small planes, at widths m of 1 to 4 (the kernel) and 4 and 8 on small planes (the
// operators); with autograd off the same values.
TEST(Denoisers, BottleneckBlocksComputeTheirConvolutionsOnLargeAndSmallPlanes) {
  for (const auto& [shape, ratio] :
       std::vector<std::pair<std::vector<int64_t>, int>>{{{6, 28, 28}, 4},
                                                        {{1, 16, 16}, 4},
                                                        {{16, 10, 10}, 4},
                                                        {{16, 5, 5}, 16},
                                                        {{3, 12, 9}, 1},
                                                        {{16, 5, 5}, 4},
                                                        {{32, 8, 8}, 4}}) {
    const std::string what = ::testing::PrintToString(shape) + " r=" + std::to_string(ratio);
    torch::manual_seed(3);
    DenoiserImpl block(BlockSpec::parse("bottleneck:r=" + std::to_string(ratio)), shape);
    {
      torch::NoGradGuard no_grad;
      for (auto& p : block.parameters()) p.normal_(0, 0.3);
    }
    std::vector<int64_t> full = {5};
    full.insert(full.end(), shape.begin(), shape.end());
    const torch::Tensor x = torch::randn(full).requires_grad_(true);
    auto p = block.named_parameters();
    torch::Tensor h = torch::relu(torch::conv2d(x, p["reduce.weight"], p["reduce.bias"]));
    h = torch::relu(torch::conv2d(h, p["mid.weight"], p["mid.bias"], 1, 1));
    const torch::Tensor expected = x + torch::conv2d(h, p["expand.weight"], p["expand.bias"]);
    const torch::Tensor y = block.forward(x);
    EXPECT_TRUE(torch::allclose(y, expected, 1e-5, 1e-6)) << what;
    {
      torch::NoGradGuard no_grad;
      EXPECT_TRUE(torch::equal(block.forward(x), y)) << what << ": autograd off";
    }
    const torch::Tensor g = torch::randn(full);
    const std::vector<torch::Tensor> of = {x,
                                           p["reduce.weight"],
                                           p["reduce.bias"],
                                           p["mid.weight"],
                                           p["mid.bias"],
                                           p["expand.weight"],
                                           p["expand.bias"]};
    const auto grads = torch::autograd::grad({y}, of, {g});
    const auto ref = torch::autograd::grad({expected}, of, {g});
    for (size_t i = 0; i < grads.size(); ++i) {
      EXPECT_TRUE(torch::allclose(grads[i], ref[i], 1e-4, 1e-4)) << what << " gradient " << i;
    }
    // Without the input's gradient (the first block of a frozen backbone) the parameters' are
    // the same.
    const torch::Tensor y0 = block.forward(x.detach());
    const auto no_input = torch::autograd::grad({y0}, {p["reduce.weight"], p["mid.weight"]}, {g});
    EXPECT_TRUE(torch::equal(no_input[0], grads[1])) << what;
    EXPECT_TRUE(torch::equal(no_input[1], grads[3])) << what;
  }
}

// The block's parameter gradients are summed over images in order: the same bits with one
// thread and with several, so a training's result does not depend on the machine's cores.
TEST(Denoisers, BottleneckGradientsDoNotDependOnThreads) {
  torch::manual_seed(4);
  DenoiserImpl block(BlockSpec::parse("bottleneck:r=4"), {6, 28, 28});
  {
    torch::NoGradGuard no_grad;
    for (auto& p : block.parameters()) p.normal_(0, 0.3);
  }
  const torch::Tensor x = torch::randn({37, 6, 28, 28}).requires_grad_(true);
  const torch::Tensor g = torch::randn({37, 6, 28, 28});
  auto grads_with = [&](int threads) {
    const int before = torch::get_num_threads();
    torch::set_num_threads(threads);
    std::vector<torch::Tensor> of = {x};
    for (const auto& p : block.parameters()) of.push_back(p);
    auto out = torch::autograd::grad({block.forward(x)}, of, {g});
    torch::set_num_threads(before);
    return out;
  };
  const auto one = grads_with(1), four = grads_with(4);
  for (size_t i = 0; i < one.size(); ++i) EXPECT_TRUE(torch::equal(one[i], four[i])) << i;
}

TEST(Denoisers, BackboneParameterCountExcludesBlocks) {
  Model m = make_model(lenet_spec());
  const int64_t backbone = m->num_params();
  m->set_denoisers({{1, BlockSpec::parse("bottleneck:r=2")}, {9, BlockSpec::parse("mlp:r=8")}});
  EXPECT_EQ(m->num_params(), backbone);
  EXPECT_EQ(m->num_denoiser_params(), 129 + 3735);
  int64_t all = 0;
  for (const auto& p : m->parameters()) all += p.numel();
  EXPECT_EQ(all, backbone + 129 + 3735);
  // Replacing the blocks drops the old ones.
  m->set_denoisers({{15, BlockSpec::parse("channel")}});
  EXPECT_EQ(m->num_denoiser_params(), 20);
  EXPECT_THROW(m->set_denoisers({{16, BlockSpec::parse("channel")}}), std::invalid_argument);
  EXPECT_THROW(m->set_denoisers({{9, BlockSpec::parse("bottleneck")}}), std::invalid_argument);
  EXPECT_THROW(m->set_denoisers({{3, BlockSpec::parse("channel")}, {3, BlockSpec::parse("mlp")}}),
               std::invalid_argument);
}

TEST(Denoisers, PrefixPathsIncludeTheBlocks) {
  // run_until + run_from (the walk's cached prefix) equals a full forward with blocks present.
  torch::manual_seed(2);
  Model m = make_model(lenet_spec());
  m->eval();
  m->set_denoisers({{2, BlockSpec::parse("bottleneck:r=2")},
                    {8, BlockSpec::parse("channel")},
                    {12, BlockSpec::parse("mlp:r=4")}});
  randomize_blocks(*m);
  torch::NoGradGuard no_grad;
  const torch::Tensor x = torch::randn({4, 1, 28, 28});
  const torch::Tensor full = m->forward(x);
  for (int s = 0; s < m->num_sites(); ++s) {
    EXPECT_TRUE(torch::allclose(m->run_from(m->run_until(x, s)), full, 1e-5, 1e-6)) << "site " << s;
  }
}

TEST(Denoisers, CheckpointWithBlocksRoundTrips) {
  ScratchDir dir("denoise-ckpt");
  torch::manual_seed(3);
  Model m = make_model(lenet_spec());
  m->eval();
  m->calibrate(torch::randn({64, 1, 28, 28}));
  m->set_denoisers({{1, BlockSpec::parse("bottleneck:r=3")}, {12, BlockSpec::parse("mlp:r=4")}});
  randomize_blocks(*m);
  CheckpointMeta meta;
  meta.spec = lenet_spec();
  save_checkpoint(dir.file("m.pt"), *m, meta);
  Model back = load_checkpoint(dir.file("m.pt"));
  back->eval();
  const auto p = back->denoiser_placement();
  ASSERT_EQ(p.size(), 2u);
  EXPECT_EQ(p[0].site, 1);
  EXPECT_EQ(p[0].block.str(), "bottleneck:r=3");
  EXPECT_EQ(p[1].site, 12);
  EXPECT_EQ(p[1].block.str(), "mlp:r=4");
  torch::NoGradGuard no_grad;
  const torch::Tensor x = torch::randn({4, 1, 28, 28});
  EXPECT_TRUE(torch::equal(back->forward(x), m->forward(x)));
  EXPECT_EQ(back->engine().calibration().size(), m->engine().calibration().size());

  // A checkpoint whose block record does not match its tensors is refused by name.
  Model other = make_model(lenet_spec());
  save_checkpoint(dir.file("plain.pt"), *other, meta);
  Model plain = load_checkpoint(dir.file("plain.pt"));
  EXPECT_FALSE(plain->has_denoisers());
}

TEST(Denoisers, TrainingKeepsTheBackboneFrozenAndRecoversAccuracy) {
  const Dataset train_set = blob_dataset(1500, 1, 28, 28, 10, 31);
  const Dataset val = blob_dataset(600, 1, 28, 28, 10, 32);
  torch::manual_seed(4);
  Model m = make_model(ModelSpec::for_dataset("lenet5-bn", train_set));
  TrainOptions t;
  t.epochs = 2;
  train(*m, train_set, t);
  // Strong static + dynamic additive noise (relative to each site's std) on every site.
  NoiseConfig noise = build_noise_config({"all=add:0.6:static:rel=std+add:0.3:rel=std"}, {}, {},
                                         "", 5, m->site_names());
  EvalOptions eo;
  eo.draws = 2;
  eo.chips = 4;
  const double clean = evaluate(*m, val, NoiseConfig{}, eo).accuracy.mean;
  const EvalResult before = evaluate(*m, val, noise, eo);

  std::map<std::string, torch::Tensor> backbone;
  for (const auto& p : m->named_parameters()) backbone[p.key()] = p.value().clone();
  for (const auto& b : m->named_buffers()) backbone[b.key()] = b.value().clone();
  const auto calib_before = m->engine().calibration();

  m->set_denoisers({{2, BlockSpec::parse("bottleneck:r=2")},
                    {6, BlockSpec::parse("bottleneck:r=2")},
                    {10, BlockSpec::parse("mlp:r=4")}});
  DenoiseTrainOptions o;
  o.epochs = 3;
  o.noise = noise;
  o.feature_weight = 0.1;
  const TrainResult r = train_denoisers(*m, train_set, o);
  EXPECT_EQ(r.epochs.size(), 3u);
  for (const auto& p : m->named_parameters()) {
    if (p.key().rfind("denoisers.", 0) == 0) continue;
    EXPECT_TRUE(torch::equal(p.value(), backbone.at(p.key()))) << p.key() << " changed";
    EXPECT_TRUE(p.value().requires_grad()) << p.key() << ": requires_grad not restored";
  }
  for (const auto& b : m->named_buffers()) {
    EXPECT_TRUE(torch::equal(b.value(), backbone.at(b.key()))) << b.key() << " changed";
  }
  ASSERT_EQ(m->engine().calibration().size(), calib_before.size());
  for (size_t i = 0; i < calib_before.size(); ++i) {
    EXPECT_EQ(m->engine().calibration()[i].std, calib_before[i].std);
  }
  bool moved = false;
  for (const auto& p : m->denoiser_parameters()) moved |= p.abs().sum().item<double>() > 0;
  EXPECT_TRUE(moved);
  const EvalResult after = evaluate(*m, val, noise, eo);
  // The noise must hurt (else the test shows nothing), and the blocks must recover part of the
  // loss: the paired per-draw gains (same chips, same draws) have a 95% CI above 0.
  ASSERT_GT(clean - before.headline().mean, 0.15) << "noise too weak for the test";
  ASSERT_EQ(after.draws.size(), before.draws.size());
  std::vector<double> gain;
  for (size_t i = 0; i < after.draws.size(); ++i) {
    gain.push_back(after.draws[i].accuracy - before.draws[i].accuracy);
  }
  const Summary g = summarize(gain);
  EXPECT_GT(g.ci_low, 0.0) << "before " << before.headline().mean << " after "
                           << after.headline().mean;
}

TEST(Denoisers, TrainingRejectsBadOptions) {
  const Dataset d = blob_dataset(64);
  Model m = make_model(lenet_spec());
  DenoiseTrainOptions o;
  EXPECT_THROW(train_denoisers(*m, d, o), std::invalid_argument);  // no blocks
  m->set_denoisers({{1, BlockSpec::parse("channel")}});
  o.scale_lo = 2;
  o.scale_hi = 1;
  EXPECT_THROW(train_denoisers(*m, d, o), std::invalid_argument);
  o.scale_lo = 1;
  o.feature_weight = std::nan("");
  EXPECT_THROW(train_denoisers(*m, d, o), std::invalid_argument);
}

// Static (per-chip) noise strong enough to hurt, at one [D] site, where a channel block's bias
// can cancel it exactly: blocks calibrated on each chip recover most of the drop that
// chip-agnostic blocks cannot, they are specific to their chip, and the model's own blocks are
// left as they were.
TEST(ChipCalibration, BlocksCalibratedOnEachChipLearnThatChip) {
  const Dataset train_set = blob_dataset(1500, 1, 28, 28, 10, 41);
  const Dataset val = blob_dataset(600, 1, 28, 28, 10, 42);
  torch::manual_seed(5);
  Model m = make_model(ModelSpec::for_dataset("mlp", train_set));
  TrainOptions t;
  t.epochs = 2;
  train(*m, train_set, t);
  const int site = 3;  // fc2: [64]
  ASSERT_EQ(m->site_names()[site], "fc2");
  const NoiseConfig noise = build_noise_config({"fc2=add:3:static:rel=std+add:0.05:rel=std"},
                                               {}, {}, "", 3, m->site_names());
  EvalOptions eo;
  eo.draws = 2;
  eo.chips = 6;
  const double clean = evaluate(*m, val, NoiseConfig{}, eo).accuracy.mean;
  m->set_denoisers({{site, BlockSpec::parse("channel")}});
  DenoiseTrainOptions o;
  o.epochs = 1;
  o.noise = noise;
  train_denoisers(*m, train_set, o);
  const EvalResult agnostic = evaluate(*m, val, noise, eo);
  ASSERT_GT(clean - agnostic.headline().mean, 0.15) << "noise too weak for the test";

  std::vector<torch::Tensor> blocks;
  for (const auto& p : m->denoiser_parameters()) blocks.push_back(p.detach().clone());
  ChipCalibrationOptions c;
  c.samples = 500;
  c.epochs = 8;
  c.lr = 3e-2;
  const ChipCalibrationResult cal = calibrate_per_chip(*m, train_set, val, noise, c, eo);
  EXPECT_EQ(cal.samples, 400);  // 100 of the 500 held out for the check (holdout 0.2)
  EXPECT_EQ(cal.held_out, 100);
  EXPECT_EQ(cal.epochs, 8);
  EXPECT_EQ(cal.chips, 6);
  EXPECT_GE(cal.chips_kept, 5) << "a calibration that recovers most of the drop fails its check";
  EXPECT_GT(cal.seconds_per_chip, 0.0);
  EXPECT_TRUE(cal.noisy.chip_level);
  ASSERT_EQ(cal.noisy.draws.size(), agnostic.draws.size());
  // Paired per chip (the same chips and draws): the calibrated blocks gain, with a 95% CI over
  // the 6 chips above 0, and they recover at least two thirds of the drop on average.
  std::vector<double> gain;
  for (size_t i = 0; i < cal.noisy.draws.size(); ++i) {
    ASSERT_EQ(cal.noisy.draws[i].chip, agnostic.draws[i].chip);
    ASSERT_EQ(cal.noisy.draws[i].draw, agnostic.draws[i].draw);
    if (cal.noisy.draws[i].draw == 0) {
      gain.push_back(cal.noisy.draws[i].accuracy - agnostic.draws[i].accuracy);
    }
  }
  EXPECT_GT(summarize(gain).ci_low, 0.0);
  EXPECT_GT(cal.noisy.headline().mean - agnostic.headline().mean,
            (clean - agnostic.headline().mean) * 2.0 / 3.0)
      << "clean " << clean << " agnostic " << agnostic.headline().mean << " calibrated "
      << cal.noisy.headline().mean;
  // The model's blocks are the chip-agnostic ones again, bit for bit.
  const auto after = m->denoiser_parameters();
  ASSERT_EQ(after.size(), blocks.size());
  for (size_t i = 0; i < blocks.size(); ++i) EXPECT_TRUE(torch::equal(after[i], blocks[i]));

  // Blocks calibrated on chip 2 serve chip 2 better than any other chip.
  Model chip2 = clone_model(*m);
  DenoiseTrainOptions one = o;
  one.epochs = 8;
  one.lr = 3e-2;
  one.chip = 2;
  train_denoisers(*chip2, slice_dataset(train_set, 0, 500), one);
  EvalOptions each = eo;
  each.draws = 1;
  const EvalResult per = evaluate(*chip2, val, noise, each);
  for (const auto& d : per.draws) {
    if (d.chip != 2) {
      EXPECT_GT(per.draws[2].accuracy, d.accuracy) << "chip " << d.chip;
    }
  }

  // A calibration that wrecks the blocks (a learning rate far too large) fails its check on
  // every chip: each chip keeps the chip-agnostic blocks, so the evaluation is theirs, pass for
  // pass. Without the check (holdout 0) every chip keeps what it learnt.
  ChipCalibrationOptions wild = c;
  wild.lr = 50.0;
  wild.epochs = 2;
  const ChipCalibrationResult wrecked = calibrate_per_chip(*m, train_set, val, noise, wild, eo);
  EXPECT_EQ(wrecked.chips_kept, 0);
  ASSERT_EQ(wrecked.noisy.draws.size(), agnostic.draws.size());
  for (size_t i = 0; i < agnostic.draws.size(); ++i) {
    EXPECT_EQ(wrecked.noisy.draws[i].accuracy, agnostic.draws[i].accuracy) << i;
  }
  // Given the chip-agnostic blocks' own evaluation, a refused chip takes its passes from it
  // instead of evaluating them again: marked passes (accuracy + 1) come back as they are.
  UncalibratedEval known{agnostic, evaluate(*m, val, NoiseConfig{}, eo).accuracy.mean};
  EXPECT_DOUBLE_EQ(wrecked.clean.mean, known.clean);
  for (auto& d : known.noisy.draws) d.accuracy += 1.0;
  const ChipCalibrationResult reused =
      calibrate_per_chip(*m, train_set, val, noise, wild, eo, &known);
  EXPECT_EQ(reused.chips_kept, 0);
  ASSERT_EQ(reused.noisy.draws.size(), agnostic.draws.size());
  for (size_t i = 0; i < agnostic.draws.size(); ++i) {
    EXPECT_EQ(reused.noisy.draws[i].chip, agnostic.draws[i].chip);
    EXPECT_EQ(reused.noisy.draws[i].draw, agnostic.draws[i].draw);
    EXPECT_EQ(reused.noisy.draws[i].accuracy, agnostic.draws[i].accuracy + 1.0) << i;
  }
  // An evaluation without this chip's passes is not used: the chip is evaluated.
  known.noisy.draws.clear();
  const ChipCalibrationResult missing =
      calibrate_per_chip(*m, train_set, val, noise, wild, eo, &known);
  for (size_t i = 0; i < agnostic.draws.size(); ++i) {
    EXPECT_EQ(missing.noisy.draws[i].accuracy, agnostic.draws[i].accuracy) << i;
  }
  wild.holdout = 0.0;
  const ChipCalibrationResult unchecked = calibrate_per_chip(*m, train_set, val, noise, wild, eo);
  EXPECT_EQ(unchecked.chips_kept, 6);
  EXPECT_EQ(unchecked.samples, 500);
  EXPECT_EQ(unchecked.held_out, 0);
  EXPECT_LT(unchecked.noisy.headline().mean, agnostic.headline().mean);
  // Fewer samples than 1 / holdout: nothing to hold out, so no check (not an error).
  ChipCalibrationOptions tiny = c;
  tiny.samples = 4;
  tiny.epochs = 1;
  const ChipCalibrationResult few = calibrate_per_chip(*m, train_set, val, noise, tiny, eo);
  EXPECT_EQ(few.samples, 4);
  EXPECT_EQ(few.held_out, 0);
  EXPECT_EQ(few.chips_kept, 6);

  // What calibration cannot do is an error that says why.
  const NoiseConfig dynamic_only =
      build_noise_config({"fc2=add:3:rel=std"}, {}, {}, "", 3, m->site_names());
  EXPECT_THROW(calibrate_per_chip(*m, train_set, val, dynamic_only, c, eo), std::invalid_argument);
  ChipCalibrationOptions bad = c;
  bad.samples = 0;
  EXPECT_THROW(calibrate_per_chip(*m, train_set, val, noise, bad, eo), std::invalid_argument);
  bad = c;
  bad.feature_weight = -1;
  EXPECT_THROW(calibrate_per_chip(*m, train_set, val, noise, bad, eo), std::invalid_argument);
  bad = c;
  bad.holdout = 0.7;
  EXPECT_THROW(calibrate_per_chip(*m, train_set, val, noise, bad, eo), std::invalid_argument);
  Model bare = make_model(ModelSpec::for_dataset("mlp", train_set));
  EXPECT_THROW(calibrate_per_chip(*bare, train_set, val, noise, c, eo), std::invalid_argument);
}

TEST(Sensitivity, TaylorMatchesTheClosedFormAtTheLogitsAndAutogradAtTheInput) {
  torch::manual_seed(5);
  const Dataset d = blob_dataset(100, 1, 28, 28, 10, 33);
  Model m = make_model(ModelSpec::for_dataset("lenet5-bn", d));
  m->eval();
  const auto s = taylor_sensitivity(*m, d, 100, 32);
  ASSERT_EQ(static_cast<int>(s.size()), m->num_sites());
  torch::Tensor logits;
  {
    torch::NoGradGuard no_grad;
    logits = m->forward(d.inputs);
  }
  // d ce / d logits = softmax - onehot.
  const torch::Tensor g =
      torch::softmax(logits, 1) - torch::one_hot(d.targets, 10).to(torch::kFloat);
  EXPECT_NEAR(s.back().value, g.norm(2, 1).mean().item<double>(), 1e-5);
  // Input: per-sample gradient norms from one autograd call per sample.
  double sum = 0.0;
  for (int64_t i = 0; i < d.size(); ++i) {
    torch::Tensor x = d.inputs.narrow(0, i, 1).clone().requires_grad_(true);
    const torch::Tensor loss =
        torch::nn::functional::cross_entropy(m->forward(x), d.targets.narrow(0, i, 1));
    sum += torch::autograd::grad({loss}, {x})[0].norm().item<double>();
  }
  EXPECT_NEAR(s.front().value, sum / static_cast<double>(d.size()), 1e-5 * (1 + s.front().value));
  // The blocks are bypassed and the model is left as it was.
  for (const auto& p : m->parameters()) EXPECT_TRUE(p.requires_grad());
  EXPECT_FALSE(m->is_training());
}

TEST(Sensitivity, DropAndWalkRankings) {
  const Dataset d = blob_dataset(400, 1, 28, 28, 10, 34);
  torch::manual_seed(6);
  Model m = make_model(ModelSpec::for_dataset("lenet5-bn", d));
  TrainOptions t;
  t.epochs = 1;
  train(*m, d, t);
  const auto names = m->site_names();
  NoiseConfig noise = build_noise_config({"conv1,fc3=add:2:rel=std"}, {}, {}, "", 1, names);
  EvalOptions eo;
  eo.draws = 2;
  const auto drop = drop_sensitivity(*m, d, noise, {1, 5, 15}, eo);
  ASSERT_EQ(drop.size(), 2u);  // site 5 has no noise configured
  EXPECT_EQ(drop[0].site, 1);
  EXPECT_GT(drop[0].value, 0.05);
  EXPECT_EQ(drop[1].site, 15);

  ScratchDir dir("denoise-walk");
  write_file(dir.file("walk.json"), R"({"sites": [
    {"index": 1, "name": "conv1", "midpoint": {"status": "crossed", "value": 0.5}},
    {"index": 9, "name": "fc1", "midpoint": {"status": "crossed", "value": 2.0}},
    {"index": 15, "name": "fc3", "midpoint": {"status": "not crossed", "value": null}},
    {"index": 3, "name": "relu1", "midpoint": {"status": "below grid", "value": null}}]})");
  const auto w = walk_sensitivity(dir.file("walk.json"), names);
  ASSERT_EQ(w.size(), 4u);
  EXPECT_DOUBLE_EQ(w[0].value, 2.0);
  EXPECT_DOUBLE_EQ(w[1].value, 0.5);
  EXPECT_EQ(w[2].value, 0.0);
  EXPECT_EQ(rank_sites(w), (std::vector<int>{3, 1, 9, 15}));
  write_file(dir.file("bad.json"), R"({"sites": [{"name": "conv9"}]})");
  EXPECT_THROW(walk_sensitivity(dir.file("bad.json"), names), std::runtime_error);
  write_file(dir.file("notwalk.json"), R"({"x": 1})");
  EXPECT_THROW(walk_sensitivity(dir.file("notwalk.json"), names), std::runtime_error);
  EXPECT_THROW(walk_sensitivity(dir.file("missing.json"), names), std::runtime_error);
}

std::vector<Candidate> random_candidates(std::mt19937& rng, int sites, int variants) {
  std::uniform_int_distribution<int64_t> cost(1, 400);
  std::vector<Candidate> c;
  for (int s = 0; s < sites; ++s) {
    for (int v = 0; v < variants; ++v) {
      c.push_back({s, BlockSpec::parse("mlp:r=" + std::to_string(1 << v)), cost(rng)});
    }
  }
  return c;
}

TEST(Search, GreedyByRankFollowsTheRankingWithinTheBudget) {
  const std::vector<Candidate> c = {{0, BlockSpec::parse("channel"), 50},
                                    {1, BlockSpec::parse("channel"), 300},
                                    {2, BlockSpec::parse("channel"), 100},
                                    {3, BlockSpec::parse("channel"), 60}};
  const Placement p = greedy_by_rank({1, 2, 0, 3}, c, 200);
  // 1 does not fit (300 > 200), 2 fits (100), 0 fits (150), 3 does not (210).
  ASSERT_EQ(p.blocks.size(), 2u);
  EXPECT_EQ(p.blocks[0].site, 0);
  EXPECT_EQ(p.blocks[1].site, 2);
  EXPECT_EQ(p.params(), 150);
  EXPECT_TRUE(greedy_by_rank({0, 1}, c, 10).blocks.empty());
  EXPECT_EQ(p.label({"a", "b", "c", "d"}), "a/ch+c/ch");
  Placement q;
  q.blocks = {{1, BlockSpec::parse("auto:r=4"), 1}, {3, BlockSpec::parse("mlp:r=8"), 1}};
  EXPECT_EQ(q.label({"a", "b", "c", "d"}), "b/4+d/mlp8");
  EXPECT_EQ(Placement{}.label({}), "none");
}

TEST(Search, EverySearchRespectsItsBudget) {
  std::mt19937 rng(11);
  for (int trial = 0; trial < 50; ++trial) {
    const auto cands = random_candidates(rng, 8, 3);
    std::uniform_int_distribution<int64_t> budget_dist(0, 1500);
    const int64_t budget = budget_dist(rng);
    // Synthetic accuracy: each site's block gains a fixed amount (larger blocks a bit more),
    // with diminishing returns.
    std::vector<double> gain(8);
    std::uniform_real_distribution<double> u(0.0, 0.05);
    for (auto& g : gain) g = u(rng);
    std::vector<PlacementScore> tried;
    const PlacementEvaluator eval = [&](const Placement& p) {
      std::set<int> sites;
      double acc = 0.5;
      for (const auto& b : p.blocks) {
        EXPECT_TRUE(sites.insert(b.site).second) << "two blocks at one site";
        acc += gain[static_cast<size_t>(b.site)] * (1.0 + 0.1 * b.block.ratio) * 0.9;
      }
      Summary s;
      s.mean = acc;
      return s;
    };
    Summary start;
    start.mean = 0.5;
    const Placement best = measured_greedy(cands, budget, eval, start, 0.0, &tried);
    EXPECT_LE(best.params(), budget);
    for (const auto& t : tried) EXPECT_LE(t.placement.params(), budget);
    // The lazy variant evaluates at most `width` placements after step 1, within the budget.
    std::vector<PlacementScore> lazy;
    const Placement narrow = measured_greedy(cands, budget, eval, start, 0.0, &lazy, nullptr, 3);
    EXPECT_LE(narrow.params(), budget);
    std::map<int, int> per_step;
    for (const auto& t : lazy) {
      EXPECT_LE(t.placement.params(), budget);
      ++per_step[t.step];
    }
    for (const auto& [step, n] : per_step) {
      if (step > 1) {
        EXPECT_LE(n, 3) << "step " << step;
      }
    }
    std::vector<int> ranking = {7, 6, 5, 4, 3, 2, 1, 0};
    EXPECT_LE(greedy_by_rank(ranking, cands, budget).params(), budget);
    // Greedy stops only when nothing more fits or nothing gains: with positive gains
    // everywhere, every site left out must not fit.
    for (const auto& c : cands) {
      bool used = false;
      for (const auto& b : best.blocks) used |= b.site == c.site;
      if (!used && gain[static_cast<size_t>(c.site)] > 0) {
        EXPECT_GT(best.params() + c.params, budget) << "site " << c.site << " would have fit";
      }
    }
  }
}

TEST(Search, MeasuredGreedyPicksTheBestGainPerParameter) {
  // Site 0: +0.10 for 100 params (1e-3/param); site 1: +0.04 for 10 (4e-3/param);
  // site 2: +0.20 for 1000 (2e-4/param). Budget 1100: 1 first, then 0 (better per parameter
  // than 2, which also fits), then 2 no longer fits.
  const std::vector<Candidate> c = {{0, BlockSpec::parse("channel"), 100},
                                    {1, BlockSpec::parse("channel"), 10},
                                    {2, BlockSpec::parse("channel"), 1000}};
  const std::vector<double> gain = {0.10, 0.04, 0.20};
  std::vector<PlacementScore> tried;
  int calls = 0;
  const PlacementEvaluator eval = [&](const Placement& p) {
    ++calls;
    Summary s;
    s.mean = 0.5;
    for (const auto& b : p.blocks) s.mean += gain[static_cast<size_t>(b.site)];
    return s;
  };
  Summary start;
  start.mean = 0.5;
  const Placement p = measured_greedy(c, 1100, eval, start, 0.0, &tried);
  ASSERT_EQ(p.blocks.size(), 2u);
  EXPECT_EQ(p.blocks[0].site, 0);
  EXPECT_EQ(p.blocks[1].site, 1);
  EXPECT_EQ(calls, 3 + 2);  // step 1: all three; step 2: sites 0 and 2
  EXPECT_EQ(static_cast<int>(tried.size()), calls);
  EXPECT_EQ(tried.back().step, 2);
  // A gain threshold stops the search.
  EXPECT_TRUE(measured_greedy(c, 1100, eval, start, 0.5, nullptr).blocks.empty());
}

TEST(Search, ParetoFront) {
  const std::vector<double> overhead = {0.0, 1.0, 1.0, 2.0, 3.0, 5.0};
  const std::vector<double> accuracy = {0.5, 0.7, 0.6, 0.65, 0.8, 0.8};
  auto f = pareto_front(overhead, accuracy);
  std::sort(f.begin(), f.end());
  EXPECT_EQ(f, (std::vector<size_t>{0, 1, 4}));
  EXPECT_TRUE(pareto_front({}, {}).empty());
}

}  // namespace
}  // namespace quell
