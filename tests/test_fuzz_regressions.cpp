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

}  // namespace
}  // namespace quell
