// Evaluation under noise over levels (`quell eval`), and the report's forms.
#include "quell/eval_study.h"

#include <cstdio>
#include <sstream>

#include "quell/load.h"

namespace quell {

EvalReport run_eval_study(Model model, const Dataset& data, const EvalStudyOptions& opts) {
  TORCH_CHECK(model, "run_eval_study: no model");
  if (opts.levels.empty()) throw std::invalid_argument("levels: give at least one");
  model->to(opts.device);
  const ModelSpec& spec = model->spec();
  check_model_fits(*model, data, opts.source.empty() ? spec.name : opts.source);
  const Metric metric = resolve_metric(opts.metric, data, spec.num_classes);
  const auto names = model->site_names();
  // Validate every level before the first (long) evaluation.
  std::vector<NoiseConfig> configs;
  for (double level : opts.levels) configs.push_back(opts.noise.scaled(level));
  for (const auto& c : configs) model->engine().configure(c);

  EvalReport r;
  EvalOptions clean_opts = opts.eval;
  clean_opts.metric = metric;
  r.metric = metric;
  const EvalResult clean = evaluate(*model, data, NoiseConfig{}, clean_opts);
  r.clean_accuracy = clean.accuracy.mean;
  r.clean_loss = clean.draws.at(0).loss;
  for (size_t i = 0; i < configs.size(); ++i) {
    EvalOptions o = opts.eval;
    o.metric = metric;
    o.progress = opts.monitor.bar("eval level " + fmt_double(opts.levels[i]));
    r.levels.push_back({opts.levels[i], configs[i].to_json(names),
                        evaluate(*model, data, configs[i], o)});
  }
  r.context = RunContext::capture(opts.device.str());
  r.checkpoint = opts.source;
  r.model = spec;
  r.denoising_blocks =
      model->has_denoisers() ? static_cast<int>(model->denoiser_placement().size()) : 0;
  r.dataset = data.name;
  r.split = opts.split;
  r.samples = data.size();
  r.limit = opts.data.limit;
  r.shuffle_seed = opts.data.shuffle_seed;
  r.chance = metric.floor(data, spec.num_classes);
  r.draws = opts.eval.draws;
  r.chips = opts.eval.chips;
  r.batch_size = opts.eval.batch_size;
  r.noise_seed = opts.noise.seed;
  r.noise = opts.noise.to_json(names);
  r.noise_description = opts.noise.empty() ? "none" : opts.noise_description;
  if (opts.data.name == "images") {
    DataOptions used = opts.data;  // with the normalisation actually applied
    used.mean = data.mean;
    used.stddev = data.stddev;
    r.preprocessing = used.preprocessing_json();
    r.skipped_images = static_cast<int64_t>(data.skipped.size());
  }
  return r;
}

Json EvalReport::to_json() const {
  Json jlevels = Json::array();
  for (const auto& l : levels) {
    Json draws_json = Json::array();
    for (const auto& d : l.result.draws) {
      draws_json.push_back(
          {{"chip", d.chip}, {"draw", d.draw}, {"accuracy", d.accuracy}, {"loss", d.loss}});
    }
    jlevels.push_back({{"level", l.level},
                       {"config", l.config},
                       {"accuracy", summary_to_json(l.result.accuracy, true)},
                       {"chip_accuracy", summary_to_json(l.result.chip_accuracy, true)},
                       {"ci_over", l.result.chip_level ? "chips" : "draws"},
                       {"deterministic", l.result.deterministic},
                       {"draws", draws_json}});
  }
  Json j{{"provenance", context.to_json()},
         {"checkpoint", checkpoint},
         {"model", model.to_json()},
         {"dataset",
          {{"name", dataset},
           {"split", split},
           {"samples", samples},
           {"limit", limit},
           {"shuffle_seed", shuffle_seed},
           {"chance", chance}}},
         {"options",
          {{"draws", draws}, {"chips", chips}, {"batch_size", batch_size}, {"noise_seed", noise_seed}}},
         {"noise", noise},
         {"clean", {{"accuracy", clean_accuracy}, {"loss", clean_loss}}},
         {"levels", jlevels}};
  if (!preprocessing.is_null()) {
    j["dataset"]["preprocessing"] = preprocessing;
    j["dataset"]["skipped_images"] = skipped_images;
  }
  if (!metric.is_accuracy()) j["metric"] = metric.name();
  return keys_for_metric(j, metric);
}

EvalReport EvalReport::from_json(const Json& input) {
  if (!input.is_object() || !input.contains("levels") || !input.contains("clean")) {
    throw std::invalid_argument("not a quell eval result (no levels or clean)");
  }
  EvalReport r;
  r.metric = metric_of_report(input);
  const Json j = keys_from_metric(input, r.metric);
  try {
    r.context = RunContext::from_json(j.value("provenance", Json::object()));
    r.checkpoint = j.value("checkpoint", "");
    if (j.contains("model")) r.model = ModelSpec::from_json(j.at("model"));
    const Json d = j.value("dataset", Json::object());
    r.dataset = d.value("name", "");
    r.split = d.value("split", "");
    r.samples = d.value("samples", int64_t{0});
    r.limit = d.value("limit", int64_t{0});
    r.shuffle_seed = d.value("shuffle_seed", uint64_t{0});
    r.chance = d.value("chance", 0.0);
    r.preprocessing = d.value("preprocessing", Json(nullptr));
    r.skipped_images = d.value("skipped_images", int64_t{0});
    const Json o = j.value("options", Json::object());
    r.draws = o.value("draws", 0);
    r.chips = o.value("chips", 0);
    r.batch_size = o.value("batch_size", int64_t{0});
    r.noise_seed = o.value("noise_seed", uint64_t{0});
    r.noise = j.value("noise", Json::object());
    r.clean_accuracy = j.at("clean").value("accuracy", 0.0);
    r.clean_loss = j.at("clean").value("loss", 0.0);
    for (const auto& l : j.at("levels")) {
      EvalLevel e;
      e.level = l.at("level").get<double>();
      e.config = l.value("config", Json::object());
      e.result.accuracy = summary_from_json(l.at("accuracy"));
      e.result.chip_accuracy = summary_from_json(l.value("chip_accuracy", Json::object()));
      e.result.chip_level = l.value("ci_over", "draws") == "chips";
      e.result.deterministic = l.value("deterministic", false);
      for (const auto& dr : l.value("draws", Json::array())) {
        e.result.draws.push_back({dr.value("chip", 0), dr.value("draw", 0),
                                  dr.value("accuracy", 0.0), dr.value("loss", 0.0)});
      }
      r.levels.push_back(e);
    }
  } catch (const Json::exception& e) {
    throw std::invalid_argument(std::string("not a quell eval result: ") + e.what());
  }
  return r;
}

std::string EvalReport::csv() const {
  CsvTable csv({"level", "chip", "draw", metric.key(), "loss"});
  for (const auto& l : levels) {
    for (const auto& d : l.result.draws) {
      csv.add_row({fmt_double(l.level), std::to_string(d.chip), std::to_string(d.draw),
                   fmt_double(d.accuracy, 8), fmt_double(d.loss, 8)});
    }
  }
  return csv.str();
}

std::string EvalReport::table() const {
  std::ostringstream table;
  char line[256];
  std::snprintf(line, sizeof line, "%-10s %10s %10s %22s %6s\n", "level", "accuracy", "+-95%CI",
                "CI", "n");
  table << "model " << model.name
        << (denoising_blocks > 0
                ? " + " + std::to_string(denoising_blocks) + " denoising block(s)"
                : std::string())
        << " on " << dataset << " " << split << " (" << samples << " samples); noise "
        << noise_description << ", chance " << fmt_double(chance, 3) << "\n"
        << line;
  std::snprintf(line, sizeof line, "%-10s %10.4f %10s %22s %6d\n", "clean", clean_accuracy, "-",
                "-", 1);
  table << line;
  for (const auto& l : levels) {
    const Summary& h = l.result.headline();
    std::snprintf(line, sizeof line, "%-10s %10.4f %10.4f   [%8.4f, %8.4f] %6lld%s\n",
                  fmt_double(l.level).c_str(), h.mean, h.half_width(), h.ci_low, h.ci_high,
                  static_cast<long long>(h.n), l.result.chip_level ? " chips" : "");
    table << line;
  }
  return text_for_metric(table.str(), metric, metric.label());
}

}  // namespace quell
