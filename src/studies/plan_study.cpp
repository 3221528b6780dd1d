// The multi-execution study (docs/plan.md): sensitivities, allocations per scheme and budget,
// the measured greedy search, test evaluation and costing, and the report's forms.
#include "quell/plan_study.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <map>
#include <set>
#include <sstream>

#include "quell/denoise.h"
#include "quell/dist.h"
#include "quell/journal.h"
#include "quell/load.h"
#include "quell/walk_study.h"
#include "util/json.h"

namespace quell {
namespace {

namespace fs = std::filesystem;

std::string pct(double v) { return fmt_double(v, 4) + "%"; }

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

Json inf_or(double v) { return std::isfinite(v) ? Json(v) : Json("inf"); }

std::string repeats_key(const std::vector<int>& k) {
  std::string s;
  for (int x : k) s += (s.empty() ? "" : ",") + std::to_string(x);
  return s;
}

// What determines the study's results, for its journal.
Json study_fingerprint(const PlanStudyOptions& o, ModelImpl& model, const Dataset& train,
                       const Dataset& test, const Json& noise) {
  Json options{{"sites", o.sites},
               {"walk", o.walk_json.empty() ? "" : file_digest(o.walk_json)},
               {"schemes", o.schemes},
               {"mean_repeats", o.mean_repeats},
               {"energy_budgets", o.energy_budgets},
               {"target", o.target},
               {"max_mean", o.max_mean},
               {"search", o.search},
               {"search_width", o.search_width},
               {"search_draws", o.search_draws},
               {"val_size", o.val_size},
               {"min_gain", o.min_gain},
               {"hardware", o.hardware.to_json()},
               {"eval", {{"draws", o.eval.draws}, {"chips", o.eval.chips},
                         {"batch_size", o.eval.batch_size}}}};
  if (!o.metric.empty() && o.metric != "auto") options["metric"] = Metric::parse(o.metric).name();
  return Json{{"model", model_state_digest(model)},
              {"data", {{"train", tensor_digest({train.inputs, train.targets})},
                        {"test", tensor_digest({test.inputs, test.targets})}}},
              {"noise", noise},
              {"options", options}};
}

// The checks that need the model, and what they resolve: the denoise report to compare with,
// the planned sites (selected, with noise a repetition averages: a dynamic component) and the
// selected sites left out (static noise only).
struct Checked {
  DenoiseReport denoise_in;
  std::vector<int> sites;
  std::vector<std::string> not_planned;
};

Checked check_with(ModelImpl& model, const PlanStudyOptions& opts) {
  opts.validate();
  const auto names = model.site_names();
  const NoiseConfig& noise = opts.noise;
  for (const auto& [site, cfg] : noise.sites) {
    if (cfg.repeats != 1) {
      throw std::invalid_argument("the noise sets repeat counts (site " + names[site] +
                                  "); the plan chooses them: give the noise without repeats");
    }
  }
  model.engine().configure(noise);  // validates against the calibration
  model.engine().configure(NoiseConfig{});
  Checked c;
  if (!opts.denoise_report.empty()) {
    c.denoise_in = DenoiseReport::read(opts.denoise_report);
    if (c.denoise_in.noise != noise.to_json(names)) {
      throw std::invalid_argument("denoise report " + opts.denoise_report +
                                  ": its noise differs from this plan's (give the same noise)");
    }
    for (const auto& r : c.denoise_in.comparison) {
      if (r.is_finetune()) continue;  // no blocks ("whole network")
      try {
        parse_placement_label(r.placement, names);
      } catch (const std::invalid_argument& e) {
        throw std::invalid_argument("denoise report " + opts.denoise_report + ": " + e.what());
      }
    }
  }
  const auto info = model.sites();
  for (int s : select_sites(opts.sites, names)) {
    const auto it = noise.sites.find(s);
    if (it == noise.sites.end()) continue;
    if (!info[static_cast<size_t>(s)].floating) continue;  // token ids: no noise to repeat
    const bool dynamic = std::any_of(it->second.noise.begin(), it->second.noise.end(),
                                     [](const NoiseSpec& n) {
                                       return !n.is_zero() && n.temporal == Temporal::kDynamic;
                                     });
    if (dynamic) {
      c.sites.push_back(s);
    } else {
      c.not_planned.push_back(names[static_cast<size_t>(s)]);
    }
  }
  if (c.sites.empty()) {
    throw std::invalid_argument(
        "no site in sites '" + opts.sites +
        "' has dynamic noise: repeating a computation averages only fresh (dynamic) noise");
  }
  return c;
}

// The options with the default budgets when none is given.
PlanStudyOptions with_default_budgets(PlanStudyOptions o) {
  if (o.mean_repeats.empty() && o.energy_budgets.empty() && !(o.target > 0)) {
    o.mean_repeats = {2.0, 4.0};
  }
  return o;
}

}  // namespace

void check_plan_study(ModelImpl& model, const PlanStudyOptions& opts) {
  check_with(model, with_default_budgets(opts));
}

void PlanStudyOptions::validate() const {
  if (noise.empty()) {
    throw std::invalid_argument("no noise to plan against: the noise configuration is empty");
  }
  for (const auto& s : schemes) scheme_weights(s, {1.0});  // unknown names fail here
  for (double k : mean_repeats) {
    if (!(k >= 1.0) || !std::isfinite(k)) {
      throw std::invalid_argument("mean repeats must be >= 1, got " + fmt_double(k));
    }
  }
  for (double e : energy_budgets) {
    if (!(e >= 0.0) || !std::isfinite(e)) {
      throw std::invalid_argument("energy budget must be >= 0 (%), got " + fmt_double(e));
    }
  }
  if (std::isnan(target) || target < 0 || target > 1) {
    throw std::invalid_argument("target must be an accuracy in [0, 1], got " + fmt_double(target));
  }
  if (!(max_mean >= 1.0) || !std::isfinite(max_mean)) {
    throw std::invalid_argument("max mean repeats must be >= 1, got " + fmt_double(max_mean));
  }
  if (search != "greedy" && search != "none") {
    throw std::invalid_argument("search '" + search + "': expected greedy or none");
  }
  if (!walk_json.empty() && !fs::exists(walk_json)) {
    throw std::invalid_argument("walk result " + walk_json + ": no such file");
  }
  if (!denoise_report.empty() && !fs::exists(denoise_report)) {
    throw std::invalid_argument("denoise report " + denoise_report + ": no such file");
  }
  hardware.validate();
}

PlanReport run_plan_study(Model model_holder, const Dataset& train_all, const Dataset& test,
                          const PlanStudyOptions& options) {
  const PlanStudyOptions opts = with_default_budgets(options);
  TORCH_CHECK(model_holder, "run_plan_study: no model");
  ModelImpl& model = *model_holder;
  const StudyMonitor& monitor = opts.monitor;
  const bool root = dist::is_root();
  const HardwareConfig& hw = opts.hardware;
  const torch::Device device = opts.device;
  model.to(device);
  model.eval();
  const ModelSpec spec = model.spec();
  const auto names = model.site_names();
  const int n_sites = model.num_sites();
  const std::string what = opts.source.empty() ? spec.name : opts.source;
  const NoiseConfig& noise = opts.noise;
  PlanReport report;
  const Checked checked = check_with(model, opts);
  const DenoiseReport& denoise_in = checked.denoise_in;
  const std::vector<int>& sites = checked.sites;
  report.not_planned = checked.not_planned;
  const auto num_planned = static_cast<int64_t>(sites.size());

  check_model_fits(model, train_all, what);
  check_model_fits(model, test, what);
  const Metric metric = resolve_search_metric(opts.metric, test, spec.num_classes, "plan");
  EvalOptions eval_opts = opts.eval;
  eval_opts.metric = metric;
  report.metric = metric;
  if (!opts.out.empty()) fs::create_directories(opts.out);
  // Under MPI rank 0 writes the journal and every rank reads it (a shared file system).
  const bool journaled = !opts.out.empty();
  const std::string journal_path = (fs::path(opts.out) / "journal.jsonl").string();
  const Json fingerprint =
      journaled ? study_fingerprint(opts, model, train_all, test, noise.to_json(names)) : Json();
  if (journaled && root && opts.restart) fs::remove(journal_path);
  if (journaled && root) StudyJournal(journal_path, "plan", fingerprint);  // created, checked
  if (dist::size() > 1) dist::barrier();
  StudyJournal journal(journaled ? journal_path : "", "plan", fingerprint, root);
  if (journal.resumed() > 0) {
    monitor.warn("resuming: " + std::to_string(journal.resumed()) + " results already in " +
                 journal_path);
  }
  const int64_t n_val = std::min(opts.val_size, train_all.size());
  const Dataset val = slice_dataset(train_all, train_all.size() - n_val, n_val);
  monitor.say("plan " + spec.name + " on " + test.name + ": " + std::to_string(sites.size()) +
              " planned sites, validation " + std::to_string(val.size()) + ", test " +
              std::to_string(test.size()) + ", hardware '" + hw.name + "'");
  if (!report.not_planned.empty()) {
    monitor.say("not planned (static noise only; repetition cannot average it): " +
                join(report.not_planned));
  }

  // ---- Costs -----------------------------------------------------------------------------------
  const std::vector<int> ones(static_cast<size_t>(n_sites), 1);
  const CostReport base_cost = estimate_cost(model, hw, ones, {});
  const double base_energy = base_cost.base.energy_pj();
  auto energy_of = [&](const std::vector<int>& k) {
    return estimate_cost(model, hw, k, {}).total.energy_pj();
  };
  auto repeats_of = [&](const std::vector<int>& k) {
    double t = 0;
    for (int s : sites) t += k[static_cast<size_t>(s)];
    return t;
  };

  // ---- Sensitivities ---------------------------------------------------------------------------
  EvalOptions search_eval = eval_opts;
  search_eval.draws = opts.search_draws;
  search_eval.chips = noise.has_static() ? opts.search_draws : 1;
  search_eval.progress = nullptr;
  std::vector<SiteSensitivity> sens;
  if (!opts.walk_json.empty()) {
    sens = walk_sensitivity(opts.walk_json, names);
    report.sensitivity_source = "walk midpoints (" + opts.walk_json + ")";
  } else {
    std::vector<SiteSensitivity> drop;
    if (const Json* j = journal.find("ranking:drop")) {
      for (const auto& s : *j) {
        drop.push_back({json::integer(s.at(0), "site"), s.at(1).get<std::string>(),
                        number_from_json(s.at(2))});
      }
    } else {
      drop = drop_sensitivity(model, val, noise, sites, search_eval);
      Json a = Json::array();
      for (const auto& s : drop) a.push_back({s.site, s.name, number_or_string(s.value)});
      journal.append("ranking:drop", a);
    }
    sens.assign(static_cast<size_t>(n_sites), SiteSensitivity{});
    for (int i = 0; i < n_sites; ++i) {
      sens[static_cast<size_t>(i)].site = i;
      sens[static_cast<size_t>(i)].name = names[static_cast<size_t>(i)];
    }
    for (const auto& d : drop) sens[static_cast<size_t>(d.site)] = d;
    report.sensitivity_source =
        "measured accuracy drop with the noise at one site alone (validation)";
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
  auto validate_batch = [&](const std::vector<std::vector<int>>& ks) {
    std::vector<std::vector<int>> todo;
    for (const auto& k : ks) {
      if (memo.count(k) || std::find(todo.begin(), todo.end(), k) != todo.end()) continue;
      if (const Json* j = journal.find("val:" + repeats_key(k))) {
        memo[k] = summary_from_json(*j);  // evaluated before the study was stopped
        ++evaluations;
        continue;
      }
      todo.push_back(k);
    }
    if (!todo.empty()) {
      const auto rows = dist::share_rows(static_cast<int64_t>(todo.size()), 7, [&](int64_t i) {
        const Summary v =
            evaluate(model, val, with_repeats(todo[static_cast<size_t>(i)]), search_eval)
                .headline();
        return std::vector<double>{static_cast<double>(v.n), v.mean, v.std, v.ci_low,
                                   v.ci_high, v.min, v.max};
      });
      for (size_t i = 0; i < todo.size(); ++i) {
        const auto& p = rows[i];
        Summary v;
        v.n = static_cast<int64_t>(p[0]);
        v.mean = p[1];
        v.std = p[2];
        v.ci_low = p[3];
        v.ci_high = p[4];
        v.min = p[5];
        v.max = p[6];
        memo[todo[i]] = v;
        journal.append("val:" + repeats_key(todo[i]), summary_to_json(v, true));
      }
      evaluations += static_cast<int>(todo.size());
    }
    std::vector<Summary> out;
    for (const auto& k : ks) out.push_back(memo.at(k));
    return out;
  };
  auto validate = [&](const std::vector<int>& k) { return validate_batch({k}).front(); };
  const Summary val_start = validate(ones);

  std::vector<PlanAllocation>& rows = report.allocations;
  std::vector<AllocationScore>& tried = report.points;
  auto add = [&](const std::string& method, const std::string& budget, std::vector<int> k) {
    for (const auto& r : rows) {
      if (r.method == method && r.budget == budget) return;
    }
    PlanAllocation r;
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
  auto search_bar = [&](const std::string& budget) {
    return root ? monitor.bar("search " + budget) : nullptr;
  };
  const auto max_total = static_cast<int64_t>(std::llround(opts.max_mean * num_planned));
  // Budgets in repetitions: Σ k = L · mean over the planned sites.
  for (double m : opts.mean_repeats) {
    const auto total = static_cast<int64_t>(std::llround(m * static_cast<double>(num_planned)));
    const std::string budget = "k=" + fmt_double(m);
    for (const auto& scheme : opts.schemes) add(scheme, budget, scheme_alloc(scheme, total));
    if (opts.search == "greedy") {
      std::vector<AllocationScore> t;
      const auto k = optimise_allocation(sites, ones, repeats_of, static_cast<double>(total),
                                         validate_batch, val_start, opts.min_gain,
                                         opts.search_width, 0.0, &t, search_bar(budget));
      for (auto& x : t) x.method = "search " + budget;
      tried.insert(tried.end(), t.begin(), t.end());
      add("optimised", budget, k);
    }
  }
  // Budgets in energy: overhead <= E% of the base inference.
  for (double e : opts.energy_budgets) {
    const double limit = base_energy * (1.0 + e / 100.0);
    const std::string budget = "energy<=" + fmt_double(e) + "%";
    for (const auto& scheme : opts.schemes) {
      add(scheme, budget,
          fit_budget(sites, scheme_weights(scheme, mu), n_sites, energy_of, limit, max_total));
    }
    if (opts.search == "greedy") {
      std::vector<AllocationScore> t;
      const auto k = optimise_allocation(sites, ones, energy_of, limit, validate_batch, val_start,
                                         opts.min_gain, opts.search_width, 0.0, &t,
                                         search_bar(budget));
      for (auto& x : t) x.method = "search " + budget;
      tried.insert(tried.end(), t.begin(), t.end());
      add("optimised", budget, k);
    }
  }
  // Accuracy target: the cheapest allocation along each scheme (growing mean k) and along the
  // greedy path that reaches it on validation.
  if (opts.target > 0) {
    const std::string budget = "target " + fmt_double(opts.target);
    for (const auto& scheme : opts.schemes) {
      for (int64_t total = num_planned; total <= max_total;
           total += std::max<int64_t>(1, num_planned / 2)) {
        const auto k = scheme_alloc(scheme, total);
        if (validate(k).mean >= opts.target) {
          add(scheme, budget, k);
          break;
        }
      }
    }
    if (opts.search == "greedy") {
      std::vector<int> cap = ones;
      for (int s : sites) cap[static_cast<size_t>(s)] = static_cast<int>(std::ceil(opts.max_mean));
      std::vector<AllocationScore> t;
      const auto k = optimise_allocation(sites, ones, energy_of, energy_of(cap), validate_batch,
                                         val_start, opts.min_gain, opts.search_width, opts.target,
                                         &t, search_bar(budget));
      for (auto& x : t) x.method = "search " + budget;
      tried.insert(tried.end(), t.begin(), t.end());
      if (validate(k).mean >= opts.target) add("optimised", budget, k);
    }
  }
  {
    std::vector<std::vector<int>> ks;
    for (const auto& r : rows) ks.push_back(r.repeats);
    const auto vals = validate_batch(ks);
    for (size_t i = 0; i < rows.size(); ++i) rows[i].validation = vals[i];
  }
  monitor.say(std::to_string(evaluations) + " allocations evaluated on validation");

  // ---- Test evaluation of every reported allocation (rows spread over the ranks) ---------------
  const bool chips_matter = noise.has_static(), draws_matter = noise.has_dynamic();
  const int64_t passes =
      (chips_matter ? eval_opts.chips : 1) * (draws_matter ? eval_opts.draws : 1);
  for (auto& r : rows) {
    const CostReport c = estimate_cost(model, hw, r.repeats, {});
    r.energy_pj = c.total.energy_pj();
    r.energy_overhead_pct = c.energy_overhead_pct();
    r.latency_overhead_pct = c.latency_overhead_pct();
    r.label = allocation_label(r.repeats, names);
    r.total_repeats = repeats_of(r.repeats);
  }
  const auto test_key = [](const PlanAllocation& r) {
    return "test:" + r.method + "|" + r.budget + "|" + repeats_key(r.repeats);
  };
  const auto packed =
      dist::share_rows(static_cast<int64_t>(rows.size()), passes * 4, [&](int64_t i) {
        const PlanAllocation& r = rows[static_cast<size_t>(i)];
        if (const Json* j = journal.find(test_key(r))) return j->get<std::vector<double>>();
        EvalOptions o = eval_opts;
        o.progress = root ? monitor.bar("eval " + r.method + " " + r.budget) : nullptr;
        const EvalResult e = evaluate(model, test, with_repeats(r.repeats), o);
        std::vector<double> out(static_cast<size_t>(passes * 4), 0.0);
        for (size_t d = 0; d < e.draws.size() && static_cast<int64_t>(d) < passes; ++d) {
          out[4 * d] = e.draws[d].chip;
          out[4 * d + 1] = e.draws[d].draw;
          out[4 * d + 2] = e.draws[d].accuracy;
          out[4 * d + 3] = e.draws[d].loss;
        }
        journal.append(test_key(r), out);
        return out;
      });
  for (size_t i = 0; i < rows.size(); ++i) {
    std::vector<DrawResult> draws;
    const auto& p = packed[i];
    for (int64_t j = 0; j < passes; ++j) {
      const auto b = static_cast<size_t>(4 * j);
      draws.push_back({static_cast<int>(p[b]), static_cast<int>(p[b + 1]), p[b + 2], p[b + 3]});
    }
    rows[i].test = summarize_draws(std::move(draws), chips_matter, draws_matter);
  }
  EvalOptions quiet = eval_opts;
  quiet.progress = nullptr;
  if (const Json* j = journal.find("clean")) {
    report.clean_accuracy = j->get<double>();
  } else {
    report.clean_accuracy = evaluate(model, test, NoiseConfig{}, quiet).accuracy.mean;
    journal.append("clean", report.clean_accuracy);
  }

  // ---- Other mitigations from a quell denoise report (same noise) ------------------------------
  for (const auto& c : denoise_in.comparison) {
    if (c.model == "unmitigated") continue;
    PlanOtherMitigation o;
    o.method = c.model;
    o.placement = c.placement;
    o.param_overhead_pct = c.overhead_pct;
    o.test = c.noisy.headline();
    std::vector<BlockPlacement> blocks;
    if (!c.is_finetune()) blocks = parse_placement_label(o.placement, names);
    const CostReport cr = estimate_cost(model, hw, ones, blocks);
    o.energy_overhead_pct = cr.energy_overhead_pct();
    o.latency_overhead_pct = cr.latency_overhead_pct();
    o.area_overhead_pct = cr.area_overhead_pct();
    report.others.push_back(o);
  }

  // ---- The report ------------------------------------------------------------------------------
  std::vector<double> ex, acc;
  for (const auto& r : rows) {
    ex.push_back(r.energy_overhead_pct);
    acc.push_back(r.test.headline().mean);
  }
  for (const auto& o : report.others) {
    ex.push_back(o.energy_overhead_pct);
    acc.push_back(o.test.mean);
  }
  const auto front = pareto_front(ex, acc);
  const std::set<size_t> on_front(front.begin(), front.end());
  for (size_t i = 0; i < rows.size(); ++i) rows[i].pareto = on_front.count(i) > 0;
  for (size_t j = 0; j < report.others.size(); ++j) {
    report.others[j].pareto = on_front.count(rows.size() + j) > 0;
  }
  report.context = RunContext::capture(device.str());
  report.checkpoint = opts.source;
  report.model = spec;
  report.dataset = test.name;
  report.noise = noise.to_json(names);
  for (size_t i = 0; i < sites.size(); ++i) {
    const auto s = static_cast<size_t>(sites[i]);
    report.planned_sites.push_back(
        {sites[i], names[s], sens[s].value, mu[i], base_cost.layers[s].energy_pj()});
  }
  report.base_cost = base_cost.to_json();
  report.base_energy_pj = base_energy;
  report.hardware = hw.name;
  report.denoise_report = opts.denoise_report;
  report.eval_draws = eval_opts.draws;
  report.eval_chips = eval_opts.chips;
  report.search_method = opts.search;
  report.search_width = opts.search_width;
  report.search_draws = opts.search_draws;
  report.validation_size = val.size();
  report.evaluations = evaluations;
  report.site_names = names;
  if (!root || opts.out.empty()) return report;  // rank 0 writes the outputs

  auto put = [&](const std::string& file, const std::string& content) {
    write_file_atomic((fs::path(opts.out) / file).string(), content);
    report.written.push_back(file);
  };
  put("plan.json", report.to_json().dump(2) + "\n");
  put("allocations.csv", report.allocations_csv());
  put("points.csv", report.points_csv());
  const DenoisePlotData fig = report.plot_data();
  if (!fig.points.empty()) {
    for (const auto& f : write_points_figure(fig, opts.out, opts.figures)) {
      report.written.push_back(fs::path(f).filename().string());
    }
  }
  return report;
}

// ---- The report's forms ---------------------------------------------------------------------

Json PlanReport::to_json() const {
  Json jrows = Json::array();
  for (const auto& r : allocations) {
    const Summary& h = r.test.headline();
    Json draws = Json::array();
    for (const auto& d : r.test.draws) {
      draws.push_back({{"chip", d.chip}, {"draw", d.draw}, {"accuracy", d.accuracy}});
    }
    jrows.push_back({{"method", r.method},
                     {"budget", r.budget},
                     {"allocation", r.label},
                     {"repeats", r.repeats},
                     {"total_repeats", r.total_repeats},
                     {"energy_pj", r.energy_pj},
                     {"energy_overhead_pct", r.energy_overhead_pct},
                     {"latency_overhead_pct", r.latency_overhead_pct},
                     {"validation", summary_to_json(r.validation)},
                     {"test", summary_to_json(h)},
                     {"ci_over", r.test.chip_level ? "chips" : "draws"},
                     {"test_draws", draws},
                     {"pareto", r.pareto}});
  }
  Json jothers = Json::array();
  for (const auto& o : others) {
    jothers.push_back({{"method", o.method},
                       {"placement", o.placement},
                       {"param_overhead_pct", o.param_overhead_pct},
                       {"energy_overhead_pct", o.energy_overhead_pct},
                       {"latency_overhead_pct", o.latency_overhead_pct},
                       {"area_overhead_pct", o.area_overhead_pct},
                       {"test", summary_to_json(o.test)},
                       {"pareto", o.pareto}});
  }
  Json jsites = Json::array();
  for (const auto& s : planned_sites) {
    jsites.push_back({{"site", s.site},
                      {"name", s.name},
                      {"sensitivity", inf_or(s.sensitivity)},
                      {"robustness", inf_or(s.robustness)},
                      {"energy_per_execution_pj", s.energy_per_execution_pj}});
  }
  Json j{{"checkpoint", checkpoint},
              {"model", model.to_json()},
              {"dataset", dataset},
              {"noise", noise},
              {"clean_accuracy", clean_accuracy},
              {"sensitivity_source", sensitivity_source},
              {"planned_sites", jsites},
              {"not_planned_static_only", not_planned},
              {"base_cost", base_cost},
              {"allocations", jrows},
              {"other_mitigations", jothers},
              {"evaluation", {{"draws", eval_draws}, {"chips", eval_chips}}},
              {"search",
               {{"method", search_method},
                {"width", search_width},
                {"draws", search_draws},
                {"validation_size", validation_size},
                {"evaluations", evaluations}}},
              {"provenance", context.to_json()}};
  if (!metric.is_accuracy()) j["metric"] = metric.name();
  return keys_for_metric(j, metric);
}

PlanReport PlanReport::from_json(const Json& input) {
  const Metric metric = metric_of_report(input);
  const Json j = keys_from_metric(input, metric);
  if (!j.is_object() || !j.contains("allocations") || !j.contains("noise")) {
    throw std::invalid_argument("not a quell plan.json (no allocations or noise)");
  }
  PlanReport r;
  r.metric = metric;
  try {
    r.context = RunContext::from_json(j.value("provenance", Json::object()));
    r.checkpoint = j.value("checkpoint", "");
    if (j.contains("model")) r.model = ModelSpec::from_json(j.at("model"));
    r.dataset = j.value("dataset", "");
    r.noise = j.at("noise");
    r.clean_accuracy = j.value("clean_accuracy", 0.0);
    r.sensitivity_source = j.value("sensitivity_source", "");
    for (const auto& s : j.value("planned_sites", Json::array())) {
      r.planned_sites.push_back({json::integer_or(s, "site", 0), s.value("name", ""),
                                 number_from_json(s.at("sensitivity")),
                                 number_from_json(s.at("robustness")),
                                 s.value("energy_per_execution_pj", 0.0)});
    }
    r.not_planned = j.value("not_planned_static_only", std::vector<std::string>{});
    r.base_cost = j.value("base_cost", Json::object());
    for (const auto& a : j.at("allocations")) {
      PlanAllocation p;
      p.method = a.at("method").get<std::string>();
      p.budget = a.value("budget", "");
      p.label = a.value("allocation", "none");
      p.repeats = json::integers_or_empty<int>(a, "repeats");
      p.total_repeats = a.value("total_repeats", 0.0);
      p.energy_pj = a.value("energy_pj", 0.0);
      p.energy_overhead_pct = a.value("energy_overhead_pct", 0.0);
      p.latency_overhead_pct = a.value("latency_overhead_pct", 0.0);
      p.validation = summary_from_json(a.value("validation", Json::object()));
      p.test.chip_level = a.value("ci_over", "draws") == "chips";
      (p.test.chip_level ? p.test.chip_accuracy : p.test.accuracy) =
          summary_from_json(a.value("test", Json::object()));
      for (const auto& d : a.value("test_draws", Json::array())) {
        p.test.draws.push_back({json::integer_or(d, "chip", 0), json::integer_or(d, "draw", 0),
                                d.value("accuracy", 0.0), 0.0});
      }
      p.pareto = a.value("pareto", false);
      r.allocations.push_back(p);
    }
    for (const auto& o : j.value("other_mitigations", Json::array())) {
      PlanOtherMitigation m;
      m.method = o.value("method", "");
      m.placement = o.value("placement", "");
      m.param_overhead_pct = o.value("param_overhead_pct", 0.0);
      m.energy_overhead_pct = o.value("energy_overhead_pct", 0.0);
      m.latency_overhead_pct = o.value("latency_overhead_pct", 0.0);
      m.area_overhead_pct = o.value("area_overhead_pct", 0.0);
      m.test = summary_from_json(o.value("test", Json::object()));
      m.pareto = o.value("pareto", false);
      r.others.push_back(m);
    }
    const Json e = j.value("evaluation", Json::object());
    r.eval_draws = json::integer_or(e, "draws", 0);
    r.eval_chips = json::integer_or(e, "chips", 0);
    const Json s = j.value("search", Json::object());
    r.search_method = s.value("method", "");
    r.search_width = json::integer_or(s, "width", 0);
    r.search_draws = json::integer_or(s, "draws", 0);
    r.validation_size = json::integer_or<int64_t>(s, "validation_size", 0);
    r.evaluations = json::integer_or(s, "evaluations", 0);
  } catch (const Json::exception& e) {
    throw std::invalid_argument(std::string("not a quell plan.json: ") + e.what());
  }
  return r;
}

PlanReport PlanReport::read(const std::string& path) {
  const Json j = read_json_document(path);
  try {
    return from_json(j);
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument(path + ": " + e.what());
  }
}

std::string PlanReport::allocations_csv() const {
  CsvTable table({"method", "budget", "allocation", "total_repeats", "energy_nj",
                  "energy_overhead_pct", "latency_overhead_pct", "area_overhead_pct",
                  "val_mean", "test_mean", "ci95_low", "ci95_high", "ci_over", "pareto"});
  for (const auto& r : allocations) {
    const Summary& h = r.test.headline();
    table.add_row({r.method, r.budget, r.label, fmt_double(r.total_repeats),
                   fmt_double(r.energy_pj * 1e-3, 6), fmt_double(r.energy_overhead_pct, 6),
                   fmt_double(r.latency_overhead_pct, 6), "0", fmt_double(r.validation.mean, 6),
                   fmt_double(h.mean, 6), fmt_double(h.ci_low, 6), fmt_double(h.ci_high, 6),
                   r.test.chip_level ? "chips" : "draws", r.pareto ? "1" : "0"});
  }
  for (const auto& o : others) {
    table.add_row({o.method, "params " + fmt_double(o.param_overhead_pct, 4) + "%", o.placement,
                   "", "", fmt_double(o.energy_overhead_pct, 6),
                   fmt_double(o.latency_overhead_pct, 6), fmt_double(o.area_overhead_pct, 6), "",
                   fmt_double(o.test.mean, 6), fmt_double(o.test.ci_low, 6),
                   fmt_double(o.test.ci_high, 6), "report", o.pareto ? "1" : "0"});
  }
  return csv_for_metric(table.str(), metric);
}

std::string PlanReport::points_csv() const {
  CsvTable csv({"search", "step", "allocation", "total_repeats", "cost", "val_mean", "ci95_low",
                "ci95_high"});
  std::set<int> planned;
  for (const auto& s : planned_sites) planned.insert(s.site);
  for (const auto& t : points) {
    double total = 0;
    for (int s : planned) total += t.repeats.at(static_cast<size_t>(s));
    csv.add_row({t.method, std::to_string(t.step), allocation_label(t.repeats, site_names),
                 fmt_double(total), fmt_double(t.cost, 8), fmt_double(t.accuracy.mean, 6),
                 fmt_double(t.accuracy.ci_low, 6), fmt_double(t.accuracy.ci_high, 6)});
  }
  return csv_for_metric(csv.str(), metric);
}

std::string PlanReport::table() const {
  std::ostringstream os;
  os << "clean accuracy " << fmt_double(clean_accuracy, 4) << "; base inference "
     << fmt_double(base_energy_pj * 1e-3, 4) << " nJ on '" << hardware << "'\n";
  os << std::left << std::setw(24) << "method" << std::setw(16) << "budget" << std::right
     << std::setw(8) << "sum k" << std::setw(11) << "energy +%" << std::setw(10) << "accuracy"
     << "  95% CI\n";
  for (const auto& r : allocations) {
    const Summary& h = r.test.headline();
    os << std::left << std::setw(24) << r.method << std::setw(16) << r.budget << std::right
       << std::setw(8) << fmt_double(r.total_repeats) << std::setw(11)
       << fmt_double(r.energy_overhead_pct, 4) << std::setw(10) << fmt_double(h.mean, 4) << "  ["
       << fmt_double(h.ci_low, 4) << ", " << fmt_double(h.ci_high, 4) << "]  " << r.label << "\n";
  }
  for (const auto& o : others) {
    os << std::left << std::setw(24) << o.method << std::setw(16)
       << ("params " + pct(o.param_overhead_pct)) << std::right << std::setw(8) << "-"
       << std::setw(11) << fmt_double(o.energy_overhead_pct, 4) << std::setw(10)
       << fmt_double(o.test.mean, 4) << "  [" << fmt_double(o.test.ci_low, 4) << ", "
       << fmt_double(o.test.ci_high, 4) << "]  (from " << denoise_report << ")\n";
  }
  return text_for_metric(os.str(), metric, metric.label());
}

DenoisePlotData PlanReport::plot_data() const {
  DenoisePlotData fig;
  fig.title = model.name + ", " + dataset;
  fig.clean_accuracy = clean_accuracy;
  fig.noisy_accuracy = allocations.empty() ? 0.0 : allocations.front().test.headline().mean;
  fig.chance = 1.0 / static_cast<double>(model.num_classes);  // accuracies only (plan maximises one)
  fig.points_name = "tradeoff";
  fig.x_label = "energy overhead per inference (% of the base, '" + hardware + "' cost model)";
  fig.points_what = "accuracy under noise vs energy overhead (mean, 95% CI)";
  for (const auto& r : allocations) {
    if (r.method == "unmitigated") continue;
    const Summary& h = r.test.headline();
    fig.points.push_back({r.method + " " + r.budget, "repeat: " + r.method,
                          r.energy_overhead_pct, h.mean, h.ci_low, h.ci_high, r.pareto});
  }
  for (const auto& o : others) {
    const bool fine = o.is_finetune();
    fig.points.push_back({fine ? "fine-tune" : o.method,
                          fine ? "noise-aware fine-tuning" : "denoisers", o.energy_overhead_pct,
                          o.test.mean, o.test.ci_low, o.test.ci_high, o.pareto});
  }
  return fig;
}

}  // namespace quell
