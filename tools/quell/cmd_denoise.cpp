// quell denoise: denoising blocks in a frozen checkpoint: rankings, placement search under a
// parameter budget, training, and one report comparing the mitigations (docs/denoise.md).
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <map>
#include <set>
#include <sstream>

#include "common.h"
#include "quell/checkpoint.h"
#include "quell/denoise.h"
#include "quell/dist.h"
#include "quell/plot.h"
#include "quell/walk.h"

namespace quell::cli {
namespace {

namespace fs = std::filesystem;

struct DenoiseArgs {
  std::string checkpoint;
  std::string out;
  std::string sites = "all";
  std::string block = "auto";
  std::vector<int> ratios = {4, 16};
  std::vector<double> budgets = {2.0, 5.0};
  std::string search = "greedy";
  std::string walk_json;
  bool drop_ranking = true;
  bool all_sites = true;
  bool finetune = true;
  double finetune_lr = 1e-4;
  int64_t train_limit = 0;
  int64_t val_size = 5000;
  int64_t search_limit = 10000;
  int search_epochs = 1;
  int search_width = 8;
  int64_t taylor_samples = 2048;
  double min_gain = 0.0;
  std::string scale_range = "1";
  std::string robustness = "0:2:0.25";
  int robust_draws = 2;
  std::string figures = "png,svg";
  DenoiseTrainOptions train;
  EvalOptions eval;
  int search_draws = 2;
  DataArgs data;
  NoiseArgs noise;
  RuntimeArgs runtime;
};

// "LO:HI" or "X".
std::pair<double, double> parse_range(const std::string& text, const std::string& what) {
  const auto colon = text.find(':');
  auto num = [&](const std::string& t) {
    try {
      size_t used = 0;
      const double v = std::stod(t, &used);
      if (used == t.size() && std::isfinite(v) && v >= 0) return v;
    } catch (const std::exception&) {
    }
    throw std::invalid_argument(what + " '" + text + "': expected LO:HI or X, numbers >= 0");
  };
  if (colon == std::string::npos) return {num(text), num(text)};
  const double lo = num(text.substr(0, colon)), hi = num(text.substr(colon + 1));
  if (hi < lo) throw std::invalid_argument(what + " '" + text + "': HI is below LO");
  return {lo, hi};
}

// Robustness levels: a walk grid ("0:2:0.25", "0.5,1,2", "0.1:10" log) or "none".
std::vector<double> parse_levels(const std::string& text) {
  if (text.empty() || text == "none") return {};
  try {
    return SigmaGrid::parse(text).values;
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument(std::string("--robustness: ") + e.what());
  }
}

std::string pct(double v) { return fmt_double(v, 3) + "%"; }

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

// One row of the comparison.
struct Row {
  std::string name;
  std::string placement;
  int64_t params = 0;
  double overhead = 0.0;
  double clean = 0.0;
  EvalResult noisy;
  Json extra = Json::object();
};

void run(DenoiseArgs& a) {
  // Under mpirun every rank runs the study in lockstep: each evaluation's passes are spread over
  // the ranks, each training is data parallel, and rank 0 writes (docs/mpi.md).
  const bool root = dist::is_root();
  const bool distributed = dist::size() > 1;
  if (!root) std::cout.setstate(std::ios_base::badbit);
  auto bar = [&](const std::string& what) { return root ? progress_bar(what) : ProgressFn(); };
  a.eval.distributed = distributed;
  a.train.data_parallel = distributed;
  a.runtime.apply();
  // Validate everything cheap before the first long step.
  if (fs::exists(a.out) && !fs::is_directory(a.out)) {
    throw std::invalid_argument("--out " + a.out + ": exists and is not a directory");
  }
  const PlotFormats formats = parse_figure_formats(a.figures);
  if ((formats.png || formats.svg) && !gnuplot_available()) {
    throw std::runtime_error("gnuplot is not installed (apt-get install gnuplot-nox), or use "
                             "--figures none");
  }
  const BlockSpec block_kind = BlockSpec::parse(a.block);
  for (int r : a.ratios) {
    if (r < 1) throw std::invalid_argument("--ratios: every ratio must be >= 1");
  }
  for (double b : a.budgets) {
    if (!(b > 0) || !std::isfinite(b)) {
      throw std::invalid_argument("--budget: every budget must be a positive percentage");
    }
  }
  std::sort(a.budgets.begin(), a.budgets.end());
  const auto [scale_lo, scale_hi] = parse_range(a.scale_range, "--scale-range");
  a.train.scale_lo = scale_lo;
  a.train.scale_hi = scale_hi;
  const std::vector<double> levels = parse_levels(a.robustness);
  if (!a.walk_json.empty() && !fs::exists(a.walk_json)) {
    throw std::invalid_argument("--walk " + a.walk_json + ": no such file");
  }

  CheckpointMeta meta;
  Model backbone = load_checked(a.checkpoint, "", &meta, &a.data);
  if (backbone->has_denoisers()) {
    throw std::invalid_argument(a.checkpoint +
                                ": already has denoising blocks; give quell denoise the backbone");
  }
  const torch::Device device = a.runtime.torch_device();
  backbone->to(device);
  backbone->eval();
  a.data.use_checkpoint_dataset(meta);
  const ModelSpec spec = backbone->spec();
  const auto names = backbone->site_names();
  const NoiseConfig noise = a.noise.build(names);
  if (noise.empty()) {
    throw std::invalid_argument("no noise to mitigate: give it with --noise (or --noise-config)");
  }
  backbone->engine().configure(noise);  // validates the configuration against the calibration
  backbone->engine().configure(NoiseConfig{});
  a.train.noise = noise;
  const std::vector<int> sites = select_sites(a.sites, names);

  // Candidate blocks: every eligible site x ratio (one per site for channel blocks).
  const auto info = backbone->sites();
  std::vector<Candidate> candidates;
  for (int s : sites) {
    std::set<std::string> seen;
    for (int r : a.ratios) {
      BlockSpec b = block_kind;
      b.ratio = r;
      try {
        b.resolve(info[static_cast<size_t>(s)].shape);
      } catch (const std::invalid_argument&) {
        continue;  // this block kind cannot sit at this site
      }
      if (!seen.insert(b.str()).second) continue;
      candidates.push_back({s, b, b.params(info[static_cast<size_t>(s)].shape)});
    }
  }
  if (candidates.empty()) {
    throw std::invalid_argument("no site in --sites '" + a.sites + "' can take block " + a.block);
  }
  const int64_t backbone_params = backbone->num_params();
  auto overhead = [&](int64_t p) {
    return 100.0 * static_cast<double>(p) / static_cast<double>(backbone_params);
  };
  auto budget_params = [&](double b) {
    return static_cast<int64_t>(std::floor(b / 100.0 * static_cast<double>(backbone_params)));
  };
  fs::create_directories(a.out);

  // Data: training set = fit part + validation part (the search never sees the test set).
  const Dataset train_all = a.data.load(Split::kTrain);
  check_model_fits(spec, train_all, a.checkpoint);
  int64_t n_train = train_all.size();
  if (a.train_limit > 0) n_train = std::min(n_train, a.train_limit);
  const int64_t n_val = std::min(a.val_size, n_train / 5);
  if (n_val < 1) throw std::invalid_argument("training set too small for a validation split");
  auto slice = [](const Dataset& d, int64_t start, int64_t count) {
    Dataset s = d;
    s.images = d.images.narrow(0, start, count);
    s.labels = d.labels.narrow(0, start, count);
    return s;
  };
  const Dataset fit = slice(train_all, 0, n_train - n_val);
  const Dataset val = slice(train_all, n_train - n_val, n_val);
  const Dataset search_fit =
      slice(fit, 0, a.search_limit > 0 ? std::min(a.search_limit, fit.size()) : fit.size());
  const Dataset test = a.data.load(Split::kTest);
  check_model_fits(spec, test, a.checkpoint);
  std::cout << "denoise " << spec.name << " (" << backbone_params << " parameters) on "
            << test.name << ": fit " << fit.size() << ", validation " << val.size() << ", test "
            << test.size() << "; " << candidates.size() << " candidate blocks at "
            << sites.size() << " sites" << std::endl;

  EvalOptions search_eval = a.eval;
  search_eval.draws = a.search_draws;
  search_eval.chips = a.search_draws;
  search_eval.progress = nullptr;

  // ---- Rankings -------------------------------------------------------------------------------
  std::map<std::string, std::vector<SiteSensitivity>> rankings;
  rankings["taylor"] = taylor_sensitivity(*backbone, fit, a.taylor_samples);
  if (distributed) {
    // Rank 0's values on every rank, so that every rank takes the same decisions.
    auto& taylor = rankings["taylor"];
    torch::Tensor v = torch::zeros({static_cast<int64_t>(taylor.size())}, torch::kDouble);
    for (size_t i = 0; root && i < taylor.size(); ++i) v[static_cast<int64_t>(i)] = taylor[i].value;
    dist::allreduce_sum(v);
    for (size_t i = 0; i < taylor.size(); ++i) taylor[i].value = v[static_cast<int64_t>(i)].item<double>();
  }
  if (!a.walk_json.empty()) rankings["walk"] = walk_sensitivity(a.walk_json, names);
  if (a.drop_ranking) {
    rankings["drop"] = drop_sensitivity(*backbone, val, noise, sites, search_eval);
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
  DenoiseTrainOptions search_train = a.train;
  search_train.epochs = a.search_epochs;
  BlockCache cache;
  std::map<std::string, Summary> memo;
  std::vector<PlacementScore> tried;
  const Summary val_noisy = evaluate(*backbone, val, noise, search_eval).headline();
  int evaluations = 0;
  auto evaluate_placement = [&](const Placement& p) {
    const std::string key = p.label(names);
    if (const auto it = memo.find(key); it != memo.end()) return it->second;
    if (p.blocks.empty()) return memo[key] = val_noisy;
    Model m = clone_model(*backbone);
    m->to(device);
    m->set_denoisers(p.placement());
    restore_blocks(*m, cache);
    train_denoisers(*m, search_fit, search_train);
    store_blocks(*m, cache);
    ++evaluations;
    return memo[key] = evaluate(*m, val, noise, search_eval).headline();
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
    for (double b : a.budgets) {
      const Placement p = greedy_by_rank(r, first_ratio, budget_params(b));
      record(p, name);
      if (name == "taylor") taylor_choice[b] = p;
    }
  }
  if (a.search == "greedy") {
    measured_greedy(candidates, budget_params(a.budgets.back()), evaluate_placement, val_noisy,
                    a.min_gain, &tried, bar("search"), a.search_width);
  }
  std::cout << evaluations << " placements trained and evaluated in the search" << std::endl;

  // Operating points and their Pareto front (validation accuracy).
  std::vector<double> ov, acc;
  for (const auto& t : tried) {
    ov.push_back(overhead(t.placement.params()));
    acc.push_back(t.accuracy.mean);
  }
  const auto front = pareto_front(ov, acc);
  const std::set<size_t> on_front(front.begin(), front.end());
  CsvTable points_csv({"method", "step", "placement", "params", "overhead_pct", "val_mean",
                       "ci95_low", "ci95_high", "pareto"});
  Json jpoints = Json::array();
  for (size_t i = 0; i < tried.size(); ++i) {
    const auto& t = tried[i];
    const std::string label = t.placement.label(names);
    points_csv.add_row({t.method, std::to_string(t.step), label,
                        std::to_string(t.placement.params()), fmt_double(ov[i], 6),
                        fmt_double(t.accuracy.mean, 6), fmt_double(t.accuracy.ci_low, 6),
                        fmt_double(t.accuracy.ci_high, 6), on_front.count(i) ? "1" : "0"});
    jpoints.push_back({{"method", t.method},
                       {"step", t.step},
                       {"placement", label},
                       {"params", t.placement.params()},
                       {"overhead_pct", ov[i]},
                       {"validation", summary_json(t.accuracy)},
                       {"pareto", on_front.count(i) > 0}});
  }
  CsvTable rank_csv({"ranking", "site", "name", "value", "rank"});
  Json jrank = Json::object();
  for (const auto& [name, sens] : rankings) {
    const auto r = rank_sites(sens);
    Json arr = Json::array();
    for (const auto& s : sens) {
      const int pos = static_cast<int>(std::find(r.begin(), r.end(), s.site) - r.begin()) + 1;
      rank_csv.add_row({name, std::to_string(s.site), s.name, fmt_double(s.value, 8),
                        std::to_string(pos)});
      arr.push_back({{"site", s.site},
                     {"name", s.name},
                     {"value", std::isfinite(s.value) ? Json(s.value) : Json("inf")},
                     {"rank", pos}});
    }
    jrank[name] = arr;
  }
  // The search's results are on disk before the (long) final trainings start.
  std::vector<std::string> written;
  auto put = [&](const std::string& file, const std::string& content) {
    if (!root) return;
    write_file_atomic((fs::path(a.out) / file).string(), content);
    written.push_back(file);
  };
  put("points.csv", points_csv.str());
  put("rankings.csv", rank_csv.str());

  // Best evaluated placement within each budget (any method).
  std::map<double, Placement> chosen;
  for (double b : a.budgets) {
    const PlacementScore* best = nullptr;
    for (const auto& t : tried) {
      if (t.placement.params() > budget_params(b)) continue;
      if (!best || t.accuracy.mean > best->accuracy.mean) best = &t;
    }
    chosen[b] = best ? best->placement : Placement{};
  }

  // ---- Final models: full training on the fit set, evaluated on the test set -----------------
  std::vector<Row> rows;
  std::map<std::string, Model> models;  // for the robustness curves
  EvalOptions final_eval = a.eval;
  auto add_row = [&](const std::string& name, Model m, const std::string& placement,
                     int64_t params) {
    Row r;
    r.name = name;
    r.placement = placement;
    r.params = params;
    r.overhead = overhead(params);
    EvalOptions quiet = final_eval;
    quiet.progress = nullptr;
    r.clean = evaluate(*m, test, NoiseConfig{}, quiet).accuracy.mean;
    EvalOptions o = final_eval;
    o.progress = bar("eval " + name);
    r.noisy = evaluate(*m, test, noise, o);
    rows.push_back(r);
    models.emplace(name, m);
  };
  auto train_placement = [&](const Placement& p, const std::string& label) {
    Model m = clone_model(*backbone);
    m->to(device);
    m->set_denoisers(p.placement());
    restore_blocks(*m, cache);
    DenoiseTrainOptions o = a.train;
    o.progress = bar(label);
    train_denoisers(*m, fit, o);
    return m;
  };
  add_row("unmitigated", backbone, "none", 0);
  std::map<std::string, std::string> saved;
  for (double b : a.budgets) {
    const std::string tag = fmt_double(b) + "%";
    const Placement& tp = taylor_choice[b];
    if (!tp.blocks.empty()) {
      add_row("taylor greedy <=" + tag, train_placement(tp, "taylor " + tag), tp.label(names),
              tp.params());
    }
    const Placement& cp = chosen[b];
    if (!cp.blocks.empty()) {
      const std::string name = "chosen <=" + tag;
      Model m = cp.label(names) == tp.label(names) ? models.at("taylor greedy <=" + tag)
                                                    : train_placement(cp, "chosen " + tag);
      add_row(name, m, cp.label(names), cp.params());
      CheckpointMeta out_meta = meta;
      out_meta.train_config = a.train.to_json(names);
      out_meta.provenance = provenance();
      const std::string file = "denoised-" + fmt_double(b) + ".pt";
      if (root) {
        m->to(torch::kCPU);
        save_checkpoint((fs::path(a.out) / file).string(), *m, out_meta);
        m->to(device);
      }
      saved[tag] = file;
    }
  }
  if (a.all_sites) {
    Placement all;
    all.blocks = first_ratio;
    add_row("all sites", train_placement(all, "all sites"), all.label(names), all.params());
  }
  if (a.finetune) {
    Model m = clone_model(*backbone);
    m->to(device);
    TrainOptions t;
    t.data_parallel = distributed;
    t.epochs = a.train.epochs;
    t.batch_size = a.train.batch_size;
    t.lr = a.finetune_lr;
    t.seed = a.train.seed;
    t.noise = noise;
    t.progress = bar("fine-tune");
    train(*m, fit, t);
    add_row("noise-aware fine-tune", m, "whole network", 0);
    rows.back().extra["trains_parameters"] = backbone_params;
  }

  // ---- Robustness: accuracy vs noise level ---------------------------------------------------
  std::vector<SiteCurve> curves;
  CsvTable robust_csv({"model", "level", "mean", "ci95_low", "ci95_high"});
  if (!levels.empty()) {
    EvalOptions ro = a.eval;
    ro.draws = a.robust_draws;
    ro.chips = a.robust_draws;
    ro.progress = nullptr;
    int k = 0;
    for (const auto& r : rows) {
      SiteCurve c;
      c.site = k++;
      c.label = r.name;
      for (double level : levels) {
        const Summary s = evaluate(*models.at(r.name), test, noise.scaled(level), ro).headline();
        c.points.push_back({level, s.mean, s.ci_low, s.ci_high});
        robust_csv.add_row({r.name, fmt_double(level), fmt_double(s.mean, 6),
                            fmt_double(s.ci_low, 6), fmt_double(s.ci_high, 6)});
      }
      curves.push_back(c);
    }
  }

  // ---- Outputs ----------------------------------------------------------------------------------
  if (!root) return;  // rank 0 writes the outputs
  const Row& base = rows.front();
  CsvTable report_csv({"model", "placement", "params", "overhead_pct", "clean_accuracy",
                       "noisy_mean", "ci95_low", "ci95_high", "n", "ci_over",
                       "drop_vs_clean_points"});
  Json jrows = Json::array();
  for (const auto& r : rows) {
    const Summary& h = r.noisy.headline();
    report_csv.add_row({r.name, r.placement, std::to_string(r.params), fmt_double(r.overhead, 6),
                        fmt_double(r.clean, 6), fmt_double(h.mean, 6), fmt_double(h.ci_low, 6),
                        fmt_double(h.ci_high, 6), std::to_string(h.n),
                        r.noisy.chip_level ? "chips" : "draws",
                        fmt_double(100.0 * (base.clean - h.mean), 4)});
    Json jr{{"model", r.name},
            {"placement", r.placement},
            {"params", r.params},
            {"overhead_pct", r.overhead},
            {"clean_accuracy", r.clean},
            {"noisy", summary_json(h)},
            {"ci_over", r.noisy.chip_level ? "chips" : "draws"},
            {"drop_vs_clean_points", 100.0 * (base.clean - h.mean)}};
    // Per (chip, draw): rows share the noise streams, so differences between rows can be paired.
    Json draws = Json::array();
    for (const auto& d : r.noisy.draws) {
      draws.push_back({{"chip", d.chip}, {"draw", d.draw}, {"accuracy", d.accuracy}});
    }
    jr["draws"] = draws;
    jr.update(r.extra);
    jrows.push_back(jr);
  }
  Json jcands = Json::array();
  for (const auto& c : candidates) {
    jcands.push_back({{"site", c.site},
                      {"name", names[static_cast<size_t>(c.site)]},
                      {"block", c.block.str()},
                      {"params", c.params},
                      {"overhead_pct", overhead(c.params)}});
  }
  Json jchosen = Json::object();
  for (double b : a.budgets) {
    const std::string tag = fmt_double(b) + "%";
    jchosen[tag] = {{"placement", chosen[b].label(names)},
                    {"params", chosen[b].params()},
                    {"budget_params", budget_params(b)},
                    {"checkpoint", saved.count(tag) ? Json(saved[tag]) : Json(nullptr)}};
  }
  Json j{{"provenance", provenance()},
         {"checkpoint", a.checkpoint},
         {"model", spec.to_json()},
         {"backbone_params", backbone_params},
         {"dataset",
          {{"name", test.name},
           {"fit", fit.size()},
           {"validation", val.size()},
           {"search_fit", search_fit.size()},
           {"test", test.size()},
           {"chance", test.chance()}}},
         {"noise", noise.to_json(names)},
         {"training", a.train.to_json(names)},
         {"search",
          {{"method", a.search},
           {"epochs", a.search_epochs},
           {"draws", search_eval.draws},
           {"chips", search_eval.chips},
           {"min_gain", a.min_gain},
           {"placements_trained", evaluations}}},
         {"evaluation", {{"draws", a.eval.draws}, {"chips", a.eval.chips}}},
         {"budgets_pct", a.budgets},
         {"candidates", jcands},
         {"rankings", jrank},
         {"chosen", jchosen},
         {"comparison", jrows},
         {"operating_points", jpoints},
         {"pareto_front", [&] {
            Json f = Json::array();
            for (size_t i : front) f.push_back(jpoints[i]);
            return f;
          }()}};
  if (a.finetune) j["finetune"] = {{"epochs", a.train.epochs}, {"lr", a.finetune_lr}};
  put("report.csv", report_csv.str());
  if (!levels.empty()) put("robustness.csv", robust_csv.str());
  put("report.json", j.dump(2) + "\n");
  for (const auto& kv : saved) written.push_back(kv.second);
  if (formats.png || formats.svg) {
    DenoisePlotData pd;
    pd.title = spec.name + " on " + test.name;
    pd.clean_accuracy = base.clean;
    pd.noisy_accuracy = base.noisy.headline().mean;
    pd.chance = test.chance();
    pd.budget = a.budgets.back();
    for (size_t i = 0; i < tried.size(); ++i) {
      const auto& t = tried[i];
      pd.points.push_back({t.placement.label(names), t.method + " (validation)", ov[i],
                           t.accuracy.mean, t.accuracy.ci_low, t.accuracy.ci_high,
                           on_front.count(i) > 0});
    }
    for (const auto& r : rows) {
      if (r.name == "unmitigated" || r.name == "noise-aware fine-tune") continue;
      const Summary& h = r.noisy.headline();
      pd.points.push_back({r.name, "final (test)", r.overhead, h.mean, h.ci_low, h.ci_high, false});
    }
    pd.sigma_label = "noise level (x configured sigma)";
    pd.train_sigma = scale_lo == scale_hi ? scale_lo : std::nan("");
    pd.curves = curves;
    for (const auto& f : write_denoise_figures(pd, a.out, formats)) {
      written.push_back(fs::path(f).filename().string());
    }
  }

  // ---- The table ------------------------------------------------------------------------------
  std::ostringstream os;
  char line[512];
  os << "\n" << spec.name << " on " << test.name << " test (" << test.size()
     << "), clean accuracy " << fmt_double(base.clean, 4) << ", chance "
     << fmt_double(test.chance(), 3) << "\n";
  std::snprintf(line, sizeof line, "%-26s %9s %9s %8s %8s %19s %7s  %s\n", "model", "params",
                "overhead", "clean", "noisy", "95% CI", "drop", "placement");
  os << line;
  for (const auto& r : rows) {
    const Summary& h = r.noisy.headline();
    std::snprintf(line, sizeof line, "%-26s %9lld %9s %8.4f %8.4f  [%7.4f, %7.4f] %7.2f  %s\n",
                  r.name.c_str(), static_cast<long long>(r.params), pct(r.overhead).c_str(),
                  r.clean, h.mean, h.ci_low, h.ci_high, 100.0 * (base.clean - h.mean),
                  r.placement.c_str());
    os << line;
  }
  os << "drop = clean accuracy of the backbone minus noisy accuracy, in points; CI over "
     << (base.noisy.chip_level ? "chips" : "draws") << "\nPareto front (validation):";
  for (size_t i : front) {
    os << "\n  " << pct(ov[i]) << "  " << fmt_double(acc[i], 4) << "  "
       << tried[i].placement.label(names);
  }
  std::cout << os.str() << "\nwrote " << join(written) << " in " << a.out << "\n";
}

}  // namespace

void add_denoise_command(CLI::App& app) {
  auto a = std::make_shared<DenoiseArgs>();
  a->eval.draws = 5;
  a->eval.chips = 5;
  CLI::App* cmd = app.add_subcommand(
      "denoise",
      "Denoising blocks in a frozen checkpoint: rank sites, search placements under parameter "
      "budgets, train the blocks, compare with no mitigation, blocks everywhere and noise-aware "
      "fine-tuning (report, checkpoints with blocks, figures)");
  cmd->add_option("checkpoint,--checkpoint,-c", a->checkpoint, "Trained backbone checkpoint, or a TorchScript file")
      ->required();
  cmd->add_option("--out,-o", a->out,
                  "Output directory (report.json/csv, points.csv, rankings.csv, robustness.csv, "
                  "denoised-BUDGET.pt, figures)")
      ->required();
  cmd->add_option("--budget", a->budgets,
                  "Parameter budgets eta in % of the backbone (comma-separated)")
      ->delimiter(',')
      ->capture_default_str();
  cmd->add_option("--block", a->block,
                  "Block kind: auto (bottleneck on conv sites, mlp on vector sites) | "
                  "bottleneck | mlp | channel")
      ->capture_default_str();
  cmd->add_option("--ratios", a->ratios,
                  "Reduction ratios r the search may use per block (comma-separated; the "
                  "ranking rules and 'all sites' use the first)")
      ->delimiter(',')
      ->capture_default_str();
  cmd->add_option("--sites", a->sites,
                  "Sites that may get a block: all, or names, indices and ranges a-b")
      ->capture_default_str();
  cmd->add_option("--search", a->search,
                  "Placement search: greedy (measured accuracy gain per parameter) | none "
                  "(ranking rules only)")
      ->check(CLI::IsMember({"greedy", "none"}))
      ->capture_default_str();
  cmd->add_option("--walk", a->walk_json,
                  "A quell walk result (walk.json): rank sites by Walking Noise midpoints too");
  cmd->add_flag("!--no-drop-ranking", a->drop_ranking,
                "Skip the ranking by measured accuracy drop with noise at one site alone");
  cmd->add_flag("!--no-all-sites", a->all_sites, "Skip the blocks-at-every-site comparison");
  cmd->add_flag("!--no-finetune", a->finetune, "Skip the noise-aware fine-tuning comparison");
  cmd->add_option("--epochs", a->train.epochs,
                  "Epochs of block training for the final models (and of fine-tuning)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--lr", a->train.lr, "Learning rate of block training (Adam, cosine)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--finetune-lr", a->finetune_lr, "Learning rate of noise-aware fine-tuning")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--batch-size", a->train.batch_size, "Training batch size")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--feature-weight", a->train.feature_weight,
                  "Weight of the feature loss pulling block outputs to the clean activations "
                  "(0 = cross-entropy only)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  cmd->add_option("--scale-range", a->scale_range,
                  "Training noise level: X, or LO:HI to draw the factor on every sigma per batch")
      ->capture_default_str();
  cmd->add_option("--seed", a->train.seed, "Seed of shuffling and noise-level draws")
      ->capture_default_str();
  cmd->add_option("--train-limit", a->train_limit,
                  "Use only the first N training samples (0 = all)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  cmd->add_option("--val-size", a->val_size,
                  "Validation samples held out from the end of the training set for the "
                  "search (at most a fifth of it)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--search-limit", a->search_limit,
                  "Training samples for each placement's short training in the search (0 = all)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  cmd->add_option("--search-epochs", a->search_epochs, "Epochs of each placement's short training")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--search-width", a->search_width,
                  "Search steps after the first evaluate only the N candidates with the best "
                  "gain per parameter at their last evaluation (0 = all)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  cmd->add_option("--search-draws", a->search_draws,
                  "Noise draws (and chips) per placement's validation")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--min-gain", a->min_gain,
                  "Search: stop when no block raises validation accuracy by more than this")
      ->capture_default_str();
  cmd->add_option("--taylor-samples", a->taylor_samples,
                  "Training images for the Taylor (gradient-norm) ranking")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--draws", a->eval.draws, "Final evaluation: dynamic-noise draws per chip")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--chips", a->eval.chips,
                  "Final evaluation: chip instances (static / aging / weight noise)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--robustness", a->robustness,
                  "Noise levels (x the configured sigma) of the robustness curves: MIN:MAX:STEP "
                  "(linear), MIN:MAX (log, 4 per decade) or a list; none to skip")
      ->capture_default_str();
  cmd->add_option("--robust-draws", a->robust_draws,
                  "Draws (and chips) per robustness point")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--figures", a->figures, "Figure formats: png,svg | png | svg | none")
      ->capture_default_str();
  a->data.add_for_checkpoint(*cmd);
  a->noise.add(*cmd);
  a->runtime.add(*cmd);
  cmd->callback([a] { run(*a); });
}

}  // namespace quell::cli
