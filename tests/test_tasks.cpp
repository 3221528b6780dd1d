// Beyond image classification: tensor files, metrics, sequence and recurrent models, and the
// studies on them.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "quell/cost.h"
#include "quell/eval_study.h"
#include "quell/load.h"
#include "quell/metric.h"
#include "quell/report.h"
#include "quell/script.h"
#include "quell/train.h"
#include "quell/walk.h"
#include "quell/walk_study.h"
#include "quell_test_paths.h"
#include "test_util.h"

using namespace quell;
using quell::testing::ScratchDir;
using quell::testing::error_of;

namespace {

std::string fixture(const std::string& name) {
  return (std::filesystem::path(QUELL_FIXTURES_DIR) / name).string();
}

Model import(const std::string& file, std::vector<int64_t> shape, const std::string& dtype,
             int64_t classes = 0) {
  ModelSpec s;
  s.name = fixture(file);
  s.input_shape = std::move(shape);
  s.input_dtype = dtype;
  s.in_channels = s.height = s.width = 0;
  s.num_classes = classes;
  return load_script_model(s);
}

// A learnable language: token t+1 = (token t + step) mod 11, with the step (1 or 2) fixed per
// sequence; the first token tells nothing, the second reveals the step.
Dataset counting_language(int64_t n, uint64_t seed) {
  auto gen = at::detail::createCPUGenerator(seed);
  const torch::Tensor start = torch::randint(0, 11, {n, 1}, gen, torch::kLong);
  const torch::Tensor step = torch::randint(1, 3, {n, 1}, gen, torch::kLong);
  const torch::Tensor t = torch::arange(9, torch::kLong).view({1, 9});
  const torch::Tensor seq = (start + step * t).remainder(11);
  return dataset_from_tensors(seq.narrow(1, 0, 8), seq.narrow(1, 1, 8), 11, "counting");
}

}  // namespace

// ---- Tensor files ---------------------------------------------------------------------------

TEST(TensorFiles, ReadsTorchSaveNestedDictsAndNumbers) {
  const auto t = read_tensor_file(fixture("sequence_io.pt"));
  ASSERT_TRUE(t.count("lm.inputs"));
  EXPECT_EQ(t.at("lm.inputs").sizes(), (std::vector<int64_t>{3, 8}));
  EXPECT_EQ(t.at("lm.inputs").scalar_type(), torch::kLong);
  EXPECT_EQ(t.at("lm.outputs").sizes(), (std::vector<int64_t>{3, 8, 11}));
  EXPECT_EQ(t.at("num_classes").item<int64_t>(), 11);
}

TEST(TensorFiles, ReadsNumpyDeflatedNpzAndFortranNpy) {
  const auto z = read_tensor_file(fixture("tiny.npz"));
  ASSERT_EQ(z.size(), 4u);
  EXPECT_TRUE(z.at("x_train").equal(torch::arange(24, torch::kFloat).view({4, 2, 3})));
  EXPECT_EQ(z.at("x_test").scalar_type(), torch::kDouble);
  EXPECT_EQ(z.at("y_test").scalar_type(), torch::kInt);
  const auto f = read_tensor_file(fixture("tiny_fortran.npy"));
  EXPECT_TRUE(f.at("tiny_fortran").equal(torch::arange(12, torch::kShort).view({3, 4})));
}

TEST(TensorFiles, NpyAndNpzRoundTrip) {
  ScratchDir dir;
  const torch::Tensor a = torch::randn({3, 5});
  const torch::Tensor b = torch::randint(0, 100, {7}, torch::kLong);
  write_npy(dir.file("a.npy"), a);
  EXPECT_TRUE(read_tensor_file(dir.file("a.npy")).at("a").equal(a));
  write_npz(dir.file("ab.npz"), {{"a", a}, {"b", b}});
  const auto t = read_tensor_file(dir.file("ab.npz"));
  EXPECT_TRUE(t.at("a").equal(a));
  EXPECT_TRUE(t.at("b").equal(b));
}

TEST(TensorFiles, BadFilesGiveOneLineErrorsNamingTheFile) {
  ScratchDir dir;
  write_npy(dir.file("a.npy"), torch::randn({4, 4}));
  const std::string bytes = quell::testing::read_file(dir.file("a.npy"));
  quell::testing::write_file(dir.file("short.npy"), bytes.substr(0, bytes.size() - 5));
  quell::testing::write_file(dir.file("junk.npz"), "PK\x03\x04 not really a zip");
  quell::testing::write_file(dir.file("junk.pt"), "PK\x03\x04 not really a zip");
  quell::testing::write_file(dir.file("legacy.pt"), std::string("\x80\x02", 2) + "old pickle");
  quell::testing::write_file(dir.file("x.txt"), "1 2 3");
  for (const auto& [file, expect] :
       std::vector<std::pair<std::string, std::string>>{{"short.npy", "truncated"},
                                                        {"junk.npz", "zip"},
                                                        {"junk.pt", "torch.save"},
                                                        {"legacy.pt", "zip format"},
                                                        {"x.txt", "unknown tensor file type"},
                                                        {"missing.npy", "cannot open"}}) {
    const std::string path = dir.file(file);  // clang 14 lets no lambda capture a binding
    const std::string e = error_of([&] { read_tensor_file(path); });
    EXPECT_NE(e.find(path), std::string::npos) << e;
    EXPECT_NE(e.find(expect), std::string::npos) << file << ": " << e;
    EXPECT_EQ(e.find('\n'), std::string::npos) << e;
  }
}

// LibTorch's unpickler allocates what a string's length claims before reading it: a pickle of
// a few hundred bytes claiming 3.9 GB (BINUNICODE) or 28 GB (BINUNICODE8) is refused first.
// The inputs (tests/fixtures/fuzz/tensors/, a fuzz target's selector byte, then a .pt made from
// sequence_io.pt with one length changed) are what the fuzzer found.
TEST(TensorFiles, PickleLengthsBeyondTheFileAreRefusedBeforeLibTorchAllocatesThem) {
  ScratchDir dir;
  for (const auto& [input, claim] : std::vector<std::pair<std::string, std::string>>{
           {"pickle-string-claims-4gb.bin", "a string of 4026531840 bytes"},
           {"pickle-string-claims-28gb.bin", "a string of 28000000000 bytes"}}) {
    const std::string bytes = quell::testing::read_file(fixture("fuzz/tensors/" + input));
    ASSERT_GT(bytes.size(), 1u) << input;
    quell::testing::write_file(dir.file("in.pt"), bytes.substr(1));  // the selector byte off
    const std::string e = error_of([&] { read_tensor_file(dir.file("in.pt")); });
    EXPECT_NE(e.find("the pickle claims " + claim), std::string::npos) << input << ": " << e;
    EXPECT_NE(e.find("data.pkl"), std::string::npos) << e;
    EXPECT_EQ(e.find('\n'), std::string::npos) << e;
  }
}

TEST(TensorFiles, DatasetFromOneFileOrAFolderOfSplits) {
  ScratchDir dir;
  // One .npz with both splits (NumPy's x_train / y_train naming).
  DataOptions o;
  o.name = "tensors";
  o.dir = fixture("tiny.npz");
  o.split = Split::kTrain;
  Dataset train = load_dataset(o);
  EXPECT_EQ(train.size(), 4);
  EXPECT_EQ(train.sample_shape(), (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(train.target_kind(), TargetKind::kClass);
  EXPECT_EQ(train.num_classes, 3);
  o.split = Split::kTest;
  Dataset test = load_dataset(o);
  EXPECT_EQ(test.inputs.scalar_type(), torch::kFloat);  // float64 converted
  EXPECT_EQ(test.targets.scalar_type(), torch::kLong);  // int32 converted

  // A folder: train.pt / test.pt written by torch.save are exercised by the Python tests; here
  // {split}_inputs.npy and {split}_targets.npy, with per-position ids and a shuffle and limit.
  const Dataset lang = counting_language(20, 1);
  write_npy(dir.file("train_inputs.npy"), lang.inputs);
  write_npy(dir.file("train_targets.npy"), lang.targets);
  o.dir = dir.str();
  o.split = Split::kTrain;
  o.limit = 5;
  o.shuffle_seed = 3;
  const Dataset folder = load_dataset(o);
  EXPECT_EQ(folder.size(), 5);
  EXPECT_EQ(folder.target_kind(), TargetKind::kSequence);
  o.split = Split::kTest;
  EXPECT_NE(error_of([&] { load_dataset(o); }).find("no test split"), std::string::npos);
}

TEST(TensorFiles, DatasetValidationNamesTheProblem) {
  EXPECT_NE(error_of([] { dataset_from_tensors(torch::randn({4, 3}), torch::zeros({5}, torch::kLong)); })
                .find("N = 4"),
            std::string::npos);
  torch::Tensor x = torch::randn({4, 3});
  x[1][2] = NAN;
  EXPECT_NE(error_of([&] { dataset_from_tensors(x, torch::zeros({4}, torch::kLong)); }).find("NaN"),
            std::string::npos);
  EXPECT_NE(error_of([] {
              dataset_from_tensors(torch::randn({2, 3}), torch::tensor({0, 7}, torch::kLong), 5);
            }).find("[0, 5)"),
            std::string::npos);
  EXPECT_NE(error_of([] {
              dataset_from_tensors(torch::tensor({{1, -2}}, torch::kLong), torch::zeros({1}, torch::kLong));
            }).find("token ids"),
            std::string::npos);
  // Negative per-position targets are ignored positions, not errors.
  const Dataset d = dataset_from_tensors(torch::zeros({1, 3}, torch::kLong),
                                         torch::tensor({{1, -100, 2}}, torch::kLong));
  EXPECT_EQ(d.num_classes, 3);
}

// ---- Metrics ----------------------------------------------------------------------------------

TEST(Metrics, ValuesMatchHandComputation) {
  const torch::Tensor logits = torch::tensor({{2.0, 1.0, 0.0}, {0.0, 3.0, 1.0}, {1.0, 0.0, 0.5}});
  const torch::Tensor y = torch::tensor({0, 2, 1}, torch::kLong);
  const auto acc = Metric::parse("accuracy");
  EXPECT_DOUBLE_EQ(acc.value(acc.measure(logits, y)), 1.0 / 3.0);
  const auto top2 = Metric::parse("top2");
  EXPECT_DOUBLE_EQ(top2.value(top2.measure(logits, y)), 2.0 / 3.0);
  // Cross-entropy by hand: -log softmax.
  double ce = 0.0;
  const auto ls = torch::log_softmax(logits.to(torch::kDouble), 1);
  for (int i = 0; i < 3; ++i) ce -= ls[i][y[i].item<int64_t>()].item<double>();
  ce /= 3.0;
  const auto xent = Metric::parse("cross-entropy");
  EXPECT_NEAR(xent.value(xent.measure(logits, y)), ce, 1e-6);
  const auto ppl = Metric::parse("ppl");
  EXPECT_NEAR(ppl.value(ppl.measure(logits, y)), std::exp(ce), 1e-5);
  EXPECT_NEAR(Metric::loss(acc.measure(logits, y)), ce, 1e-6);

  // Per position, with an ignored position (-100): 3 counted positions.
  const torch::Tensor seq_logits = logits.view({1, 3, 3});
  const torch::Tensor seq_y = torch::tensor({{0, -100, 1}}, torch::kLong);
  const auto tok = Metric::parse("token-accuracy");
  const auto s = tok.measure(seq_logits, seq_y);
  EXPECT_EQ(s.count, 2.0);
  EXPECT_DOUBLE_EQ(tok.value(s), 0.5);  // position 0 right, position 2 wrong

  // Regression.
  const torch::Tensor out = torch::tensor({{1.0, 2.0}, {3.0, 5.0}});
  const torch::Tensor target = torch::tensor({{1.0, 1.0}, {3.0, 3.0}});
  const auto mse = Metric::parse("mse");
  EXPECT_DOUBLE_EQ(mse.value(mse.measure(out, target)), (1.0 + 4.0) / 4.0);
  const Dataset reg = dataset_from_tensors(torch::zeros({2, 1}), target);
  const double var = target.to(torch::kDouble).var(false).item<double>();
  EXPECT_DOUBLE_EQ(mse.floor(reg, 2), var);
  const auto rel = Metric::parse("relative-mse").bind(reg);
  EXPECT_NEAR(rel.value(rel.measure(out, target)), 1.25 / var, 1e-12);
}

TEST(Metrics, FloorsDirectionsAndScores) {
  const Dataset d = dataset_from_tensors(torch::zeros({4, 2}), torch::tensor({0, 1, 2, 3}, torch::kLong), 4);
  EXPECT_DOUBLE_EQ(Metric::parse("accuracy").floor(d, 4), 0.25);
  EXPECT_DOUBLE_EQ(Metric::parse("top3").floor(d, 4), 0.75);
  EXPECT_NEAR(Metric::parse("cross-entropy").floor(d, 8), std::log(8.0), 1e-12);  // the model's 8
  EXPECT_DOUBLE_EQ(Metric::parse("perplexity").floor(d, 4), 4.0);
  const Metric acc, ppl = Metric::parse("perplexity"), ce = Metric::parse("cross-entropy");
  EXPECT_EQ(acc.score(0.7), 0.7);  // accuracy: the identity, so midpoints are as before
  EXPECT_NEAR(ppl.score(20.0), ce.score(std::log(20.0)), 1e-12);  // halfway in log perplexity
  EXPECT_NEAR(ppl.from_score(ppl.score(37.5)), 37.5, 1e-12);
  EXPECT_FALSE(ppl.higher_is_better());
  EXPECT_GT(acc.score(0.9), acc.score(0.5));
  EXPECT_GT(ppl.score(5.0), ppl.score(50.0));
  EXPECT_EQ(Metric::default_for(TargetKind::kSequence).name(), "perplexity");
  EXPECT_EQ(Metric::default_for(TargetKind::kReal).name(), "mse");
  EXPECT_EQ(Metric::parse("top-5").key(), "top5_accuracy");
}

TEST(Metrics, UnknownOrUnfitMetricsAreRefused) {
  EXPECT_NE(error_of([] { Metric::parse("f1"); }).find("known metrics"), std::string::npos);
  EXPECT_NE(error_of([] { Metric::parse("perplexity").check(TargetKind::kReal, 0); }).find("mse"),
            std::string::npos);
  EXPECT_NE(error_of([] { Metric::parse("accuracy").check(TargetKind::kSequence, 5); })
                .find("token-accuracy"),
            std::string::npos);
  EXPECT_NE(error_of([] { Metric::parse("top5").check(TargetKind::kClass, 3); }).find("classes"),
            std::string::npos);
}

TEST(Metrics, ReportKeysFollowTheMetricAndReadBack) {
  const Json j{{"clean_accuracy", 0.9}, {"chance", 0.1}, {"provenance", {{"chance", 1}}},
               {"points", Json::array({Json{{"accuracy", 0.5}}})}};
  const Metric ppl = Metric::parse("perplexity");
  const Json renamed = keys_for_metric(j, ppl);
  EXPECT_TRUE(renamed.contains("clean_perplexity"));
  EXPECT_TRUE(renamed.contains("floor"));
  EXPECT_TRUE(renamed["points"][0].contains("perplexity"));
  EXPECT_TRUE(renamed["provenance"].contains("chance"));  // provenance is left alone
  EXPECT_EQ(keys_from_metric(renamed, ppl), j);
  EXPECT_EQ(keys_for_metric(j, Metric()), j);
}

// ---- Sequence, recurrent and regression models ---------------------------------------------

TEST(SequenceModels, TransformerImportMatchesPyTorchAndHasTheAttentionSites) {
  Model m = import("tiny_lm.script.pt", {8}, "int64");
  EXPECT_EQ(m->spec().num_classes, 11);
  std::map<std::string, int> ops;
  for (const auto& s : m->sites()) ++ops[s.op];
  EXPECT_EQ(ops["embedding"], 1);
  EXPECT_EQ(ops["matmul"], 2);  // scores and the weighted sum
  EXPECT_EQ(ops["softmax"], 1);
  EXPECT_EQ(ops["layernorm"], 3);
  EXPECT_FALSE(m->sites().at(0).floating);  // the token ids
  const auto io = read_tensor_file(fixture("sequence_io.pt"));
  m->eval();
  torch::NoGradGuard ng;
  EXPECT_TRUE(torch::allclose(m->forward(io.at("lm.inputs")), io.at("lm.outputs"), 1e-5, 1e-5));
}

TEST(SequenceModels, RecurrentOutputsAreSitesScriptedAndTraced) {
  const auto io = read_tensor_file(fixture("sequence_io.pt"));
  for (const char* file : {"tiny_lstm.script.pt", "tiny_lstm.trace.pt", "tiny_gru.script.pt"}) {
    Model m = import(file, {5, 6}, "float32");
    const auto sites = m->sites();
    const bool gru = std::string(file).find("gru") != std::string::npos;
    const auto it = std::find_if(sites.begin(), sites.end(),
                                 [&](const SiteInfo& s) { return s.op == (gru ? "gru" : "lstm"); });
    ASSERT_NE(it, sites.end()) << file;
    EXPECT_EQ(it->shape, (std::vector<int64_t>{5, 8})) << file;
    EXPECT_EQ(it->params, (gru ? 3 : 4) * 8 * (6 + 8 + 2)) << file;  // W_ih, W_hh, 2 biases
    for (const auto& u : m->script_info()->unplaced) {
      EXPECT_EQ(u.op.find("aten::lstm"), std::string::npos) << file;  // its output is the site
      EXPECT_EQ(u.op.find("aten::gru"), std::string::npos) << file;
    }
    m->eval();
    torch::NoGradGuard ng;
    const std::string key = gru ? "gru" : "lstm";
    const torch::Tensor clean = m->forward(io.at(key + ".inputs"));
    EXPECT_TRUE(torch::allclose(clean, io.at(key + ".outputs"), 1e-5, 1e-5)) << file;
    // Noise at the recurrent site reaches the output.
    NoiseConfig cfg;
    cfg.sites[it->index].noise = {NoiseSpec::parse("add:0.5")};
    m->engine().configure(cfg);
    EXPECT_FALSE(torch::allclose(m->forward(io.at(key + ".inputs")), clean)) << file;
  }
}

TEST(SequenceModels, NoiseAtTheTokenIdsIsIgnoredAndTheWalkLeavesThemOut) {
  Model m = import("tiny_lm.script.pt", {8}, "int64");
  m->eval();
  const auto io = read_tensor_file(fixture("sequence_io.pt"));
  torch::NoGradGuard ng;
  const torch::Tensor clean = m->forward(io.at("lm.inputs"));
  NoiseConfig cfg;
  cfg.sites[0].noise = {NoiseSpec::parse("add:3")};
  m->engine().configure(cfg);
  EXPECT_TRUE(m->forward(io.at("lm.inputs")).equal(clean));
}

TEST(SequenceModels, TrainsWithTheTaskLossAndWalksOnPerplexity) {
  torch::manual_seed(5);
  Model m = import("tiny_lm.script.pt", {8}, "int64");
  const Dataset train_data = counting_language(1024, 1), test = counting_language(256, 2);
  TrainOptions t;
  t.epochs = 4;
  t.lr = 0.01;
  t.batch_size = 64;
  const TrainResult tr = train(*m, train_data, t);
  ASSERT_FALSE(tr.epochs.empty());
  EXPECT_GT(tr.epochs.back().accuracy, 0.5);  // token accuracy, well above 1/11
  const Metric ppl = resolve_metric("", test, 11);
  EXPECT_EQ(ppl.name(), "perplexity");
  const double clean = run_pass(*m, test, 64, ppl).accuracy;
  EXPECT_LT(clean, 4.0);  // uniform would be 11

  WalkOptions w;
  w.sites = {2, 7, 8};  // add (embeddings), scores, softmax
  w.noise = WalkNoise::parse("add");
  w.grid = SigmaGrid::parse("0.01:100", 3);
  w.repeats = 2;
  w.batch_size = 64;
  w.metric = ppl;
  const WalkResult r = walk_clean_model(*m, test, w);
  EXPECT_NEAR(r.clean_accuracy, clean, 1e-9);
  EXPECT_DOUBLE_EQ(r.chance, 11.0);
  // Halfway in log perplexity: the geometric mean of clean and the floor.
  EXPECT_NEAR(r.threshold, std::sqrt(clean * 11.0), 1e-9);
  int crossed = 0;
  for (const auto& c : r.sites) crossed += c.midpoint.crossed();
  EXPECT_GE(crossed, 2);
  // Cross-entropy gives the same midpoints (its halfway is the same point).
  w.metric = Metric::parse("cross-entropy");
  const WalkResult rc = walk_clean_model(*m, test, w);
  ASSERT_EQ(rc.sites.size(), r.sites.size());
  for (size_t i = 0; i < r.sites.size(); ++i) {
    if (!r.sites[i].midpoint.crossed()) continue;
    EXPECT_NEAR(rc.sites[i].midpoint.value, r.sites[i].midpoint.value,
                1e-6 * r.sites[i].midpoint.value);
  }
}

TEST(SequenceModels, NoisyTrainingWalksOnMse) {
  // Setting 2 with an imported regressor: each unit starts from the file's weights, trains with
  // the noise on and is measured in MSE; the midpoint is where MSE is halfway to the variance.
  auto gen = at::detail::createCPUGenerator(4);
  const torch::Tensor x = torch::randn({256, 4}, gen);
  const Dataset data = dataset_from_tensors(x, torch::tanh(x.narrow(1, 0, 2)) * 2.0);
  ModelSpec spec;
  spec.name = fixture("tiny_regressor.script.pt");
  spec.input_shape = {4};
  spec.in_channels = spec.height = spec.width = 0;
  spec.num_classes = 0;
  Model probe = load_script_model(spec);
  NoisyTrainingOptions nt;
  nt.spec = probe->spec();
  nt.train.epochs = 3;
  nt.train.lr = 0.01;
  nt.train.batch_size = 32;
  WalkOptions w;
  w.sites = {2};  // the tanh
  w.noise = WalkNoise::parse("add");
  w.grid = SigmaGrid::parse("0.1,1,10,100");
  w.repeats = 2;
  w.metric = resolve_metric("", data, 2);
  EXPECT_EQ(w.metric.name(), "mse");
  const WalkResult r = walk_noisy_training(data, data, nt, w, probe->site_names());
  EXPECT_EQ(r.metric.name(), "mse");
  EXPECT_GT(r.chance, 0.5);  // the targets' variance
  EXPECT_LT(r.clean_accuracy, r.chance);  // trained: below the variance
  EXPECT_TRUE(std::isfinite(r.margin));
  ASSERT_EQ(r.sites.size(), 1u);
  const auto& c = r.sites[0];
  EXPECT_GT(c.accuracy.back().mean, c.accuracy.front().mean);  // more noise, larger MSE
}

TEST(SequenceModels, EvalStudyReportsInTheMetricsTerms) {
  torch::manual_seed(5);
  Model m = import("tiny_regressor.script.pt", {4}, "float32");
  auto gen = at::detail::createCPUGenerator(9);
  const torch::Tensor x = torch::randn({128, 4}, gen);
  const Dataset data = dataset_from_tensors(x, torch::tanh(x.narrow(1, 0, 2)));
  EXPECT_EQ(data.target_kind(), TargetKind::kReal);
  EvalStudyOptions o;
  o.noise = build_noise_config({"all=add:0.1"}, {}, {}, "", 1, m->site_names());
  o.eval.draws = 2;
  const EvalReport r = run_eval_study(m, data, o);
  EXPECT_EQ(r.metric.name(), "mse");
  EXPECT_GT(r.levels.at(0).result.accuracy.mean, r.clean_accuracy);  // noise raises the MSE
  const Json j = r.to_json();
  EXPECT_EQ(j.at("metric"), "mse");
  EXPECT_TRUE(j.at("clean").contains("mse"));
  EXPECT_TRUE(j.at("dataset").contains("floor"));
  const EvalReport back = EvalReport::from_json(j);
  EXPECT_EQ(back.metric.name(), "mse");
  EXPECT_DOUBLE_EQ(back.clean_accuracy, r.clean_accuracy);
  EXPECT_NE(r.table().find("MSE"), std::string::npos);
  EXPECT_EQ(r.table().find("accuracy"), std::string::npos);
  EXPECT_EQ(r.csv().substr(0, r.csv().find('\n')), "level,chip,draw,mse,loss");
  // A metric that does not fit the targets is refused before any evaluation.
  o.metric = "accuracy";
  EXPECT_NE(error_of([&] { run_eval_study(m, data, o); }).find("class ids"), std::string::npos);
}

TEST(SequenceModels, RecurrentLayersAreCostedOnTheCrossbars) {
  Model m = import("tiny_lstm.script.pt", {5, 6}, "float32");
  const CostReport r = estimate_cost(*m, hardware_preset("isaac"));
  const auto it = std::find_if(r.layers.begin(), r.layers.end(),
                               [](const LayerCost& l) { return l.op == "lstm"; });
  ASSERT_NE(it, r.layers.end());
  EXPECT_EQ(it->unit, "analog");
  // 5 steps of [x_t, h_{t-1}] (6 + 8) times the stacked gates (4 x 8).
  EXPECT_EQ(it->weights, 32 * 14);
  EXPECT_EQ(it->macs, 5 * 32 * 14);
}

TEST(SequenceModels, PositionBlocksActOnEachPositionAlone) {
  const BlockSpec spec = BlockSpec::parse("auto:r=4");
  EXPECT_EQ(spec.resolve({8, 16}), "position");
  EXPECT_EQ(spec.resolve({6, 28, 28}), "bottleneck");
  EXPECT_EQ(spec.resolve({120}), "mlp");
  EXPECT_EQ(spec.params({8, 16}), (16 * 4 + 4) + (4 * 16 + 16));
  torch::manual_seed(3);
  Denoiser block(BlockSpec::parse("position:r=4"), std::vector<int64_t>{8, 16});
  for (auto& p : block->parameters()) {
    torch::NoGradGuard ng;
    p.normal_();  // the last layer starts at zero (identity): make it do something
  }
  const torch::Tensor x = torch::randn({2, 8, 16});
  torch::Tensor x2 = x.clone();
  x2[0][5] += 1.0;  // change one position
  const torch::Tensor y = block->forward(x), y2 = block->forward(x2);
  EXPECT_FALSE(torch::allclose(y[0][5], y2[0][5]));
  EXPECT_TRUE(torch::equal(y.narrow(1, 0, 5), y2.narrow(1, 0, 5)));  // the others are untouched
  EXPECT_TRUE(torch::equal(y[1], y2[1]));
}

TEST(SequenceModels, MismatchedDataIsRefusedWithTheShapes) {
  Model m = import("tiny_lm.script.pt", {8}, "int64");
  const Dataset wrong_length = dataset_from_tensors(torch::zeros({4, 6}, torch::kLong),
                                                    torch::zeros({4, 6}, torch::kLong), 11);
  EXPECT_NE(error_of([&] { check_model_fits(*m, wrong_length, "lm"); }).find("8 int64"),
            std::string::npos);
  const Dataset floats = dataset_from_tensors(torch::zeros({4, 8}), torch::zeros({4, 8}, torch::kLong), 11);
  EXPECT_NE(error_of([&] { check_model_fits(*m, floats, "lm"); }).find("int64"), std::string::npos);
  const Dataset too_many = dataset_from_tensors(torch::zeros({4, 8}, torch::kLong),
                                                torch::zeros({4, 8}, torch::kLong), 40);
  EXPECT_NE(error_of([&] { check_model_fits(*m, too_many, "lm"); }).find("40 classes"),
            std::string::npos);
}
