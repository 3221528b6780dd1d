// The Walking Noise study (docs/walk.md): journal, resume, shards, merge and MPI work sharing
// around walk_clean_model / walk_noisy_training, and walk.json / walk.csv.
#include "quell/walk_study.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "quell/checkpoint.h"
#include "quell/dist.h"
#include "quell/load.h"
#include "util/json.h"

namespace quell {
namespace {

namespace fs = std::filesystem;

const char* kMidpointDefinition =
    "sigma where mean accuracy over repeats first falls below (clean + chance) / 2, "
    "interpolated linearly in log sigma; 95% CI: parametric bootstrap with the spread over "
    "repeats pooled around the crossing (docs/walk.md)";

Json curve_json(const SiteCurveSummary& c, const std::vector<WalkRecord>& records, bool training) {
  Json points = Json::array();
  for (size_t i = 0; i < c.sigma.size(); ++i) {
    Json p = summary_to_json(c.accuracy[i]);
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

double null_to_nan(const Json& j) { return j.is_number() ? j.get<double>() : std::nan(""); }

SiteCurveSummary curve_from_json(const Json& j) {
  SiteCurveSummary c;
  c.site = json::integer_or(j, "index", 0);
  c.name = j.value("name", "");
  const Json m = j.value("midpoint", Json::object());
  const std::string status = m.value("status", "not crossed");
  c.midpoint.status = status == "crossed"      ? CrossingStatus::kCrossed
                      : status == "below grid" ? CrossingStatus::kBelowGrid
                                               : CrossingStatus::kNotCrossed;
  c.midpoint.value = null_to_nan(m.value("value", Json(nullptr)));
  c.midpoint.lo = null_to_nan(m.value("ci_low", Json(nullptr)));
  c.midpoint.hi = null_to_nan(m.value("ci_high", Json(nullptr)));
  c.midpoint.crossed_fraction = m.value("bootstrap_crossed_fraction", 0.0);
  c.early_stopped = j.value("early_stopped", false);
  c.extended = json::integer_or(j, "extended_points", 0);
  c.complete = j.value("complete", true);
  for (const auto& p : j.value("points", Json::array())) {
    c.sigma.push_back(p.at("sigma").get<double>());
    c.accuracy.push_back(summary_from_json(p));
  }
  return c;
}

std::string fmt_mid(double v) { return std::isfinite(v) ? fmt_double(v, 4) : "-"; }

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

}  // namespace

std::string model_state_digest(ModelImpl& model) {
  std::vector<torch::Tensor> state;
  for (const auto& p : model.named_parameters()) state.push_back(p.value());
  for (const auto& b : model.named_buffers()) state.push_back(b.value());
  return tensor_digest(state);
}

WalkReport run_walk_study(Model model, const Dataset& test, const WalkStudyOptions& options,
                          const Dataset* train) {
  TORCH_CHECK(model, "run_walk_study: no model");
  WalkStudyOptions o = options;
  WalkOptions& w = o.walk;
  const StudyMonitor& monitor = o.monitor;
  if (o.out.empty()) throw std::invalid_argument("the walk needs an output directory");
  if (fs::exists(o.out) && !fs::is_directory(o.out)) {
    throw std::invalid_argument("output directory " + o.out + ": exists and is not a directory");
  }
  if ((o.figures.png || o.figures.svg) && !gnuplot_available()) {
    throw std::runtime_error("gnuplot is not installed (apt-get install gnuplot-nox); or write "
                             "no figures");
  }
  for (const auto& m : o.merge) {
    if (!fs::exists(fs::path(m) / "journal.jsonl")) {
      throw std::invalid_argument("merge " + m + ": no journal.jsonl there");
    }
  }
  if (o.noisy_training && train == nullptr) {
    throw std::invalid_argument("noisy training needs training data");
  }
  const ModelSpec spec = model->spec();
  check_model_fits(*model, test, o.source.empty() ? spec.name : o.source);
  w.metric = resolve_metric(o.metric, test, spec.num_classes);
  model->to(o.device);
  const auto names = model->site_names();
  w.sites = o.sites == "none" ? std::vector<int>{} : select_sites(o.sites, names);
  if (o.sites == "all") {  // integer sites (token ids) take no noise
    const auto infos = model->sites();
    w.sites.erase(std::remove_if(w.sites.begin(), w.sites.end(),
                                 [&](int s) { return !infos.at(static_cast<size_t>(s)).floating; }),
                  w.sites.end());
  }
  if (w.device) {  // a device walk visits analog layers: "all" means all of them
    std::vector<int> analog;
    for (const auto& sw : model->analog_weights()) analog.push_back(sw.first);
    if (o.sites == "all") {
      w.sites = analog;
    } else {
      for (int s : w.sites) {
        if (std::find(analog.begin(), analog.end(), s) == analog.end()) {
          throw std::invalid_argument("device walk: site " + names.at(s) +
                                      " is not an analog layer (conv, linear or a matmul with a "
                                      "weight)");
        }
      }
    }
  }
  w.validate(model->num_sites());

  // The fingerprint names everything that determines the results.
  Json fp = w.fingerprint();
  fp["setting"] = o.noisy_training ? "noisy-training" : "clean-training";
  fp["data"] = {{"dataset", test.name}, {"limit", o.data.limit}, {"shuffle_seed", o.data.shuffle_seed}};
  NoisyTrainingOptions nt;
  if (o.noisy_training) {
    nt.spec = spec;
    nt.train = o.train_options;
    nt.eval_draws = o.eval_draws;
    fp["noisy_training"] = nt.fingerprint();
    fp["noisy_training"]["train_limit"] = o.train_limit;
  } else {
    fp["checkpoint_digest"] = o.model_digest.empty() ? model_state_digest(*model) : o.model_digest;
  }

  const int ranks = dist::size();
  if (ranks > 1 && !o.merge.empty()) {
    throw std::invalid_argument("merging runs as one process, not under mpirun");
  }
  const auto t0 = std::chrono::steady_clock::now();
  fs::create_directories(o.out);
  const std::string journal_path = (fs::path(o.out) / "journal.jsonl").string();
  if (dist::is_root()) {
    if (o.restart) {
      for (const auto& f : rank_journals(o.out)) fs::remove(f);
      if (fs::exists(journal_path)) fs::remove(journal_path);
    }
    // Ranks of an earlier MPI run (finished or killed) left their own journals: fold them in.
    fold_rank_journals(o.out, journal_path);
    // Validates an existing journal against this sweep before any rank starts.
    if (ranks > 1) WalkJournal check(journal_path, fp);
  }
  dist::barrier();
  if (o.noisy_training && o.save_models) {
    nt.save_dir = (fs::path(o.out) / "models").string();
    fs::create_directories(nt.save_dir);
  }
  auto run_walk = [&](WalkJournal* journal) {
    if (!o.noisy_training) return walk_clean_model(*model, test, w, journal);
    return walk_noisy_training(*train, test, nt, w, names, journal);
  };

  WalkReport report;
  WalkResult& result = report.result;
  if (ranks > 1) {
    // Every rank appends what it evaluates to its own journal, starting from the merged
    // results of earlier runs; units go to whichever rank asks next (docs/mpi.md).
    std::vector<WalkRecord> earlier;
    if (fs::exists(journal_path)) earlier = WalkJournal::read(journal_path).second;
    WalkJournal own(rank_journal_path(o.out, dist::rank()), fp);
    own.preload(earlier);
    if (dist::is_root() && !earlier.empty()) {
      monitor.warn("resuming: " + std::to_string(earlier.size()) + " evaluations already in " +
                   journal_path);
    }
    w.progress = dist::is_root()
                     ? monitor.bar("walk (rank 0 of " + std::to_string(ranks) + ")")
                     : nullptr;
    {
      dist::TaskCounter counter;
      w.claim = [&counter] { return counter.next(); };
      result = run_walk(&own);
      w.claim = nullptr;
    }  // the counter is freed by all ranks together, after the last unit
    const int64_t evaluations = dist::sum(result.evaluations);
    torch::Tensor each = torch::zeros({ranks}, torch::kDouble);
    each[dist::rank()] = static_cast<double>(result.evaluations);
    dist::allreduce_sum(each);
    for (int r = 0; r < ranks; ++r) {
      report.evaluations_per_rank.push_back(static_cast<int64_t>(each[r].item<double>()));
    }
    dist::barrier();
    if (!dist::is_root()) return WalkReport{};
    fold_rank_journals(o.out, journal_path);
    WalkJournal journal(journal_path, fp);
    w.evaluate = false;
    w.progress = nullptr;
    result = run_walk(&journal);
    result.evaluations = evaluations;
    result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  } else {
    if (!o.merge.empty()) {
      std::vector<std::string> inputs;
      for (const auto& m : o.merge) inputs.push_back((fs::path(m) / "journal.jsonl").string());
      if (fs::exists(journal_path)) inputs.push_back(journal_path);
      const size_t n = merge_journals(inputs, journal_path);
      monitor.warn("merged " + std::to_string(n) + " records from " +
                   std::to_string(o.merge.size()) + " shard(s) into " + journal_path);
      w.evaluate = false;
    }
    WalkJournal journal(journal_path, fp);
    if (!journal.records().empty() && o.merge.empty()) {
      monitor.warn("resuming: " + std::to_string(journal.records().size()) +
                   " evaluations already in " + journal_path);
    }
    w.progress = monitor.bar("walk");
    result = run_walk(&journal);
  }

  report.context = RunContext::capture(o.device.str());
  report.noisy_training = o.noisy_training;
  report.checkpoint = o.source;
  report.model = spec;
  report.dataset = test.name;
  report.samples = test.size();
  report.limit = o.data.limit;
  report.shuffle_seed = o.data.shuffle_seed;
  report.noise = w.noise;
  if (w.device) {
    report.device = w.device->to_json(names);
    report.device_sweep = w.device_sweep == WalkOptions::DeviceSweep::kTime ? "time" : "scale";
  }
  report.grid = w.grid;
  report.repeats = w.repeats;
  report.adaptive = w.adaptive;
  report.shard = o.shard_text.empty() ? "1/1" : o.shard_text;
  report.mpi_ranks = ranks;
  report.fingerprint = fp;
  if (o.noisy_training) report.training = nt.train.to_json(names);
  report.site_names = names;

  // Outputs: long-form CSV, JSON summary, figures.
  write_file_atomic((fs::path(o.out) / "walk.csv").string(), report.csv());
  write_file_atomic((fs::path(o.out) / "walk.json").string(), report.to_json().dump(2) + "\n");
  report.written = {"walk.csv", "walk.json"};
  if ((o.figures.png || o.figures.svg) && !result.sites.empty()) {
    for (const auto& f : write_walk_figures(report.plot_data(), o.out, o.figures)) {
      report.written.push_back(fs::path(f).filename().string());
    }
    if (o.noisy_training) {
      for (const auto& f : write_dynamics_figures(report.dynamics_data(), o.out, o.figures)) {
        report.written.push_back(fs::path(f).filename().string());
      }
    }
  }
  return report;
}

// ---- The report's forms ---------------------------------------------------------------------

Json WalkReport::to_json() const {
  Json sites = Json::array();
  for (const auto& c : result.sites) sites.push_back(curve_json(c, result.records, noisy_training));
  Json prov = context.to_json();
  Json j{{"provenance", prov},
         {"setting", setting()},
         {"checkpoint", checkpoint},
         {"model", model.to_json()},
         {"dataset",
          {{"name", dataset},
           {"split", "test"},
           {"samples", samples},
           {"limit", limit},
           {"shuffle_seed", shuffle_seed}}},
         {"noise", noise.to_json()},
         {"grid", grid.to_json()},
         {"repeats", repeats},
         {"adaptive", adaptive},
         {"clean_accuracy", result.clean_accuracy},
         {"chance", result.chance},
         {"chance_margin", result.margin},
         {"threshold", result.threshold},
         {"midpoint_definition", kMidpointDefinition},
         {"sites", sites},
         {"global", result.global ? curve_json(*result.global, result.records, noisy_training)
                                  : Json(nullptr)},
         {"units_total", result.units_total},
         {"units_done", result.units_done},
         {"complete", result.complete()},
         {"evaluations_run", result.evaluations},
         {"seconds", result.seconds},
         {"shard", shard},
         {"mpi", {{"ranks", mpi_ranks}, {"evaluations_per_rank", evaluations_per_rank}}},
         {"fingerprint", fingerprint}};
  if (noisy_training) j["noisy_training"] = training;
  if (!device.is_null()) {
    j["device"] = device;
    j["device_sweep"] = device_sweep;
  }
  if (!result.metric.is_accuracy()) {
    j["metric"] = result.metric.name();
    j["metric_higher_is_better"] = result.metric.higher_is_better();
  }
  return keys_for_metric(j, result.metric);
}

WalkReport WalkReport::from_json(const Json& input) {
  if (!input.is_object() || !input.contains("sites") || !input.at("sites").is_array()) {
    throw std::invalid_argument("not a quell walk result (no \"sites\" list)");
  }
  WalkReport r;
  r.result.metric = metric_of_report(input);
  const Json j = keys_from_metric(input, r.result.metric);
  try {
    r.context = RunContext::from_json(j.value("provenance", Json::object()));
    r.noisy_training = j.value("setting", "") == "noisy training";
    r.checkpoint = j.value("checkpoint", "");
    if (j.contains("model")) r.model = ModelSpec::from_json(j.at("model"));
    const Json d = j.value("dataset", Json::object());
    r.dataset = d.value("name", "");
    r.samples = json::integer_or<int64_t>(d, "samples", 0);
    r.limit = json::integer_or<int64_t>(d, "limit", 0);
    r.shuffle_seed = json::integer_or<uint64_t>(d, "shuffle_seed", 0);
    if (j.contains("device") && j.at("device").is_object()) {
      r.device = j.at("device");
      r.device_sweep = j.value("device_sweep", std::string("time"));
    }
    if (j.contains("grid") && j.at("grid").is_object()) {
      const Json& g = j.at("grid");
      r.grid.text = g.value("text", "");
      const std::string spacing = g.value("spacing", "log");
      r.grid.spacing = spacing == "linear" ? SigmaGrid::Spacing::kLinear
                       : spacing == "list" ? SigmaGrid::Spacing::kList
                                           : SigmaGrid::Spacing::kLog;
      r.grid.step = g.value("step", 0.0);
      r.grid.values = g.value("values", std::vector<double>{});
    }

    r.repeats = json::integer_or(j, "repeats", 0);
    r.adaptive = j.value("adaptive", false);
    r.result.clean_accuracy = j.value("clean_accuracy", 0.0);
    r.result.chance = j.value("chance", 0.0);
    r.result.margin = j.value("chance_margin", 0.0);
    r.result.threshold = j.value("threshold", 0.0);
    for (const auto& s : j.at("sites")) r.result.sites.push_back(curve_from_json(s));
    if (j.contains("global") && j.at("global").is_object()) {
      r.result.global = curve_from_json(j.at("global"));
    }
    r.result.units_total = json::integer_or(j, "units_total", 0);
    r.result.units_done = json::integer_or(j, "units_done", 0);
    r.result.evaluations = json::integer_or<int64_t>(j, "evaluations_run", 0);
    r.result.seconds = j.value("seconds", 0.0);
    r.shard = j.value("shard", "1/1");
    const Json mpi = j.value("mpi", Json::object());
    r.mpi_ranks = json::integer_or(mpi, "ranks", 1);
    r.evaluations_per_rank = json::integers_or_empty<int64_t>(mpi, "evaluations_per_rank");
    r.fingerprint = j.value("fingerprint", Json::object());
    r.training = j.value("noisy_training", Json(nullptr));
    for (const auto& c : r.result.sites) r.site_names.push_back(c.name);
  } catch (const Json::exception& e) {
    throw std::invalid_argument(std::string("not a quell walk result: ") + e.what());
  }
  return r;
}

WalkReport WalkReport::read(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error(path + ": cannot open walk result");
  Json j;
  try {
    j = Json::parse(in);
  } catch (const std::exception& e) {
    throw std::runtime_error(path + ": not valid JSON (" + std::string(e.what()).substr(0, 80) +
                             ")");
  }
  try {
    return from_json(j);
  } catch (const std::invalid_argument& e) {
    throw std::runtime_error(path + ": " + e.what());
  }
}

std::string WalkReport::csv() const {
  const std::string kind = noise.str();
  std::vector<std::string> header = {"site", "name", "noise", "sigma", "repeat",
                                     result.metric.key(), "loss"};
  if (noisy_training) {
    for (const char* h : {"mean_abs", "rms", "max_abs", "binarization"}) header.push_back(h);
  }
  CsvTable csv(header);
  auto name_of = [&](int site) {
    return site >= 0 ? site_names.at(static_cast<size_t>(site))
                     : site == WalkRecord::kGlobalSite ? "global" : "clean";
  };
  for (const auto& r : result.records) {
    std::vector<std::string> row = {std::to_string(r.site), name_of(r.site), kind,
                                    fmt_double(r.sigma, 17), std::to_string(r.repeat),
                                    fmt_double(r.accuracy, 8), fmt_double(r.loss, 8)};
    if (noisy_training) {
      const Json all = r.extra.is_object() ? r.extra.value("all", Json::object()) : Json::object();
      for (const char* h : {"mean_abs", "rms", "max_abs", "binarization"}) {
        row.push_back(all.contains(h) && all.at(h).is_number()
                          ? fmt_double(all.at(h).get<double>(), 8)
                          : "");
      }
    }
    csv.add_row(row);
  }
  return csv.str();
}

std::string WalkReport::walked() const {
  if (device.is_null()) return noise.str() + " noise";
  std::string name = "device";
  if (device.contains("model") && device.at("model").is_object()) {
    name = device.at("model").value("name", name);
  }
  return name + " device per layer, " +
         (device_sweep == "scale" ? "noise scale at " +
                                        duration_str(device.value("time", 0.0)) +
                                        " after programming"
                                  : std::string("time since programming"));
}

std::string WalkReport::sweep_label() const {
  if (device.is_null()) return "noise level sigma";
  return device_sweep == "scale" ? "device noise scale (x the model's sigmas)"
                                 : "time since programming (s)";
}

std::string WalkReport::table() const {
  const WalkResult& r = result;
  std::ostringstream os;
  char line[256];
  os << "walk " << model.name << " on " << dataset << " test (" << samples << " samples), "
     << walked() << ", " << setting() << ", "
     << (adaptive ? "adaptive search" : "grid " + grid.text) << ", " << repeats << " repeat(s)\n";
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
    if (c.early_stopped) {  // a walk.json read back may say so without any point
      note += std::string(note.empty() ? "" : "; ") + "early stop at chance" +
              (c.sigma.empty() ? "" : ", sigma " + fmt_double(c.sigma.back(), 4));
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
    std::string text(256 + c.name.size() + note.size(), '\0');
    const int n = std::snprintf(text.data(), text.size(), "%5s  %-*s %11s  %-23s %6zu  %s\n",
                                idx.c_str(), width, c.name.c_str(),
                                fmt_mid(c.midpoint.value).c_str(), ci.c_str(), c.sigma.size(),
                                note.c_str());
    text.resize(static_cast<size_t>(
        std::max(0, std::min<int>(n, static_cast<int>(text.size()) - 1))));
    os << text;
  };
  for (const auto& c : r.sites) row(c);
  if (r.global) row(*r.global);
  os << r.evaluations << " evaluations in " << fmt_double(r.seconds, 3) << " s";
  if (!r.complete()) {
    int shards = 1;
    std::sscanf(shard.c_str(), "%*d/%d", &shards);
    os << "; INCOMPLETE: " << (r.units_total - r.units_done) << " of " << r.units_total
       << " units missing" << (shards > 1 ? " (other shards: merge their journals)" : "");
  }
  os << "\n";
  return text_for_metric(os.str(), r.metric, r.metric.label());
}

WalkPlotData WalkReport::plot_data() const {
  WalkPlotData d;
  d.title = model.name + ", " + walked() + ", " + setting();
  d.sigma_label = sweep_label();
  if (!device.is_null()) d.sweep_symbol = device_sweep == "scale" ? "scale" : "time";
  d.log_sigma = grid.spacing != SigmaGrid::Spacing::kLinear;
  d.clean_accuracy = result.clean_accuracy;
  d.chance = result.chance;
  d.metric_label = result.metric.label();
  d.higher_is_better = result.metric.higher_is_better();
  if (!result.metric.is_fraction()) {
    // From the best value seen (clean included) to a little past the floor: noise can make a
    // model far worse than the floor (perplexities of 1e9), which would flatten every curve;
    // points beyond are clipped. Perplexity on a log axis (its midpoint scale).
    const Metric& m = result.metric;
    d.floor_label = "floor";
    d.log_y = m.kind() == Metric::Kind::kPerplexity;
    const double clean = result.clean_accuracy, floor = result.chance;
    double lo = std::min(clean, floor), hi = std::max(clean, floor);
    for (const auto& c : result.sites) {
      for (const auto& a : c.accuracy) {
        if (std::isfinite(a.mean)) lo = std::min(lo, a.mean), hi = std::max(hi, a.mean);
      }
    }
    // Half the clean-to-floor distance past the floor, in the metric's score scale.
    const double beyond = m.from_score(m.score(floor) - 0.5 * (m.score(clean) - m.score(floor)));
    if (std::isfinite(beyond)) hi = std::min(hi, std::max(beyond, floor));
    if (std::isfinite(lo) && std::isfinite(hi) && hi > lo) {
      d.y_lo = d.log_y ? lo / 1.1 : lo - 0.05 * (hi - lo);
      d.y_hi = d.log_y ? hi * 1.1 : hi + 0.05 * (hi - lo);
    }
  }
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
  for (const auto& c : result.sites) d.sites.push_back(curve(c));
  if (result.global) d.reference.push_back(curve(*result.global));
  return d;
}

DynamicsPlotData WalkReport::dynamics_data() const {
  DynamicsPlotData d;
  d.title = model.name + ", " + noise.str() + " noise, " + setting();
  d.log_sigma = grid.spacing != SigmaGrid::Spacing::kLinear;
  auto stat = [](const WalkRecord& rec, const char* key) {
    const Json& all = rec.extra.at("all");
    return all.contains(key) && all.at(key).is_number() ? all.at(key).get<double>()
                                                        : std::nan("");
  };
  std::vector<double> clean_rms, clean_bin;
  for (const auto& rec : result.records) {
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
  for (const auto& c : result.sites) {
    DynamicsSeries s;
    s.site = c.site;
    s.label = std::to_string(c.site) + " " + c.name;
    for (double sigma : c.sigma) {
      std::vector<double> rms, bin;
      for (const auto& rec : result.records) {
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

}  // namespace quell
