// Faults while a study writes its results, through the CLI as a child process on a small
// synthetic dataset (docs/testing.md, "Faults"):
//  - disk full: the output directory is a tiny tmpfs (a real ENOSPC), mounted in a private mount
//    namespace (`unshare -m`, needs root; skipped otherwise);
//  - read-only: the output directory bind-mounted read-only in such a namespace (EROFS, which
//    root does not bypass, unlike permissions);
//  - killed: SIGKILL at random moments, then resumed.
// Each failure must be a one-line error, leave no half-written or temporary file, keep the
// journal's records whole, and resume afterwards to the result of an uninterrupted run.
// QUELL_FAULT_KILLS=N (default 2) sets the kills per study; QUELL_FAULT_SEED the moments
// (scripts/faults.sh runs more).

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
#include <fcntl.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "quell/data.h"
#include "quell/io.h"
#include "quell_test_paths.h"
#include "test_util.h"

namespace {

namespace fs = std::filesystem;
using quell::Json;
using quell::testing::lines_of;
using quell::testing::read_file;
using quell::testing::shell_quote;

struct ChildRun {
  int exit_code = -1;  ///< 128 + signal if killed
  std::string out, err;
  double seconds = 0;
};

std::ostream& operator<<(std::ostream& os, const ChildRun& r) {
  return os << "\nexit " << r.exit_code << " after " << r.seconds << " s\n--- stdout ---\n"
            << r.out << "--- stderr ---\n" << r.err << "---";
}

std::string command_of(const std::vector<std::string>& args) {
  std::string c = shell_quote(QUELL_CLI_PATH);
  for (const auto& a : args) c += " " + shell_quote(a);
  return c;
}

int status_code(int status) {
  if (status == -1) return -1;
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  return 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}

/// Runs `shell` (a /bin/sh command line whose stdout/stderr go to the files it is given).
ChildRun run_shell(const std::string& shell, const fs::path& tag) {
  const fs::path out = tag.string() + ".out", err = tag.string() + ".err";
  const std::string full = "exec </dev/null >" + shell_quote(out) + " 2>" + shell_quote(err) +
                           "; " + shell;
  const auto t0 = std::chrono::steady_clock::now();
  ChildRun r;
  r.exit_code = status_code(std::system(("sh -c " + shell_quote(full)).c_str()));
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  r.out = read_file(out);
  r.err = read_file(err);
  fs::remove(out);
  fs::remove(err);
  return r;
}

/// Runs quell; with `kill_after` > 0 sends SIGKILL after that many seconds if still running.
ChildRun run_quell(const std::vector<std::string>& args, const fs::path& tag, double kill_after = 0) {
  const std::string out = tag.string() + ".out", err = tag.string() + ".err";
  std::vector<std::string> argv_s = {QUELL_CLI_PATH};
  argv_s.insert(argv_s.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : argv_s) argv.push_back(a.data());
  argv.push_back(nullptr);
  const auto t0 = std::chrono::steady_clock::now();
  const pid_t pid = ::fork();
  if (pid == 0) {  // only async-signal-safe calls until exec
    const int in = ::open("/dev/null", O_RDONLY);
    const int o = ::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    const int e = ::open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ::dup2(in, 0);
    ::dup2(o, 1);
    ::dup2(e, 2);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  ChildRun r;
  int status = 0;
  for (;;) {
    const pid_t w = ::waitpid(pid, &status, WNOHANG);
    const double t = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (w == pid) break;
    if (kill_after > 0 && t >= kill_after) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  r.exit_code = status_code(status);
  r.out = read_file(out);
  r.err = read_file(err);
  fs::remove(out);
  fs::remove(err);
  return r;
}

void expect_one_line_error(const ChildRun& r, const std::vector<std::string>& needles) {
  EXPECT_NE(r.exit_code, 0) << r;
  EXPECT_LT(r.exit_code, 128) << "killed by a signal" << r;
  const auto lines = lines_of(r.err);
  ASSERT_FALSE(lines.empty()) << r;
  // Progress lines may come first; the error is the last line and the only one.
  EXPECT_EQ(lines.back().rfind("quell: error: ", 0), 0u) << r;
  int errors = 0;
  for (const auto& l : lines) errors += l.find("error") != std::string::npos;
  EXPECT_EQ(errors, 1) << r;
  for (const auto& n : needles) EXPECT_NE(lines.back().find(n), std::string::npos) << n << r;
}

/// No temporary file left in `dir`, every JSON result parses, every journal line is a whole
/// JSON record (a torn last line only if `torn_ok`: a kill can cut a line; a write error cannot).
void expect_whole_files(const fs::path& dir, bool torn_ok) {
  if (!fs::exists(dir)) return;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    if (!e.is_regular_file()) continue;
    const std::string name = e.path().filename().string();
    if (!torn_ok) EXPECT_EQ(name.find(".tmp."), std::string::npos) << "left behind: " << e.path();
    if (name.find(".tmp.") != std::string::npos) continue;
    const std::string text = read_file(e.path());
    if (name.size() > 5 && name.substr(name.size() - 5) == ".json") {
      EXPECT_NO_THROW((void)Json::parse(text)) << "half-written " << e.path();
    } else if (name.size() > 6 && name.substr(name.size() - 6) == ".jsonl") {
      const auto lines = lines_of(text);
      const bool ends_whole = text.empty() || text.back() == '\n';
      EXPECT_TRUE(ends_whole || torn_ok) << "torn journal line in " << e.path();
      for (size_t i = 0; i < lines.size(); ++i) {
        if (i + 1 == lines.size() && !ends_whole) continue;
        EXPECT_NO_THROW((void)Json::parse(lines[i])) << e.path() << " line " << i + 1;
      }
    }
  }
}

class Faults : public ::testing::Test {
 public:
  static std::string data() { return (*root_ / "data").string(); }
  static std::string checkpoint() { return (*root_ / "mlp.pt").string(); }

 protected:
  static void SetUpTestSuite() {
    root_ = new fs::path(fs::path(QUELL_TEST_TMP) / ("faults-" + std::to_string(::getpid())));
    fs::remove_all(*root_);
    fs::create_directories(*root_);
    quell::write_synthetic_idx((*root_ / "data").string(), 400, 150, 5);
    train_ = new ChildRun(run_quell({"train", "--model", "mlp", "--data-dir", data(), "--out",
                                checkpoint(), "--epochs", "1", "--seed", "1", "--threads", "1"},
                               *root_ / "train"));
    // Mount namespaces (and mounting a tmpfs in one) need root.
    fs::create_directories(*root_ / "probe");
    mounts_ = run_shell("unshare -m sh -c " +
                            shell_quote("mount -t tmpfs -o size=4k tmpfs " +
                                        shell_quote((*root_ / "probe").string())),
                        *root_ / "probe-run")
                  .exit_code == 0;
  }
  static void TearDownTestSuite() {
    std::error_code ec;
    if (!std::getenv("QUELL_KEEP_TEST_TMP")) fs::remove_all(*root_, ec);
    delete root_;
    delete train_;
  }
  void SetUp() override {
    ASSERT_EQ(train_->exit_code, 0) << *train_;
    dir_ = *root_ / ::testing::UnitTest::GetInstance()->current_test_info()->name();
    fs::create_directories(dir_);
  }
  /// Runs quell with `args` whose output directory is `mnt` (an empty directory) turned into
  /// a tmpfs of `size` bytes ("disk full") or, when size is empty, a read-only bind mount of
  /// itself; afterwards what was written there is copied to `save`.
  ChildRun run_mounted(const std::vector<std::string>& args, const fs::path& mnt, const fs::path& save,
                  const std::string& size) {
    fs::create_directories(mnt);
    fs::create_directories(save);
    const std::string m = shell_quote(mnt.string());
    const std::string mount =
        size.empty() ? "mount --bind " + m + " " + m + " && mount -o remount,bind,ro " + m
                     : "mount -t tmpfs -o size=" + size + " tmpfs " + m;
    const std::string inner = mount + " || exit 99; " + command_of(args) + "; rc=$?; cp -a " + m +
                              "/. " + shell_quote(save.string()) + "/; exit $rc";
    return run_shell("unshare -m sh -c " + shell_quote(inner), dir_ / "mounted");
  }

  /// Kills `args` (a resumable study writing into `out`) at random moments, then runs it to the
  /// end: returns the final run. Journals stay whole but for a torn last line after each kill.
  ChildRun kill_and_resume(const std::vector<std::string>& args, const fs::path& out, double full) {
    int kills = 2;
    if (const char* k = std::getenv("QUELL_FAULT_KILLS")) kills = std::atoi(k);
    unsigned seed = 20;
    if (const char* s = std::getenv("QUELL_FAULT_SEED")) seed = static_cast<unsigned>(std::atoi(s));
    std::mt19937 rng(seed);
    // Up to the whole duration of an uninterrupted run: start-up, each phase, the final writes.
    std::uniform_real_distribution<double> when(0.05 * full, 1.0 * full);
    for (int i = 0; i < kills; ++i) {
      const double at = when(rng);
      const ChildRun k = run_quell(args, dir_ / "kill", at);
      if (k.exit_code == 0) continue;  // finished before the kill: still a valid resume below
      EXPECT_EQ(k.exit_code, 128 + SIGKILL) << "kill " << i << " at " << at << " s" << k;
      expect_whole_files(out, true);
    }
    return run_quell(args, dir_ / "final");
  }

  static fs::path* root_;
  static ChildRun* train_;
  static bool mounts_;
  fs::path dir_;
};

fs::path* Faults::root_ = nullptr;
ChildRun* Faults::train_ = nullptr;
bool Faults::mounts_ = false;

std::vector<std::string> walk_args(const std::string& ckpt, const std::string& data,
                                   const fs::path& out) {
  return {"walk", ckpt, "--data-dir", data, "--out", out.string(), "--sites", "all",
          "--grid", "1e-2:1e3", "--per-decade", "2", "--repeats", "2", "--no-early-stop",
          "--figures", "none", "--threads", "1"};
}

std::vector<std::string> denoise_args(const std::string& ckpt, const std::string& data,
                                      const fs::path& out) {
  return {"denoise", ckpt, "--out", out.string(), "--data-dir", data, "--noise",
          "all=add:0.6:static:rel=std+add:0.3:rel=std", "--sites", "1,2,3", "--ratios", "4",
          "--budget", "50", "--epochs", "1", "--search-limit", "150", "--draws", "2",
          "--chips", "2", "--robustness", "0,1", "--robust-draws", "1", "--figures", "none",
          "--threads", "1"};
}

std::vector<std::string> train_walk_args(const std::string& data, const fs::path& out) {
  return {"walk", "--train", "--model", "mlp", "--data-dir", data, "--out", out.string(),
          "--sites", "fc1,fc2", "--grid", "0.01,1,100", "--repeats", "1", "--epochs", "1",
          "--train-limit", "200", "--figures", "none", "--threads", "1"};
}

TEST_F(Faults, DiskFullOrReadOnlyDuringAWalkThenItResumes) {
  if (!mounts_) GTEST_SKIP() << "needs root for a tmpfs in a mount namespace (unshare -m)";
  const ChildRun ref = run_quell(walk_args(checkpoint(), data(), dir_ / "ref"), dir_ / "ref");
  ASSERT_EQ(ref.exit_code, 0) << ref;
  const std::string csv = read_file(dir_ / "ref" / "walk.csv");
  const size_t journal_bytes = fs::file_size(dir_ / "ref" / "journal.jsonl");
  ASSERT_GT(journal_bytes, 8192u) << "the sweep must outgrow the 8 KiB disk";

  // The journal fills the disk in the middle of the sweep.
  const ChildRun full = run_mounted(walk_args(checkpoint(), data(), dir_ / "mnt" / "w"), dir_ / "mnt",
                               dir_ / "saved", "8k");
  expect_one_line_error(full, {"No space left on device"});
  expect_whole_files(dir_ / "saved", false);
  EXPECT_FALSE(fs::exists(dir_ / "saved" / "w" / "walk.csv"));
  const auto kept = lines_of(read_file(dir_ / "saved" / "w" / "journal.jsonl"));
  EXPECT_GT(kept.size(), 2u);  // the fingerprint and some records were written

  // A read-only output directory holding that journal: refused, nothing changes.
  const std::string before = read_file(dir_ / "saved" / "w" / "journal.jsonl");
  const ChildRun ro = run_mounted(walk_args(checkpoint(), data(), dir_ / "saved" / "w"),
                             dir_ / "saved", dir_ / "saved-ro", "");
  expect_one_line_error(ro, {"Read-only file system"});
  EXPECT_EQ(read_file(dir_ / "saved" / "w" / "journal.jsonl"), before);
  expect_whole_files(dir_ / "saved", false);

  // With room again, it resumes and ends with the uninterrupted result.
  const ChildRun resumed = run_quell(walk_args(checkpoint(), data(), dir_ / "saved" / "w"),
                                dir_ / "resumed");
  ASSERT_EQ(resumed.exit_code, 0) << resumed;
  EXPECT_NE((resumed.out + resumed.err).find("resuming: " + std::to_string(kept.size() - 1)),
            std::string::npos)
      << resumed;
  EXPECT_EQ(read_file(dir_ / "saved" / "w" / "walk.csv"), csv);
}

TEST_F(Faults, DiskFullOrReadOnlyDuringADenoiseStudyThenItResumes) {
  if (!mounts_) GTEST_SKIP() << "needs root for a tmpfs in a mount namespace (unshare -m)";
  const ChildRun ref = run_quell(denoise_args(checkpoint(), data(), dir_ / "ref"), dir_ / "ref");
  ASSERT_EQ(ref.exit_code, 0) << ref;
  // Room for the journal's first results, not for the study's block checkpoints.
  const ChildRun full = run_mounted(denoise_args(checkpoint(), data(), dir_ / "mnt" / "d"),
                               dir_ / "mnt", dir_ / "saved", "16k");
  expect_one_line_error(full, {"No space left on device"});
  expect_whole_files(dir_ / "saved", false);
  EXPECT_FALSE(fs::exists(dir_ / "saved" / "d" / "report.json"));

  const std::string before = read_file(dir_ / "saved" / "d" / "journal.jsonl");
  ASSERT_FALSE(before.empty());
  const ChildRun ro = run_mounted(denoise_args(checkpoint(), data(), dir_ / "saved" / "d"),
                             dir_ / "saved", dir_ / "saved-ro", "");
  expect_one_line_error(ro, {"Read-only file system"});
  EXPECT_EQ(read_file(dir_ / "saved" / "d" / "journal.jsonl"), before);

  const ChildRun resumed = run_quell(denoise_args(checkpoint(), data(), dir_ / "saved" / "d"),
                                dir_ / "resumed");
  ASSERT_EQ(resumed.exit_code, 0) << resumed;
  EXPECT_NE((resumed.out + resumed.err).find("resuming"), std::string::npos) << resumed;
  for (const char* f : {"report.csv", "points.csv", "rankings.csv"}) {
    EXPECT_EQ(read_file(dir_ / "saved" / "d" / f), read_file(dir_ / "ref" / f)) << f;
  }
}

TEST_F(Faults, DiskFullOrReadOnlyWhenTrainingWritesItsCheckpoint) {
  if (!mounts_) GTEST_SKIP() << "needs root for a tmpfs in a mount namespace (unshare -m)";
  auto train = [&](const fs::path& out) {
    return std::vector<std::string>{"train", "--model", "mlp", "--data-dir", data(), "--out",
                                    out.string(), "--metrics", (out.parent_path() / "m.json").string(),
                                    "--epochs", "1", "--limit", "200", "--threads", "1"};
  };
  const ChildRun full = run_mounted(train(dir_ / "mnt" / "mlp.pt"), dir_ / "mnt", dir_ / "saved", "64k");
  expect_one_line_error(full, {"No space left on device"});
  EXPECT_FALSE(fs::exists(dir_ / "saved" / "mlp.pt"));
  expect_whole_files(dir_ / "saved", false);

  fs::create_directories(dir_ / "ro");
  const ChildRun ro = run_mounted(train(dir_ / "ro" / "mlp.pt"), dir_ / "ro", dir_ / "saved-ro", "");
  expect_one_line_error(ro, {"Read-only file system"});
  EXPECT_TRUE(fs::is_empty(dir_ / "saved-ro"));
}

TEST_F(Faults, KilledStudiesResumeToTheUninterruptedResult) {
  struct Study {
    const char* name;
    std::vector<std::string> (*args)(const fs::path&);
    std::vector<const char*> results;
  };
  const std::vector<Study> studies = {
      {"walk", [](const fs::path& o) { return walk_args(checkpoint(), data(), o); },
       {"walk.csv"}},
      {"walk --train", [](const fs::path& o) { return train_walk_args(data(), o); },
       {"walk.csv"}},
      {"denoise", [](const fs::path& o) { return denoise_args(checkpoint(), data(), o); },
       {"report.csv", "points.csv", "rankings.csv"}},
  };
  for (const Study& s : studies) {
    SCOPED_TRACE(s.name);
    const fs::path ref = dir_ / (std::string(s.name) + "-ref"), out = dir_ / (std::string(s.name) + "-k");
    const ChildRun r = run_quell(s.args(ref), dir_ / "ref");
    ASSERT_EQ(r.exit_code, 0) << r;
    const ChildRun last = kill_and_resume(s.args(out), out, r.seconds);
    ASSERT_EQ(last.exit_code, 0) << last;
    for (const char* f : s.results) EXPECT_EQ(read_file(out / f), read_file(ref / f)) << f;
  }
}

}  // namespace
