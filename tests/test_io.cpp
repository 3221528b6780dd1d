// Tests for quell/io.h: atomic writes, provenance, CSV and number formatting.

#include "quell_test_paths.h"
#include "test_util.h"
#include <ATen/Parallel.h>
#include <gtest/gtest.h>
#include <torch/version.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <limits>
#include <regex>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "quell/io.h"
#include "util/json.h"

namespace {

namespace fs = std::filesystem;
using quell::write_file_atomic;

using quell::testing::read_file;
using quell::testing::write_file;

std::set<std::string> list_dir(const fs::path& dir) {
  std::set<std::string> names;
  for (const auto& entry : fs::directory_iterator(dir)) {
    names.insert(entry.path().filename().string());
  }
  return names;
}

// Each test gets a fresh directory: under QUELL_TEST_TMP when the build defines it, else /tmp.
class AtomicWrite : public ::testing::Test {
 protected:
  void SetUp() override {
#ifdef QUELL_TEST_TMP
    const fs::path base = QUELL_TEST_TMP;
#else
    const fs::path base = "/tmp";
#endif
    fs::create_directories(base);
    std::string pattern = (base / "quell_io_XXXXXX").string();
    ASSERT_NE(::mkdtemp(pattern.data()), nullptr) << pattern << ": " << std::strerror(errno);
    dir_ = pattern;
  }
  void TearDown() override {
    std::error_code ignored;
    fs::remove_all(dir_, ignored);
  }

  // Calls write_file_atomic expecting failure; returns the message.
  static std::string failure_message(const fs::path& path, const std::string& content) {
    try {
      write_file_atomic(path.string(), content);
    } catch (const std::runtime_error& e) {
      return e.what();
    }
    ADD_FAILURE() << "write_file_atomic(" << path << ") did not throw";
    return "";
  }

  static void expect_one_line_naming(const std::string& msg, const fs::path& path, int err) {
    EXPECT_NE(msg.find(path.string()), std::string::npos) << msg;
    EXPECT_NE(msg.find(std::strerror(err)), std::string::npos) << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  }

  fs::path dir_;
};

TEST_F(AtomicWrite, CreatesFileWithExactContent) {
  const fs::path path = dir_ / "result.csv";
  const std::string content = std::string("a,b\r\n1,2\n", 9) + std::string(1, '\0') + "tail";
  write_file_atomic(path.string(), content);
  EXPECT_EQ(read_file(path), content);
  EXPECT_EQ(list_dir(dir_), std::set<std::string>{"result.csv"});

  const fs::path empty = dir_ / "empty.txt";
  write_file_atomic(empty.string(), "");
  EXPECT_TRUE(fs::is_regular_file(empty));
  EXPECT_EQ(fs::file_size(empty), 0u);
}

TEST_F(AtomicWrite, OverwritesExistingFile) {
  const fs::path path = dir_ / "result.json";
  write_file(path, "an old and much longer content\n");
  write_file_atomic(path.string(), "new\n");
  EXPECT_EQ(read_file(path), "new\n");
  write_file_atomic(path.string(), "newer\n");
  EXPECT_EQ(read_file(path), "newer\n");
  EXPECT_EQ(list_dir(dir_), std::set<std::string>{"result.json"});
}

TEST_F(AtomicWrite, MissingDirectoryThrowsNamingPath) {
  const fs::path path = dir_ / "missing" / "result.csv";
  const std::string msg = failure_message(path, "data");
  expect_one_line_naming(msg, path, ENOENT);
  EXPECT_TRUE(list_dir(dir_).empty()) << "no directory and no temporary may be created";
}

TEST_F(AtomicWrite, ParentIsRegularFileThrowsAndLeavesItUntouched) {
  const fs::path plain = dir_ / "plain";
  write_file(plain, "keep me");
  const fs::path path = plain / "result.csv";
  const std::string msg = failure_message(path, "data");
  expect_one_line_naming(msg, path, ENOTDIR);
  EXPECT_EQ(read_file(plain), "keep me");
  EXPECT_EQ(list_dir(dir_), std::set<std::string>{"plain"});
}

TEST_F(AtomicWrite, ExistingFileUntouchedWhenTemporaryCannotBeCreated) {
  // A file whose name is 3 bytes short of the file system's limit exists; the temporary name
  // ("<name>.tmp.<pid>.<n>") is too long, so the write fails before touching anything. Unlike
  // a read-only directory this fails for root too.
  const long name_max = ::pathconf(dir_.c_str(), _PC_NAME_MAX);
  if (name_max <= 3 || name_max > 4096) GTEST_SKIP() << "NAME_MAX is " << name_max;
  const fs::path path = dir_ / std::string(static_cast<size_t>(name_max) - 3, 'r');
  write_file(path, "precious");
  const std::string msg = failure_message(path, "replacement");
  expect_one_line_naming(msg, path, ENAMETOOLONG);
  EXPECT_EQ(read_file(path), "precious");
  EXPECT_EQ(list_dir(dir_), std::set<std::string>{path.filename().string()});
}

TEST_F(AtomicWrite, FailedRenameRemovesTemporary) {
  // The temporary is written, then rename() onto a non-empty directory fails (EISDIR): the
  // temporary must be removed and the directory left as it was.
  const fs::path target = dir_ / "target";
  fs::create_directory(target);
  write_file(target / "inside.txt", "inside");
  const std::string msg = failure_message(target, "data");
  expect_one_line_naming(msg, target, EISDIR);
  EXPECT_EQ(list_dir(dir_), std::set<std::string>{"target"});
  EXPECT_EQ(read_file(target / "inside.txt"), "inside");
}

TEST_F(AtomicWrite, ConcurrentWritersLeaveOneCompleteVersion) {
  // Threads overwrite one file; each temporary name is unique, so a reader only ever sees one
  // whole version and no temporary survives.
  const fs::path path = dir_ / "shared.txt";
  constexpr int kThreads = 4;
  constexpr int kWritesPerThread = 10;
  auto version = [](int thread, int write) {
    return std::string(4096 + 7 * write, static_cast<char>('a' + thread)) + "\n";
  };
  std::set<std::string> versions;
  for (int t = 0; t < kThreads; ++t) {
    for (int w = 0; w < kWritesPerThread; ++w) versions.insert(version(t, w));
  }
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int w = 0; w < kWritesPerThread; ++w) write_file_atomic(path.string(), version(t, w));
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(versions.count(read_file(path)), 1u);
  EXPECT_EQ(list_dir(dir_), std::set<std::string>{"shared.txt"});
}

TEST(Provenance, HasAllKeysWithTypes) {
  const quell::Json p = quell::provenance();
  ASSERT_TRUE(p.is_object());
  for (const char* key : {"quell_version", "git_commit", "libtorch_version", "build_type", "device",
                          "utc_time", "hostname"}) {
    ASSERT_TRUE(p.contains(key)) << key;
    ASSERT_TRUE(p[key].is_string()) << key;
    EXPECT_FALSE(p[key].get<std::string>().empty()) << key;
  }
  EXPECT_EQ(p.size(), 8u) << p.dump();
  EXPECT_EQ(p["libtorch_version"], TORCH_VERSION);
  EXPECT_EQ(p["device"], "cpu");
  ASSERT_TRUE(p["threads"].is_number_integer()) << p.dump();
  EXPECT_EQ(p["threads"].get<int>(), at::get_num_threads());
}

TEST(Provenance, UtcTimeParsesAndIsNow) {
  const std::string stamp = quell::provenance()["utc_time"];
  ASSERT_TRUE(std::regex_match(stamp, std::regex(R"(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z)")))
      << stamp;
  std::tm parsed{};
  const char* end = ::strptime(stamp.c_str(), "%Y-%m-%dT%H:%M:%SZ", &parsed);
  ASSERT_NE(end, nullptr) << stamp;
  EXPECT_EQ(*end, '\0') << stamp;
  const double age = std::difftime(std::time(nullptr), ::timegm(&parsed));
  EXPECT_GE(age, 0.0) << stamp;
  EXPECT_LT(age, 60.0) << stamp;

  EXPECT_TRUE(
      std::regex_match(quell::utc_now(), std::regex(R"(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z)")));
}

// JSON integers read by every reader: in range or a one-line error, never nlohmann's conversion
// of a double beyond the type's range (undefined behaviour; fuzz_noise_json found
// "repeats": 2.18e20).
TEST(JsonInteger, InRangeOrAnErrorNamingTheField) {
  using quell::Json;
  namespace json = quell::json;
  EXPECT_EQ(json::integer(Json(7), "k"), 7);
  EXPECT_EQ(json::integer(Json(-3), "k"), -3);
  EXPECT_EQ(json::integer(Json(2.0), "k"), 2);
  EXPECT_EQ(json::integer(Json(2147483647), "k"), 2147483647);
  EXPECT_EQ(json::integer<int64_t>(Json(int64_t{1} << 40), "k"), int64_t{1} << 40);
  EXPECT_EQ(json::integer<int64_t>(Json(-9.0e18), "k"), int64_t{-9000000000000000000});
  const auto error = [](const Json& v, auto type) {
    try {
      (void)json::integer<decltype(type)>(v, "repeats");
    } catch (const std::invalid_argument& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  for (const Json& bad : {Json(2.18e20), Json(2147483648LL), Json(-2147483649LL), Json(2.5),
                          Json(std::nan("")), Json(1e308), Json("2"), Json(nullptr), Json(true),
                          Json::array({1})}) {
    const std::string e = error(bad, int{});
    EXPECT_NE(e.find("repeats must be an integer in [-2147483648, 2147483647], got "),
              std::string::npos)
        << bad.dump() << ": " << e;
  }
  EXPECT_NE(error(Json(std::numeric_limits<uint64_t>::max()), int64_t{}).find("must be an integer"),
            std::string::npos);
  EXPECT_NE(error(Json(9.3e18), int64_t{}).find("must be an integer"), std::string::npos);
  EXPECT_EQ(error(Json(uint64_t{5}), int64_t{}), "");
  // integer_or: the fallback when the key is absent, the same checks when present.
  EXPECT_EQ(json::integer_or(Json::object(), "repeats", 1), 1);
  EXPECT_EQ(json::integer_or(Json{{"repeats", 3}}, "repeats", 1), 3);
  EXPECT_THROW(json::integer_or(Json{{"repeats", 1e20}}, "repeats", 1), std::invalid_argument);
  // integers_or_empty: every element checked; no key, no elements.
  EXPECT_EQ(json::integers_or_empty<int>(Json{{"repeats", {1, 2.0, 3}}}, "repeats"),
            (std::vector<int>{1, 2, 3}));
  EXPECT_TRUE(json::integers_or_empty<int>(Json::object(), "repeats").empty());
  EXPECT_THROW(json::integers_or_empty<int>(Json{{"repeats", {1, 1e20}}}, "repeats"),
               std::invalid_argument);
  EXPECT_THROW(json::integers_or_empty<int>(Json{{"repeats", 3}}, "repeats"),
               std::invalid_argument);
}

TEST(CsvTable, PlainFields) {
  quell::CsvTable table({"model", "sigma", "accuracy"});
  EXPECT_EQ(table.str(), "model,sigma,accuracy\n");
  table.add_row({"mlp", "0.1", "0.93"});
  table.add_row({"cnn", "0", ""});
  EXPECT_EQ(table.rows(), 2u);
  EXPECT_EQ(table.str(), "model,sigma,accuracy\nmlp,0.1,0.93\ncnn,0,\n");
}

TEST(CsvTable, QuotesPerRfc4180) {
  quell::CsvTable table({"name, with comma", "plain"});
  table.add_row({"say \"hi\"", " spaces kept "});
  table.add_row({"line1\nline2", "cr\r"});
  table.add_row({"\"", "a;b\tc"});
  EXPECT_EQ(table.str(),
            "\"name, with comma\",plain\n"
            "\"say \"\"hi\"\"\", spaces kept \n"
            "\"line1\nline2\",\"cr\r\"\n"
            "\"\"\"\",a;b\tc\n");
}

TEST(CsvTable, WrongRowSizeThrows) {
  quell::CsvTable table({"a", "b"});
  EXPECT_THROW(table.add_row({"1"}), std::invalid_argument);
  EXPECT_THROW(table.add_row({"1", "2", "3"}), std::invalid_argument);
  EXPECT_EQ(table.rows(), 0u);
  EXPECT_EQ(table.str(), "a,b\n");
}

TEST(FmtDouble, SignificantDigits) {
  EXPECT_EQ(quell::fmt_double(0.1), "0.1");
  EXPECT_EQ(quell::fmt_double(3.14159265358979), "3.14159");
  EXPECT_EQ(quell::fmt_double(1.0 / 3.0, 6), "0.333333");
  EXPECT_EQ(quell::fmt_double(1234567.0, 6), "1.23457e+06");
  EXPECT_EQ(quell::fmt_double(1e-5, 3), "1e-05");
  EXPECT_EQ(quell::fmt_double(-2.5, 6), "-2.5");
  EXPECT_EQ(quell::fmt_double(0.0, 6), "0");
  EXPECT_EQ(quell::fmt_double(0.9375, 2), "0.94");
  EXPECT_EQ(quell::fmt_double(0.1, 17), "0.10000000000000001");
}

TEST(FmtDouble, NonFinite) {
  const double inf = std::numeric_limits<double>::infinity();
  const double nan = std::numeric_limits<double>::quiet_NaN();
  EXPECT_EQ(quell::fmt_double(nan), "nan");
  EXPECT_EQ(quell::fmt_double(-nan), "nan");
  EXPECT_EQ(quell::fmt_double(inf), "inf");
  EXPECT_EQ(quell::fmt_double(-inf), "-inf");
  EXPECT_EQ(quell::fmt_double(inf, 0), "inf");
}

TEST(FmtDouble, ZeroPrecisionIsShortestRoundTrip) {
  EXPECT_EQ(quell::fmt_double(0.1, 0), "0.1");
  EXPECT_EQ(quell::fmt_double(1.0 / 3.0, 0), "0.3333333333333333");
  EXPECT_EQ(quell::fmt_double(0.1 + 0.2, 0), "0.30000000000000004");
  for (double v : {1e-300, 123456.789, -7.0, 2.0 / 7.0, std::nextafter(1.0, 2.0)}) {
    EXPECT_EQ(std::strtod(quell::fmt_double(v, 0).c_str(), nullptr), v) << v;
  }
}

}  // namespace
