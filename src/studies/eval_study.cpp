// Evaluation under noise over levels (`quell eval`), and the report's forms.
#include "quell/eval_study.h"

#include <algorithm>
#include <cstdio>
#include <sstream>

#include "quell/load.h"
#include "util/json.h"

namespace quell {

EvalReport run_eval_study(Model model, const Dataset& data, const EvalStudyOptions& opts) {
  TORCH_CHECK(model, "run_eval_study: no model");
  if (opts.levels.empty()) throw std::invalid_argument("levels: give at least one");
  model->to(opts.device);
  const ModelSpec& spec = model->spec();
  check_model_fits(*model, data, opts.source.empty() ? spec.name : opts.source);
  const Metric metric = resolve_metric(opts.metric, data, spec.num_classes);
  const auto names = model->site_names();
  // Every (level, time, compensation) row, validated before the first (long) evaluation.
  const bool device_rows = !opts.times.empty() || opts.both_compensations;
  if (device_rows && !opts.noise.device.programs_weights()) {
    throw std::invalid_argument(
        "evaluating over times or drift compensation needs a device model on some layer (e.g. "
        "--device-model pcm)");
  }
  struct Row {
    double level, time;
    int compensation;
    NoiseConfig config;
  };
  std::vector<Row> rows;
  const std::vector<double> times =
      opts.times.empty() ? std::vector<double>{opts.noise.device.time} : opts.times;
  std::vector<int> comps{opts.noise.device.compensation ? 1 : 0};
  if (opts.both_compensations) comps = {0, 1};
  for (double level : opts.levels) {
    if (!device_rows) {
      rows.push_back({level, -1.0, -1, opts.noise.scaled(level)});
      continue;
    }
    for (double t : times) {
      for (int comp : comps) {
        NoiseConfig c = opts.noise.scaled(level);
        c.device.time = t;
        c.device.compensation = comp == 1;
        rows.push_back({level, t, comp, std::move(c)});
      }
    }
  }
  for (const auto& r : rows) model->engine().configure(r.config);

  EvalReport r;
  EvalOptions clean_opts = opts.eval;
  clean_opts.metric = metric;
  r.metric = metric;
  const EvalResult clean = evaluate(*model, data, NoiseConfig{}, clean_opts);
  r.clean_accuracy = clean.accuracy.mean;
  r.clean_loss = clean.draws.at(0).loss;
  for (const auto& row : rows) {
    EvalOptions o = opts.eval;
    o.metric = metric;
    std::string what = "eval level " + fmt_double(row.level);
    if (row.time >= 0.0) {
      what += " at " + duration_str(row.time) + (row.compensation == 1 ? " compensated" : "");
    }
    o.progress = opts.monitor.bar(what);
    EvalLevel level;
    level.level = row.level;
    level.time = row.time;
    level.compensation = row.compensation;
    level.config = row.config.to_json(names);
    level.result = evaluate(*model, data, row.config, o);
    r.levels.push_back(std::move(level));
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
    Json e{{"level", l.level},
           {"config", l.config},
           {"accuracy", summary_to_json(l.result.accuracy, true)},
           {"chip_accuracy", summary_to_json(l.result.chip_accuracy, true)},
           {"ci_over", l.result.chip_level ? "chips" : "draws"},
           {"deterministic", l.result.deterministic},
           {"draws", draws_json}};
    if (l.time >= 0.0) {
      e["time"] = l.time;
      e["compensation"] = l.compensation == 1;
    }
    jlevels.push_back(e);
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
    r.samples = json::integer_or<int64_t>(d, "samples", 0);
    r.limit = json::integer_or<int64_t>(d, "limit", 0);
    r.shuffle_seed = json::integer_or<uint64_t>(d, "shuffle_seed", 0);
    r.chance = d.value("chance", 0.0);
    r.preprocessing = d.value("preprocessing", Json(nullptr));
    r.skipped_images = json::integer_or<int64_t>(d, "skipped_images", 0);
    const Json o = j.value("options", Json::object());
    r.draws = json::integer_or(o, "draws", 0);
    r.chips = json::integer_or(o, "chips", 0);
    r.batch_size = json::integer_or<int64_t>(o, "batch_size", 0);
    r.noise_seed = json::integer_or<uint64_t>(o, "noise_seed", 0);
    r.noise = j.value("noise", Json::object());
    r.clean_accuracy = j.at("clean").value("accuracy", 0.0);
    r.clean_loss = j.at("clean").value("loss", 0.0);
    for (const auto& l : j.at("levels")) {
      EvalLevel e;
      e.level = l.at("level").get<double>();
      if (l.contains("time")) {
        e.time = l.at("time").get<double>();
        e.compensation = l.value("compensation", false) ? 1 : 0;
      }
      e.config = l.value("config", Json::object());
      e.result.accuracy = summary_from_json(l.at("accuracy"));
      e.result.chip_accuracy = summary_from_json(l.value("chip_accuracy", Json::object()));
      e.result.chip_level = l.value("ci_over", "draws") == "chips";
      e.result.deterministic = l.value("deterministic", false);
      for (const auto& dr : l.value("draws", Json::array())) {
        e.result.draws.push_back({json::integer_or(dr, "chip", 0), json::integer_or(dr, "draw", 0),
                                  dr.value("accuracy", 0.0), dr.value("loss", 0.0)});
      }
      r.levels.push_back(e);
    }
  } catch (const Json::exception& e) {
    throw std::invalid_argument(std::string("not a quell eval result: ") + e.what());
  }
  return r;
}

bool EvalReport::has_times() const {
  return std::any_of(levels.begin(), levels.end(), [](const EvalLevel& l) { return l.time >= 0.0; });
}

std::string EvalReport::csv() const {
  const bool times = has_times();
  std::vector<std::string> header{"level"};
  if (times) header.insert(header.end(), {"time_s", "compensation"});
  header.insert(header.end(), {"chip", "draw", metric.key(), "loss"});
  CsvTable csv(header);
  for (const auto& l : levels) {
    for (const auto& d : l.result.draws) {
      std::vector<std::string> row{fmt_double(l.level)};
      if (times) row.insert(row.end(), {fmt_double(l.time), l.compensation == 1 ? "1" : "0"});
      row.insert(row.end(), {std::to_string(d.chip), std::to_string(d.draw),
                             fmt_double(d.accuracy, 8), fmt_double(d.loss, 8)});
      csv.add_row(row);
    }
  }
  return csv.str();
}

std::string EvalReport::table() const {
  std::ostringstream table;
  char line[256];
  const bool times = has_times();
  const int w = times ? 24 : 10;  // the first column: level, or level, time and compensation
  std::snprintf(line, sizeof line, "%-*s %10s %10s %22s %6s\n", w,
                times ? "level  time  drift-comp" : "level", "accuracy", "+-95%CI", "CI", "n");
  table << "model " << model.name
        << (denoising_blocks > 0
                ? " + " + std::to_string(denoising_blocks) + " denoising block(s)"
                : std::string())
        << " on " << dataset << " " << split << " (" << samples << " samples); noise "
        << noise_description << ", chance " << fmt_double(chance, 3) << "\n"
        << line;
  std::snprintf(line, sizeof line, "%-*s %10.4f %10s %22s %6d\n", w, "clean", clean_accuracy,
                "-", "-", 1);
  table << line;
  for (const auto& l : levels) {
    const Summary& h = l.result.headline();
    std::string label = fmt_double(l.level);
    if (l.time >= 0.0) {
      label += "  " + duration_str(l.time) + (l.compensation == 1 ? "  on" : "  off");
    }
    std::snprintf(line, sizeof line, "%-*s %10.4f %10.4f   [%8.4f, %8.4f] %6lld%s\n", w,
                  label.c_str(), h.mean, h.half_width(), h.ci_low, h.ci_high,
                  static_cast<long long>(h.n), l.result.chip_level ? " chips" : "");
    table << line;
  }
  return text_for_metric(table.str(), metric, metric.label());
}

}  // namespace quell
