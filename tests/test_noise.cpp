// Noise specifications: parsing of the rule grammar, JSON round trips, site selection, and the
// errors a user gets for bad input.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "quell/noise.h"
#include "test_util.h"

namespace quell {
namespace {

using testing::error_of;

const std::vector<std::string> kNames = {"input", "conv1", "bn1", "relu1", "pool1", "fc"};

TEST(NoiseSpecParse, Additive) {
  const NoiseSpec s = NoiseSpec::parse("add:0.25");
  EXPECT_EQ(s.kind, NoiseKind::kAdditive);
  EXPECT_DOUBLE_EQ(s.sigma_add, 0.25);
  EXPECT_DOUBLE_EQ(s.sigma_mul, 0.0);
  EXPECT_EQ(s.scale, SigmaScale::kAbsolute);
  EXPECT_EQ(s.temporal, Temporal::kDynamic);
}

TEST(NoiseSpecParse, MultiplicativeStaticRelative) {
  const NoiseSpec s = NoiseSpec::parse("mul:0.1:static:rel=range");
  EXPECT_EQ(s.kind, NoiseKind::kMultiplicative);
  EXPECT_DOUBLE_EQ(s.sigma_mul, 0.1);
  EXPECT_EQ(s.temporal, Temporal::kStatic);
  EXPECT_EQ(s.scale, SigmaScale::kRange);
}

TEST(NoiseSpecParse, MixedAmplitudeRatio) {
  // σ_add = A·r, σ_mul = A·(1−r) (Walking Noise mixed noise).
  const NoiseSpec s = NoiseSpec::parse("muladd:0.5/0.2");
  EXPECT_EQ(s.kind, NoiseKind::kMulAdd);
  EXPECT_DOUBLE_EQ(s.sigma_add, 0.1);
  EXPECT_DOUBLE_EQ(s.sigma_mul, 0.4);
  const NoiseSpec t = NoiseSpec::parse("addmul:1/1");
  EXPECT_EQ(t.kind, NoiseKind::kAddMul);
  EXPECT_DOUBLE_EQ(t.sigma_add, 1.0);
  EXPECT_DOUBLE_EQ(t.sigma_mul, 0.0);
}

TEST(NoiseSpecParse, AgingLaw) {
  const NoiseSpec s = NoiseSpec::parse("add:0.2:aging:age=4:ref=1:nu=0.5");
  EXPECT_EQ(s.temporal, Temporal::kAging);
  EXPECT_DOUBLE_EQ(s.temporal_factor(), 2.0);  // (4/1)^0.5
  const NoiseSpec lin = NoiseSpec::parse("add:0.2:aging:age=3:nu=1");
  EXPECT_DOUBLE_EQ(lin.temporal_factor(), 3.0);
  EXPECT_DOUBLE_EQ(NoiseSpec::parse("add:0.2:static").temporal_factor(), 1.0);
}

TEST(NoiseSpecParse, BadInputNamesTheProblem) {
  EXPECT_NE(error_of([] { NoiseSpec::parse("add:-0.1"); }).find("negative"), std::string::npos);
  EXPECT_NE(error_of([] { NoiseSpec::parse("add:nan"); }).find("NaN"), std::string::npos);
  EXPECT_NE(error_of([] { NoiseSpec::parse("add:inf"); }).find("infinite"), std::string::npos);
  EXPECT_NE(error_of([] { NoiseSpec::parse("gauss:0.1"); }).find("unknown noise kind 'gauss'"),
            std::string::npos);
  EXPECT_NE(error_of([] { NoiseSpec::parse("add:abc"); }).find("not a number"), std::string::npos);
  EXPECT_NE(error_of([] { NoiseSpec::parse("add"); }).find("expected KIND:SIGMA"),
            std::string::npos);
  EXPECT_NE(error_of([] { NoiseSpec::parse("add:0.1:loud"); }).find("unknown option 'loud'"),
            std::string::npos);
  EXPECT_NE(error_of([] { NoiseSpec::parse("muladd:0.5"); }).find("AMPLITUDE/RATIO"),
            std::string::npos);
  EXPECT_NE(error_of([] { NoiseSpec::parse("muladd:0.5/1.5"); }).find("ratio"), std::string::npos);
  EXPECT_NE(error_of([] { NoiseSpec::parse("add:0.1:aging:ref=0"); }).find("reference age"),
            std::string::npos);
  EXPECT_NE(error_of([] { NoiseSpec::parse("add:0.1:rel=max"); }).find("unknown sigma scale"),
            std::string::npos);
}

TEST(NoiseSpecJson, RoundTripsEveryKindAndMode) {
  for (const std::string text : {"add:0.3", "mul:0.2:static", "muladd:0.5/0.3:rel=std",
                                 "addmul:0.4/0.6:rel=range", "add:0.1:aging:age=9:ref=2:nu=1",
                                 "mul:0.2:static:per=channel"}) {
    const NoiseSpec a = NoiseSpec::parse(text);
    const NoiseSpec b = NoiseSpec::from_json(a.to_json());
    EXPECT_EQ(a.to_json(), b.to_json()) << text;
    EXPECT_EQ(a.str(), b.str()) << text;
  }
}

TEST(NoiseSpecJson, AmplitudeAndSigmaForms) {
  const NoiseSpec m =
      NoiseSpec::from_json(Json::parse(R"({"kind":"muladd","amplitude":2,"ratio":0.25})"));
  EXPECT_DOUBLE_EQ(m.sigma_add, 0.5);
  EXPECT_DOUBLE_EQ(m.sigma_mul, 1.5);
  const NoiseSpec a = NoiseSpec::from_json(Json::parse(R"({"kind":"add","sigma":0.7})"));
  EXPECT_DOUBLE_EQ(a.sigma_add, 0.7);
  EXPECT_THROW(NoiseSpec::from_json(Json::parse(R"({"kind":"add","sigma":-1})")),
               std::invalid_argument);
  // Keys that do not belong to the kind are errors, not silently dropped or misread.
  for (const char* bad : {R"({"kind":"add","amplitude":0.2})", R"({"kind":"muladd","ratio":0.2})",
                          R"({"kind":"add","sigma_mul":0.2})", R"({"kind":"mul","sigma_add":0.2})",
                          R"({"kind":"add","sigmaa":0.2})"}) {
    EXPECT_THROW(NoiseSpec::from_json(Json::parse(bad)), std::invalid_argument) << bad;
  }
}

TEST(SelectSites, AllNamesIndicesRanges) {
  EXPECT_EQ(select_sites("all", kNames), (std::vector<int>{0, 1, 2, 3, 4, 5}));
  EXPECT_EQ(select_sites("conv1,fc", kNames), (std::vector<int>{1, 5}));
  EXPECT_EQ(select_sites("2-4", kNames), (std::vector<int>{2, 3, 4}));
  EXPECT_EQ(select_sites("fc, 0, 1-2, conv1", kNames), (std::vector<int>{0, 1, 2, 5}));
}

TEST(SelectSites, UnknownOrOutOfRangeIsAnError) {
  EXPECT_NE(error_of([] { select_sites("conv9", kNames); }).find("unknown site 'conv9'"),
            std::string::npos);
  EXPECT_NE(error_of([] { select_sites("conv9", kNames); }).find("1 conv1"), std::string::npos);
  EXPECT_NE(error_of([] { select_sites("6", kNames); }).find("outside 0-5"), std::string::npos);
  EXPECT_NE(error_of([] { select_sites("4-2", kNames); }).find("outside"), std::string::npos);
  EXPECT_THROW(select_sites("conv1,,fc", kNames), std::invalid_argument);
}

TEST(BuildNoiseConfig, RulesMerge) {
  const NoiseConfig c = build_noise_config({"all=add:0.1", "conv1=mul:0.2:static+add:0.05"},
                                           {"relu1=4"}, {"1-2=3"}, "0.02:mul", 9, kNames);
  EXPECT_EQ(c.seed, 9u);
  ASSERT_EQ(c.sites.size(), kNames.size());
  EXPECT_EQ(c.sites.at(0).noise.size(), 1u);
  ASSERT_EQ(c.sites.at(1).noise.size(), 2u);  // the later rule replaced conv1's noise
  EXPECT_EQ(c.sites.at(1).noise[0].kind, NoiseKind::kMultiplicative);
  EXPECT_EQ(c.sites.at(1).repeats, 3);
  EXPECT_EQ(c.sites.at(2).repeats, 3);
  EXPECT_EQ(c.sites.at(3).adc_bits, 4);
  EXPECT_TRUE(c.weight.multiplicative);
  EXPECT_DOUBLE_EQ(c.weight.sigma, 0.02);
  EXPECT_TRUE(c.has_static());
  EXPECT_FALSE(c.empty());
}

TEST(BuildNoiseConfig, BadRulesAreErrors) {
  EXPECT_THROW(build_noise_config({"all"}, {}, {}, "", 1, kNames), std::invalid_argument);
  EXPECT_THROW(build_noise_config({}, {"all=0.5"}, {}, "", 1, kNames), std::invalid_argument);
  EXPECT_THROW(build_noise_config({}, {"all=40"}, {}, "", 1, kNames), std::invalid_argument);
  EXPECT_THROW(build_noise_config({}, {}, {"all=0"}, "", 1, kNames), std::invalid_argument);
  EXPECT_THROW(build_noise_config({}, {}, {}, "-0.1", 1, kNames), std::invalid_argument);
  EXPECT_THROW(build_noise_config({"nosuch=add:0.1"}, {}, {}, "", 1, kNames),
               std::invalid_argument);
}

TEST(NoiseConfig, ScaledMultipliesEverySigma) {
  const NoiseConfig c = build_noise_config({"all=muladd:1/0.5"}, {}, {}, "0.1", 3, kNames);
  const NoiseConfig s = c.scaled(0.5);
  EXPECT_DOUBLE_EQ(s.sites.at(2).noise[0].sigma_add, 0.25);
  EXPECT_DOUBLE_EQ(s.sites.at(2).noise[0].sigma_mul, 0.25);
  EXPECT_DOUBLE_EQ(s.weight.sigma, 0.05);
  EXPECT_TRUE(c.scaled(0.0).empty());
  EXPECT_THROW(c.scaled(-1.0), std::invalid_argument);
  EXPECT_THROW(c.scaled(std::nan("")), std::invalid_argument);
}

TEST(NoiseConfigJson, ReadsRules) {
  const Json j = Json::parse(R"({
    "seed": 5,
    "weight_noise": {"sigma": 0.03},
    "rules": [
      {"sites": "all", "noise": [{"kind": "add", "sigma": 0.1, "scale": "std"}]},
      {"sites": "conv1,relu1", "adc_bits": 6, "repeats": 2}
    ]})");
  const NoiseConfig c = noise_config_from_json(j, kNames);
  EXPECT_EQ(c.seed, 5u);
  EXPECT_DOUBLE_EQ(c.weight.sigma, 0.03);
  EXPECT_TRUE(c.weight.relative);
  EXPECT_EQ(c.sites.at(1).adc_bits, 6);
  EXPECT_EQ(c.sites.at(3).repeats, 2);
  EXPECT_EQ(c.sites.at(3).noise.size(), 1u);  // the second rule kept the first rule's noise
  EXPECT_EQ(c.sites.at(0).noise[0].scale, SigmaScale::kStd);
  EXPECT_THROW(noise_config_from_json(Json::parse(R"({"rules":[{"sites":"zz"}]})"), kNames),
               std::invalid_argument);
  EXPECT_THROW(noise_config_from_json(Json::parse(R"({"rules":[{"adc_bits":4}]})"), kNames),
               std::invalid_argument);
}

TEST(NoiseConfigJson, ResolvedOutputReadsBack) {
  const NoiseConfig c = build_noise_config({"conv1=muladd:0.5/0.2:static+add:0.1:rel=std"},
                                           {"fc=6"}, {"relu1=3"}, "0.02:mul", 7, kNames);
  const NoiseConfig back = noise_config_from_json(c.to_json(kNames), kNames);
  EXPECT_EQ(back.to_json(kNames), c.to_json(kNames));
}

}  // namespace
}  // namespace quell
