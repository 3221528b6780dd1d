// Imported TorchScript models (quell/script.h), on the fixtures scripts/make_fixtures.py exports:
// site discovery, the interpreter against PyTorch's own logits, equivalence with the built-in
// lenet5-bn under noise, gradients, checkpoints and bad files.
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <sstream>

#include "quell/checkpoint.h"
#include "quell/denoise.h"
#include "quell/eval.h"
#include "quell/noise.h"
#include "quell/script.h"
#include "quell/train.h"
#include "test_util.h"

namespace quell {
namespace {

using testing::blob_dataset;
using testing::error_of;
using testing::ScratchDir;

std::string fixture(const std::string& name) {
  return std::string(QUELL_FIXTURES_DIR) + "/" + name;
}

ModelSpec spec_for(const std::string& file, int64_t channels = 1, int64_t size = 28,
                   int64_t classes = 10) {
  ModelSpec s;
  s.name = fixture(file);
  s.in_channels = channels;
  s.height = s.width = size;
  s.num_classes = classes;
  return s;
}

std::vector<std::string> site_names_of(const Model& m) { return m->site_names(); }

TEST(Script, LooksLikeAModelFile) {
  EXPECT_TRUE(looks_like_model_file("model.pt"));
  EXPECT_TRUE(looks_like_model_file("dir/model"));
  EXPECT_TRUE(looks_like_model_file("resnet.pth"));
  EXPECT_FALSE(looks_like_model_file("lenet5-bn"));
  EXPECT_FALSE(looks_like_model_file("resnet20"));
  EXPECT_TRUE(is_torchscript_model(fixture("lenet5_bn.script.pt")));
}

TEST(Script, LeNetFixturesHaveTheBuiltInSiteTable) {
  ModelSpec builtin_spec;
  builtin_spec.name = "lenet5-bn";
  Model builtin = make_model(builtin_spec);
  for (const char* file : {"lenet5_bn.script.pt", "lenet5_bn.trace.pt"}) {
    SCOPED_TRACE(file);
    Model m = load_script_model(spec_for(file));
    const auto a = builtin->sites(), b = m->sites();
    ASSERT_EQ(a.size(), b.size());
    for (size_t i = 0; i < a.size(); ++i) {
      EXPECT_EQ(a[i].index, b[i].index);
      EXPECT_EQ(a[i].name, b[i].name);
      EXPECT_EQ(a[i].op, b[i].op) << a[i].name;
      EXPECT_EQ(a[i].shape, b[i].shape) << a[i].name;
      EXPECT_EQ(a[i].params, b[i].params) << a[i].name;
    }
    EXPECT_EQ(m->num_params(), builtin->num_params());
    ASSERT_NE(m->script_info(), nullptr);
    EXPECT_TRUE(m->script_info()->unplaced.empty());
    // Weight noise and the cost model see the same analog layers.
    const auto wa = builtin->analog_weights(), wb = m->analog_weights();
    ASSERT_EQ(wa.size(), wb.size());
    for (size_t i = 0; i < wa.size(); ++i) {
      EXPECT_EQ(wa[i].first, wb[i].first);
      EXPECT_EQ(wa[i].second.sizes(), wb[i].second.sizes());
    }
  }
}

TEST(Script, ResNetSitesFollowTheModuleHierarchy) {
  Model m = load_script_model(spec_for("resnet_small.script.pt", 3, 32));
  const std::vector<std::string> expected = {
      "input",          "conv1",         "bn1",
      "relu",           "layer1.0.conv1", "layer1.0.bn1",
      "layer1.0.relu",  "layer1.0.conv2", "layer1.0.bn2",
      "layer1.0.add",   "layer1.0.relu#2", "layer2.0.conv1",
      "layer2.0.bn1",   "layer2.0.relu",  "layer2.0.conv2",
      "layer2.0.bn2",   "layer2.0.downsample.0", "layer2.0.downsample.1",
      "layer2.0.add",   "layer2.0.relu#2", "avgpool",
      "fc"};
  EXPECT_EQ(site_names_of(m), expected);
  const auto& nodes = m->nodes();
  // The residual additions read the block's input (or its downsampled copy) and bn2, both
  // sites, including the in-place `out += identity` of torchvision's BasicBlock.
  EXPECT_EQ(nodes[9].label, "add");
  EXPECT_EQ(nodes[9].inputs, (std::vector<int>{3, 8}));
  EXPECT_EQ(nodes[18].inputs, (std::vector<int>{15, 17}));
  EXPECT_EQ(nodes[16].inputs, (std::vector<int>{10}));  // the downsample conv reads the block input
  EXPECT_EQ(nodes[20].shape, (std::vector<int64_t>{16, 1, 1}));
  EXPECT_EQ(nodes[21].shape, (std::vector<int64_t>{10}));
  EXPECT_EQ(nodes[16].param_count, 8 * 16);
  EXPECT_TRUE(m->script_info()->unplaced.empty());
}

TEST(Script, TransformerSitesIncludeTheAttentionProducts) {
  const std::vector<std::string> expected = {
      "input",        "patch",         "add",           "block.norm1",
      "block.attn.q", "block.attn.k",  "block.attn.v",  "block.attn.matmul",
      "block.attn.softmax", "block.attn.matmul#2", "block.attn.proj", "block.add",
      "block.norm2",  "block.fc1",     "block.act",     "block.fc2",
      "block.add#2",  "norm",          "head"};
  for (const char* file : {"vit_tiny.script.pt", "vit_tiny.trace.pt"}) {
    SCOPED_TRACE(file);
    Model m = load_script_model(spec_for(file));
    EXPECT_EQ(site_names_of(m), expected);
    const auto& nodes = m->nodes();
    EXPECT_EQ(nodes[7].label, "matmul");
    EXPECT_EQ(nodes[8].label, "softmax");
    EXPECT_EQ(nodes[14].label, "gelu");
    EXPECT_EQ(nodes[7].shape, (std::vector<int64_t>{2, 16, 16}));  // heads x tokens x tokens
    // q @ k^T: 2 heads x 16 x 16 outputs, each over the head dimension 16; no weight.
    EXPECT_FALSE(nodes[7].weight.defined());
    EXPECT_EQ(nodes[7].macs, 2 * 16 * 16 * 16);
    EXPECT_TRUE(nodes[4].weight.defined());
    // The scaling of the scores and the mean over tokens are listed, not silently skipped.
    std::vector<std::string> unplaced;
    for (const auto& u : m->script_info()->unplaced) unplaced.push_back(u.op + "@" + u.where);
    EXPECT_EQ(unplaced, (std::vector<std::string>{"aten::mul@block.attn", "aten::mean@"}));
  }
}

TEST(Script, ControlFlowOnAttributesFoldsAndTheRestIsListed) {
  Model m = load_script_model(spec_for("flags.script.pt"));
  // `if self.use_res:` is folded (its residual is a site); the branch on the data is not.
  EXPECT_EQ(site_names_of(m), (std::vector<std::string>{"input", "conv", "add", "fc"}));
  std::vector<std::string> unplaced;
  for (const auto& u : m->script_info()->unplaced) {
    unplaced.push_back(u.op + "@" + u.where + ": " + u.reason);
  }
  EXPECT_EQ(unplaced, (std::vector<std::string>{"aten::mean@: not a site kind",
                                                "aten::gt@: not a site kind",
                                                "aten::relu@: inside control flow",
                                                "aten::dropout@drop: not a site kind"}));
  // The branch still runs: the imported model computes what PyTorch does.
  torch::NoGradGuard no_grad;
  m->eval();
  auto p = m->named_parameters();
  auto reference = [&](const torch::Tensor& x) {
    torch::Tensor y = x + torch::conv2d(x, p["conv.weight"], p["conv.bias"], 1, 1);
    if (y.mean().item<double>() > 100.0) y = torch::relu(y);
    return torch::linear(y.flatten(1), p["fc.weight"], p["fc.bias"]);
  };
  // Half the pixels at +500, half at -100: the mean is over 100, so the ReLU branch runs.
  torch::Tensor taken = torch::full({2, 1, 28, 28}, 500.0);
  taken.narrow(3, 0, 14).fill_(-100.0);
  const torch::Tensor skipped = taken - 400.0;  // mean under 100: the branch is skipped
  for (const auto& x : {taken, skipped}) {
    EXPECT_TRUE(torch::allclose(m->forward(x), reference(x), 1e-4, 1e-3));
  }
  EXPECT_FALSE(torch::allclose(m->forward(taken),
                               torch::linear((taken + torch::conv2d(taken, p["conv.weight"],
                                                                    p["conv.bias"], 1, 1))
                                                 .flatten(1),
                                             p["fc.weight"], p["fc.bias"]),
                               1e-4, 1e-3));

  const std::string e = error_of([&] { load_script_model(spec_for("two_outputs.script.pt")); });
  EXPECT_NE(e.find("two_outputs.script.pt: forward must return one tensor (the output)"),
            std::string::npos)
      << e;
}

// Reference logits PyTorch computed for each fixture (tests/fixtures/reference_logits.txt).
std::map<std::string, std::vector<double>> reference_logits() {
  std::ifstream in(fixture("reference_logits.txt"));
  std::map<std::string, std::vector<double>> out;
  for (std::string line; std::getline(in, line);) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream ss(line);
    std::string name;
    ss >> name;
    for (double v; ss >> v;) out[name].push_back(v);
  }
  return out;
}

TEST(Script, ForwardMatchesPyTorch) {
  const auto refs = reference_logits();
  ASSERT_EQ(refs.size(), 3u);
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"lenet5_bn.script.pt", "lenet5_bn"}, {"lenet5_bn.trace.pt", "lenet5_bn"},
      {"resnet_small.script.pt", "resnet_small"}, {"vit_tiny.script.pt", "vit_tiny"},
      {"vit_tiny.trace.pt", "vit_tiny"}};
  torch::NoGradGuard no_grad;
  for (const auto& [file, ref] : cases) {
    SCOPED_TRACE(file);
    const bool colour = ref == "resnet_small";
    Model m = load_script_model(spec_for(file, colour ? 3 : 1, colour ? 32 : 28));
    m->eval();
    const int64_t c = colour ? 3 : 1, s = colour ? 32 : 28;
    const torch::Tensor x = torch::linspace(-1, 1, 2 * c * s * s).reshape({2, c, s, s});
    const torch::Tensor y = m->forward(x).flatten();
    const auto& want = refs.at(ref);
    ASSERT_EQ(y.numel(), static_cast<int64_t>(want.size()));
    for (int64_t i = 0; i < y.numel(); ++i) {
      EXPECT_NEAR(y[i].item<double>(), want[static_cast<size_t>(i)], 1e-4) << "logit " << i;
    }
  }
}

TEST(Script, ContinuingFromAnySiteMatchesTheFullPassAndLeavesTheStateIntact) {
  torch::NoGradGuard no_grad;
  for (const auto& [file, c, s] : std::vector<std::tuple<std::string, int64_t, int64_t>>{
           {"resnet_small.script.pt", 3, 32}, {"vit_tiny.script.pt", 1, 28}}) {
    SCOPED_TRACE(file);
    Model m = load_script_model(spec_for(file, c, s));
    m->eval();
    const torch::Tensor x = torch::randn({3, c, s, s});
    const torch::Tensor full = m->forward(x);
    for (int site = 0; site < m->num_sites(); ++site) {
      ForwardState state = m->run_until(x, site);
      ForwardState copy = state;  // shares the tensors, as a walk's cache does
      std::vector<torch::Tensor> before;
      for (const auto& v : state.values) before.push_back(v.defined() ? v.clone() : v);
      EXPECT_TRUE(torch::equal(m->run_from(std::move(state)), full)) << "site " << site;
      for (size_t i = 0; i < before.size(); ++i) {
        if (before[i].defined() && static_cast<int>(i) != site) {
          EXPECT_TRUE(torch::equal(copy.values[i], before[i])) << "value " << i << " written";
        }
      }
      EXPECT_TRUE(torch::equal(m->run_from(std::move(copy)), full)) << "site " << site;
    }
  }
}

TEST(Script, ImportedLeNetEqualsTheBuiltInUnderNoise) {
  const Dataset train_set = blob_dataset(1200, 1, 28, 28, 10, 41);
  const Dataset val = blob_dataset(500, 1, 28, 28, 10, 42);
  torch::manual_seed(3);
  Model builtin = make_model(ModelSpec::for_dataset("lenet5-bn", train_set));
  TrainOptions t;
  t.epochs = 3;
  train(*builtin, train_set, t);  // also calibrates
  for (const char* file : {"lenet5_bn.script.pt", "lenet5_bn.trace.pt"}) {
    SCOPED_TRACE(file);
    Model imported = load_script_model(spec_for(file));
    {
      torch::NoGradGuard no_grad;
      std::map<std::string, torch::Tensor> src;
      for (const auto& p : builtin->named_parameters()) src[p.key()] = p.value();
      for (const auto& b : builtin->named_buffers()) src[b.key()] = b.value();
      size_t copied = 0;
      for (auto& p : imported->named_parameters()) p.value().copy_(src.at(p.key())), ++copied;
      for (auto& b : imported->named_buffers()) b.value().copy_(src.at(b.key())), ++copied;
      EXPECT_EQ(copied, src.size());
    }
    imported->calibrate(train_set.inputs, t.calib_samples);
    const auto& ca = builtin->engine().calibration();
    const auto& cb = imported->engine().calibration();
    ASSERT_EQ(ca.size(), cb.size());
    for (size_t i = 0; i < ca.size(); ++i) {
      EXPECT_NEAR(ca[i].std, cb[i].std, 1e-6 * (1 + ca[i].std)) << "site " << i;
      EXPECT_NEAR(ca[i].absmax, cb[i].absmax, 1e-6 * (1 + ca[i].absmax)) << "site " << i;
    }
    builtin->eval();
    imported->eval();
    EvalOptions eo;
    eo.draws = 2;
    eo.chips = 2;
    const double clean_a = run_pass(*builtin, val, 256).accuracy;
    const double clean_b = run_pass(*imported, val, 256).accuracy;
    EXPECT_GT(clean_a, 0.5);  // a trained model, so the comparison means something
    EXPECT_EQ(clean_a, clean_b);
    const NoiseConfig noise = build_noise_config(
        {"all=add:0.4:rel=std+mul:0.1:static", "fc1=add:0.5:rel=range"}, {"relu3=4"}, {"2=3"},
        "0.05", 11, builtin->site_names());
    const EvalResult a = evaluate(*builtin, val, noise, eo);
    const EvalResult b = evaluate(*imported, val, noise, eo);
    ASSERT_EQ(a.draws.size(), b.draws.size());
    EXPECT_LT(a.headline().mean, clean_a - 0.02);  // the noise does something
    for (size_t i = 0; i < a.draws.size(); ++i) {
      EXPECT_EQ(a.draws[i].accuracy, b.draws[i].accuracy) << "draw " << i;
      EXPECT_NEAR(a.draws[i].loss, b.draws[i].loss, 1e-5) << "draw " << i;
    }
  }
}

TEST(Script, GradientsReachImportedWeightsAndBlocks) {
  const Dataset train_set = blob_dataset(1000, 1, 28, 28, 10, 51);
  const Dataset val = blob_dataset(400, 1, 28, 28, 10, 52);
  {
    // Noise-aware fine-tuning of an imported model learns.
    Model lenet = load_script_model(spec_for("lenet5_bn.script.pt"));
    lenet->calibrate(train_set.inputs);
    lenet->eval();
    const double before = run_pass(*lenet, val, 256).accuracy;
    TrainOptions t;
    t.epochs = 2;
    t.noise = build_noise_config({"all=add:0.1:rel=std"}, {}, {}, "", 3, lenet->site_names());
    train(*lenet, train_set, t);
    lenet->eval();
    const double after = run_pass(*lenet, val, 256).accuracy;
    EXPECT_GT(after, 0.8);
    EXPECT_GT(after, before + 0.3) << "before " << before;
  }
  Model m = load_script_model(spec_for("vit_tiny.script.pt"));
  m->calibrate(train_set.inputs);
  // Every parameter of the transformer gets a gradient through noisy sites (the attention
  // products, softmax and layer norms included).
  m->engine().configure(
      build_noise_config({"all=add:0.2:rel=std+mul:0.1"}, {}, {}, "", 4, m->site_names()));
  m->train();
  const torch::Tensor loss = torch::nn::functional::cross_entropy(
      m->forward(train_set.inputs.narrow(0, 0, 32)), train_set.targets.narrow(0, 0, 32));
  loss.backward();
  for (const auto& p : m->named_parameters()) {
    ASSERT_TRUE(p.value().grad().defined()) << p.key();
    EXPECT_GT(p.value().grad().norm().item<double>(), 0.0) << p.key();
  }
  m->zero_grad();
  m->engine().configure(NoiseConfig{});

  // Denoiser training: blocks after the attention scores and the MLP, backbone frozen.
  std::map<std::string, torch::Tensor> backbone;
  for (const auto& p : m->named_parameters()) backbone[p.key()] = p.value().clone();
  m->set_denoisers({{8, BlockSpec::parse("mlp:r=8")}, {14, BlockSpec::parse("mlp:r=8")}});
  DenoiseTrainOptions o;
  o.epochs = 1;
  o.noise = build_noise_config({"all=add:0.5:static:rel=std"}, {}, {}, "", 5, m->site_names());
  train_denoisers(*m, train_set, o);
  bool moved = false;
  for (const auto& p : m->denoiser_parameters()) moved |= p.abs().sum().item<double>() > 0;
  EXPECT_TRUE(moved);
  for (const auto& p : m->named_parameters()) {
    if (p.key().rfind("denoisers.", 0) == 0) continue;
    EXPECT_TRUE(torch::equal(p.value(), backbone.at(p.key()))) << p.key() << " changed";
  }
}

TEST(Script, CheckpointEmbedsTheModelWithItsWeightsAndBlocks) {
  ScratchDir dir;
  const Dataset d = blob_dataset(64, 3, 32, 32, 10, 61);
  Model m = load_script_model(spec_for("resnet_small.script.pt", 3, 32));
  {
    torch::NoGradGuard no_grad;
    m->named_parameters()["fc.weight"].mul_(1.5);  // differs from the archive's weights
  }
  m->calibrate(d.inputs);
  m->set_denoisers({{9, BlockSpec::parse("bottleneck:r=2")}});
  CheckpointMeta meta;
  meta.spec = m->spec();
  meta.dataset = "blobs";
  save_checkpoint(dir.file("resnet.ckpt"), *m, meta);
  CheckpointMeta loaded_meta;
  Model r = load_checkpoint(dir.file("resnet.ckpt"), &loaded_meta);
  ASSERT_NE(r->script_info(), nullptr);
  EXPECT_NE(r->script_info()->source.find("resnet_small.script.pt"), std::string::npos);
  EXPECT_EQ(r->site_names(), m->site_names());
  EXPECT_EQ(r->denoiser_placement().size(), 1u);
  EXPECT_EQ(r->engine().calibration()[5].std, m->engine().calibration()[5].std);
  torch::NoGradGuard no_grad;
  m->eval();
  r->eval();
  EXPECT_TRUE(torch::equal(r->forward(d.inputs), m->forward(d.inputs)));
  // The cost model prices the imported graph: every conv and linear on the arrays.
  EXPECT_EQ(r->analog_weights().size(), 7u);
}

TEST(Script, BadFilesAreOneLineErrors) {
  ScratchDir dir;
  auto one_line = [](const std::string& e) { return e.find('\n') == std::string::npos; };
  std::string e = error_of([&] { load_script_model(spec_for("missing/none.pt")); });
  EXPECT_NE(e.find("none.pt: cannot open model file"), std::string::npos) << e;

  testing::write_file(dir.file("garbage.pt"), "this is not a zip archive");
  ModelSpec garbage = spec_for("x");
  garbage.name = dir.file("garbage.pt");
  e = error_of([&] { load_script_model(garbage); });
  EXPECT_NE(e.find("garbage.pt: not a TorchScript model"), std::string::npos) << e;
  EXPECT_TRUE(one_line(e)) << e;
  EXPECT_FALSE(is_torchscript_model(dir.file("garbage.pt")));

  ModelSpec builtin;
  builtin.name = "lenet5";
  CheckpointMeta meta;
  meta.spec = builtin;
  save_checkpoint(dir.file("ckpt.pt"), *make_model(builtin), meta);
  EXPECT_FALSE(is_torchscript_model(dir.file("ckpt.pt")));
  ModelSpec ckpt = garbage;
  ckpt.name = dir.file("ckpt.pt");
  e = error_of([&] { load_script_model(ckpt); });
  EXPECT_NE(e.find("ckpt.pt: the TorchScript module has no forward method"), std::string::npos)
      << e;

  e = error_of([&] { load_script_model(spec_for("resnet_small.script.pt", 1, 28)); });
  EXPECT_NE(e.find("forward fails on a 1x28x28 input"), std::string::npos) << e;
  EXPECT_TRUE(one_line(e)) << e;
  e = error_of([&] { load_script_model(spec_for("lenet5_bn.script.pt", 1, 28, 7)); });
  EXPECT_NE(e.find("has 10 outputs but the data has 7 classes"), std::string::npos) << e;
  ModelSpec any = spec_for("lenet5_bn.trace.pt", 1, 28, 0);
  EXPECT_EQ(load_script_model(any)->spec().num_classes, 10);

  // A damaged archive (one byte of a member changed) is refused by its CRC before LibTorch
  // parses it: LibTorch checks none, and its importer crashes on some damaged code.
  std::string damaged = testing::read_file(fixture("lenet5_bn.script.pt"));
  damaged[damaged.size() / 2] ^= 0x01;  // one bit of the weights (stored members fill the file)
  testing::write_file(dir.file("damaged.pt"), damaged);
  ModelSpec hurt = spec_for("x");
  hurt.name = dir.file("damaged.pt");
  e = error_of([&] { load_script_model(hurt); });
  EXPECT_NE(e.find("damaged.pt: not a TorchScript model (zip member "), std::string::npos) << e;
  EXPECT_NE(e.find("fails its CRC check"), std::string::npos) << e;
  EXPECT_TRUE(one_line(e)) << e;
  EXPECT_FALSE(is_torchscript_model(dir.file("damaged.pt")));
}

}  // namespace
}  // namespace quell
