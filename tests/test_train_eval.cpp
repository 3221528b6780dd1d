// Training and Monte-Carlo evaluation on small in-memory data: learning happens, seeds
// reproduce, evaluation statistics have the right shape, weight noise is undone, and noise
// hurts in the expected direction.
#include <gtest/gtest.h>

#include "quell/eval.h"
#include "quell/train.h"
#include "test_util.h"

namespace quell {
namespace {

using quell::testing::blob_dataset;

Model trained_mlp(const Dataset& data, uint64_t seed = 1, NoiseConfig noise = {}) {
  torch::manual_seed(seed);
  Model m = make_model(ModelSpec::for_dataset("mlp-bn", data));
  TrainOptions o;
  o.epochs = 2;
  o.batch_size = 64;
  o.seed = seed;
  o.lr = 3e-3;
  o.noise = std::move(noise);
  train(*m, data, o);
  return m;
}

TEST(Train, LearnsBlobsAndCalibrates) {
  const Dataset train_set = blob_dataset(1200, 1, 28, 28, 10, 1);
  const Dataset test_set = blob_dataset(400, 1, 28, 28, 10, 2);
  Model m = trained_mlp(train_set);
  EXPECT_GT(run_pass(*m, test_set, 128).accuracy, 0.9);
  for (const auto& c : m->engine().calibration()) {
    EXPECT_TRUE(c.valid);
    EXPECT_GE(c.absmax, c.std);
  }
}

TEST(Train, SameSeedSameWeights) {
  const Dataset data = blob_dataset(300, 1, 28, 28, 10, 3);
  Model a = trained_mlp(data, 5), b = trained_mlp(data, 5), c = trained_mlp(data, 6);
  const auto pa = a->parameters(), pb = b->parameters(), pc = c->parameters();
  bool all_equal = true, any_diff = false;
  for (size_t i = 0; i < pa.size(); ++i) {
    all_equal = all_equal && torch::equal(pa[i], pb[i]);
    any_diff = any_diff || !torch::equal(pa[i], pc[i]);
  }
  EXPECT_TRUE(all_equal);
  EXPECT_TRUE(any_diff);
}

TEST(Train, NoiseAwareTrainingRunsWithRelativeNoise) {
  const Dataset data = blob_dataset(600, 1, 28, 28, 10, 4);
  torch::manual_seed(1);
  Model probe = make_model(ModelSpec::for_dataset("mlp-bn", data));
  const NoiseConfig noise = build_noise_config({"all=add:0.3:rel=std+mul:0.1:static"}, {"relu1=6"},
                                               {}, "", 1, probe->site_names());
  Model m = trained_mlp(data, 1, noise);
  EXPECT_GT(run_pass(*m, data, 128).accuracy, 0.8);
}

TEST(Train, BadOptionsAreErrors) {
  const Dataset data = blob_dataset(50);
  Model m = make_model(ModelSpec::for_dataset("mlp", data));
  TrainOptions o;
  o.optimizer = "lion";
  EXPECT_THROW(train(*m, data, o), std::invalid_argument);
  o.optimizer = "sgd";
  o.lr = -1;
  EXPECT_THROW(train(*m, data, o), std::invalid_argument);
}

class EvalTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    data_ = new Dataset(blob_dataset(1200, 1, 28, 28, 10, 11));
    test_ = new Dataset(blob_dataset(300, 1, 28, 28, 10, 12));
    model_ = new Model(trained_mlp(*data_));
  }
  static void TearDownTestSuite() {
    delete model_;
    delete data_;
    delete test_;
  }
  static Dataset* data_;
  static Dataset* test_;
  static Model* model_;
  NoiseConfig config(const std::vector<std::string>& rules, const std::string& weight = "") {
    return build_noise_config(rules, {}, {}, weight, 1, (*model_)->site_names());
  }
};
Dataset* EvalTest::data_ = nullptr;
Dataset* EvalTest::test_ = nullptr;
Model* EvalTest::model_ = nullptr;

TEST_F(EvalTest, CleanIsOneDeterministicPass) {
  EvalOptions o;
  o.draws = 7;
  const EvalResult r = evaluate(**model_, *test_, NoiseConfig{}, o);
  EXPECT_TRUE(r.deterministic);
  EXPECT_EQ(r.accuracy.n, 1);
  EXPECT_DOUBLE_EQ(r.accuracy.mean, run_pass(**model_, *test_, 100).accuracy);
}

TEST_F(EvalTest, DrawsAndSummary) {
  EvalOptions o;
  o.draws = 6;
  o.chips = 4;  // ignored: dynamic noise only
  const EvalResult r = evaluate(**model_, *test_, config({"all=add:0.5"}), o);
  ASSERT_EQ(r.draws.size(), 6u);
  EXPECT_EQ(r.accuracy.n, 6);
  EXPECT_FALSE(r.chip_level);
  EXPECT_LE(r.accuracy.ci_low, r.accuracy.mean);
  EXPECT_GE(r.accuracy.ci_high, r.accuracy.mean);
  EXPECT_GT(r.accuracy.std, 0.0);
  // Same seeds, same result.
  const EvalResult again = evaluate(**model_, *test_, config({"all=add:0.5"}), o);
  for (size_t i = 0; i < r.draws.size(); ++i) {
    EXPECT_DOUBLE_EQ(r.draws[i].accuracy, again.draws[i].accuracy);
  }
}

TEST_F(EvalTest, StaticNoiseGivesAChipLevelInterval) {
  EvalOptions o;
  o.draws = 2;
  o.chips = 3;
  const EvalResult r = evaluate(**model_, *test_, config({"all=add:0.5:static+add:0.2"}), o);
  EXPECT_EQ(r.draws.size(), 6u);
  EXPECT_TRUE(r.chip_level);
  EXPECT_EQ(r.headline().n, 3);
  EXPECT_EQ(r.accuracy.n, 6);
}

TEST_F(EvalTest, FirstChipEvaluatesTheSameChipsAsAFullEvaluation) {
  const NoiseConfig noise = config({"all=add:0.5:static+add:0.2"}, "0.1");
  EvalOptions o;
  o.draws = 2;
  o.chips = 4;
  const EvalResult all = evaluate(**model_, *test_, noise, o);
  o.first_chip = 2;
  o.chips = 1;
  const EvalResult one = evaluate(**model_, *test_, noise, o);
  ASSERT_EQ(one.draws.size(), 2u);
  for (int d = 0; d < 2; ++d) {
    EXPECT_EQ(one.draws[d].chip, 2);
    EXPECT_EQ(one.draws[d].draw, d);
    EXPECT_EQ(one.draws[d].accuracy, all.draws[2 * 2 + d].accuracy);  // bit-identical
    EXPECT_EQ(one.draws[d].loss, all.draws[2 * 2 + d].loss);
  }
  o.first_chip = -1;
  EXPECT_THROW(evaluate(**model_, *test_, noise, o), std::exception);
}

TEST_F(EvalTest, AccuracyFallsWithSigmaTowardChance) {
  EvalOptions o;
  o.draws = 3;
  const double clean = evaluate(**model_, *test_, NoiseConfig{}, o).accuracy.mean;
  const double mid = evaluate(**model_, *test_, config({"all=add:1:rel=std"}), o).accuracy.mean;
  const double huge = evaluate(**model_, *test_, config({"all=add:100:rel=std"}), o).accuracy.mean;
  EXPECT_GT(clean, mid);
  EXPECT_GT(mid, huge);
  // Near chance (0.1): with 300 samples the binomial std of accuracy is <= 0.03, 5 of them 0.15.
  EXPECT_LT(huge, 0.1 + 0.15);
}

TEST_F(EvalTest, WeightNoiseIsPerChipAndRestored) {
  const auto before = (*model_)->parameters();
  std::vector<torch::Tensor> copies;
  for (const auto& p : before) copies.push_back(p.detach().clone());
  EvalOptions o;
  o.draws = 1;
  o.chips = 3;
  const EvalResult r = evaluate(**model_, *test_, config({}, "0.5"), o);
  EXPECT_TRUE(r.chip_level);
  EXPECT_EQ(r.draws.size(), 3u);
  EXPECT_FALSE(r.draws[0].accuracy == r.draws[1].accuracy &&
               r.draws[1].accuracy == r.draws[2].accuracy);
  const auto after = (*model_)->parameters();
  for (size_t i = 0; i < after.size(); ++i) EXPECT_TRUE(torch::equal(after[i], copies[i]));
}

TEST_F(EvalTest, RepeatsRecoverAccuracy) {
  // Averaging 16 copies divides the noise std by 4: accuracy must rise (means over 8 draws).
  EvalOptions o;
  o.draws = 8;
  const NoiseConfig noisy = config({"all=add:1:rel=std"});
  NoiseConfig repeated = noisy;
  for (auto& kv : repeated.sites) kv.second.repeats = 16;
  const EvalResult a = evaluate(**model_, *test_, noisy, o);
  const EvalResult b = evaluate(**model_, *test_, repeated, o);
  EXPECT_GT(b.accuracy.ci_low, a.accuracy.ci_high);
}

}  // namespace
}  // namespace quell
