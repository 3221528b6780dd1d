// The denoising-block study (docs/denoise.md): rankings, placement search under parameter
// budgets, final trainings, the comparison, and the report's JSON and CSV forms.
#include "quell/denoise_study.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
#include <set>
#include <sstream>
#include <tuple>

#include "quell/dist.h"
#include "quell/journal.h"
#include "quell/load.h"
#include "quell/walk.h"
#include "quell/walk_study.h"
#include "util/json.h"

namespace quell {
namespace {

// Adds the wall time from its construction to its destruction to seconds[name].
class PhaseTimer {
 public:
  PhaseTimer(std::map<std::string, double>& seconds, std::string name)
      : seconds_(seconds), name_(std::move(name)), start_(std::chrono::steady_clock::now()) {}
  ~PhaseTimer() {
    seconds_[name_] +=
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  }
  PhaseTimer(const PhaseTimer&) = delete;
  PhaseTimer& operator=(const PhaseTimer&) = delete;

 private:
  std::map<std::string, double>& seconds_;
  std::string name_;
  std::chrono::steady_clock::time_point start_;
};

namespace fs = std::filesystem;

std::string pct(double v) { return fmt_double(v, 3) + "%"; }

// Rankings keep "inf" for sites below a walk's grid (as written since the first reports).
Json ranking_value(double v) { return std::isfinite(v) ? Json(v) : Json("inf"); }

// Trained block weights by (site, block), to warm-start later placements of the search.
using BlockCache = std::map<std::string, std::map<std::string, torch::Tensor>>;

std::string block_key(const BlockPlacement& b) {
  return std::to_string(b.site) + "@" + b.block.str();
}

void restore_blocks(ModelImpl& m, const BlockCache& cache) {
  torch::NoGradGuard no_grad;
  for (const auto& b : m.denoiser_placement()) {
    const auto it = cache.find(block_key(b));
    if (it == cache.end()) continue;
    for (auto& p : m.denoiser(b.site)->named_parameters()) p.value().copy_(it->second.at(p.key()));
  }
}

void store_blocks(ModelImpl& m, BlockCache& cache) {
  for (const auto& b : m.denoiser_placement()) {
    auto& slot = cache[block_key(b)];
    for (const auto& p : m.denoiser(b.site)->named_parameters()) {
      slot[p.key()] = p.value().detach().clone();
    }
  }
}

const char* ci_over(const EvalResult& r) { return r.chip_level ? "chips" : "draws"; }

Json sensitivity_json(const std::vector<SiteSensitivity>& v) {
  Json a = Json::array();
  for (const auto& s : v) a.push_back({s.site, s.name, number_or_string(s.value)});
  return a;
}

std::vector<SiteSensitivity> sensitivity_from(const Json& a) {
  std::vector<SiteSensitivity> v;
  for (const auto& s : a) {
    v.push_back(
        {json::integer(s.at(0), "site"), s.at(1).get<std::string>(), number_from_json(s.at(2))});
  }
  return v;
}

Json draws_json(const EvalResult& r) {
  Json a = Json::array();
  for (const auto& d : r.draws) a.push_back({d.chip, d.draw, d.accuracy, d.loss});
  return a;
}

std::vector<DrawResult> draws_from(const Json& a) {
  std::vector<DrawResult> v;
  for (const auto& d : a) {
    v.push_back({json::integer(d.at(0), "chip"), json::integer(d.at(1), "draw"),
                 d.at(2).get<double>(), d.at(3).get<double>()});
  }
  return v;
}

// A noisy evaluation in report.json (comparison rows and bounds): the headline summary, what
// its CI is over, the drop from the backbone's clean value and every (chip, draw) pass (rows
// share the noise streams, so differences between rows can be paired).
Json noisy_json(const EvalResult& r, double base_clean) {
  const Summary& h = r.headline();
  Json draws = Json::array();
  for (const auto& d : r.draws) {
    draws.push_back({{"chip", d.chip}, {"draw", d.draw}, {"accuracy", d.accuracy}});
  }
  return Json{{"noisy", summary_to_json(h)},
              {"ci_over", ci_over(r)},
              {"drop_vs_clean_points", 100.0 * (base_clean - h.mean)},
              {"draws", draws}};
}

EvalResult noisy_from_json(const Json& c) {
  EvalResult r;
  r.chip_level = c.value("ci_over", "draws") == "chips";
  (r.chip_level ? r.chip_accuracy : r.accuracy) = summary_from_json(c.at("noisy"));
  for (const auto& d : c.value("draws", Json::array())) {
    r.draws.push_back({json::integer_or(d, "chip", 0), json::integer_or(d, "draw", 0),
                       d.value("accuracy", 0.0), 0.0});
  }
  return r;
}

// The configuration with the sites' noise, ADC and repetitions removed (as if each block
// removed exactly its own site's noise).
NoiseConfig without_sites(NoiseConfig c, const std::vector<int>& sites) {
  for (int s : sites) c.sites.erase(s);
  return c;
}

// Only the per-chip part (static, aging, weight noise) or only the per-pass (dynamic) part.
NoiseConfig only_part(NoiseConfig c, bool per_chip) {
  for (auto it = c.sites.begin(); it != c.sites.end();) {
    auto& v = it->second.noise;
    v.erase(std::remove_if(v.begin(), v.end(),
                           [&](const NoiseSpec& n) {
                             return (n.temporal != Temporal::kDynamic) != per_chip;
                           }),
            v.end());
    if (it->second.is_identity()) {
      it = c.sites.erase(it);
    } else {
      ++it;
    }
  }
  if (!per_chip) c.weight = WeightNoise{};
  return c;
}

// What determines the study's results, for its journal.
Json study_fingerprint(const DenoiseStudyOptions& o, ModelImpl& backbone, const Dataset& train,
                       const Dataset& test, const Json& noise, const Json& training) {
  Json options{{"sites", o.sites},
               {"block", o.block},
               {"ratios", o.ratios},
               {"budgets", o.budgets},
               {"search", o.search},
               {"walk", o.walk_json.empty() ? "" : file_digest(o.walk_json)},
               {"drop_ranking", o.drop_ranking},
               {"all_sites", o.all_sites},
               {"finetune", o.finetune},
               {"finetune_lr", o.finetune_lr},
               {"train_limit", o.train_limit},
               {"val_size", o.val_size},
               {"search_limit", o.search_limit},
               {"search_epochs", o.search_epochs},
               {"search_width", o.search_width},
               {"search_draws", o.search_draws},
               {"taylor_samples", o.taylor_samples},
               {"min_gain", o.min_gain},
               {"eval", {{"draws", o.eval.draws}, {"chips", o.eval.chips},
                         {"batch_size", o.eval.batch_size}}},
               {"robustness_levels", o.robustness_levels},
               {"robust_draws", o.robust_draws},
               {"bounds", o.bounds}};
  if (o.calibrate) {
    options["calibration"] = {{"samples", o.calibration.samples},
                              {"epochs", o.calibration.epochs},
                              {"lr", o.calibration.lr},
                              {"batch_size", o.calibration.batch_size},
                              {"feature_weight", o.calibration.feature_weight},
                              {"holdout", o.calibration.holdout},
                              {"check_draws", o.calibration.check_draws},
                              {"seed", o.calibration.seed}};
  }
  if (!o.metric.empty() && o.metric != "auto") options["metric"] = Metric::parse(o.metric).name();
  return Json{{"model", model_state_digest(backbone)},
              {"data", {{"train", tensor_digest({train.inputs, train.targets})},
                        {"test", tensor_digest({test.inputs, test.targets})}}},
              {"noise", noise},
              {"training", training},
              {"options", options}};
}

// The checks that need the backbone, and what they resolve: the eligible sites and the
// candidate blocks (every eligible site x ratio; one per site for channel blocks).
struct Checked {
  std::vector<int> sites;
  std::vector<Candidate> candidates;
};

Checked check_with(ModelImpl& backbone, const DenoiseStudyOptions& opts) {
  opts.validate();
  const std::string what = opts.source.empty() ? backbone.spec().name : opts.source;
  if (backbone.has_denoisers()) {
    throw std::invalid_argument(what + ": already has denoising blocks; the study needs the "
                                       "backbone");
  }
  backbone.engine().configure(opts.noise);  // validates the noise against the calibration
  backbone.engine().configure(NoiseConfig{});
  Checked c;
  c.sites = select_sites(opts.sites, backbone.site_names());
  const BlockSpec block_kind = BlockSpec::parse(opts.block);
  const auto info = backbone.sites();
  // Integer values (token ids) take no noise: no block after them.
  c.sites.erase(std::remove_if(c.sites.begin(), c.sites.end(),
                               [&](int s) { return !info[static_cast<size_t>(s)].floating; }),
                c.sites.end());
  for (int s : c.sites) {
    std::set<std::string> seen;
    for (int r : opts.ratios) {
      BlockSpec b = block_kind;
      b.ratio = r;
      try {
        b.resolve(info[static_cast<size_t>(s)].shape);
      } catch (const std::invalid_argument&) {
        continue;  // this block kind cannot sit at this site
      }
      if (!seen.insert(b.str()).second) continue;
      c.candidates.push_back({s, b, b.params(info[static_cast<size_t>(s)].shape)});
    }
  }
  if (c.candidates.empty()) {
    throw std::invalid_argument("no site in sites '" + opts.sites + "' can take block " +
                                opts.block);
  }
  return c;
}

}  // namespace

void check_denoise_study(ModelImpl& backbone, const DenoiseStudyOptions& opts) {
  check_with(backbone, opts);
}

void DenoiseStudyOptions::validate() const {
  if (noise.empty()) {
    throw std::invalid_argument("no noise to mitigate: the noise configuration is empty");
  }
  BlockSpec::parse(block);
  for (int r : ratios) {
    if (r < 1) throw std::invalid_argument("ratios: every ratio must be >= 1, got " + std::to_string(r));
  }
  if (ratios.empty()) throw std::invalid_argument("ratios: give at least one");
  if (budgets.empty()) throw std::invalid_argument("budgets: give at least one");
  for (double b : budgets) {
    if (!(b > 0) || !std::isfinite(b)) {
      throw std::invalid_argument("budgets: every budget must be a positive percentage, got " +
                                  fmt_double(b));
    }
  }
  if (search != "greedy" && search != "none") {
    throw std::invalid_argument("search '" + search + "': expected greedy or none");
  }
  if (!(train.scale_lo >= 0) || !(train.scale_hi >= train.scale_lo) ||
      !std::isfinite(train.scale_hi)) {
    throw std::invalid_argument("training noise scale range: expected 0 <= scale_lo <= scale_hi");
  }
  if (calibrate) calibration.validate();
  for (double l : robustness_levels) {
    if (!(l >= 0) || !std::isfinite(l)) {
      throw std::invalid_argument("robustness levels: expected numbers >= 0, got " + fmt_double(l));
    }
  }
  if (!walk_json.empty() && !fs::exists(walk_json)) {
    throw std::invalid_argument("walk result " + walk_json + ": no such file");
  }
  if (!out.empty() && fs::exists(out) && !fs::is_directory(out)) {
    throw std::invalid_argument("output directory " + out + ": exists and is not a directory");
  }
  if (!out.empty() && (figures.png || figures.svg) && !gnuplot_available()) {
    throw std::runtime_error("gnuplot is not installed (apt-get install gnuplot-nox); or write "
                             "no figures");
  }
}

DenoiseReport run_denoise_study(Model backbone_holder, const Dataset& train_all,
                                const Dataset& test, const DenoiseStudyOptions& opts) {
  TORCH_CHECK(backbone_holder, "run_denoise_study: no model");
  const auto study_start = std::chrono::steady_clock::now();
  ModelImpl& backbone = *backbone_holder;
  const bool root = dist::is_root();
  const bool distributed = opts.distributed;
  const StudyMonitor& monitor = opts.monitor;
  std::vector<double> budgets = opts.budgets;
  std::sort(budgets.begin(), budgets.end());
  DenoiseTrainOptions train_opts = opts.train;
  train_opts.data_parallel = distributed;
  EvalOptions eval_opts = opts.eval;
  eval_opts.distributed = distributed;
  const std::string what = opts.source.empty() ? backbone.spec().name : opts.source;
  const Checked checked = check_with(backbone, opts);
  const std::vector<int>& sites = checked.sites;
  const std::vector<Candidate>& candidates = checked.candidates;
  const torch::Device device = opts.device;
  backbone.to(device);
  backbone.eval();
  const ModelSpec spec = backbone.spec();
  const auto names = backbone.site_names();
  const NoiseConfig& noise = opts.noise;
  train_opts.noise = noise;
  const int64_t backbone_params = backbone.num_params();
  auto overhead = [&](int64_t p) {
    return 100.0 * static_cast<double>(p) / static_cast<double>(backbone_params);
  };
  auto budget_params = [&](double b) {
    return static_cast<int64_t>(std::floor(b / 100.0 * static_cast<double>(backbone_params)));
  };

  // Data: training set = fit part + validation part (the search never sees the test set).
  check_model_fits(backbone, train_all, what);
  check_model_fits(backbone, test, what);
  const Metric metric = resolve_search_metric(opts.metric, test, spec.num_classes, "denoise");
  eval_opts.metric = metric;
  int64_t n_train = train_all.size();
  if (opts.train_limit > 0) n_train = std::min(n_train, opts.train_limit);
  const int64_t n_val = std::min(opts.val_size, n_train / 5);
  if (n_val < 1) throw std::invalid_argument("training set too small for a validation split");
  if (!opts.out.empty()) fs::create_directories(opts.out);
  const Dataset fit = slice_dataset(train_all, 0, n_train - n_val);
  const Dataset val = slice_dataset(train_all, n_train - n_val, n_val);
  const Dataset search_fit = slice_dataset(
      fit, 0, opts.search_limit > 0 ? std::min(opts.search_limit, fit.size()) : fit.size());
  monitor.say("denoise " + spec.name + " (" + std::to_string(backbone_params) +
              " parameters) on " + test.name + ": fit " + std::to_string(fit.size()) +
              ", validation " + std::to_string(val.size()) + ", test " +
              std::to_string(test.size()) + "; " + std::to_string(candidates.size()) +
              " candidate blocks at " + std::to_string(sites.size()) + " sites");

  EvalOptions search_eval = eval_opts;
  search_eval.draws = opts.search_draws;
  search_eval.chips = opts.search_draws;
  search_eval.progress = nullptr;

  DenoiseReport report;
  report.context = RunContext::capture(device.str());
  report.checkpoint = opts.source;
  report.model = spec;
  report.backbone_params = backbone_params;
  report.dataset = test.name;
  report.fit_size = fit.size();
  report.validation_size = val.size();
  report.search_fit_size = search_fit.size();
  report.test_size = test.size();
  report.chance = metric.floor(test, spec.num_classes);
  report.metric = metric;
  report.noise = noise.to_json(names);
  report.training = train_opts.to_json(names);
  report.search_method = opts.search;
  report.search_epochs = opts.search_epochs;
  report.search_draws = search_eval.draws;
  report.search_chips = search_eval.chips;
  report.min_gain = opts.min_gain;
  report.eval_draws = eval_opts.draws;
  report.eval_chips = eval_opts.chips;
  report.finetune = opts.finetune;
  report.finetune_epochs = train_opts.epochs;
  report.finetune_lr = opts.finetune_lr;
  report.budgets_pct = budgets;
  for (const auto& c : candidates) {
    report.candidates.push_back({c.site, names[static_cast<size_t>(c.site)], c.block.str(),
                                 c.params, overhead(c.params)});
  }

  // ---- Journal: what a killed study already finished -------------------------------------------
  // Under MPI rank 0 writes it and every rank reads it (a shared file system, as for the walk),
  // so that all ranks skip the same finished work and stay in lockstep.
  const bool journaled = !opts.out.empty();
  const bool writing_journal = journaled && root;
  const fs::path journal_dir = fs::path(opts.out) / "journal";
  const std::string journal_path = (fs::path(opts.out) / "journal.jsonl").string();
  const Json fingerprint = journaled ? study_fingerprint(opts, backbone, train_all, test,
                                                         report.noise, report.training)
                                     : Json();
  if (writing_journal && opts.restart) {
    fs::remove(journal_path);
    fs::remove_all(journal_dir);
  }
  if (writing_journal) StudyJournal(journal_path, "denoise", fingerprint);  // created, checked
  if (distributed) dist::barrier();
  StudyJournal journal(journaled ? journal_path : "", "denoise", fingerprint, root);
  if (writing_journal) fs::create_directories(journal_dir);
  if (journal.resumed() > 0) {
    monitor.warn("resuming: " + std::to_string(journal.resumed()) + " results already in " +
                 journal_path);
  }
  // A ranking from the journal, or computed and recorded.
  auto ranking = [&](const std::string& key, const std::function<std::vector<SiteSensitivity>()>& compute) {
    if (const Json* j = journal.find("ranking:" + key)) return sensitivity_from(*j);
    std::vector<SiteSensitivity> v = compute();
    journal.append("ranking:" + key, sensitivity_json(v));
    return v;
  };

  // ---- Rankings -------------------------------------------------------------------------------
  auto& rankings = report.rankings;
  std::optional<PhaseTimer> phase(std::in_place, report.seconds, "rankings");
  rankings["taylor"] = ranking("taylor", [&] {
    return taylor_sensitivity(backbone, fit, opts.taylor_samples);
  });
  if (distributed) {
    // Rank 0's values on every rank, so that every rank takes the same decisions (row 0 of
    // share_rows is rank 0's).
    auto& taylor = rankings["taylor"];
    const auto shared = dist::share_rows(1, static_cast<int64_t>(taylor.size()), [&](int64_t) {
      std::vector<double> v;
      for (const auto& s : taylor) v.push_back(s.value);
      return v;
    });
    for (size_t i = 0; i < taylor.size(); ++i) taylor[i].value = shared[0][i];
  }
  if (!opts.walk_json.empty()) rankings["walk"] = walk_sensitivity(opts.walk_json, names);
  if (opts.drop_ranking) {
    rankings["drop"] = ranking("drop", [&] {
      return drop_sensitivity(backbone, val, noise, sites, search_eval);
    });
  }
  // Rankings over the eligible sites only.
  std::map<std::string, std::vector<int>> order;
  const std::set<int> eligible(sites.begin(), sites.end());
  for (auto& [name, sens] : rankings) {
    std::vector<int> r;
    for (int s : rank_sites(sens)) {
      if (eligible.count(s)) r.push_back(s);
    }
    order[name] = r;
  }

  // ---- Search: short training on the fit subset, noisy evaluation on validation ---------------
  phase.emplace(report.seconds, "search");
  DenoiseTrainOptions search_train = train_opts;
  search_train.epochs = opts.search_epochs;
  BlockCache cache;
  std::map<std::string, Summary> memo;
  std::vector<PlacementScore> tried;
  Summary val_noisy;
  if (const Json* j = journal.find("search:none")) {
    val_noisy = summary_from_json(*j);
  } else {
    val_noisy = evaluate(backbone, val, noise, search_eval).headline();
    journal.append("search:none", summary_to_json(val_noisy, true));
  }
  int evaluations = 0;
  auto evaluate_placement = [&](const Placement& p) {
    const std::string key = p.label(names);
    if (const auto it = memo.find(key); it != memo.end()) return it->second;
    if (p.blocks.empty()) return memo[key] = val_noisy;
    ++evaluations;
    if (const Json* j = journal.find("search:" + key)) {
      // The blocks this training produced go to the warm-start cache, as if trained now.
      std::vector<torch::Tensor> tensors;
      torch::load(tensors, (journal_dir / j->at("file").get<std::string>()).string());
      size_t t = 0;
      for (const auto& b : j->at("blocks")) {
        auto& slot = cache[b.at("key").get<std::string>()];
        for (const auto& name : b.at("params")) slot[name.get<std::string>()] = tensors.at(t++);
      }
      return memo[key] = summary_from_json(j->at("validation"));
    }
    Model m = clone_model(backbone);
    m->to(device);
    m->set_denoisers(p.placement(), train_opts.seed);
    restore_blocks(*m, cache);
    train_denoisers(*m, search_fit, search_train);
    store_blocks(*m, cache);
    const Summary s = evaluate(*m, val, noise, search_eval).headline();
    if (writing_journal) {
      std::vector<torch::Tensor> tensors;
      Json blocks = Json::array();
      for (const auto& b : m->denoiser_placement()) {
        Json names_json = Json::array();
        for (const auto& q : m->denoiser(b.site)->named_parameters()) {
          names_json.push_back(q.key());
          tensors.push_back(q.value().detach().to(torch::kCPU).clone());
        }
        blocks.push_back({{"key", block_key(b)}, {"params", names_json}});
      }
      const std::string file = "search-" + std::to_string(evaluations) + ".pt";
      // Serialised in memory, then written atomically: LibTorch's file writer throws from its
      // destructor when the disk is full (std::terminate); write_file_atomic reports the error
      // and leaves no partial file.
      std::ostringstream bytes;
      torch::save(tensors, bytes);
      write_file_atomic((journal_dir / file).string(), bytes.str());
      journal.append("search:" + key, {{"validation", summary_to_json(s, true)},
                                       {"blocks", blocks},
                                       {"file", file}});
    }
    return memo[key] = s;
  };
  auto record = [&](const Placement& p, const std::string& method) {
    for (const auto& t : tried) {
      if (t.method == method && t.placement.label(names) == p.label(names)) return;
    }
    tried.push_back({p, evaluate_placement(p), method, 0});
  };
  record(Placement{}, "none");
  // The paper's rule with each ranking, at each budget (the first ratio's block per site).
  std::vector<Candidate> first_ratio;
  for (const auto& c : candidates) {
    const bool have = std::any_of(first_ratio.begin(), first_ratio.end(),
                                  [&](const Candidate& f) { return f.site == c.site; });
    if (!have) first_ratio.push_back(c);
  }
  std::map<double, Placement> taylor_choice;
  for (const auto& [name, r] : order) {
    for (double b : budgets) {
      const Placement p = greedy_by_rank(r, first_ratio, budget_params(b));
      record(p, name);
      if (name == "taylor") taylor_choice[b] = p;
    }
  }
  if (opts.search == "greedy") {
    measured_greedy(candidates, budget_params(budgets.back()), evaluate_placement, val_noisy,
                    opts.min_gain, &tried, root ? monitor.bar("search") : nullptr,
                    opts.search_width);
  }
  report.placements_trained = evaluations;
  phase.reset();
  monitor.say(std::to_string(evaluations) + " placements trained and evaluated in the search");

  // Operating points and their Pareto front (validation accuracy).
  std::vector<double> ov, acc;
  for (const auto& t : tried) {
    ov.push_back(overhead(t.placement.params()));
    acc.push_back(t.accuracy.mean);
  }
  const auto front = pareto_front(ov, acc);
  const std::set<size_t> on_front(front.begin(), front.end());
  for (size_t i = 0; i < tried.size(); ++i) {
    const auto& t = tried[i];
    report.operating_points.push_back({t.method, t.step, t.placement.label(names),
                                       t.placement.params(), ov[i], t.accuracy,
                                       on_front.count(i) > 0});
  }
  // The search's results are on disk before the (long) final trainings start.
  const bool writing = root && !opts.out.empty();
  auto put = [&](const std::string& file, const std::string& content) {
    if (!writing) return;
    write_file_atomic((fs::path(opts.out) / file).string(), content);
    report.written.push_back(file);
  };
  put("points.csv", report.points_csv());
  put("rankings.csv", report.rankings_csv());

  // Best evaluated placement within each budget (any method).
  std::map<double, Placement> chosen;
  for (double b : budgets) {
    const PlacementScore* best = nullptr;
    for (const auto& t : tried) {
      if (t.placement.params() > budget_params(b)) continue;
      if (!best || t.accuracy.mean > best->accuracy.mean) best = &t;
    }
    chosen[b] = best ? best->placement : Placement{};
  }

  // ---- Final models: full training on the fit set, evaluated on the test set -----------------
  std::map<std::string, Model> models;  // for the robustness curves
  // Test evaluations by model: a row whose model is an earlier row's (the chosen placement is
  // the Taylor rule's) takes that row's evaluation, the same model under the same seeds.
  std::map<const ModelImpl*, std::pair<double, EvalResult>> evaluated;
  const bool chips_matter = noise.has_static(), draws_matter = noise.has_dynamic();
  int finals = 0;
  // One row of the comparison: its model trained by `make` (or read back from the journal) and
  // evaluated clean and under the noise on the test set.
  auto add_row = [&](const std::string& name, const std::function<Model()>& make,
                     const std::string& placement, int64_t params) {
    PhaseTimer timer(report.seconds, "final");
    DenoiseComparisonRow r;
    r.model = name;
    r.placement = placement;
    r.params = params;
    r.overhead_pct = overhead(params);
    Model m{nullptr};
    ++finals;
    if (const Json* j = journal.find("final:" + name)) {
      if (j->at("file").is_string()) {
        m = load_checkpoint((journal_dir / j->at("file").get<std::string>()).string());
        m->to(device);
      } else {
        m = make();  // the backbone itself
      }
      r.clean_accuracy = j->at("clean").get<double>();
      r.noisy = summarize_draws(draws_from(j->at("draws")), chips_matter, draws_matter);
      evaluated.emplace(m.get(), std::make_pair(r.clean_accuracy, r.noisy));
    } else {
      m = make();
      if (const auto done = evaluated.find(m.get()); done != evaluated.end()) {
        std::tie(r.clean_accuracy, r.noisy) = done->second;
      } else {
        EvalOptions quiet = eval_opts;
        quiet.progress = nullptr;
        r.clean_accuracy = evaluate(*m, test, NoiseConfig{}, quiet).accuracy.mean;
        EvalOptions o = eval_opts;
        o.progress = root ? monitor.bar("eval " + name) : nullptr;
        r.noisy = evaluate(*m, test, noise, o);
        evaluated.emplace(m.get(), std::make_pair(r.clean_accuracy, r.noisy));
      }
      if (writing_journal) {
        Json file = nullptr;
        if (m.get() != &backbone) {
          const std::string f = "final-" + std::to_string(finals) + ".pt";
          CheckpointMeta meta = opts.meta;
          meta.spec = m->spec();
          m->to(torch::kCPU);
          save_checkpoint((journal_dir / f).string(), *m, meta);
          m->to(device);
          file = f;
        }
        journal.append("final:" + name,
                       {{"clean", r.clean_accuracy}, {"draws", draws_json(r.noisy)}, {"file", file}});
      }
    }
    report.comparison.push_back(r);
    models.emplace(name, m);
    return m;
  };
  auto train_placement = [&](const Placement& p, const std::string& label) {
    Model m = clone_model(backbone);
    m->to(device);
    m->set_denoisers(p.placement(), train_opts.seed);
    restore_blocks(*m, cache);
    DenoiseTrainOptions o = train_opts;
    o.progress = root ? monitor.bar(label) : nullptr;
    train_denoisers(*m, fit, o);
    return m;
  };
  // Per-chip calibrated blocks of a final model (read back from the journal, or calibrated and
  // evaluated on each test chip now).
  const bool calibrating = opts.calibrate && chips_matter;
  // Rows of one placement hold blocks trained identically (same seeds and data), so their
  // calibrations are identical too: the first is reused.
  std::map<std::string, DenoiseComparisonRow> calibrated;
  // `agnostic`: the row of the same blocks before calibration (a chip whose calibration is
  // refused takes its evaluation).
  auto add_calibrated = [&](const std::string& name, ModelImpl& m, const Placement& p,
                            DenoiseComparisonRow agnostic) {
    PhaseTimer timer(report.seconds, "calibration");
    DenoiseComparisonRow r;
    r.model = name;
    r.placement = p.label(names);
    r.params = p.params();
    r.overhead_pct = overhead(p.params());
    if (const auto same = calibrated.find(r.placement); same != calibrated.end()) {
      r = same->second;
      r.model = name;
    } else if (const Json* j = journal.find("calib:" + name)) {
      r.clean_accuracy = j->at("clean").get<double>();
      r.noisy = summarize_draws(draws_from(j->at("draws")), chips_matter, draws_matter);
      r.calibration_samples = json::integer<int64_t>(j->at("samples"), "samples");
      r.calibration_epochs = json::integer(j->at("epochs"), "epochs");
      r.calibration_seconds = j->at("seconds").get<double>();
      r.calibration_held_out = json::integer_or<int64_t>(*j, "held_out", 0);
      r.calibration_chips = json::integer_or(*j, "chips", 0);
      r.calibration_chips_kept = j->value("chips_kept", r.calibration_chips);
    } else {
      ChipCalibrationOptions c = opts.calibration;
      c.progress = root ? monitor.bar(name) : nullptr;
      EvalOptions o = eval_opts;
      o.progress = nullptr;
      const UncalibratedEval before{agnostic.noisy, agnostic.clean_accuracy};
      const ChipCalibrationResult res = calibrate_per_chip(m, fit, test, noise, c, o, &before);
      r.clean_accuracy = res.clean.mean;
      r.noisy = res.noisy;
      r.calibration_samples = res.samples;
      r.calibration_epochs = res.epochs;
      r.calibration_seconds = res.seconds_per_chip;
      r.calibration_held_out = res.held_out;
      r.calibration_chips = res.chips;
      r.calibration_chips_kept = res.chips_kept;
      journal.append("calib:" + name, {{"clean", r.clean_accuracy},
                                        {"draws", draws_json(r.noisy)},
                                        {"samples", r.calibration_samples},
                                        {"epochs", r.calibration_epochs},
                                        {"seconds", r.calibration_seconds},
                                        {"held_out", r.calibration_held_out},
                                        {"chips", r.calibration_chips},
                                        {"chips_kept", r.calibration_chips_kept}});
    }
    calibrated.emplace(r.placement, r);
    report.comparison.push_back(r);
  };
  add_row("unmitigated", [&] { return backbone_holder; }, "none", 0);
  std::vector<std::string> saved_files;
  for (double b : budgets) {
    const std::string tag = fmt_double(b) + "%";
    const Placement& tp = taylor_choice[b];
    if (!tp.blocks.empty()) {
      Model m = add_row("taylor greedy <=" + tag,
                        [&] { return train_placement(tp, "taylor " + tag); }, tp.label(names),
                        tp.params());
      if (calibrating) {
        add_calibrated("taylor greedy <=" + tag + " per chip", *m, tp, report.comparison.back());
      }
    }
    const Placement& cp = chosen[b];
    DenoiseChoice choice{cp.label(names), cp.params(), budget_params(b), ""};
    if (!cp.blocks.empty()) {
      const std::string name = "chosen <=" + tag;
      Model m = add_row(
          name,
          [&] {
            return cp.label(names) == tp.label(names) ? models.at("taylor greedy <=" + tag)
                                                      : train_placement(cp, "chosen " + tag);
          },
          cp.label(names), cp.params());
      const std::string file = "denoised-" + fmt_double(b) + ".pt";
      if (writing) {
        CheckpointMeta out_meta = opts.meta;
        out_meta.train_config = train_opts.to_json(names);
        out_meta.provenance = report.context.to_json();
        m->to(torch::kCPU);
        save_checkpoint((fs::path(opts.out) / file).string(), *m, out_meta);
        m->to(device);
      }
      if (!opts.out.empty()) {
        choice.checkpoint = file;
        saved_files.push_back(file);
      }
      if (calibrating) add_calibrated(name + " per chip", *m, cp, report.comparison.back());
    }
    report.chosen[tag] = choice;
  }
  if (opts.all_sites) {
    Placement all;
    all.blocks = first_ratio;
    Model m = add_row("all sites", [&] { return train_placement(all, "all sites"); },
                      all.label(names), all.params());
    if (calibrating) add_calibrated("all sites per chip", *m, all, report.comparison.back());
  }
  if (opts.finetune) {
    add_row(
        "noise-aware fine-tune",
        [&] {
          Model m = clone_model(backbone);
          m->to(device);
          TrainOptions t;
          t.data_parallel = distributed;
          t.epochs = train_opts.epochs;
          t.batch_size = train_opts.batch_size;
          t.lr = opts.finetune_lr;
          t.seed = train_opts.seed;
          t.noise = noise;
          t.progress = root ? monitor.bar("fine-tune") : nullptr;
          train(*m, fit, t);
          return m;
        },
        "whole network", 0);
    report.comparison.back().trains_parameters = backbone_params;
  }

  // ---- Bounds: the backbone with part of the noise removed -----------------------------------
  if (opts.bounds) {
    PhaseTimer timer(report.seconds, "bounds");
    auto add_bound = [&](const std::string& name, const std::string& removed,
                         const NoiseConfig& config) {
      DenoiseBound b{name, removed, {}};
      if (const Json* j = journal.find("bound:" + name)) {
        b.noisy = summarize_draws(draws_from(*j), config.has_static(), config.has_dynamic());
      } else {
        EvalOptions o = eval_opts;
        o.progress = nullptr;
        b.noisy = evaluate(backbone, test, config, o);
        journal.append("bound:" + name, draws_json(b.noisy));
      }
      report.bounds.push_back(std::move(b));
    };
    for (double b : budgets) {
      const Placement& p = chosen[b];
      if (p.blocks.empty()) continue;
      std::vector<int> at;
      std::string where;
      for (const auto& c : p.blocks) {
        at.push_back(c.site);
        where += (where.empty() ? "" : ",") + names[static_cast<size_t>(c.site)];
      }
      add_bound("oracle <=" + fmt_double(b) + "%", "all noise at " + where,
                without_sites(noise, at));
    }
    // The split needs both parts; a device's programming and tile noise are not separable here.
    if (chips_matter && draws_matter && !noise.device.enabled()) {
      add_bound("static only", "dynamic noise", only_part(noise, true));
      add_bound("dynamic only", "static, aging and weight noise", only_part(noise, false));
    }
  }

  // ---- Robustness: accuracy vs noise level ---------------------------------------------------
  if (!opts.robustness_levels.empty()) {
    PhaseTimer timer(report.seconds, "robustness");
    EvalOptions ro = eval_opts;
    ro.draws = opts.robust_draws;
    ro.chips = opts.robust_draws;
    ro.progress = nullptr;
    int k = 0;
    std::map<const ModelImpl*, std::vector<CurvePoint>> curve_of;
    for (const auto& r : report.comparison) {
      if (r.is_calibrated()) continue;  // one set of blocks per chip and level: not run
      SiteCurve c;
      c.site = k++;
      c.label = r.model;
      if (const Json* j = journal.find("robust:" + r.model)) {
        for (const auto& p : *j) {
          c.points.push_back({p.at(0).get<double>(), p.at(1).get<double>(),
                              p.at(2).get<double>(), p.at(3).get<double>()});
        }
      } else if (const auto done = curve_of.find(models.at(r.model).get());
                 done != curve_of.end()) {
        c.points = done->second;  // an earlier row's model (the same placement): its curve
        Json points = Json::array();
        for (const auto& p : c.points) points.push_back({p.sigma, p.mean, p.lo, p.hi});
        journal.append("robust:" + r.model, points);
      } else {
        Json points = Json::array();
        for (double level : opts.robustness_levels) {
          // At the configured noise (level 1) the row's own evaluation holds these passes
          // (the same chips and draws, the first ro.chips x ro.draws of them): no second run.
          const EvalResult same = level == 1.0 ? passes_within(r.noisy, noise, ro) : EvalResult{};
          const Summary s =
              !same.draws.empty()
                  ? same.headline()
                  : evaluate(*models.at(r.model), test, noise.scaled(level), ro).headline();
          c.points.push_back({level, s.mean, s.ci_low, s.ci_high});
          points.push_back({level, s.mean, s.ci_low, s.ci_high});
        }
        journal.append("robust:" + r.model, points);
      }
      curve_of.emplace(models.at(r.model).get(), c.points);
      report.robustness.push_back(c);
    }
  }

  // ---- Outputs ----------------------------------------------------------------------------------
  report.seconds["total"] =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - study_start).count();
  {
    std::string times;
    for (const auto& [name, sec] : report.seconds) {
      if (name != "total") times += (times.empty() ? "" : ", ") + name + " " + fmt_double(sec, 3);
    }
    monitor.say("study done in " + fmt_double(report.seconds["total"], 3) + " s (" + times + ")");
  }
  if (!writing) return report;  // rank 0 writes the outputs
  put("report.csv", report.report_csv());
  if (!report.robustness.empty()) put("robustness.csv", report.robustness_csv());
  put("report.json", report.to_json().dump(2) + "\n");
  for (const auto& f : saved_files) report.written.push_back(f);
  if (opts.figures.png || opts.figures.svg) {
    const double lo = train_opts.scale_lo, hi = train_opts.scale_hi;
    for (const auto& f : write_denoise_figures(report.plot_data(lo == hi ? lo : std::nan("")),
                                               opts.out, opts.figures)) {
      report.written.push_back(fs::path(f).filename().string());
    }
  }
  return report;
}

// ---- The report's forms ---------------------------------------------------------------------

Json DenoiseReport::to_json() const {
  const DenoiseComparisonRow* base = comparison.empty() ? nullptr : &comparison.front();
  Json jrows = Json::array();
  for (const auto& r : comparison) {
    Json jr = noisy_json(r.noisy, base->clean_accuracy);
    jr.update(Json{{"model", r.model},
                   {"placement", r.placement},
                   {"params", r.params},
                   {"overhead_pct", r.overhead_pct},
                   {"clean_accuracy", r.clean_accuracy}});
    if (r.trains_parameters > 0) jr["trains_parameters"] = r.trains_parameters;
    if (r.is_calibrated()) {
      jr["calibration"] = {{"per", "chip"},
                           {"samples", r.calibration_samples},
                           {"epochs", r.calibration_epochs},
                           {"seconds_per_chip", r.calibration_seconds},
                           {"held_out", r.calibration_held_out},
                           {"chips", r.calibration_chips},
                           {"chips_kept", r.calibration_chips_kept}};
    }
    jrows.push_back(jr);
  }
  Json jbounds = Json::array();
  for (const auto& b : bounds) {
    Json jb = noisy_json(b.noisy, base->clean_accuracy);
    jb.update(Json{{"name", b.name}, {"removed", b.removed}});
    jbounds.push_back(jb);
  }
  Json jpoints = Json::array();
  for (const auto& p : operating_points) {
    jpoints.push_back({{"method", p.method},
                       {"step", p.step},
                       {"placement", p.placement},
                       {"params", p.params},
                       {"overhead_pct", p.overhead_pct},
                       {"validation", summary_to_json(p.validation)},
                       {"pareto", p.pareto}});
  }
  Json jrank = Json::object();
  for (const auto& [name, sens] : rankings) {
    const auto r = rank_sites(sens);
    Json arr = Json::array();
    for (const auto& s : sens) {
      const int pos = static_cast<int>(std::find(r.begin(), r.end(), s.site) - r.begin()) + 1;
      arr.push_back(
          {{"site", s.site}, {"name", s.name}, {"value", ranking_value(s.value)}, {"rank", pos}});
    }
    jrank[name] = arr;
  }
  Json jcands = Json::array();
  for (const auto& c : candidates) {
    jcands.push_back({{"site", c.site},
                      {"name", c.name},
                      {"block", c.block},
                      {"params", c.params},
                      {"overhead_pct", c.overhead_pct}});
  }
  Json jchosen = Json::object();
  for (const auto& [tag, c] : chosen) {
    jchosen[tag] = {{"placement", c.placement},
                    {"params", c.params},
                    {"budget_params", c.budget_params},
                    {"checkpoint", c.checkpoint.empty() ? Json(nullptr) : Json(c.checkpoint)}};
  }
  std::vector<double> ov, acc;
  for (const auto& p : operating_points) {
    ov.push_back(p.overhead_pct);
    acc.push_back(p.validation.mean);
  }
  Json jfront = Json::array();
  for (size_t i : pareto_front(ov, acc)) jfront.push_back(jpoints[i]);
  Json provenance = context.to_json();
  if (!seconds.empty()) provenance["seconds"] = seconds;
  Json j{{"provenance", provenance},
         {"checkpoint", checkpoint},
         {"model", model.to_json()},
         {"backbone_params", backbone_params},
         {"dataset",
          {{"name", dataset},
           {"fit", fit_size},
           {"validation", validation_size},
           {"search_fit", search_fit_size},
           {"test", test_size},
           {"chance", chance}}},
         {"noise", noise},
         {"training", training},
         {"search",
          {{"method", search_method},
           {"epochs", search_epochs},
           {"draws", search_draws},
           {"chips", search_chips},
           {"min_gain", min_gain},
           {"placements_trained", placements_trained}}},
         {"evaluation", {{"draws", eval_draws}, {"chips", eval_chips}}},
         {"budgets_pct", budgets_pct},
         {"candidates", jcands},
         {"rankings", jrank},
         {"chosen", jchosen},
         {"comparison", jrows},
         {"bounds", jbounds},
         {"operating_points", jpoints},
         {"pareto_front", jfront}};
  if (finetune) j["finetune"] = {{"epochs", finetune_epochs}, {"lr", finetune_lr}};
  if (!metric.is_accuracy()) j["metric"] = metric.name();
  return keys_for_metric(j, metric);
}

DenoiseReport DenoiseReport::from_json(const Json& input) {
  const Metric metric = metric_of_report(input);
  const Json j = keys_from_metric(input, metric);
  if (!j.is_object() || !j.contains("comparison") || !j.contains("noise")) {
    throw std::invalid_argument("not a quell denoise report.json (no comparison or noise)");
  }
  DenoiseReport r;
  r.metric = metric;
  try {
    const Json prov = j.value("provenance", Json::object());
    r.context = RunContext::from_json(prov);
    if (prov.contains("seconds")) {
      r.seconds = prov.at("seconds").get<std::map<std::string, double>>();
    }
    r.checkpoint = j.value("checkpoint", "");
    if (j.contains("model")) r.model = ModelSpec::from_json(j.at("model"));
    r.backbone_params = json::integer_or<int64_t>(j, "backbone_params", 0);
    const Json d = j.value("dataset", Json::object());
    r.dataset = d.value("name", "");
    r.fit_size = json::integer_or<int64_t>(d, "fit", 0);
    r.validation_size = json::integer_or<int64_t>(d, "validation", 0);
    r.search_fit_size = json::integer_or<int64_t>(d, "search_fit", 0);
    r.test_size = json::integer_or<int64_t>(d, "test", 0);
    r.chance = d.value("chance", 0.0);
    r.noise = j.at("noise");
    r.training = j.value("training", Json::object());
    const Json s = j.value("search", Json::object());
    r.search_method = s.value("method", "");
    r.search_epochs = json::integer_or(s, "epochs", 0);
    r.search_draws = json::integer_or(s, "draws", 0);
    r.search_chips = json::integer_or(s, "chips", 0);
    r.min_gain = s.value("min_gain", 0.0);
    r.placements_trained = json::integer_or(s, "placements_trained", 0);
    const Json e = j.value("evaluation", Json::object());
    r.eval_draws = json::integer_or(e, "draws", 0);
    r.eval_chips = json::integer_or(e, "chips", 0);
    if (j.contains("finetune")) {
      r.finetune = true;
      r.finetune_epochs = json::integer_or(j.at("finetune"), "epochs", 0);
      r.finetune_lr = j.at("finetune").value("lr", 0.0);
    }
    r.budgets_pct = j.value("budgets_pct", std::vector<double>{});
    for (const auto& c : j.value("candidates", Json::array())) {
      r.candidates.push_back({json::integer_or(c, "site", 0), c.value("name", ""),
                              c.value("block", ""), json::integer_or<int64_t>(c, "params", 0),
                              c.value("overhead_pct", 0.0)});
    }
    const Json rankings_json = j.value("rankings", Json::object());
    for (const auto& [name, arr] : rankings_json.items()) {
      auto& v = r.rankings[name];
      for (const auto& s : arr) {
        v.push_back(
            {json::integer_or(s, "site", 0), s.value("name", ""), number_from_json(s.at("value"))});
      }
    }
    const Json chosen_json = j.value("chosen", Json::object());
    for (const auto& [tag, c] : chosen_json.items()) {
      const Json file = c.value("checkpoint", Json(nullptr));
      r.chosen[tag] = {c.value("placement", "none"), json::integer_or<int64_t>(c, "params", 0),
                       json::integer_or<int64_t>(c, "budget_params", 0),
                       file.is_string() ? file.get<std::string>() : ""};
    }
    for (const auto& c : j.at("comparison")) {
      DenoiseComparisonRow row;
      row.model = c.at("model").get<std::string>();
      row.placement = c.value("placement", "none");
      row.params = json::integer_or<int64_t>(c, "params", 0);
      row.overhead_pct = c.value("overhead_pct", 0.0);
      row.clean_accuracy = c.value("clean_accuracy", 0.0);
      row.trains_parameters = json::integer_or<int64_t>(c, "trains_parameters", 0);
      row.noisy = noisy_from_json(c);
      if (c.contains("calibration")) {
        const Json& cal = c.at("calibration");
        row.calibration_samples = json::integer<int64_t>(cal.at("samples"), "samples");
        row.calibration_epochs = json::integer(cal.at("epochs"), "epochs");
        row.calibration_seconds = cal.at("seconds_per_chip").get<double>();
        // Reports written before the check existed have none.
        row.calibration_held_out = json::integer_or<int64_t>(cal, "held_out", 0);
        row.calibration_chips = json::integer_or(cal, "chips", 0);
        row.calibration_chips_kept = json::integer_or(cal, "chips_kept", row.calibration_chips);
      }
      r.comparison.push_back(row);
    }
    for (const auto& c : j.value("bounds", Json::array())) {
      r.bounds.push_back(
          {c.at("name").get<std::string>(), c.value("removed", ""), noisy_from_json(c)});
    }
    for (const auto& p : j.value("operating_points", Json::array())) {
      r.operating_points.push_back(
          {p.value("method", ""), json::integer_or(p, "step", 0), p.value("placement", "none"),
           json::integer_or<int64_t>(p, "params", 0), p.value("overhead_pct", 0.0),
           summary_from_json(p.value("validation", Json::object())), p.value("pareto", false)});
    }
  } catch (const Json::exception& e) {
    throw std::invalid_argument(std::string("not a quell denoise report.json: ") + e.what());
  }
  return r;
}

DenoiseReport DenoiseReport::read(const std::string& path) {
  const Json j = read_json_document(path);
  try {
    return from_json(j);
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument(path + ": " + e.what());
  }
}

std::string DenoiseReport::report_csv() const {
  CsvTable csv({"model", "placement", "params", "overhead_pct", "clean_accuracy", "noisy_mean",
                "ci95_low", "ci95_high", "n", "ci_over", "drop_vs_clean_points"});
  const double base_clean = comparison.empty() ? 0.0 : comparison.front().clean_accuracy;
  auto add = [&](const std::string& model, const std::string& placement, int64_t params,
                 double overhead, double clean, const EvalResult& noisy) {
    const Summary& h = noisy.headline();
    csv.add_row({model, placement, std::to_string(params), fmt_double(overhead, 6),
                 fmt_double(clean, 6), fmt_double(h.mean, 6), fmt_double(h.ci_low, 6),
                 fmt_double(h.ci_high, 6), std::to_string(h.n), ci_over(noisy),
                 fmt_double(100.0 * (base_clean - h.mean), 4)});
  };
  for (const auto& r : comparison) {
    add(r.model, r.placement, r.params, r.overhead_pct, r.clean_accuracy, r.noisy);
  }
  // Bounds: the backbone with part of the noise removed (placement: what was removed).
  for (const auto& b : bounds) {
    add("bound: " + b.name, "without " + b.removed, 0, 0.0, base_clean, b.noisy);
  }
  return csv_for_metric(csv.str(), metric);
}

std::string DenoiseReport::points_csv() const {
  CsvTable csv({"method", "step", "placement", "params", "overhead_pct", "val_mean", "ci95_low",
                "ci95_high", "pareto"});
  for (const auto& p : operating_points) {
    csv.add_row({p.method, std::to_string(p.step), p.placement, std::to_string(p.params),
                 fmt_double(p.overhead_pct, 6), fmt_double(p.validation.mean, 6),
                 fmt_double(p.validation.ci_low, 6), fmt_double(p.validation.ci_high, 6),
                 p.pareto ? "1" : "0"});
  }
  return csv_for_metric(csv.str(), metric);
}

std::string DenoiseReport::rankings_csv() const {
  CsvTable csv({"ranking", "site", "name", "value", "rank"});
  for (const auto& [name, sens] : rankings) {
    const auto r = rank_sites(sens);
    for (const auto& s : sens) {
      const int pos = static_cast<int>(std::find(r.begin(), r.end(), s.site) - r.begin()) + 1;
      csv.add_row({name, std::to_string(s.site), s.name, fmt_double(s.value, 8),
                   std::to_string(pos)});
    }
  }
  return csv_for_metric(csv.str(), metric);
}

std::string DenoiseReport::robustness_csv() const {
  CsvTable csv({"model", "level", "mean", "ci95_low", "ci95_high"});
  for (const auto& c : robustness) {
    for (const auto& p : c.points) {
      csv.add_row({c.label, fmt_double(p.sigma), fmt_double(p.mean, 6), fmt_double(p.lo, 6),
                   fmt_double(p.hi, 6)});
    }
  }
  return csv_for_metric(csv.str(), metric);
}

std::string DenoiseReport::table() const {
  if (comparison.empty()) return "";
  const DenoiseComparisonRow& base = comparison.front();
  std::ostringstream os;
  char line[512];
  os << "\n" << model.name << " on " << dataset << " test (" << test_size
     << "), clean accuracy " << fmt_double(base.clean_accuracy, 4) << ", chance "
     << fmt_double(chance, 3) << "\n";
  std::snprintf(line, sizeof line, "%-26s %9s %9s %8s %8s %19s %7s  %s\n", "model", "params",
                "overhead", "clean", "noisy", "95% CI", "drop", "placement");
  os << line;
  for (const auto& r : comparison) {
    const Summary& h = r.noisy.headline();
    std::snprintf(line, sizeof line, "%-26s %9lld %9s %8.4f %8.4f  [%7.4f, %7.4f] %7.2f  %s\n",
                  r.model.c_str(), static_cast<long long>(r.params), pct(r.overhead_pct).c_str(),
                  r.clean_accuracy, h.mean, h.ci_low, h.ci_high,
                  100.0 * (base.clean_accuracy - h.mean), r.placement.c_str());
    os << line;
  }
  for (const auto& r : comparison) {
    if (!r.is_calibrated()) continue;
    os << "  " << r.model << ": blocks fine-tuned on each chip, " << r.calibration_samples
       << " samples x " << r.calibration_epochs << " epochs, "
       << fmt_double(r.calibration_seconds, 3) << " s per chip";
    if (r.calibration_held_out > 0) {
      os << "; kept on " << r.calibration_chips_kept << " of " << r.calibration_chips
         << " chips (the others' calibration did not lower the loss on " << r.calibration_held_out
         << " held-out samples)";
    }
    os << "\n";
  }
  if (!bounds.empty()) {
    os << "bounds: the backbone with part of the noise removed\n";
    for (const auto& b : bounds) {
      const Summary& h = b.noisy.headline();
      std::snprintf(line, sizeof line, "%-26s %9s %9s %8s %8.4f  [%7.4f, %7.4f] %7.2f  without %s\n",
                    b.name.c_str(), "", "", "", h.mean, h.ci_low, h.ci_high,
                    100.0 * (base.clean_accuracy - h.mean), b.removed.c_str());
      os << line;
    }
  }
  os << "drop = clean accuracy of the backbone minus noisy accuracy, in points; CI over "
     << ci_over(base.noisy) << "\nPareto front (validation):";
  std::vector<double> ov, acc;
  for (const auto& p : operating_points) {
    ov.push_back(p.overhead_pct);
    acc.push_back(p.validation.mean);
  }
  for (size_t i : pareto_front(ov, acc)) {
    os << "\n  " << pct(ov[i]) << "  " << fmt_double(acc[i], 4) << "  "
       << operating_points[i].placement;
  }
  return text_for_metric(os.str(), metric, metric.label());
}

DenoisePlotData DenoiseReport::plot_data(double train_sigma) const {
  DenoisePlotData pd;
  pd.title = model.name + " on " + dataset;
  if (!comparison.empty()) {
    pd.clean_accuracy = comparison.front().clean_accuracy;
    pd.noisy_accuracy = comparison.front().noisy.headline().mean;
  }
  pd.chance = chance;
  pd.budget = budgets_pct.empty() ? std::nan("") : budgets_pct.back();
  for (const auto& p : operating_points) {
    pd.points.push_back({p.placement, p.method + " (validation)", p.overhead_pct,
                         p.validation.mean, p.validation.ci_low, p.validation.ci_high, p.pareto});
  }
  for (const auto& r : comparison) {
    if (r.model == "unmitigated" || r.model == "noise-aware fine-tune") continue;
    const Summary& h = r.noisy.headline();
    pd.points.push_back({r.model, "final (test)", r.overhead_pct, h.mean, h.ci_low, h.ci_high,
                         false});
  }
  pd.sigma_label = "noise level (x configured sigma)";
  pd.train_sigma = train_sigma;
  pd.curves = robustness;
  return pd;
}

}  // namespace quell
