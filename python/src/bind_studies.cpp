// The studies' options and calls. Every run_* releases the GIL; progress and messages come
// back through the monitor (with the GIL), which also turns Ctrl-C into KeyboardInterrupt.
#include "bindings.h"
#include "quell/cost.h"
#include "quell/denoise_study.h"
#include "quell/eval_study.h"
#include "quell/inspect.h"
#include "quell/noise.h"
#include "quell/plan_study.h"
#include "quell/runtime.h"
#include "quell/train_study.h"
#include "quell/walk_study.h"

namespace quell::python {
namespace {

Model holder(const std::shared_ptr<ModelImpl>& m) {
  if (!m) throw std::invalid_argument("no model");
  return Model(m);
}

PlotFormats formats_of(const std::string& text) {
  PlotFormats f{false, false};
  if (text.find("png") != std::string::npos) f.png = true;
  if (text.find("svg") != std::string::npos) f.svg = true;
  return f;
}

// Runs a study with the GIL released and the monitor installed.
template <typename Options, typename Fn>
auto run_with(Options opts, py::object progress, py::object message, Fn&& fn) {
  opts.monitor = monitor_from(std::move(progress), std::move(message));
  py::gil_scoped_release release;
  return fn(opts);
}

}  // namespace

void bind_studies(py::module_& m) {
  m.def("set_threads", &set_threads, py::arg("threads") = 0);

  py::class_<NoiseConfig>(m, "NoiseConfig")
      .def(py::init<>())
      .def_static("build", &build_noise_config, py::arg("noise"), py::arg("adc"),
                  py::arg("repeat"), py::arg("weight_noise"), py::arg("seed"),
                  py::arg("site_names"))
      .def_static(
          "from_json",
          [](const std::string& text, const std::vector<std::string>& names) {
            return noise_config_from_json(Json::parse(text), names);
          },
          py::arg("json"), py::arg("site_names"))
      .def("apply_rules", &apply_noise_rules, py::arg("noise"), py::arg("adc"),
           py::arg("repeat"), py::arg("site_names"))
      .def("to_json",
           [](const NoiseConfig& c, const std::vector<std::string>& names) {
             return c.to_json(names).dump();
           })
      .def("empty", &NoiseConfig::empty)
      .def("scaled", &NoiseConfig::scaled)
      .def_readwrite("seed", &NoiseConfig::seed)
      .def("set_weight_noise",
           [](NoiseConfig& c, const std::string& spec) { c.weight = WeightNoise::parse(spec); })
      .def(
          "set_device",
          [](NoiseConfig& c, const std::string& json, const std::vector<std::string>& names) {
            c.device = DeviceConfig::from_json(Json::parse(json), names);
          },
          py::arg("json"), py::arg("site_names"));
  m.def("parse_duration", &parse_duration, py::arg("text"));
  m.def("durations_as_seconds", &durations_as_seconds, py::arg("grid"));
  m.def("select_sites", &select_sites, py::arg("selector"), py::arg("site_names"));

  py::class_<EvalOptions>(m, "EvalOptions")
      .def(py::init<>())
      .def_readwrite("draws", &EvalOptions::draws)
      .def_readwrite("chips", &EvalOptions::chips)
      .def_readwrite("batch_size", &EvalOptions::batch_size);

  py::class_<TrainOptions>(m, "TrainOptions")
      .def(py::init<>())
      .def_readwrite("epochs", &TrainOptions::epochs)
      .def_readwrite("batch_size", &TrainOptions::batch_size)
      .def_readwrite("optimizer", &TrainOptions::optimizer)
      .def_readwrite("lr", &TrainOptions::lr)
      .def_readwrite("momentum", &TrainOptions::momentum)
      .def_readwrite("weight_decay", &TrainOptions::weight_decay)
      .def_readwrite("cosine", &TrainOptions::cosine)
      .def_readwrite("seed", &TrainOptions::seed)
      .def_readwrite("noise", &TrainOptions::noise)
      .def_readwrite("calib_samples", &TrainOptions::calib_samples);

  py::class_<DenoiseTrainOptions>(m, "DenoiseTrainOptions")
      .def(py::init<>())
      .def_readwrite("epochs", &DenoiseTrainOptions::epochs)
      .def_readwrite("batch_size", &DenoiseTrainOptions::batch_size)
      .def_readwrite("lr", &DenoiseTrainOptions::lr)
      .def_readwrite("seed", &DenoiseTrainOptions::seed)
      .def_readwrite("scale_lo", &DenoiseTrainOptions::scale_lo)
      .def_readwrite("scale_hi", &DenoiseTrainOptions::scale_hi)
      .def_readwrite("feature_weight", &DenoiseTrainOptions::feature_weight);
  py::class_<ChipCalibrationOptions>(m, "ChipCalibrationOptions")
      .def(py::init<>())
      .def_readwrite("samples", &ChipCalibrationOptions::samples)
      .def_readwrite("epochs", &ChipCalibrationOptions::epochs)
      .def_readwrite("lr", &ChipCalibrationOptions::lr)
      .def_readwrite("batch_size", &ChipCalibrationOptions::batch_size)
      .def_readwrite("feature_weight", &ChipCalibrationOptions::feature_weight)
      .def_readwrite("holdout", &ChipCalibrationOptions::holdout)
      .def_readwrite("check_draws", &ChipCalibrationOptions::check_draws)
      .def_readwrite("seed", &ChipCalibrationOptions::seed);

  py::class_<WalkOptions>(m, "WalkOptions")
      .def(py::init<>())
      .def("set_noise", [](WalkOptions& o, const std::string& t) { o.noise = WalkNoise::parse(t); })
      .def(
          "set_device",
          [](WalkOptions& o, const std::string& json, const std::vector<std::string>& names,
             const std::string& sweep) {
            if (sweep != "time" && sweep != "scale") {
              throw std::invalid_argument("sweep '" + sweep + "': expected time or scale");
            }
            o.device = DeviceConfig::from_json(Json::parse(json), names);
            o.device_sweep = sweep == "time" ? WalkOptions::DeviceSweep::kTime
                                             : WalkOptions::DeviceSweep::kScale;
          },
          py::arg("json"), py::arg("site_names"), py::arg("sweep"))
      .def("set_grid", [](WalkOptions& o, const std::string& t,
                          int per_decade) { o.grid = SigmaGrid::parse(t, per_decade); })
      .def_readwrite("global_curve", &WalkOptions::global)
      .def_readwrite("repeats", &WalkOptions::repeats)
      .def_readwrite("early_stop", &WalkOptions::early_stop)
      .def_readwrite("chance", &WalkOptions::chance)
      .def_readwrite("chance_margin", &WalkOptions::chance_margin)
      .def_readwrite("max_extend", &WalkOptions::max_extend)
      .def_readwrite("seed", &WalkOptions::seed)
      .def_readwrite("batch_size", &WalkOptions::batch_size)
      .def_readwrite("prefix_cache", &WalkOptions::prefix_cache)
      .def_readwrite("cache_bytes", &WalkOptions::cache_bytes)
      .def_readwrite("adaptive", &WalkOptions::adaptive)
      .def_readwrite("tolerance", &WalkOptions::tolerance)
      .def_readwrite("shard_index", &WalkOptions::shard_index)
      .def_readwrite("shard_count", &WalkOptions::shard_count);

  py::class_<TrainStudyOptions>(m, "TrainStudyOptions")
      .def(py::init<>())
      .def_readwrite("train", &TrainStudyOptions::train)
      .def_readwrite("out", &TrainStudyOptions::out)
      .def("set_device", [](TrainStudyOptions& o, const std::string& d) { o.device = torch::Device(d); })
      .def("set_dataset", [](TrainStudyOptions& o, const std::string& n) { o.data.name = n; });

  py::class_<EvalStudyOptions>(m, "EvalStudyOptions")
      .def(py::init<>())
      .def_readwrite("metric", &EvalStudyOptions::metric)
      .def_readwrite("noise", &EvalStudyOptions::noise)
      .def_readwrite("levels", &EvalStudyOptions::levels)
      .def_readwrite("times", &EvalStudyOptions::times)
      .def_readwrite("both_compensations", &EvalStudyOptions::both_compensations)
      .def_readwrite("eval", &EvalStudyOptions::eval)
      .def_readwrite("split", &EvalStudyOptions::split)
      .def_readwrite("source", &EvalStudyOptions::source)
      .def_readwrite("noise_description", &EvalStudyOptions::noise_description)
      .def("set_device", [](EvalStudyOptions& o, const std::string& d) { o.device = torch::Device(d); });

  py::class_<WalkStudyOptions>(m, "WalkStudyOptions")
      .def(py::init<>())
      .def_readwrite("metric", &WalkStudyOptions::metric)
      .def_readwrite("walk", &WalkStudyOptions::walk)
      .def_readwrite("sites", &WalkStudyOptions::sites)
      .def_readwrite("out", &WalkStudyOptions::out)
      .def_readwrite("restart", &WalkStudyOptions::restart)
      .def_readwrite("merge", &WalkStudyOptions::merge)
      .def_readwrite("noisy_training", &WalkStudyOptions::noisy_training)
      .def_readwrite("train_options", &WalkStudyOptions::train_options)
      .def_readwrite("train_limit", &WalkStudyOptions::train_limit)
      .def_readwrite("eval_draws", &WalkStudyOptions::eval_draws)
      .def_readwrite("save_models", &WalkStudyOptions::save_models)
      .def_readwrite("source", &WalkStudyOptions::source)
      .def_readwrite("model_digest", &WalkStudyOptions::model_digest)
      .def_readwrite("shard_text", &WalkStudyOptions::shard_text)
      .def("set_data", [](WalkStudyOptions& o, const std::string& name, int64_t limit,
                          uint64_t shuffle_seed) {
        o.data.name = name;
        o.data.limit = limit;
        o.data.shuffle_seed = shuffle_seed;
      })
      .def("set_figures", [](WalkStudyOptions& o, const std::string& f) { o.figures = formats_of(f); })
      .def("set_device", [](WalkStudyOptions& o, const std::string& d) { o.device = torch::Device(d); });

  py::class_<DenoiseStudyOptions>(m, "DenoiseStudyOptions")
      .def(py::init<>())
      .def_readwrite("metric", &DenoiseStudyOptions::metric)
      .def_readwrite("noise", &DenoiseStudyOptions::noise)
      .def_readwrite("sites", &DenoiseStudyOptions::sites)
      .def_readwrite("block", &DenoiseStudyOptions::block)
      .def_readwrite("ratios", &DenoiseStudyOptions::ratios)
      .def_readwrite("budgets", &DenoiseStudyOptions::budgets)
      .def_readwrite("search", &DenoiseStudyOptions::search)
      .def_readwrite("walk_json", &DenoiseStudyOptions::walk_json)
      .def_readwrite("drop_ranking", &DenoiseStudyOptions::drop_ranking)
      .def_readwrite("all_sites", &DenoiseStudyOptions::all_sites)
      .def_readwrite("finetune", &DenoiseStudyOptions::finetune)
      .def_readwrite("finetune_lr", &DenoiseStudyOptions::finetune_lr)
      .def_readwrite("train_limit", &DenoiseStudyOptions::train_limit)
      .def_readwrite("val_size", &DenoiseStudyOptions::val_size)
      .def_readwrite("search_limit", &DenoiseStudyOptions::search_limit)
      .def_readwrite("search_epochs", &DenoiseStudyOptions::search_epochs)
      .def_readwrite("search_width", &DenoiseStudyOptions::search_width)
      .def_readwrite("search_draws", &DenoiseStudyOptions::search_draws)
      .def_readwrite("taylor_samples", &DenoiseStudyOptions::taylor_samples)
      .def_readwrite("min_gain", &DenoiseStudyOptions::min_gain)
      .def_readwrite("train", &DenoiseStudyOptions::train)
      .def_readwrite("eval", &DenoiseStudyOptions::eval)
      .def_readwrite("calibrate", &DenoiseStudyOptions::calibrate)
      .def_readwrite("calibration", &DenoiseStudyOptions::calibration)
      .def_readwrite("bounds", &DenoiseStudyOptions::bounds)
      .def_readwrite("robustness_levels", &DenoiseStudyOptions::robustness_levels)
      .def_readwrite("robust_draws", &DenoiseStudyOptions::robust_draws)
      .def_readwrite("out", &DenoiseStudyOptions::out)
      .def_readwrite("restart", &DenoiseStudyOptions::restart)
      .def_readwrite("source", &DenoiseStudyOptions::source)
      .def("set_figures", [](DenoiseStudyOptions& o, const std::string& f) { o.figures = formats_of(f); })
      .def("set_device", [](DenoiseStudyOptions& o, const std::string& d) { o.device = torch::Device(d); });

  py::class_<PlanStudyOptions>(m, "PlanStudyOptions")
      .def(py::init<>())
      .def_readwrite("metric", &PlanStudyOptions::metric)
      .def_readwrite("noise", &PlanStudyOptions::noise)
      .def_readwrite("sites", &PlanStudyOptions::sites)
      .def_readwrite("walk_json", &PlanStudyOptions::walk_json)
      .def_readwrite("schemes", &PlanStudyOptions::schemes)
      .def_readwrite("mean_repeats", &PlanStudyOptions::mean_repeats)
      .def_readwrite("energy_budgets", &PlanStudyOptions::energy_budgets)
      .def_readwrite("target", &PlanStudyOptions::target)
      .def_readwrite("max_mean", &PlanStudyOptions::max_mean)
      .def_readwrite("search", &PlanStudyOptions::search)
      .def_readwrite("search_width", &PlanStudyOptions::search_width)
      .def_readwrite("search_draws", &PlanStudyOptions::search_draws)
      .def_readwrite("val_size", &PlanStudyOptions::val_size)
      .def_readwrite("min_gain", &PlanStudyOptions::min_gain)
      .def_readwrite("denoise_report", &PlanStudyOptions::denoise_report)
      .def_readwrite("eval", &PlanStudyOptions::eval)
      .def_readwrite("out", &PlanStudyOptions::out)
      .def_readwrite("restart", &PlanStudyOptions::restart)
      .def_readwrite("source", &PlanStudyOptions::source)
      .def("set_hardware",
           [](PlanStudyOptions& o, const std::string& name, const std::vector<std::string>& set) {
             o.hardware = load_hardware_config(name);
             for (const auto& s : set) o.hardware.set(s);
             o.hardware.validate();
           })
      .def("set_figures", [](PlanStudyOptions& o, const std::string& f) { o.figures = formats_of(f); })
      .def("set_device", [](PlanStudyOptions& o, const std::string& d) { o.device = torch::Device(d); });

  m.def("run_train_study",
        [](std::shared_ptr<ModelImpl> model, const Dataset& train, const Dataset* test,
           TrainStudyOptions o, py::object progress, py::object message) {
          return run_with(std::move(o), std::move(progress), std::move(message),
                          [&](const TrainStudyOptions& opts) {
                            return run_train_study(holder(model), train, test, opts);
                          });
        });
  m.def("run_eval_study", [](std::shared_ptr<ModelImpl> model, const Dataset& data,
                             EvalStudyOptions o, py::object progress, py::object message) {
    return run_with(std::move(o), std::move(progress), std::move(message),
                    [&](const EvalStudyOptions& opts) {
                      return run_eval_study(holder(model), data, opts);
                    });
  });
  m.def("run_walk_study",
        [](std::shared_ptr<ModelImpl> model, const Dataset& test, const Dataset* train,
           WalkStudyOptions o, py::object progress, py::object message) {
          return run_with(std::move(o), std::move(progress), std::move(message),
                          [&](const WalkStudyOptions& opts) {
                            return run_walk_study(holder(model), test, opts, train);
                          });
        });
  m.def("run_denoise_study",
        [](std::shared_ptr<ModelImpl> model, const Dataset& train, const Dataset& test,
           DenoiseStudyOptions o, py::object progress, py::object message) {
          return run_with(std::move(o), std::move(progress), std::move(message),
                          [&](const DenoiseStudyOptions& opts) {
                            return run_denoise_study(holder(model), train, test, opts);
                          });
        });
  m.def("run_plan_study",
        [](std::shared_ptr<ModelImpl> model, const Dataset& train, const Dataset& test,
           PlanStudyOptions o, py::object progress, py::object message) {
          return run_with(std::move(o), std::move(progress), std::move(message),
                          [&](const PlanStudyOptions& opts) {
                            return run_plan_study(holder(model), train, test, opts);
                          });
        });
  m.def(
      "estimate_cost",
      [](std::shared_ptr<ModelImpl> model, const std::string& hardware,
         const std::vector<std::string>& set, double node_nm, const std::vector<int>& repeats,
         const std::string& denoisers, const std::string& device_json) {
        HardwareConfig hw = load_hardware_config(hardware);
        if (!device_json.empty()) {
          apply_device(hw, DeviceConfig::from_json(Json::parse(device_json), model->site_names()));
        }
        for (const auto& s : set) hw.set(s);
        if (node_nm > 0) {
          hw.node_nm = node_nm;
          hw.sources["node_nm"] = "set by the user";
        }
        hw.validate();
        const auto names = model->site_names();
        const std::vector<BlockPlacement> blocks =
            denoisers.empty() ? model->denoiser_placement()
                              : parse_placement_label(denoisers, names);
        const CostReport r = estimate_cost(*model, hw, repeats, blocks);
        Json j = r.to_json();
        j["provenance"] = RunContext::capture().to_json();
        return py::make_tuple(j.dump(), format_cost_table(r), format_cost_csv(r));
      },
      py::arg("model"), py::arg("hardware") = "isaac", py::arg("set") = std::vector<std::string>{},
      py::arg("node_nm") = 0.0, py::arg("repeats") = std::vector<int>{},
      py::arg("denoisers") = "", py::arg("device_json") = "");
  m.def("hardware_presets", &hardware_preset_names);
  m.def(
      "inspect_model",
      [](std::shared_ptr<ModelImpl> model, const std::string& source, const std::string& dataset) {
        return inspect_model(*holder(model), source, dataset, Json::object(), "cpu");
      },
      py::arg("model"), py::arg("source") = "", py::arg("dataset") = "");
}

}  // namespace quell::python
