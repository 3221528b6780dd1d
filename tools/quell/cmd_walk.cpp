// quell walk: Walking Noise sweeps (noise at one site at a time), midpoints and figures.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include "common.h"
#include "quell/checkpoint.h"
#include "quell/dist.h"
#include "quell/plot.h"
#include "quell/walk.h"

namespace quell::cli {
namespace {

namespace fs = std::filesystem;

struct WalkArgs {
  std::string checkpoint;
  std::string model;
  std::string out;
  std::string sites = "all";
  std::string noise = "add";
  std::string grid = "1e-2:1e4";
  int per_decade = 4;
  bool no_early_stop = false;
  bool no_prefix_cache = false;
  int64_t cache_mb = 1024;
  std::string shard;
  std::vector<std::string> merge;
  bool restart = false;
  std::string figures = "png,svg";
  // Noisy training.
  bool train = false;
  TrainOptions train_opts;
  int64_t train_limit = 0;
  int eval_draws = 1;
  bool save_models = false;
  WalkOptions opts;
  DataArgs data;
  RuntimeArgs runtime;
};

/// FNV-1a of a file's bytes: a resumed sweep must use the very same checkpoint.
std::string file_digest(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  uint64_t h = 1469598103934665603ULL;
  char buf[1 << 16];
  while (in) {
    in.read(buf, sizeof buf);
    for (std::streamsize i = 0; i < in.gcount(); ++i) {
      h = (h ^ static_cast<unsigned char>(buf[i])) * 1099511628211ULL;
    }
  }
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(h));
  return hex;
}

void parse_shard(const std::string& text, WalkOptions& o) {
  if (text.empty()) return;
  int i = 0, n = 0;
  char tail = 0;
  if (std::sscanf(text.c_str(), "%d/%d%c", &i, &n, &tail) != 2 || n < 1 || i < 1 || i > n) {
    throw std::invalid_argument("--shard '" + text + "': expected I/N with 1 <= I <= N, e.g. 2/4");
  }
  o.shard_index = i - 1;
  o.shard_count = n;
}

Json summary_json(const Summary& s) {
  return Json{{"n", s.n},           {"mean", s.mean},       {"std", s.std},
              {"ci95_low", s.ci_low}, {"ci95_high", s.ci_high}};
}

Json curve_json(const SiteCurveSummary& c, const std::vector<WalkRecord>& records, bool training) {
  Json points = Json::array();
  for (size_t i = 0; i < c.sigma.size(); ++i) {
    Json p = summary_json(c.accuracy[i]);
    p["sigma"] = c.sigma[i];
    if (training) {
      // Learning dynamics: the trained models' weight statistics, averaged over repeats.
      double mean_abs = 0, rms = 0, max_abs = 0, bin = 0;
      int n = 0;
      for (const auto& r : records) {
        if (r.site != c.site || r.sigma != c.sigma[i] || !r.extra.contains("all")) continue;
        const Json& a = r.extra.at("all");
        mean_abs += a.value("mean_abs", 0.0);
        rms += a.value("rms", 0.0);
        max_abs += a.value("max_abs", 0.0);
        bin += a.value("binarization", 0.0);
        ++n;
      }
      if (n > 0) {
        p["weights"] = {{"mean_abs", mean_abs / n},
                        {"rms", rms / n},
                        {"max_abs", max_abs / n},
                        {"binarization", bin / n}};
      }
    }
    points.push_back(p);
  }
  return Json{{"index", c.site},
              {"name", c.name},
              {"midpoint", c.midpoint.to_json()},
              {"early_stopped", c.early_stopped},
              {"stopped_at_sigma", c.sigma.empty() ? Json(nullptr) : Json(c.sigma.back())},
              {"extended_points", c.extended},
              {"complete", c.complete},
              {"points", points}};
}

std::string fmt_mid(double v) { return std::isfinite(v) ? fmt_double(v, 4) : "-"; }

std::string table_of(const WalkResult& r, const std::string& header) {
  std::ostringstream os;
  char line[256];
  os << header << "\n";
  std::snprintf(line, sizeof line, "clean accuracy %.4f, chance %.4f, threshold %.4f\n",
                r.clean_accuracy, r.chance, r.threshold);
  os << line;
  // The name column fits the longest name (imported models have long module paths).
  int width = 16;
  for (const auto& c : r.sites) width = std::max(width, static_cast<int>(c.name.size()));
  std::snprintf(line, sizeof line, "%5s  %-*s %11s  %-23s %6s  %s\n", "site", width, "name",
                "midpoint", "95% CI", "points", "note");
  os << line;
  auto row = [&](const SiteCurveSummary& c) {
    std::string note;
    if (!c.midpoint.crossed()) note = crossing_str(c.midpoint.status);
    if (c.early_stopped) {
      note += std::string(note.empty() ? "" : "; ") + "early stop at chance, sigma " +
              fmt_double(c.sigma.back(), 4);
    }
    if (c.extended > 0) {
      note += std::string(note.empty() ? "" : "; ") + "grid extended by " +
              std::to_string(c.extended);
    }
    if (!c.complete || c.sigma.empty()) note += std::string(note.empty() ? "" : "; ") + "incomplete";
    if (c.midpoint.crossed() && c.midpoint.crossed_fraction < 0.95) {
      note += std::string(note.empty() ? "" : "; ") + "crosses in " +
              fmt_double(100 * c.midpoint.crossed_fraction, 3) + "% of resamples";
    }
    const std::string ci = std::isfinite(c.midpoint.lo)
                               ? "[" + fmt_mid(c.midpoint.lo) + ", " + fmt_mid(c.midpoint.hi) + "]"
                               : "-";
    const std::string idx = c.site >= 0 ? std::to_string(c.site) : "-";
    os << [&] {
      std::string text(256 + c.name.size() + note.size(), '\0');
      const int n = std::snprintf(text.data(), text.size(), "%5s  %-*s %11s  %-23s %6zu  %s\n",
                                  idx.c_str(), width, c.name.c_str(),
                                  fmt_mid(c.midpoint.value).c_str(), ci.c_str(), c.sigma.size(),
                                  note.c_str());
      text.resize(static_cast<size_t>(std::max(0, std::min<int>(n, static_cast<int>(text.size()) - 1))));
      return text;
    }();
  };
  for (const auto& c : r.sites) row(c);
  if (r.global) row(*r.global);
  return os.str();
}

WalkPlotData plot_data(const WalkResult& r, const std::string& title, bool log_sigma) {
  WalkPlotData d;
  d.title = title;
  d.sigma_label = "noise level sigma";
  d.log_sigma = log_sigma;
  d.clean_accuracy = r.clean_accuracy;
  d.chance = r.chance;
  auto curve = [](const SiteCurveSummary& c) {
    SiteCurve s;
    s.site = c.site;
    s.label = (c.site >= 0 ? std::to_string(c.site) + " " : std::string()) + c.name;
    for (size_t i = 0; i < c.sigma.size(); ++i) {
      s.points.push_back(
          {c.sigma[i], c.accuracy[i].mean, c.accuracy[i].ci_low, c.accuracy[i].ci_high});
    }
    s.midpoint = c.midpoint.value;
    s.mid_lo = c.midpoint.lo;
    s.mid_hi = c.midpoint.hi;
    s.early_stopped = c.early_stopped;
    return s;
  };
  for (const auto& c : r.sites) d.sites.push_back(curve(c));
  if (r.global) d.reference.push_back(curve(*r.global));
  return d;
}

/// Learning dynamics of a noisy-training sweep: the trained models' weight statistics per σ.
DynamicsPlotData dynamics_data(const WalkResult& r, const std::string& title, bool log_sigma) {
  DynamicsPlotData d;
  d.title = title;
  d.log_sigma = log_sigma;
  auto stat = [](const WalkRecord& rec, const char* key) {
    const Json& all = rec.extra.at("all");
    return all.contains(key) && all.at(key).is_number() ? all.at(key).get<double>()
                                                        : std::nan("");
  };
  std::vector<double> clean_rms, clean_bin;
  for (const auto& rec : r.records) {
    if (rec.site != WalkRecord::kCleanSite || !rec.extra.contains("all")) continue;
    clean_rms.push_back(stat(rec, "rms"));
    clean_bin.push_back(stat(rec, "binarization"));
  }
  auto mean = [](const std::vector<double>& v) {
    double s = 0;
    for (double x : v) s += x;
    return v.empty() ? std::nan("") : s / static_cast<double>(v.size());
  };
  d.clean_rms = mean(clean_rms);
  d.clean_binarization = mean(clean_bin);
  for (const auto& c : r.sites) {
    DynamicsSeries s;
    s.site = c.site;
    s.label = std::to_string(c.site) + " " + c.name;
    for (double sigma : c.sigma) {
      std::vector<double> rms, bin;
      for (const auto& rec : r.records) {
        if (rec.site != c.site || rec.sigma != sigma || !rec.extra.contains("all")) continue;
        rms.push_back(stat(rec, "rms"));
        bin.push_back(stat(rec, "binarization"));
      }
      if (rms.empty()) continue;
      s.sigma.push_back(sigma);
      s.rms.push_back(mean(rms));
      s.binarization.push_back(mean(bin));
    }
    d.series.push_back(std::move(s));
  }
  return d;
}

// OUT/journal.rank-R.jsonl: the journal of rank R of an MPI run.
std::string rank_journal_path(const std::string& out, int rank) {
  return (fs::path(out) / ("journal.rank-" + std::to_string(rank) + ".jsonl")).string();
}

std::vector<std::string> rank_journals(const std::string& out) {
  std::vector<std::string> files;
  if (!fs::is_directory(out)) return files;
  for (const auto& e : fs::directory_iterator(out)) {
    const std::string name = e.path().filename().string();
    if (name.rfind("journal.rank-", 0) == 0 && name.size() > 6 &&
        name.compare(name.size() - 6, 6, ".jsonl") == 0) {
      files.push_back(e.path().string());
    }
  }
  std::sort(files.begin(), files.end());
  return files;
}

// Merges the ranks' journals into the main one (kept once each, conflicts are errors), then
// removes them. Nothing to do without rank journals.
void fold_rank_journals(const std::string& out, const std::string& journal_path) {
  std::vector<std::string> inputs = rank_journals(out);
  if (inputs.empty()) return;
  const std::vector<std::string> ranks = inputs;
  if (fs::exists(journal_path)) inputs.insert(inputs.begin(), journal_path);
  merge_journals(inputs, journal_path);
  for (const auto& f : ranks) fs::remove(f);
}

void run(WalkArgs& a) {
  a.runtime.apply();
  if (a.out.empty()) throw std::invalid_argument("--out DIR is required");
  if (fs::exists(a.out) && !fs::is_directory(a.out)) {
    throw std::invalid_argument("--out " + a.out + ": exists and is not a directory");
  }
  parse_shard(a.shard, a.opts);
  const PlotFormats formats = parse_figure_formats(a.figures);
  if ((formats.png || formats.svg) && !gnuplot_available()) {
    throw std::runtime_error("gnuplot is not installed (apt-get install gnuplot-nox), or use "
                             "--figures none");
  }
  a.opts.grid = SigmaGrid::parse(a.grid, a.per_decade);
  a.opts.noise = WalkNoise::parse(a.noise);
  a.opts.early_stop = !a.no_early_stop;
  a.opts.prefix_cache = !a.no_prefix_cache;
  a.opts.cache_bytes = a.cache_mb * (int64_t{1} << 20);
  for (const auto& m : a.merge) {
    if (!fs::exists(fs::path(m) / "journal.jsonl")) {
      throw std::invalid_argument("--merge " + m + ": no journal.jsonl there");
    }
  }

  // The model: a trained checkpoint (clean-training setting), or a spec to train (noisy).
  CheckpointMeta meta;
  Model model{nullptr};
  if (!a.checkpoint.empty()) {
    model = load_checked(a.checkpoint, a.model, &meta, &a.data);
  } else if (!a.train) {
    throw std::invalid_argument("a checkpoint is required (or --train with --model)");
  } else if (a.model.empty()) {
    throw std::invalid_argument("--train needs --model NAME or a checkpoint");
  }
  a.data.use_checkpoint_dataset(meta);
  const Dataset test = a.data.load(Split::kTest);
  ModelSpec spec = model ? model->spec() : ModelSpec::for_dataset(a.model, test);
  if (!model) {
    model = make_model(spec);  // for the site table only
  }
  check_model_fits(spec, test, a.checkpoint.empty() ? spec.name : a.checkpoint);
  model->to(a.runtime.torch_device());
  const auto names = model->site_names();
  a.opts.sites = a.sites == "none" ? std::vector<int>{} : select_sites(a.sites, names);
  a.opts.validate(model->num_sites());

  // The fingerprint names everything that determines the results.
  Json fp = a.opts.fingerprint();
  fp["setting"] = a.train ? "noisy-training" : "clean-training";
  fp["data"] = {{"dataset", test.name}, {"limit", a.data.limit}, {"shuffle_seed", a.data.shuffle_seed}};
  NoisyTrainingOptions nt;
  if (a.train) {
    nt.spec = spec;
    nt.train = a.train_opts;
    nt.eval_draws = a.eval_draws;
    fp["noisy_training"] = nt.fingerprint();
    fp["noisy_training"]["train_limit"] = a.train_limit;
  } else {
    fp["checkpoint_digest"] = file_digest(a.checkpoint);
  }

  const int ranks = dist::size();
  if (ranks > 1 && !a.merge.empty()) {
    throw std::invalid_argument("--merge runs as one process, not under mpirun");
  }
  const auto t0 = std::chrono::steady_clock::now();
  fs::create_directories(a.out);
  const std::string journal_path = (fs::path(a.out) / "journal.jsonl").string();
  if (dist::is_root()) {
    if (a.restart) {
      for (const auto& f : rank_journals(a.out)) fs::remove(f);
      if (fs::exists(journal_path)) fs::remove(journal_path);
    }
    // Ranks of an earlier MPI run (finished or killed) left their own journals: fold them in.
    fold_rank_journals(a.out, journal_path);
    // Validates an existing journal against this sweep before any rank starts.
    if (ranks > 1) WalkJournal check(journal_path, fp);
  }
  dist::barrier();
  Dataset train_data;
  auto run_walk = [&](WalkJournal* journal) {
    if (!a.train) return walk_clean_model(*model, test, a.opts, journal);
    if (train_data.size() == 0) {
      DataOptions tr;
      tr.name = test.name;
      tr.dir = a.data.data_dir;
      tr.split = Split::kTrain;
      tr.limit = a.train_limit;
      tr.shuffle_seed = a.data.shuffle_seed;
      train_data = load_dataset(tr);
      if (a.save_models) {
        nt.save_dir = (fs::path(a.out) / "models").string();
        fs::create_directories(nt.save_dir);
      }
    }
    return walk_noisy_training(train_data, test, nt, a.opts, names, journal);
  };

  WalkResult result;
  std::vector<int64_t> per_rank;  // evaluations run by each MPI rank
  if (ranks > 1) {
    // Every rank appends what it evaluates to its own journal, starting from the merged
    // results of earlier runs; units go to whichever rank asks next (docs/mpi.md).
    std::vector<WalkRecord> earlier;
    if (fs::exists(journal_path)) earlier = WalkJournal::read(journal_path).second;
    WalkJournal own(rank_journal_path(a.out, dist::rank()), fp);
    own.preload(earlier);
    if (dist::is_root() && !earlier.empty()) {
      std::cerr << "resuming: " << earlier.size() << " evaluations already in " << journal_path
                << "\n";
    }
    a.opts.progress = dist::is_root() ? progress_bar("walk (rank 0 of " +
                                                     std::to_string(ranks) + ")")
                                      : nullptr;
    {
      dist::TaskCounter counter;
      a.opts.claim = [&counter] { return counter.next(); };
      result = run_walk(&own);
      a.opts.claim = nullptr;
    }  // the counter is freed by all ranks together, after the last unit
    const int64_t evaluations = dist::sum(result.evaluations);
    torch::Tensor each = torch::zeros({ranks}, torch::kDouble);
    each[dist::rank()] = static_cast<double>(result.evaluations);
    dist::allreduce_sum(each);
    for (int r = 0; r < ranks; ++r) per_rank.push_back(static_cast<int64_t>(each[r].item<double>()));
    dist::barrier();
    if (!dist::is_root()) return;
    fold_rank_journals(a.out, journal_path);
    WalkJournal journal(journal_path, fp);
    a.opts.evaluate = false;
    a.opts.progress = nullptr;
    result = run_walk(&journal);
    result.evaluations = evaluations;
    result.seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  } else {
    if (!a.merge.empty()) {
      std::vector<std::string> inputs;
      for (const auto& m : a.merge) inputs.push_back((fs::path(m) / "journal.jsonl").string());
      if (fs::exists(journal_path)) inputs.push_back(journal_path);
      const size_t n = merge_journals(inputs, journal_path);
      std::cerr << "merged " << n << " records from " << a.merge.size() << " shard(s) into "
                << journal_path << "\n";
      a.opts.evaluate = false;
    }
    WalkJournal journal(journal_path, fp);
    if (!journal.records().empty() && a.merge.empty()) {
      std::cerr << "resuming: " << journal.records().size() << " evaluations already in "
                << journal_path << "\n";
    }
    a.opts.progress = progress_bar("walk");
    result = run_walk(&journal);
  }

  // Outputs: long-form CSV, JSON summary, figures.
  const std::string kind = a.opts.noise.str();
  std::vector<std::string> header = {"site", "name", "noise", "sigma", "repeat", "accuracy", "loss"};
  if (a.train) {
    for (const char* h : {"mean_abs", "rms", "max_abs", "binarization"}) header.push_back(h);
  }
  CsvTable csv(header);
  auto name_of = [&](int site) {
    return site >= 0 ? names.at(site) : site == WalkRecord::kGlobalSite ? "global" : "clean";
  };
  for (const auto& r : result.records) {
    std::vector<std::string> row = {std::to_string(r.site), name_of(r.site), kind,
                                    fmt_double(r.sigma, 17), std::to_string(r.repeat),
                                    fmt_double(r.accuracy, 8), fmt_double(r.loss, 8)};
    if (a.train) {
      const Json all = r.extra.is_object() ? r.extra.value("all", Json::object()) : Json::object();
      for (const char* h : {"mean_abs", "rms", "max_abs", "binarization"}) {
        row.push_back(all.contains(h) && all.at(h).is_number() ? fmt_double(all.at(h).get<double>(), 8)
                                                                : "");
      }
    }
    csv.add_row(row);
  }
  const bool log_sigma = a.opts.grid.spacing != SigmaGrid::Spacing::kLinear;
  const std::string setting = a.train ? "noisy training" : "clean training";
  const std::string title = spec.name + ", " + kind + " noise, " + setting;
  Json sites = Json::array();
  for (const auto& c : result.sites) sites.push_back(curve_json(c, result.records, a.train));
  Json prov = provenance();
  prov["device"] = a.runtime.device;
  Json j{{"provenance", prov},
         {"setting", setting},
         {"checkpoint", a.checkpoint},
         {"model", spec.to_json()},
         {"dataset",
          {{"name", test.name}, {"split", "test"}, {"samples", test.size()},
           {"limit", a.data.limit}, {"shuffle_seed", a.data.shuffle_seed}}},
         {"noise", a.opts.noise.to_json()},
         {"grid", a.opts.grid.to_json()},
         {"repeats", a.opts.repeats},
         {"adaptive", a.opts.adaptive},
         {"clean_accuracy", result.clean_accuracy},
         {"chance", result.chance},
         {"chance_margin", result.margin},
         {"threshold", result.threshold},
         {"midpoint_definition",
          "sigma where mean accuracy over repeats first falls below (clean + chance) / 2, "
          "interpolated linearly in log sigma; 95% CI: parametric bootstrap with the spread over "
          "repeats pooled around the crossing (docs/walk.md)"},
         {"sites", sites},
         {"global", result.global ? curve_json(*result.global, result.records, a.train)
                                  : Json(nullptr)},
         {"units_total", result.units_total},
         {"units_done", result.units_done},
         {"complete", result.complete()},
         {"evaluations_run", result.evaluations},
         {"seconds", result.seconds},
         {"shard", a.shard.empty() ? "1/1" : a.shard},
         {"mpi", {{"ranks", ranks}, {"evaluations_per_rank", per_rank}}},
         {"fingerprint", fp}};
  if (a.train) j["noisy_training"] = nt.train.to_json(names);
  write_file_atomic((fs::path(a.out) / "walk.csv").string(), csv.str());
  write_file_atomic((fs::path(a.out) / "walk.json").string(), j.dump(2) + "\n");
  std::vector<std::string> written = {"walk.csv", "walk.json"};
  if ((formats.png || formats.svg) && !result.sites.empty()) {
    for (const auto& f : write_walk_figures(plot_data(result, title, log_sigma), a.out, formats)) {
      written.push_back(fs::path(f).filename().string());
    }
    if (a.train) {
      for (const auto& f : write_dynamics_figures(dynamics_data(result, title, log_sigma), a.out,
                                                  formats)) {
        written.push_back(fs::path(f).filename().string());
      }
    }
  }

  std::ostringstream head;
  head << "walk " << spec.name << " on " << test.name << " test (" << test.size()
       << " samples), " << kind << " noise, " << setting << ", "
       << (a.opts.adaptive ? "adaptive search" : "grid " + a.opts.grid.text) << ", "
       << a.opts.repeats << " repeat(s)";
  std::cout << table_of(result, head.str());
  std::cout << result.evaluations << " evaluations in " << fmt_double(result.seconds, 3) << " s";
  if (!result.complete()) {
    std::cout << "; INCOMPLETE: " << (result.units_total - result.units_done) << " of "
              << result.units_total << " units missing"
              << (a.opts.shard_count > 1 ? " (other shards: merge them with --merge)" : "");
  }
  std::cout << "\nwrote " << join(written) << " in " << a.out << "\n";
}

}  // namespace

void add_walk_command(CLI::App& app) {
  auto a = std::make_shared<WalkArgs>();
  a->train_opts.epochs = 5;
  CLI::App* cmd = app.add_subcommand(
      "walk",
      "Walking Noise: noise at one site at a time over a sigma grid; midpoint per site, CSV, "
      "JSON and figures. Resumable (journal in --out), shardable (--shard, --merge)");
  cmd->add_option("checkpoint,--checkpoint,-c", a->checkpoint,
                  "Trained checkpoint or TorchScript file (clean-training setting; with --train "
                  "optional, it then only gives the model)");
  cmd->add_option("--model", a->model, "Model name (checked against the checkpoint; with --train "
                                       "and no checkpoint, the model to train)");
  cmd->add_option("--out,-o", a->out, "Output directory (journal.jsonl, walk.csv, walk.json, "
                                      "figures); an unfinished sweep there is resumed")
      ->required();
  cmd->add_option("--sites", a->sites,
                  "Walked sites: all, or names, indices and ranges a-b, comma-separated; 'none' "
                  "with --global for the global curve only")
      ->capture_default_str();
  cmd->add_option("--noise", a->noise,
                  "Walked noise: add | mul | muladd:r=R | addmul:r=R (mixed: sigma is the "
                  "amplitude A, sigma_add = A*r, sigma_mul = A*(1-r)), options as in --noise of "
                  "eval (rel=std|range, static, ...)")
      ->capture_default_str();
  cmd->add_option("--grid", a->grid,
                  "Sigma grid: MIN:MAX (log, --per-decade points per decade), MIN:MAX:STEP "
                  "(linear, e.g. 0:2:0.1) or a list 0.1,0.3,1")
      ->capture_default_str();
  cmd->add_option("--per-decade", a->per_decade, "Points per decade of a log grid")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--repeats,-r", a->opts.repeats,
                  "Noisy evaluations per point (noisy training: trained models per point)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_flag("--global", a->opts.global,
                "Also the reference curve with the noise on all walked sites at once");
  cmd->add_flag("--no-early-stop", a->no_early_stop,
                "Evaluate the whole grid (default: a site stops after two points at chance)");
  cmd->add_option("--chance", a->opts.chance, "Chance accuracy (default 1 / classes)")
      ->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--chance-margin", a->opts.chance_margin,
                  "'At chance' means mean accuracy <= chance + margin (default max(0.02, "
                  "3*sqrt(p(1-p)/n_test)))")
      ->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--max-extend", a->opts.max_extend,
                  "Points past the end of a log/linear grid, until two are at chance, so every "
                  "site can cross (0 = never)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  cmd->add_flag("--adaptive", a->opts.adaptive,
                "Search each midpoint instead of evaluating the whole grid: bracket it from the "
                "grid's geometric middle, then refine around the crossing interpolated in log sigma");
  cmd->add_option("--tolerance", a->opts.tolerance,
                  "Adaptive: stop when the bracket around the midpoint is within this relative "
                  "width")
      ->capture_default_str();
  cmd->add_option("--seed", a->opts.seed,
                  "Seed of the noise draws (noisy training: also initialisation)")
      ->capture_default_str();
  cmd->add_option("--batch-size", a->opts.batch_size,
                  "Evaluation batch size (part of the noise streams: results depend on it)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--cache-mb", a->cache_mb,
                  "Memory for cached clean activations entering the walked site")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  cmd->add_flag("--no-prefix-cache", a->no_prefix_cache,
                "Run the full forward pass for every evaluation (same results, slower)");
  cmd->add_option("--shard", a->shard,
                  "Run only shard I of N (I/N): units (site, or site x repeat when training) "
                  "u with u mod N = I-1");
  cmd->add_option("--merge", a->merge,
                  "Merge the journals of these shard output directories into --out and write "
                  "the outputs (no new evaluations)")
      ->expected(1, -1);
  cmd->add_flag("--restart", a->restart, "Discard an existing journal in --out");
  cmd->add_option("--figures", a->figures, "Figure formats: png,svg | png | svg | none")
      ->capture_default_str();
  // Noisy training.
  cmd->add_flag("--train", a->train,
                "Noisy training: train a fresh model per (site, sigma, repeat) with the noise on, "
                "evaluate it with the same noise");
  cmd->add_option("--epochs", a->train_opts.epochs, "Noisy training: epochs per model")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--lr", a->train_opts.lr, "Noisy training: learning rate")->capture_default_str();
  cmd->add_option("--train-batch", a->train_opts.batch_size, "Noisy training: batch size")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--train-limit", a->train_limit,
                  "Noisy training: use only the first N training samples (0 = all)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  cmd->add_option("--eval-draws", a->eval_draws,
                  "Noisy training: noisy evaluation passes per trained model")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_flag("--save-models", a->save_models,
                "Noisy training: keep every trained model in --out/models");
  a->data.add_for_checkpoint(*cmd);
  a->runtime.add(*cmd);
  cmd->callback([a] { run(*a); });
}

}  // namespace quell::cli
