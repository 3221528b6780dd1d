// Shared test helpers: scratch directories and small in-memory datasets.
#pragma once

#include <gtest/gtest.h>
#include <torch/torch.h>
#include <unistd.h>

#include <atomic>
#include <functional>
#include <initializer_list>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "quell/data.h"
#include "quell/models.h"
#include "quell_test_paths.h"

namespace quell::testing {

#ifdef QUELL_TEST_TMP
inline const char* const kTmpRoot = QUELL_TEST_TMP;
#else
inline const char* const kTmpRoot = "/tmp";
#endif

/// A fresh directory per test, removed at the end of the test.
class ScratchDir {
 public:
  explicit ScratchDir(const std::string& prefix = "quell") {
    static std::atomic<int> counter{0};
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    std::string name = info ? std::string(info->test_suite_name()) + "." + info->name() : "suite";
    for (char& c : name) {
      if (c == '/') c = '_';
    }
    path_ =
        std::filesystem::path(kTmpRoot) /
        (prefix + "-" + name + "-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~ScratchDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;

  std::string file(const std::string& name) const { return (path_ / name).string(); }
  std::string str() const { return path_.string(); }

 private:
  std::filesystem::path path_;
};

/// The whole content of a file ("" if it cannot be read).
inline std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

/// `s` quoted for /bin/sh.
inline std::string shell_quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

/// The lines of `text` (without their newlines).
inline std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

/// The whitespace-separated tokens of `line`.
inline std::vector<std::string> tokens_of(const std::string& line) {
  std::vector<std::string> tokens;
  std::istringstream in(line);
  for (std::string t; in >> t;) tokens.push_back(t);
  return tokens;
}

/// The message of what `f` throws, "" if it does not throw.
inline std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

/// Runs `fn` and expects it to throw an `Expected` whose message is one line containing every
/// needle (the file, the value, the problem).
template <typename Expected = std::exception>
::testing::AssertionResult throws_with(const std::function<void()>& fn,
                                       std::initializer_list<std::string> needles) {
  try {
    fn();
  } catch (const std::exception& e) {
    const std::string msg = e.what();
    if (dynamic_cast<const Expected*>(&e) == nullptr) {
      return ::testing::AssertionFailure() << "threw another exception type: " << msg;
    }
    if (msg.find('\n') != std::string::npos) {
      return ::testing::AssertionFailure() << "message is not one line: \"" << msg << "\"";
    }
    for (const auto& needle : needles) {
      if (msg.find(needle) == std::string::npos) {
        return ::testing::AssertionFailure()
               << "message \"" << msg << "\" does not contain \"" << needle << "\"";
      }
    }
    return ::testing::AssertionSuccess() << msg;
  }
  return ::testing::AssertionFailure() << "did not throw";
}

/// Writes `content` to `path` directly (not atomically: tests use it to plant files).
/// The spec of a registered model at its natural input: 3x32x32 for the CIFAR-layout models,
/// 1x28x28 otherwise.
inline ModelSpec spec_for(const std::string& name) {
  ModelSpec s;
  s.name = name;
  if (name == "vgg-s" || name == "resnet20") {
    s.in_channels = 3;
    s.height = s.width = 32;
  }
  return s;
}

inline void write_file(const std::filesystem::path& path, const std::string& content) {
  std::ofstream(path, std::ios::binary) << content;
}

/// A learnable in-memory dataset of n samples [n, c, h, w] with `classes` classes: each class
/// adds a bright square at its own position to Gaussian background noise.
inline Dataset blob_dataset(int64_t n, int64_t c = 1, int64_t h = 28, int64_t w = 28,
                            int64_t classes = 10, uint64_t seed = 7) {
  auto gen = at::detail::createCPUGenerator(seed);
  Dataset d;
  d.name = "blobs";
  d.num_classes = classes;
  d.targets = torch::randint(classes, {n}, gen, torch::kLong);
  d.inputs = torch::randn({n, c, h, w}, gen) * 0.3;
  const int64_t cells = 4;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t k = d.targets[i].item<int64_t>();
    const int64_t y0 = (k / cells) % cells * (h / cells), x0 = (k % cells) * (w / cells);
    d.inputs[i].narrow(1, y0, h / cells).narrow(2, x0, w / cells) += 2.0;
  }
  d.mean.assign(c, 0.0);
  d.stddev.assign(c, 1.0);
  return d;
}

}  // namespace quell::testing
