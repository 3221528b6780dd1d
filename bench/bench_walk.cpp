// Walking Noise benchmark: the full clean-model additive sweep of lenet5-bn on the 10,000
// Fashion-MNIST test images (16 sites, sigma 1e-2...1e4 at 4 per decade, 3 repeats, early stop
// at chance, no grid extension) run four ways in the same process, on the same weights and
// threads:
//   quell      `walk_clean_model` with prefix caching (what `quell walk` does);
//   (a) full   the same sweep with a full forward pass per evaluation (--no-prefix-cache);
//   (b) peer   the sweep as a PyTorch user writes it (bench/walk_peer.py: Python, forward hooks
//              adding torch.randn noise, a full forward pass per evaluation);
//   adaptive   `--adaptive` midpoint search (tolerance 5%).
// Prints the time ratios (targets: full/quell >= 3, peer/quell >= 10) and the midpoint tables
// side by side, with whether they agree within their uncertainty.
//
// Usage: bench_walk [--checkpoint FILE] [--threads N] [--repeats R] [--out DIR]
//                   [--python /usr/bin/python3] [--no-peer] [--no-full] [--sites SEL]
//                   [--unfused]   (also time quell walk with fused inference off)
//   Without --checkpoint, uses runs/demo/lenet5-bn.pt of the source tree, training it first
//   (5 epochs, as scripts/demo.sh does) if it does not exist.

#include <torch/torch.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "bench_paths.h"  // QUELL_SOURCE_DIR
#include "demo_model.h"
#include "export_weights.h"
#include "quell/checkpoint.h"
#include "quell/data.h"
#include "quell/runtime.h"
#include "quell/train.h"
#include "quell/walk.h"

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using quell::Json;

struct Args {
  std::string checkpoint;
  int threads = 0;
  int repeats = 3;
  std::string out = "walk-bench";
  std::string python = "/usr/bin/python3";
  std::string sites = "all";
  bool peer = true;
  bool full = true;
  bool unfused = false;
};

Args parse_args(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "bench_walk: %s needs a value\n", k.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (k == "--checkpoint") {
      a.checkpoint = value();
    } else if (k == "--threads") {
      a.threads = std::atoi(value().c_str());
    } else if (k == "--repeats") {
      a.repeats = std::atoi(value().c_str());
    } else if (k == "--out") {
      a.out = value();
    } else if (k == "--python") {
      a.python = value();
    } else if (k == "--sites") {
      a.sites = value();
    } else if (k == "--no-peer") {
      a.peer = false;
    } else if (k == "--unfused") {
      a.unfused = true;
    } else if (k == "--no-full") {
      a.full = false;
    } else {
      std::fprintf(stderr, "bench_walk: unknown option %s (see the header of bench_walk.cpp)\n",
                   k.c_str());
      std::exit(2);
    }
  }
  return a;
}

std::string quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

double timed(const std::function<void()>& fn) {
  const auto t0 = Clock::now();
  fn();
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Per-site midpoints from peer rows (site -> sigma -> accuracies).
std::map<int, quell::Midpoint> peer_midpoints(
    const std::map<int, std::map<double, std::vector<double>>>& rows, double threshold) {
  std::map<int, quell::Midpoint> out;
  for (const auto& [site, curve] : rows) {
    std::vector<double> sigma;
    std::vector<std::vector<double>> samples;
    for (const auto& [s, accs] : curve) {
      sigma.push_back(s);
      samples.push_back(accs);
    }
    out[site] = quell::estimate_midpoint(sigma, samples, threshold, 2000, 7);
  }
  return out;
}

std::string mid_str(const quell::Midpoint& m) {
  char buf[64];
  if (!m.crossed()) return quell::crossing_str(m.status);
  if (std::isfinite(m.lo)) {
    std::snprintf(buf, sizeof buf, "%.4g [%.4g, %.4g]", m.value, m.lo, m.hi);
  } else {
    std::snprintf(buf, sizeof buf, "%.4g", m.value);
  }
  return buf;
}

// Two estimates agree when their difference is within the combined 95% half-widths (or, for
// estimates without an interval, within `rel` of the value).
bool agree(const quell::Midpoint& a, const quell::Midpoint& b, double rel = 0.0) {
  if (!a.crossed() || !b.crossed()) return a.status == b.status;
  auto half = [](const quell::Midpoint& m) {
    return std::isfinite(m.lo) ? 0.5 * (m.hi - m.lo) : 0.0;
  };
  const double hw = std::hypot(half(a), half(b));
  return std::fabs(a.value - b.value) <= hw + rel * std::max(a.value, b.value);
}

Json mid_json(const quell::Midpoint& m) { return m.to_json(); }

}  // namespace

int main(int argc, char** argv) {
  const Args a = parse_args(argc, argv);
  quell::set_threads(a.threads);
  const int threads = at::get_num_threads();
  fs::create_directories(a.out);

  quell::DataOptions d;
  d.split = quell::Split::kTest;
  const quell::Dataset test = quell::load_dataset(d);
  quell::Model model = quell::bench::demo_lenet5_bn(a.checkpoint);
  model->eval();
  const auto names = model->site_names();

  quell::WalkOptions o;
  o.sites = quell::select_sites(a.sites, names);
  o.noise = quell::WalkNoise::parse("add");
  o.grid = quell::SigmaGrid::parse("1e-2:1e4", 4);
  o.repeats = a.repeats;
  o.max_extend = 0;  // the peer walks the same fixed grid
  std::printf("Walking Noise sweep: %s on %s test (%lld images), %zu sites, additive sigma %s "
              "(%zu points), %d repeats, early stop at chance, %d threads\n",
              model->spec().name.c_str(), test.name.c_str(), static_cast<long long>(test.size()),
              o.sites.size(), o.grid.text.c_str(), o.grid.values.size(), o.repeats, threads);

  // Warm-up (oneDNN kernel generation, first touch of memory), so the first timed run does not
  // pay for what the others get for free: one clean pass over the test set.
  model->engine().configure(quell::NoiseConfig{});
  quell::run_pass(*model, test, o.batch_size);

  quell::WalkResult quick, full, adaptive;
  const double t_quick = timed([&] { quick = quell::walk_clean_model(*model, test, o); });
  std::printf("quell walk (prefix cache):     %8.1f s  %5lld evaluations\n", t_quick,
              static_cast<long long>(quick.evaluations));
  std::fflush(stdout);
  double t_unfused = NAN;
  if (a.unfused) {
    // The same sweep with every op on its own (no fused batch norm + ReLU + pool kernels).
    model->set_fused_inference(false);
    quell::WalkResult unfused;
    t_unfused = timed([&] { unfused = quell::walk_clean_model(*model, test, o); });
    model->set_fused_inference(true);
    bool same = unfused.records.size() == quick.records.size();
    for (size_t i = 0; same && i < unfused.records.size(); ++i) {
      same = unfused.records[i].accuracy == quick.records[i].accuracy;
    }
    std::printf("quell walk, ops unfused:       %8.1f s  %5lld evaluations  (fused %.2fx faster; "
                "%s results)\n",
                t_unfused, static_cast<long long>(unfused.evaluations), t_unfused / t_quick,
                same ? "identical" : "DIFFERENT");
    std::fflush(stdout);
  }
  double t_full = NAN;
  if (a.full) {
    quell::WalkOptions f = o;
    f.prefix_cache = false;
    t_full = timed([&] { full = quell::walk_clean_model(*model, test, f); });
    std::printf("(a) quell full forward:        %8.1f s  %5lld evaluations\n", t_full,
                static_cast<long long>(full.evaluations));
    std::fflush(stdout);
  }
  quell::WalkOptions ad = o;
  ad.adaptive = true;
  ad.tolerance = 0.05;
  const double t_adaptive = timed([&] { adaptive = quell::walk_clean_model(*model, test, ad); });
  std::printf("quell adaptive search:         %8.1f s  %5lld evaluations\n", t_adaptive,
              static_cast<long long>(adaptive.evaluations));
  std::fflush(stdout);

  // (b) the PyTorch peer.
  double t_peer = NAN, peer_clean = NAN;
  long long peer_evals = 0;
  std::map<int, quell::Midpoint> peer;
  if (a.peer) {
    const fs::path dir = fs::path(a.out) / "peer";
    quell::bench::export_weights(*model, dir.string());
    std::string sigmas;
    for (double s : o.grid.values) sigmas += (sigmas.empty() ? "" : ",") + quell::fmt_double(s, 17);
    std::string sites;
    for (int s : o.sites) sites += (sites.empty() ? "" : ",") + std::to_string(s);
    const fs::path csv = dir / "peer.csv", timing = dir / "timing.json";
    const std::string cmd =
        quote(a.python) + " " + quote(std::string(QUELL_SOURCE_DIR) + "/bench/walk_peer.py") +
        " --weights " + quote(dir.string()) + " --sigmas " + sigmas + " --sites " + sites +
        " --repeats " + std::to_string(o.repeats) + " --chance-margin " +
        quell::fmt_double(quick.margin, 17) + " --threads " + std::to_string(threads) +
        " --batch-size " + std::to_string(o.batch_size) + " --out " + quote(csv.string()) +
        " --timing " + quote(timing.string());
    std::fprintf(stderr, "running the PyTorch peer: %s\n", cmd.c_str());
    if (std::system(cmd.c_str()) != 0) {
      std::fprintf(stderr, "bench_walk: the PyTorch peer failed (needs python3-torch; "
                           "--no-peer skips it)\n");
      return 1;
    }
    std::ifstream tin(timing);
    const Json tj = Json::parse(tin);
    t_peer = tj.at("seconds").get<double>();
    peer_evals = tj.at("evaluations").get<long long>();
    peer_clean = tj.at("clean_accuracy").get<double>();
    std::map<int, std::map<double, std::vector<double>>> rows;
    std::ifstream cin(csv);
    std::string line;
    std::getline(cin, line);  // header: site,name,sigma,repeat,accuracy
    while (std::getline(cin, line)) {
      std::stringstream ss(line);
      std::string site, name, sigma, repeat, acc;
      std::getline(ss, site, ',');
      std::getline(ss, name, ',');
      std::getline(ss, sigma, ',');
      std::getline(ss, repeat, ',');
      std::getline(ss, acc, ',');
      rows[std::stoi(site)][std::stod(sigma)].push_back(std::stod(acc));
    }
    peer = peer_midpoints(rows, quick.threshold);
    std::printf("(b) PyTorch peer (Python):     %8.1f s  %5lld evaluations (clean accuracy "
                "%.4f; quell %.4f)\n",
                t_peer, peer_evals, peer_clean, quick.clean_accuracy);
  }

  std::printf("\nmidpoints (sigma where accuracy falls below %.4f = (clean %.4f + chance %.2f) "
              "/ 2; 95%% bootstrap interval)\n",
              quick.threshold, quick.clean_accuracy, quick.chance);
  std::printf("%4s %-7s %-26s %-26s %-26s %-9s %s\n", "site", "name", "quell", "(a) full",
              "(b) peer", "adaptive", "agree");
  Json rows = Json::array();
  int agreeing = 0;
  for (size_t i = 0; i < quick.sites.size(); ++i) {
    const auto& q = quick.sites[i];
    const quell::Midpoint f = a.full ? full.sites[i].midpoint : quell::Midpoint{};
    const quell::Midpoint p = a.peer ? peer[q.site] : quell::Midpoint{};
    const auto& ad_m = adaptive.sites[i].midpoint;
    // quell vs peer within their intervals; adaptive within its 5% tolerance plus quell's
    // interval.
    const bool ok = (!a.peer || agree(q.midpoint, p)) && agree(q.midpoint, ad_m, 0.05) &&
                    (!a.full || agree(q.midpoint, f));
    agreeing += ok;
    std::printf("%4d %-7s %-26s %-26s %-26s %-9.4g %s\n", q.site, q.name.c_str(),
                mid_str(q.midpoint).c_str(), a.full ? mid_str(f).c_str() : "-",
                a.peer ? mid_str(p).c_str() : "-", ad_m.value, ok ? "yes" : "NO");
    rows.push_back({{"site", q.site},
                    {"name", q.name},
                    {"quell", mid_json(q.midpoint)},
                    {"full", mid_json(f)},
                    {"peer", mid_json(p)},
                    {"adaptive", mid_json(ad_m)},
                    {"agree", ok}});
  }
  std::printf("%d of %zu sites agree\n\n", agreeing, quick.sites.size());
  std::printf("ratios (time of the baseline / time of quell walk):\n");
  if (a.full) {
    std::printf("  (a) full forward / quell walk   %6.2fx   (target >= 3)\n", t_full / t_quick);
  }
  if (a.peer) {
    std::printf("  (b) PyTorch peer / quell walk   %6.2fx   (target >= 10)\n", t_peer / t_quick);
    std::printf("  (b) PyTorch peer / adaptive     %6.2fx   (%lld vs %lld evaluations)\n",
                t_peer / t_adaptive, peer_evals, static_cast<long long>(adaptive.evaluations));
  }
  Json j{{"threads", threads},
         {"repeats", o.repeats},
         {"grid", o.grid.to_json()},
         {"seconds",
          {{"quell", t_quick},
           {"unfused", t_unfused},
           {"full", t_full},
           {"peer", t_peer},
           {"adaptive", t_adaptive}}},
         {"evaluations",
          {{"quell", quick.evaluations},
           {"full", full.evaluations},
           {"peer", peer_evals},
           {"adaptive", adaptive.evaluations}}},
         {"clean_accuracy", {{"quell", quick.clean_accuracy}, {"peer", peer_clean}}},
         {"midpoints", rows},
         {"provenance", quell::provenance()}};
  quell::write_file_atomic((fs::path(a.out) / "bench_walk.json").string(), j.dump(2) + "\n");
  std::printf("\nwrote %s\n", (fs::path(a.out) / "bench_walk.json").string().c_str());
  return 0;
}
