// quell plan: multi-execution planning. Allocates repeated noisy executions over the sites of a
// checkpoint under a repetition or energy budget (or for an accuracy target), evaluates every
// allocation under noise, costs it with the hardware model, and puts it beside the other
// mitigations (docs/plan.md).
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <map>
#include <set>
#include <sstream>

#include "common.h"
#include "quell/cost.h"
#include "quell/denoise.h"
#include "quell/dist.h"
#include "quell/plan.h"

namespace quell::cli {
namespace {

namespace fs = std::filesystem;

struct PlanArgs {
  std::string checkpoint;
  std::string out;
  std::string sites = "all";
  std::string walk_json;
  std::vector<std::string> schemes = {"uniform", "inverse_lin", "inverse_sqrt",
                                      "inverse_square"};
  std::vector<double> mean_repeats;
  std::vector<double> energy_budgets;
  double target = 0.0;
  double max_mean = 16.0;
  std::string search = "greedy";
  int search_width = 4;
  int search_draws = 2;
  int64_t val_size = 5000;
  double min_gain = 0.0;
  std::string hardware = "isaac";
  std::vector<std::string> set;
  std::string denoise_report;
  std::string figures = "png,svg";
  EvalOptions eval;
  DataArgs data;
  NoiseArgs noise;
  RuntimeArgs runtime;
};

/// One allocation to report: how it was made and what it costs and achieves.
struct Row {
  std::string method;  ///< "unmitigated", "uniform", "inverse_lin", ..., "optimised"
  std::string budget;  ///< "k=2", "energy<=50%", "target 0.85"
  std::vector<int> repeats;
  double energy_pj = 0.0;
  double energy_overhead = 0.0;
  double latency_overhead = 0.0;
  Summary val;
  EvalResult test;
};

std::string pct(double v) { return fmt_double(v, 4) + "%"; }

// The noise-aware fine-tuning row of a denoise report (its placement is "whole network").
bool is_finetune(const std::string& model) { return model.find("fine-tun") != std::string::npos; }

// Per-site robustness μ for the planned sites: from a walk result (midpoints) or measured drops.
std::vector<double> robustness_from(const std::vector<SiteSensitivity>& sens,
                                    const std::vector<int>& sites) {
  std::vector<double> mu;
  double smallest = INFINITY;
  for (int s : sites) {
    const double v = sens.at(static_cast<size_t>(s)).value;
    const double m = v > 0 ? 1.0 / v : INFINITY;  // never degrades: infinitely robust
    mu.push_back(m);
    if (m > 0 && std::isfinite(m)) smallest = std::min(smallest, m);
  }
  // Below the grid (sensitivity +inf): more fragile than any measured site.
  for (double& m : mu) {
    if (!(m > 0)) m = std::isfinite(smallest) ? smallest / 2.0 : 1.0;
  }
  return mu;
}

void run(PlanArgs a) {
  // Under MPI the ranks share the evaluations; rank 0 alone prints and writes.
  if (!dist::is_root()) std::cout.setstate(std::ios_base::badbit);
  if (a.mean_repeats.empty() && a.energy_budgets.empty() && !(a.target > 0)) {
    a.mean_repeats = {2.0, 4.0};
  }
  for (const auto& s : a.schemes) scheme_weights(s, {1.0});  // unknown names fail here
  for (double k : a.mean_repeats) {
    if (!(k >= 1.0) || !std::isfinite(k)) {
      throw std::invalid_argument("--mean-repeats must be >= 1, got " + fmt_double(k));
    }
  }
  for (double e : a.energy_budgets) {
    if (!(e >= 0.0) || !std::isfinite(e)) {
      throw std::invalid_argument("--energy-budget must be >= 0 (%), got " + fmt_double(e));
    }
  }
  if (std::isnan(a.target) || a.target < 0 || a.target > 1) {
    throw std::invalid_argument("--target must be an accuracy in [0, 1]");
  }
  const PlotFormats formats = parse_figure_formats(a.figures);
  if (!a.walk_json.empty() && !fs::exists(a.walk_json)) {
    throw std::invalid_argument("--walk " + a.walk_json + ": no such file");
  }
  if (!a.denoise_report.empty() && !fs::exists(a.denoise_report)) {
    throw std::invalid_argument("--denoise-report " + a.denoise_report + ": no such file");
  }
  HardwareConfig hw = load_hardware_config(a.hardware);
  for (const auto& s : a.set) hw.set(s);
  hw.validate();

  CheckpointMeta meta;
  Model model = load_checked(a.checkpoint, "", &meta, &a.data);
  const torch::Device device = a.runtime.torch_device();
  model->to(device);
  model->eval();
  a.data.use_checkpoint_dataset(meta);
  const ModelSpec spec = model->spec();
  const auto names = model->site_names();
  const int n_sites = model->num_sites();
  NoiseConfig noise = a.noise.build(names);
  if (noise.empty()) {
    throw std::invalid_argument("no noise to plan against: give it with --noise (or --noise-config)");
  }
  for (const auto& [site, cfg] : noise.sites) {
    if (cfg.repeats != 1) {
      throw std::invalid_argument("the noise sets repeat counts (site " + names[site] +
                                  "); quell plan chooses them: drop --repeat");
    }
  }
  model->engine().configure(noise);  // validates against the calibration
  model->engine().configure(NoiseConfig{});
  Json report_in;  // a quell denoise report to compare with: checked before any work
  if (!a.denoise_report.empty()) {
    try {
      std::ifstream in(a.denoise_report);
      in >> report_in;
    } catch (const Json::exception& e) {
      throw std::invalid_argument("--denoise-report " + a.denoise_report +
                                  ": not valid JSON: " + e.what());
    }
    if (!report_in.contains("comparison") || !report_in.contains("noise")) {
      throw std::invalid_argument("--denoise-report " + a.denoise_report +
                                  ": not a quell denoise report.json");
    }
    if (report_in["noise"] != noise.to_json(names)) {
      throw std::invalid_argument("--denoise-report " + a.denoise_report +
                                  ": its noise differs from this plan's (give the same --noise)");
    }
    for (const auto& c : report_in["comparison"]) {
      if (is_finetune(c.value("model", ""))) continue;  // no blocks ("whole network")
      try {
        parse_placement_label(c.value("placement", "none"), names);
      } catch (const std::invalid_argument& e) {
        throw std::invalid_argument("--denoise-report " + a.denoise_report + ": " + e.what());
      }
    }
  }

  // Planned sites: selected, with noise that a repetition averages (a dynamic component).
  std::vector<int> sites;
  std::vector<std::string> skipped;
  for (int s : select_sites(a.sites, names)) {
    const auto it = noise.sites.find(s);
    if (it == noise.sites.end()) continue;
    const bool dynamic = std::any_of(it->second.noise.begin(), it->second.noise.end(),
                                     [](const NoiseSpec& n) {
                                       return !n.is_zero() && n.temporal == Temporal::kDynamic;
                                     });
    if (dynamic) {
      sites.push_back(s);
    } else {
      skipped.push_back(names[static_cast<size_t>(s)]);
    }
  }
  if (sites.empty()) {
    throw std::invalid_argument(
        "no site in --sites '" + a.sites +
        "' has dynamic noise: repeating a computation averages only fresh (dynamic) noise");
  }
  const auto num_planned = static_cast<int64_t>(sites.size());

  fs::create_directories(a.out);
  const Dataset train_all = a.data.load(Split::kTrain);
  check_model_fits(spec, train_all, a.checkpoint);
  const int64_t n_val = std::min(a.val_size, train_all.size());
  Dataset val = train_all;
  val.images = train_all.images.narrow(0, train_all.size() - n_val, n_val);
  val.labels = train_all.labels.narrow(0, train_all.size() - n_val, n_val);
  const Dataset test = a.data.load(Split::kTest);
  check_model_fits(spec, test, a.checkpoint);
  std::cout << "plan " << spec.name << " on " << test.name << ": " << sites.size()
            << " planned sites, validation " << val.size() << ", test " << test.size()
            << ", hardware '" << hw.name << "'" << std::endl;
  if (!skipped.empty()) {
    std::cout << "not planned (static noise only; repetition cannot average it): "
              << join(skipped) << std::endl;
  }

  // ---- Costs -----------------------------------------------------------------------------------
  const std::vector<int> ones(static_cast<size_t>(n_sites), 1);
  const CostReport base_cost = estimate_cost(*model, hw, ones, {});
  const double base_energy = base_cost.base.energy_pj();
  auto energy_of = [&](const std::vector<int>& k) {
    return estimate_cost(*model, hw, k, {}).total.energy_pj();
  };
  auto repeats_of = [&](const std::vector<int>& k) {
    double t = 0;
    for (int s : sites) t += k[static_cast<size_t>(s)];
    return t;
  };

  // ---- Sensitivities ---------------------------------------------------------------------------
  EvalOptions search_eval = a.eval;
  search_eval.draws = a.search_draws;
  search_eval.chips = noise.has_static() ? a.search_draws : 1;
  search_eval.progress = nullptr;
  std::vector<SiteSensitivity> sens;
  std::string source;
  if (!a.walk_json.empty()) {
    sens = walk_sensitivity(a.walk_json, names);
    source = "walk midpoints (" + a.walk_json + ")";
  } else {
    std::vector<SiteSensitivity> drop = drop_sensitivity(*model, val, noise, sites, search_eval);
    sens.assign(static_cast<size_t>(n_sites), SiteSensitivity{});
    for (int i = 0; i < n_sites; ++i) {
      sens[static_cast<size_t>(i)].site = i;
      sens[static_cast<size_t>(i)].name = names[static_cast<size_t>(i)];
    }
    for (const auto& d : drop) sens[static_cast<size_t>(d.site)] = d;
    source = "measured accuracy drop with the noise at one site alone (validation)";
  }
  const std::vector<double> mu = robustness_from(sens, sites);

  // ---- Validation evaluations (memoised by allocation) -----------------------------------------
  std::map<std::vector<int>, Summary> memo;
  int evaluations = 0;
  auto with_repeats = [&](const std::vector<int>& k) {
    NoiseConfig c = noise;
    for (auto& [site, cfg] : c.sites) cfg.repeats = k[static_cast<size_t>(site)];
    return c;
  };
  // A batch is spread over the MPI ranks (each evaluation is deterministic, so any rank gives
  // the same result) and every rank gets every result.
  const int ranks = dist::size(), me = dist::rank();
  auto validate_batch = [&](const std::vector<std::vector<int>>& ks) {
    std::vector<std::vector<int>> todo;
    for (const auto& k : ks) {
      if (!memo.count(k) && std::find(todo.begin(), todo.end(), k) == todo.end()) {
        todo.push_back(k);
      }
    }
    if (!todo.empty()) {
      torch::Tensor packed = torch::zeros({static_cast<int64_t>(todo.size()), 7}, torch::kDouble);
      auto p = packed.accessor<double, 2>();
      for (size_t i = 0; i < todo.size(); ++i) {
        if (static_cast<int>(i % static_cast<size_t>(ranks)) != me) continue;
        const Summary v = evaluate(*model, val, with_repeats(todo[i]), search_eval).headline();
        const double fields[] = {static_cast<double>(v.n), v.mean, v.std, v.ci_low,
                                 v.ci_high, v.min, v.max};
        for (int f = 0; f < 7; ++f) p[static_cast<int64_t>(i)][f] = fields[f];
      }
      dist::allreduce_sum(packed);
      p = packed.accessor<double, 2>();
      for (size_t i = 0; i < todo.size(); ++i) {
        const auto r = static_cast<int64_t>(i);
        Summary v;
        v.n = static_cast<int64_t>(p[r][0]);
        v.mean = p[r][1];
        v.std = p[r][2];
        v.ci_low = p[r][3];
        v.ci_high = p[r][4];
        v.min = p[r][5];
        v.max = p[r][6];
        memo[todo[i]] = v;
      }
      evaluations += static_cast<int>(todo.size());
    }
    std::vector<Summary> out;
    for (const auto& k : ks) out.push_back(memo.at(k));
    return out;
  };
  auto validate = [&](const std::vector<int>& k) { return validate_batch({k}).front(); };
  const Summary val_start = validate(ones);

  std::vector<Row> rows;
  std::vector<AllocationScore> tried;
  auto add = [&](const std::string& method, const std::string& budget, std::vector<int> k) {
    for (const auto& r : rows) {
      if (r.method == method && r.budget == budget) return;
    }
    Row r;
    r.method = method;
    r.budget = budget;
    r.repeats = std::move(k);
    rows.push_back(std::move(r));  // validated together below
  };
  add("unmitigated", "-", ones);

  auto scheme_alloc = [&](const std::string& scheme, int64_t total) {
    const std::vector<int> k = allocate_repeats(scheme_weights(scheme, mu), total);
    std::vector<int> full = ones;
    for (size_t i = 0; i < sites.size(); ++i) full[static_cast<size_t>(sites[i])] = k[i];
    return full;
  };
  const auto max_total = static_cast<int64_t>(std::llround(a.max_mean * num_planned));
  // Budgets in repetitions: Σ k = L · mean over the planned sites.
  for (double m : a.mean_repeats) {
    const auto total = static_cast<int64_t>(std::llround(m * static_cast<double>(num_planned)));
    const std::string budget = "k=" + fmt_double(m);
    for (const auto& scheme : a.schemes) add(scheme, budget, scheme_alloc(scheme, total));
    if (a.search == "greedy") {
      const ProgressFn bar = dist::is_root() ? progress_bar("search " + budget) : nullptr;
      std::vector<AllocationScore> t;
      const auto k = optimise_allocation(sites, ones, repeats_of, static_cast<double>(total),
                                         validate_batch, val_start, a.min_gain, a.search_width, 0.0,
                                         &t, bar);
      for (auto& x : t) x.method = "search " + budget;
      tried.insert(tried.end(), t.begin(), t.end());
      add("optimised", budget, k);
    }
  }
  // Budgets in energy: overhead <= E% of the base inference.
  for (double e : a.energy_budgets) {
    const double limit = base_energy * (1.0 + e / 100.0);
    const std::string budget = "energy<=" + fmt_double(e) + "%";
    for (const auto& scheme : a.schemes) {
      add(scheme, budget,
          fit_budget(sites, scheme_weights(scheme, mu), n_sites, energy_of, limit, max_total));
    }
    if (a.search == "greedy") {
      const ProgressFn bar = dist::is_root() ? progress_bar("search " + budget) : nullptr;
      std::vector<AllocationScore> t;
      const auto k = optimise_allocation(sites, ones, energy_of, limit, validate_batch, val_start,
                                         a.min_gain, a.search_width, 0.0, &t, bar);
      for (auto& x : t) x.method = "search " + budget;
      tried.insert(tried.end(), t.begin(), t.end());
      add("optimised", budget, k);
    }
  }
  // Accuracy target: the cheapest allocation along each scheme (growing mean k) and along the
  // greedy path that reaches it on validation.
  if (a.target > 0) {
    const std::string budget = "target " + fmt_double(a.target);
    for (const auto& scheme : a.schemes) {
      for (int64_t total = num_planned; total <= max_total; total += std::max<int64_t>(1, num_planned / 2)) {
        const auto k = scheme_alloc(scheme, total);
        if (validate(k).mean >= a.target) {
          add(scheme, budget, k);
          break;
        }
      }
    }
    if (a.search == "greedy") {
      std::vector<int> cap = ones;
      for (int s : sites) cap[static_cast<size_t>(s)] = static_cast<int>(std::ceil(a.max_mean));
      const ProgressFn bar = dist::is_root() ? progress_bar("search " + budget) : nullptr;
      std::vector<AllocationScore> t;
      const auto k = optimise_allocation(sites, ones, energy_of, energy_of(cap), validate_batch,
                                         val_start, a.min_gain, a.search_width, a.target, &t, bar);
      for (auto& x : t) x.method = "search " + budget;
      tried.insert(tried.end(), t.begin(), t.end());
      if (validate(k).mean >= a.target) add("optimised", budget, k);
    }
  }
  {
    std::vector<std::vector<int>> ks;
    for (const auto& r : rows) ks.push_back(r.repeats);
    const auto vals = validate_batch(ks);
    for (size_t i = 0; i < rows.size(); ++i) rows[i].val = vals[i];
  }
  std::cout << evaluations << " allocations evaluated on validation" << std::endl;

  // ---- Test evaluation of every reported allocation (rows spread over the ranks) ---------------
  const bool chips_matter = noise.has_static(), draws_matter = noise.has_dynamic();
  const int64_t passes = (chips_matter ? a.eval.chips : 1) * (draws_matter ? a.eval.draws : 1);
  torch::Tensor packed =
      torch::zeros({static_cast<int64_t>(rows.size()), passes, 4}, torch::kDouble);
  for (size_t i = 0; i < rows.size(); ++i) {
    Row& r = rows[i];
    const CostReport c = estimate_cost(*model, hw, r.repeats, {});
    r.energy_pj = c.total.energy_pj();
    r.energy_overhead = c.energy_overhead_pct();
    r.latency_overhead = c.latency_overhead_pct();
    if (static_cast<int>(i % static_cast<size_t>(ranks)) != me) continue;
    EvalOptions o = a.eval;
    o.progress = dist::is_root() ? progress_bar("eval " + r.method + " " + r.budget) : nullptr;
    const EvalResult e = evaluate(*model, test, with_repeats(r.repeats), o);
    auto p = packed.accessor<double, 3>();
    for (size_t d = 0; d < e.draws.size() && static_cast<int64_t>(d) < passes; ++d) {
      const auto j = static_cast<int64_t>(d);
      p[static_cast<int64_t>(i)][j][0] = e.draws[d].chip;
      p[static_cast<int64_t>(i)][j][1] = e.draws[d].draw;
      p[static_cast<int64_t>(i)][j][2] = e.draws[d].accuracy;
      p[static_cast<int64_t>(i)][j][3] = e.draws[d].loss;
    }
  }
  dist::allreduce_sum(packed);
  {
    auto p = packed.accessor<double, 3>();
    for (size_t i = 0; i < rows.size(); ++i) {
      std::vector<DrawResult> draws;
      for (int64_t j = 0; j < passes; ++j) {
        const auto row = static_cast<int64_t>(i);
        draws.push_back({static_cast<int>(p[row][j][0]), static_cast<int>(p[row][j][1]),
                         p[row][j][2], p[row][j][3]});
      }
      rows[i].test = summarize_draws(std::move(draws), chips_matter, draws_matter);
    }
  }
  EvalOptions quiet = a.eval;
  quiet.progress = nullptr;
  const double clean = evaluate(*model, test, NoiseConfig{}, quiet).accuracy.mean;
  if (!dist::is_root()) return;  // rank 0 writes the outputs

  // ---- Other mitigations from a quell denoise report (same noise) ------------------------------
  struct Other {
    std::string method, placement;
    double energy_overhead = 0, latency_overhead = 0, area_overhead = 0;
    double param_overhead = 0;
    Summary noisy;
  };
  std::vector<Other> others;
  if (!a.denoise_report.empty()) {
    for (const auto& c : report_in["comparison"]) {
      const std::string name = c.value("model", "");
      if (name == "unmitigated") continue;
      Other o;
      o.method = name;
      o.placement = c.value("placement", "none");
      o.param_overhead = c.value("overhead_pct", 0.0);
      const Json& n = c.at("noisy");
      o.noisy.n = n.value("n", 0);
      o.noisy.mean = n.value("mean", 0.0);
      o.noisy.ci_low = n.value("ci95_low", o.noisy.mean);
      o.noisy.ci_high = n.value("ci95_high", o.noisy.mean);
      std::vector<BlockPlacement> blocks;
      if (!is_finetune(name)) {
        blocks = parse_placement_label(o.placement, names);
      }
      const CostReport cr = estimate_cost(*model, hw, ones, blocks);
      o.energy_overhead = cr.energy_overhead_pct();
      o.latency_overhead = cr.latency_overhead_pct();
      o.area_overhead = cr.area_overhead_pct();
      others.push_back(o);
    }
  }

  // ---- Outputs ---------------------------------------------------------------------------------
  std::vector<double> ex, acc;
  for (const auto& r : rows) {
    ex.push_back(r.energy_overhead);
    acc.push_back(r.test.headline().mean);
  }
  for (const auto& o : others) {
    ex.push_back(o.energy_overhead);
    acc.push_back(o.noisy.mean);
  }
  const auto front = pareto_front(ex, acc);
  const std::set<size_t> on_front(front.begin(), front.end());

  CsvTable table({"method", "budget", "allocation", "total_repeats", "energy_nj",
                  "energy_overhead_pct", "latency_overhead_pct", "area_overhead_pct",
                  "val_mean", "test_mean", "ci95_low", "ci95_high", "ci_over", "pareto"});
  Json jrows = Json::array();
  for (size_t i = 0; i < rows.size(); ++i) {
    const Row& r = rows[i];
    const Summary& h = r.test.headline();
    const std::string label = allocation_label(r.repeats, names);
    table.add_row({r.method, r.budget, label, fmt_double(repeats_of(r.repeats)),
                   fmt_double(r.energy_pj * 1e-3, 6), fmt_double(r.energy_overhead, 6),
                   fmt_double(r.latency_overhead, 6), "0", fmt_double(r.val.mean, 6),
                   fmt_double(h.mean, 6), fmt_double(h.ci_low, 6), fmt_double(h.ci_high, 6),
                   r.test.chip_level ? "chips" : "draws", on_front.count(i) ? "1" : "0"});
    Json draws = Json::array();
    for (const auto& d : r.test.draws) draws.push_back({{"chip", d.chip}, {"draw", d.draw}, {"accuracy", d.accuracy}});
    jrows.push_back({{"method", r.method},
                     {"budget", r.budget},
                     {"allocation", label},
                     {"repeats", r.repeats},
                     {"total_repeats", repeats_of(r.repeats)},
                     {"energy_pj", r.energy_pj},
                     {"energy_overhead_pct", r.energy_overhead},
                     {"latency_overhead_pct", r.latency_overhead},
                     {"validation", summary_json(r.val)},
                     {"test", summary_json(h)},
                     {"ci_over", r.test.chip_level ? "chips" : "draws"},
                     {"test_draws", draws},
                     {"pareto", on_front.count(i) > 0}});
  }
  Json jothers = Json::array();
  for (size_t j = 0; j < others.size(); ++j) {
    const Other& o = others[j];
    const bool front_point = on_front.count(rows.size() + j) > 0;
    table.add_row({o.method, "params " + fmt_double(o.param_overhead, 4) + "%", o.placement, "",
                   "", fmt_double(o.energy_overhead, 6), fmt_double(o.latency_overhead, 6),
                   fmt_double(o.area_overhead, 6), "", fmt_double(o.noisy.mean, 6),
                   fmt_double(o.noisy.ci_low, 6), fmt_double(o.noisy.ci_high, 6), "report",
                   front_point ? "1" : "0"});
    jothers.push_back({{"method", o.method},
                       {"placement", o.placement},
                       {"param_overhead_pct", o.param_overhead},
                       {"energy_overhead_pct", o.energy_overhead},
                       {"latency_overhead_pct", o.latency_overhead},
                       {"area_overhead_pct", o.area_overhead},
                       {"test", summary_json(o.noisy)},
                       {"pareto", front_point}});
  }
  CsvTable points({"search", "step", "allocation", "total_repeats", "cost", "val_mean",
                   "ci95_low", "ci95_high"});
  for (const auto& t : tried) {
    points.add_row({t.method, std::to_string(t.step), allocation_label(t.repeats, names),
                    fmt_double(repeats_of(t.repeats)), fmt_double(t.cost, 8),
                    fmt_double(t.accuracy.mean, 6), fmt_double(t.accuracy.ci_low, 6),
                    fmt_double(t.accuracy.ci_high, 6)});
  }
  Json jsites = Json::array();
  for (size_t i = 0; i < sites.size(); ++i) {
    const auto s = static_cast<size_t>(sites[i]);
    jsites.push_back({{"site", sites[i]},
                      {"name", names[s]},
                      {"sensitivity", std::isfinite(sens[s].value) ? Json(sens[s].value) : Json("inf")},
                      {"robustness", std::isfinite(mu[i]) ? Json(mu[i]) : Json("inf")},
                      {"energy_per_execution_pj", base_cost.layers[s].energy_pj()}});
  }
  Json report{{"checkpoint", a.checkpoint},
              {"model", spec.to_json()},
              {"dataset", test.name},
              {"noise", noise.to_json(names)},
              {"clean_accuracy", clean},
              {"sensitivity_source", source},
              {"planned_sites", jsites},
              {"not_planned_static_only", skipped},
              {"base_cost", base_cost.to_json()},
              {"allocations", jrows},
              {"other_mitigations", jothers},
              {"evaluation", {{"draws", a.eval.draws}, {"chips", a.eval.chips}}},
              {"search",
               {{"method", a.search},
                {"width", a.search_width},
                {"draws", a.search_draws},
                {"validation_size", val.size()},
                {"evaluations", evaluations}}},
              {"provenance", provenance()}};
  std::vector<std::string> written;
  auto put = [&](const std::string& file, const std::string& content) {
    write_file_atomic((fs::path(a.out) / file).string(), content);
    written.push_back(file);
  };
  put("plan.json", report.dump(2) + "\n");
  put("allocations.csv", table.str());
  put("points.csv", points.str());

  // Figure: accuracy vs energy overhead, one group per method.
  DenoisePlotData fig;
  fig.title = spec.name + ", " + test.name;
  fig.clean_accuracy = clean;
  fig.noisy_accuracy = rows.front().test.headline().mean;
  fig.chance = 1.0 / static_cast<double>(spec.num_classes);
  fig.points_name = "tradeoff";
  fig.x_label = "energy overhead per inference (% of the base, '" + hw.name + "' cost model)";
  fig.points_what = "accuracy under noise vs energy overhead (mean, 95% CI)";
  for (size_t i = 0; i < rows.size(); ++i) {
    const Row& r = rows[i];
    if (r.method == "unmitigated") continue;
    const Summary& h = r.test.headline();
    fig.points.push_back({r.method + " " + r.budget, "repeat: " + r.method, r.energy_overhead,
                          h.mean, h.ci_low,
                          h.ci_high, on_front.count(i) > 0});
  }
  for (size_t j = 0; j < others.size(); ++j) {
    const Other& o = others[j];
    const bool fine = is_finetune(o.method);
    fig.points.push_back({fine ? "fine-tune" : o.method, fine ? "noise-aware fine-tuning" : "denoisers",
                          o.energy_overhead, o.noisy.mean, o.noisy.ci_low, o.noisy.ci_high,
                          on_front.count(rows.size() + j) > 0});
  }
  if (!fig.points.empty()) {
    for (const auto& f : write_points_figure(fig, a.out, formats)) {
      written.push_back(fs::path(f).filename().string());
    }
  }

  // Table on stdout.
  std::cout << "clean accuracy " << fmt_double(clean, 4) << "; base inference "
            << fmt_double(base_energy * 1e-3, 4) << " nJ on '" << hw.name << "'\n";
  std::cout << std::left << std::setw(24) << "method" << std::setw(16) << "budget" << std::right
            << std::setw(8) << "sum k" << std::setw(11) << "energy +%" << std::setw(10)
            << "accuracy" << "  95% CI\n";
  for (const auto& r : rows) {
    const Summary& h = r.test.headline();
    std::cout << std::left << std::setw(24) << r.method << std::setw(16) << r.budget << std::right
              << std::setw(8) << fmt_double(repeats_of(r.repeats)) << std::setw(11)
              << fmt_double(r.energy_overhead, 4) << std::setw(10) << fmt_double(h.mean, 4)
              << "  [" << fmt_double(h.ci_low, 4) << ", " << fmt_double(h.ci_high, 4) << "]  "
              << allocation_label(r.repeats, names) << "\n";
  }
  for (const auto& o : others) {
    std::cout << std::left << std::setw(24) << o.method << std::setw(16)
              << ("params " + pct(o.param_overhead)) << std::right << std::setw(8) << "-"
              << std::setw(11) << fmt_double(o.energy_overhead, 4) << std::setw(10)
              << fmt_double(o.noisy.mean, 4) << "  [" << fmt_double(o.noisy.ci_low, 4) << ", "
              << fmt_double(o.noisy.ci_high, 4) << "]  (from " << a.denoise_report << ")\n";
  }
  std::cout << "wrote " << join(written) << " to " << a.out << std::endl;
}

}  // namespace

void add_plan_command(CLI::App& app) {
  auto args = std::make_shared<PlanArgs>();
  CLI::App* cmd = app.add_subcommand(
      "plan", "Multi-execution planner: repetitions per site under a budget, evaluated and costed");
  cmd->add_option("checkpoint", args->checkpoint, "Trained checkpoint, or a TorchScript file")->required();
  cmd->add_option("--out", args->out, "Output directory")->required();
  cmd->add_option("--sites", args->sites,
                  "Sites that may be repeated (all | names, indices, ranges); only sites with "
                  "dynamic noise are planned")
      ->capture_default_str();
  cmd->add_option("--walk", args->walk_json,
                  "Robustness from a quell walk result (walk.json midpoints); default: the "
                  "measured accuracy drop with the noise at each site alone");
  cmd->add_option("--schemes", args->schemes,
                  "Allocation schemes: " + join(allocation_schemes()))
      ->delimiter(',')
      ->capture_default_str();
  cmd->add_option("--mean-repeats", args->mean_repeats,
                  "Repetition budgets: mean k over the planned sites (sum k = L * mean), e.g. "
                  "2,4 (the default when no budget is given)")
      ->delimiter(',');
  cmd->add_option("--energy-budget", args->energy_budgets,
                  "Energy budgets: overhead in % of the base inference, e.g. 25,100")
      ->delimiter(',');
  cmd->add_option("--target", args->target,
                  "Accuracy target: the cheapest allocation per scheme reaching it on validation");
  cmd->add_option("--max-mean", args->max_mean, "Largest mean k tried for --target and energy fits")
      ->check(CLI::Range(1.0, 1024.0))
      ->capture_default_str();
  cmd->add_option("--search", args->search, "Optimised allocation: greedy or none")
      ->check(CLI::IsMember({"greedy", "none"}))
      ->capture_default_str();
  cmd->add_option("--search-width", args->search_width,
                  "Sites re-evaluated per greedy step after the first (0 = all)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  cmd->add_option("--search-draws", args->search_draws,
                  "Noise draws (and chips, for static noise) per validation evaluation")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--val-size", args->val_size,
                  "Validation images, held out from the end of the training set")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--min-gain", args->min_gain, "Smallest validation gain a greedy step must make")
      ->capture_default_str();
  cmd->add_option("--hardware", args->hardware,
                  "Cost model preset (" + join(hardware_preset_names()) + ") or JSON file")
      ->capture_default_str();
  cmd->add_option("--set", args->set, "Override a cost constant FIELD=VALUE, repeatable");
  cmd->add_option("--denoise-report", args->denoise_report,
                  "A quell denoise report.json for the same checkpoint and noise: its "
                  "mitigations join the comparison, costed with the same hardware model");
  cmd->add_option("--draws", args->eval.draws, "Noise draws per chip in the test evaluation")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--chips", args->eval.chips, "Chip instances in the test evaluation")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--figures", args->figures, "Figure formats: png,svg | png | svg | none")
      ->capture_default_str();
  args->data.add_for_checkpoint(*cmd);
  args->noise.add(*cmd);
  args->runtime.add(*cmd);
  cmd->callback([args] {
    args->runtime.apply();
    run(*args);
  });
}

}  // namespace quell::cli
