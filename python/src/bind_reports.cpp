// Result types: their JSON (the same documents the CLI writes), CSV, tables and figures.
#include "bindings.h"
#include "quell/denoise_study.h"
#include "quell/eval_study.h"
#include "quell/inspect.h"
#include "quell/plan_study.h"
#include "quell/train_study.h"
#include "quell/walk_study.h"

namespace quell::python {
namespace {

PlotFormats formats_of(bool png, bool svg) { return PlotFormats{png, svg}; }

}  // namespace

void bind_reports(py::module_& m) {
  py::class_<TrainReport>(m, "TrainReport")
      .def("metrics_json", [](const TrainReport& r) { return r.metrics_json().dump(); });
  py::class_<EvalReport>(m, "EvalReport")
      .def("to_json", [](const EvalReport& r) { return r.to_json().dump(); })
      .def("csv", &EvalReport::csv)
      .def("table", &EvalReport::table);
  py::class_<WalkReport>(m, "WalkReport")
      .def("to_json", [](const WalkReport& r) { return r.to_json().dump(); })
      .def("csv", &WalkReport::csv)
      .def("table", &WalkReport::table)
      .def_readonly("written", &WalkReport::written)
      .def_static("read", &WalkReport::read)
      .def("write_figures", [](const WalkReport& r, const std::string& dir, bool png, bool svg) {
        std::vector<std::string> out = write_walk_figures(r.plot_data(), dir, formats_of(png, svg));
        if (r.noisy_training && !r.result.records.empty()) {
          for (auto& f : write_dynamics_figures(r.dynamics_data(), dir, formats_of(png, svg))) {
            out.push_back(f);
          }
        }
        return out;
      });
  py::class_<DenoiseReport>(m, "DenoiseReport")
      .def("to_json", [](const DenoiseReport& r) { return r.to_json().dump(); })
      .def("report_csv", &DenoiseReport::report_csv)
      .def("points_csv", &DenoiseReport::points_csv)
      .def("rankings_csv", &DenoiseReport::rankings_csv)
      .def("robustness_csv", &DenoiseReport::robustness_csv)
      .def("table", &DenoiseReport::table)
      .def_readonly("written", &DenoiseReport::written)
      .def_static("read", &DenoiseReport::read)
      .def("write_figures",
           [](const DenoiseReport& r, const std::string& dir, bool png, bool svg) {
             return write_denoise_figures(r.plot_data(std::nan("")), dir, formats_of(png, svg));
           });
  py::class_<PlanReport>(m, "PlanReport")
      .def("to_json", [](const PlanReport& r) { return r.to_json().dump(); })
      .def("allocations_csv", &PlanReport::allocations_csv)
      .def("points_csv", &PlanReport::points_csv)
      .def("table", &PlanReport::table)
      .def_readonly("written", &PlanReport::written)
      .def_static("read", &PlanReport::read)
      .def("write_figures", [](const PlanReport& r, const std::string& dir, bool png, bool svg) {
        return write_points_figure(r.plot_data(), dir, formats_of(png, svg));
      });
  py::class_<InspectReport>(m, "InspectReport")
      .def("to_json", [](const InspectReport& r) { return r.to_json().dump(); })
      .def("csv", &InspectReport::csv)
      .def("table", &InspectReport::table);
  m.def("gnuplot_available", &gnuplot_available);
}

}  // namespace quell::python
