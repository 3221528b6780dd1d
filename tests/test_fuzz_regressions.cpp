// Every input the fuzzers found a problem with (tests/fixtures/fuzz/<target>/), replayed through
// the same target code (fuzz/targets.h) without libFuzzer: each must now load or fail with a
// deliberate one-line error. docs/testing.md lists the findings and their fixes.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iterator>

#include "../fuzz/targets.h"
#include "test_util.h"

namespace quell {
namespace {

namespace fs = std::filesystem;

std::vector<uint8_t> bytes_of(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
}

TEST(FuzzRegressions, EveryFindingIsADeliberateErrorNow) {
  const fs::path root = fs::path(QUELL_FIXTURES_DIR) / "fuzz";
  ASSERT_TRUE(fs::is_directory(root)) << root;
  int replayed = 0;
  for (const auto& dir : fs::directory_iterator(root)) {
    const std::string target = dir.path().filename().string();
    ASSERT_EQ(fuzz::targets().count(target), 1u) << "no fuzz target named " << target;
    for (const auto& f : fs::directory_iterator(dir.path())) {
      const std::vector<uint8_t> input = bytes_of(f.path());
      EXPECT_EQ(fuzz::outcome(target, input.data(), input.size()), "") << f.path();
      ++replayed;
    }
  }
  EXPECT_GT(replayed, 0);
}

// The target code itself: a valid file loads, a bad one is a deliberate error.
TEST(FuzzRegressions, TargetsLoadValidInputAndRejectBadInput) {
  // IDX labels (selector byte 1), magic 0x801, two labels.
  const std::string labels("\x01\x00\x00\x08\x01\x00\x00\x00\x02\x03\x07", 11);
  EXPECT_NO_THROW(fuzz::idx(reinterpret_cast<const uint8_t*>(labels.data()), labels.size()));
  const std::string bad = labels.substr(0, 10);  // one label short
  EXPECT_THROW(fuzz::idx(reinterpret_cast<const uint8_t*>(bad.data()), bad.size()),
               std::runtime_error);
  EXPECT_EQ(fuzz::outcome("idx", reinterpret_cast<const uint8_t*>(bad.data()), bad.size()), "");
}

// checkpoint_meta packs its input into a real checkpoint: the templates' own metadata loads (with
// the blocks of template 1), so the fuzzer starts inside load_checkpoint, past the archive.
TEST(FuzzRegressions, CheckpointMetaTemplatesLoadWithTheirOwnMetadata) {
  testing::ScratchDir dir;
  for (int which : {0, 1}) {
    const std::string meta = fuzz::checkpoint_template(which).meta;
    const std::string path = dir.file("t" + std::to_string(which) + ".pt");
    std::ofstream(path, std::ios::binary) << fuzz::checkpoint_with_meta(which, meta);
    CheckpointMeta loaded;
    const Model m = load_checkpoint(path, &loaded);
    EXPECT_EQ(loaded.spec.name, "lenet5-bn");
    EXPECT_EQ(m->denoiser_placement().size(), which == 1 ? 2u : 0u);
    const std::string input = std::string(1, static_cast<char>(which)) + meta;
    EXPECT_EQ(fuzz::outcome("checkpoint_meta", reinterpret_cast<const uint8_t*>(input.data()),
                            input.size()),
              "");
  }
  // Blocks named in the metadata whose tensors the archive lacks: a deliberate error.
  const std::string blocks_without_tensors =
      std::string(1, '\0') + fuzz::checkpoint_template(1).meta;
  const auto* data = reinterpret_cast<const uint8_t*>(blocks_without_tensors.data());
  EXPECT_THROW(fuzz::checkpoint_meta(data, blocks_without_tensors.size()), std::runtime_error);
  EXPECT_EQ(fuzz::outcome("checkpoint_meta", data, blocks_without_tensors.size()), "");
}

}  // namespace
}  // namespace quell
