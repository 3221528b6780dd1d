// The model registry and its sites: every registered model gets the shared contract tests
// (site table matches the real activations, forward shape, noise at every site is finite and
// differentiable, same seed same result, forward-from-a-site equals the full forward), plus the
// exact site numbering of the paper's models and checkpoint round trips.
#include <gtest/gtest.h>

#include <fstream>

#include "quell/checkpoint.h"
#include "model/internal.h"
#include "quell/models.h"
#include "test_util.h"

namespace quell {
namespace {

using quell::testing::ScratchDir;
using quell::testing::spec_for;

class ModelContract : public ::testing::TestWithParam<std::string> {};

TEST_P(ModelContract, SiteTableMatchesTheActivations) {
  torch::manual_seed(0);
  Model m = make_model(spec_for(GetParam()));
  m->eval();
  const auto sites = m->sites();
  ASSERT_EQ(static_cast<int>(sites.size()), m->num_sites());
  std::vector<std::vector<int64_t>> seen(sites.size());
  m->engine().set_observer(
      [&](int site, const torch::Tensor& x) { seen[site] = x.sizes().slice(1).vec(); });
  const auto& s = m->spec();
  torch::NoGradGuard g;
  const torch::Tensor y = m->forward(torch::randn({3, s.in_channels, s.height, s.width}));
  EXPECT_EQ(y.sizes(), (std::vector<int64_t>{3, s.num_classes}));
  int64_t params = 0;
  for (const auto& site : sites) {
    EXPECT_EQ(seen[site.index], site.shape) << site.name;
    params += site.params;
  }
  EXPECT_EQ(params, m->num_params()) << "every parameter belongs to exactly one site";
  EXPECT_EQ(sites.front().name, "input");
  // Names are unique: they address sites on the command line.
  auto names = m->site_names();
  std::sort(names.begin(), names.end());
  EXPECT_EQ(std::adjacent_find(names.begin(), names.end()), names.end());
}

TEST_P(ModelContract, NoiseAtEverySiteIsFiniteDeterministicAndDifferentiable) {
  torch::manual_seed(0);
  Model m = make_model(spec_for(GetParam()));
  const auto& s = m->spec();
  const torch::Tensor x = torch::randn({4, s.in_channels, s.height, s.width});
  NoiseConfig cfg = build_noise_config({"all=muladd:0.2/0.5"}, {}, {}, "", 3, m->site_names());
  m->engine().configure(cfg);
  m->train();
  m->engine().set_draw(0, 0);
  const torch::Tensor y = m->forward(x);
  EXPECT_TRUE(torch::isfinite(y).all().item<bool>());
  y.square().sum().backward();
  for (const auto& p : m->named_parameters()) {
    ASSERT_TRUE(p.value().grad().defined()) << p.key();
    EXPECT_TRUE(torch::isfinite(p.value().grad()).all().item<bool>()) << p.key();
  }
  m->eval();
  torch::NoGradGuard g;
  m->engine().set_draw(0, 0);
  const torch::Tensor a = m->forward(x);
  m->engine().set_draw(0, 0);
  const torch::Tensor b = m->forward(x);
  m->engine().set_draw(0, 1);
  const torch::Tensor c = m->forward(x);
  EXPECT_TRUE(torch::equal(a, b));
  EXPECT_FALSE(torch::equal(a, c));
}

TEST_P(ModelContract, ForwardFromEverySiteEqualsTheFullForward) {
  torch::manual_seed(0);
  Model m = make_model(spec_for(GetParam()));
  m->eval();
  const auto& s = m->spec();
  const torch::Tensor x = torch::randn({2, s.in_channels, s.height, s.width});
  torch::NoGradGuard g;
  const torch::Tensor full = m->forward(x);
  for (int site = 0; site < m->num_sites(); ++site) {
    ForwardState st = m->run_until(x, site);
    EXPECT_TRUE(torch::allclose(m->run_from(std::move(st)), full, 1e-5, 1e-6)) << site;
  }
  // With noise at one site, the suffix run reproduces the full noisy forward for the same draw.
  const int last = m->num_sites() - 1;
  NoiseConfig cfg;
  cfg.sites[last / 2].noise = {NoiseSpec::parse("add:0.5")};
  m->engine().configure(cfg);
  m->engine().set_draw(0, 0);
  const torch::Tensor noisy = m->forward(x);
  m->engine().set_draw(0, 0);
  ForwardState st = m->run_until(x, last / 2);
  EXPECT_TRUE(torch::allclose(m->run_from(std::move(st)), noisy, 1e-5, 1e-6));
  EXPECT_FALSE(torch::allclose(noisy, full, 1e-5, 1e-6));
}

TEST_P(ModelContract, CheckpointRoundTrip) {
  ScratchDir dir("models");
  torch::manual_seed(0);
  Model m = make_model(spec_for(GetParam()));
  const auto& s = m->spec();
  const torch::Tensor x = torch::randn({16, s.in_channels, s.height, s.width});
  m->train();
  {
    torch::NoGradGuard g;
    m->forward(x);  // move BN running statistics off their initial values
  }
  m->calibrate(x);
  m->eval();
  CheckpointMeta meta;
  meta.spec = s;
  meta.dataset = "blobs";
  save_checkpoint(dir.file("m.pt"), *m, meta);
  CheckpointMeta back;
  Model loaded = load_checkpoint(dir.file("m.pt"), &back);
  loaded->eval();
  EXPECT_EQ(back.spec.to_json(), s.to_json());
  EXPECT_EQ(back.dataset, "blobs");
  torch::NoGradGuard g;
  EXPECT_TRUE(torch::equal(loaded->forward(x), m->forward(x)));
  ASSERT_EQ(loaded->engine().calibration().size(), m->engine().calibration().size());
  for (size_t i = 0; i < m->engine().calibration().size(); ++i) {
    EXPECT_DOUBLE_EQ(loaded->engine().calibration()[i].std, m->engine().calibration()[i].std);
    EXPECT_TRUE(loaded->engine().calibration()[i].valid);
  }
}

INSTANTIATE_TEST_SUITE_P(Registry, ModelContract, ::testing::ValuesIn(model_names()),
                         [](const auto& info) {
                           std::string n = info.param;
                           std::replace(n.begin(), n.end(), '-', '_');
                           return n;
                         });

TEST(ModelSites, Lenet5BnHasTheWalkingNoiseNumbering) {
  Model m = make_model(spec_for("lenet5-bn"));
  const std::vector<std::string> expected = {"input", "conv1", "bn1",   "relu1", "pool1", "conv2",
                                             "bn2",   "relu2", "pool2", "fc1",   "bn3",   "relu3",
                                             "fc2",   "bn4",   "relu4", "fc3"};
  EXPECT_EQ(m->site_names(), expected);
  const auto sites = m->sites();
  EXPECT_EQ(sites[1].shape, (std::vector<int64_t>{6, 28, 28}));
  EXPECT_EQ(sites[5].shape, (std::vector<int64_t>{16, 10, 10}));
  EXPECT_EQ(sites[1].params, 6 * 25 + 6);
  EXPECT_EQ(sites[9].params, 400 * 120 + 120);
}

TEST(ModelSites, PaperSiteCounts) {
  EXPECT_EQ(make_model(spec_for("mlp"))->num_sites(), 8);
  EXPECT_EQ(make_model(spec_for("mlp-bn"))->num_sites(), 11);
  EXPECT_EQ(make_model(spec_for("lenet5"))->num_sites(), 12);
  EXPECT_EQ(make_model(spec_for("lenet5-bn"))->num_sites(), 16);
  // ResNet-20: 0.27M parameters (He et al. 2016, table 6).
  EXPECT_EQ(make_model(spec_for("resnet20"))->num_params(), 269722);
}

TEST(ModelRegistry, UnknownNameListsTheKnownOnes) {
  ModelSpec s;
  s.name = "alexnet";
  try {
    make_model(s);
    FAIL() << "expected an error";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("unknown model 'alexnet'"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("lenet5-bn"), std::string::npos);
  }
}

TEST(ModelRegistry, TooSmallInputIsAnError) {
  ModelSpec s = spec_for("lenet5-bn");
  s.height = s.width = 6;
  EXPECT_THROW(make_model(s), std::invalid_argument);
}

// What loading the checkpoint at `path` throws ("" when it loads).
std::string load_error(const std::string& path) {
  try {
    load_checkpoint(path);
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

TEST(Checkpoint, MissingCorruptAndMismatchedFilesAreNamedErrors) {
  ScratchDir dir("ckpt");
  const std::string missing = dir.file("nope.pt");
  EXPECT_NE(load_error(missing).find(missing), std::string::npos);
  EXPECT_NE(load_error(missing).find("No such file"), std::string::npos);

  const std::string garbage = dir.file("garbage.pt");
  std::ofstream(garbage) << "this is not a checkpoint";
  EXPECT_NE(load_error(garbage).find(garbage), std::string::npos);
  EXPECT_EQ(load_error(garbage).find('\n'), std::string::npos) << "one line";

  // A plain torch archive without quell's metadata.
  const std::string plain = dir.file("plain.pt");
  torch::serialize::OutputArchive a;
  a.write("w", torch::ones({2}));
  a.save_to(plain);
  EXPECT_NE(load_error(plain).find("not a quell checkpoint"), std::string::npos);

  // Weights of one model under the metadata of another: the mismatch is named.
  Model lenet = make_model(spec_for("lenet5-bn"));
  CheckpointMeta meta;
  meta.spec = spec_for("lenet5-bn");
  meta.spec.num_classes = 7;  // claims 7 classes; the weights have 10
  save_checkpoint(dir.file("mismatch.pt"), *lenet, meta);
  const std::string msg = load_error(dir.file("mismatch.pt"));
  EXPECT_NE(msg.find("fc3.weight"), std::string::npos) << msg;
  EXPECT_NE(msg.find("shape"), std::string::npos) << msg;
}

// LibTorch checks no CRC and its TorchScript importer crashes on some damaged code, so quell
// checks the archive first: every member's CRC, and code that is only what save_checkpoint's
// OutputArchive writes.
TEST(Checkpoint, DamagedArchivesAreRefusedBeforeLibTorchReadsThem) {
  ScratchDir dir("ckpt");
  CheckpointMeta meta;
  meta.spec = spec_for("mlp");
  const std::string good = dir.file("good.pt");
  save_checkpoint(good, *make_model(meta.spec), meta);
  EXPECT_EQ(load_error(good), "");
  EXPECT_EQ(Json::parse(read_checkpoint_meta_text(good)).at("model").at("name"), "mlp");

  // One bit of the weights flipped (the middle of the file is fc1's weights).
  std::string bytes = testing::read_file(good);
  bytes[bytes.size() / 2] ^= 0x01;
  const std::string flipped = dir.file("flipped.pt");
  testing::write_file(flipped, bytes);
  std::string msg = load_error(flipped);
  EXPECT_NE(msg.find(flipped + ": not a readable checkpoint (zip member "), std::string::npos)
      << msg;
  EXPECT_NE(msg.find("fails its CRC check"), std::string::npos) << msg;
  EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;

  // Truncated: the central directory is gone.
  const std::string cut = dir.file("cut.pt");
  testing::write_file(cut, testing::read_file(good).substr(0, bytes.size() - 100));
  msg = load_error(cut);
  EXPECT_NE(msg.find(cut + ": not a readable checkpoint ("), std::string::npos) << msg;

  // Intact CRCs, but the code is not what a checkpoint holds (`__parameters__` renamed, which
  // crashed LibTorch 1.13's importer: the fuzzer's finding, tests/fixtures/fuzz/checkpoint/).
  const std::string renamed =
      std::string(QUELL_FIXTURES_DIR) + "/fuzz/checkpoint/parameters-renamed-valid-crc.pt";
  msg = load_error(renamed);
  EXPECT_NE(msg.find("not a quell checkpoint (unexpected code in archive/code/__torch__.py "
                     "line 2:   __paramesers__"),
            std::string::npos)
      << msg;
  EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  EXPECT_THROW(read_checkpoint_meta_text(renamed), std::runtime_error);
}

TEST(Checkpoint, UncalibratedModelRoundTrips) {
  ScratchDir dir("ckpt");
  Model fresh = make_model(spec_for("lenet5-bn"));  // never calibrated
  CheckpointMeta meta;
  meta.spec = spec_for("lenet5-bn");
  save_checkpoint(dir.file("fresh.pt"), *fresh, meta);
  Model loaded = load_checkpoint(dir.file("fresh.pt"));
  EXPECT_TRUE(loaded->engine().calibration().empty());
  EXPECT_TRUE(torch::equal(loaded->analog_weights().at(0).second, fresh->analog_weights().at(0).second));
}

}  // namespace
}  // namespace quell

namespace quell {
namespace {

// The inference max pooling must give exactly torch's values: odd sizes (floor mode drops the
// last row/column), NaN propagation, kernel 2 and 3, float and double, and a gradient path.
TEST(MaxPool, MatchesTorchExactly) {
  torch::manual_seed(4);
  torch::NoGradGuard no_grad;
  for (auto dtype : {torch::kFloat, torch::kDouble}) {
    for (int64_t k : {2, 3}) {
      torch::Tensor x = torch::randn({3, 5, 13, 11}, torch::TensorOptions().dtype(dtype));
      x[1][2][4][3] = std::nan("");
      x[2][0][0][0] = -std::numeric_limits<double>::infinity();
      const torch::Tensor want = torch::max_pool2d(x, k, k);
      const torch::Tensor got = max_pool_2d(x, k, k);
      ASSERT_EQ(got.sizes(), want.sizes());
      EXPECT_TRUE(torch::equal(got.isnan(), want.isnan()));
      EXPECT_TRUE(torch::equal(got.nan_to_num(0.0), want.nan_to_num(0.0))) << k;
      // Non-contiguous input (a channel slice of a permuted tensor).
      const torch::Tensor nc = x.transpose(2, 3);
      EXPECT_TRUE(torch::equal(max_pool_2d(nc, k, k).nan_to_num(0.0),
                               torch::max_pool2d(nc, k, k).nan_to_num(0.0)));
    }
  }
}

TEST(MaxPool, GradientsFlowThroughTorchsKernel) {
  torch::Tensor x = torch::randn({2, 3, 8, 8}, torch::requires_grad());
  max_pool_2d(x, 2, 2).sum().backward();
  // Each 2x2 window passes the gradient to exactly one element.
  EXPECT_EQ(x.grad().sum().item<double>(), 2.0 * 3 * 4 * 4);
}

}  // namespace
}  // namespace quell
