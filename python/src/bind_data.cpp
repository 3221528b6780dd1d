// Data: tensors in memory, built-in datasets by name, the synthetic generator.
#include "bindings.h"
#include "quell/data.h"
#include "quell/metric.h"

namespace quell::python {

void bind_data(py::module_& m) {
  py::class_<Dataset>(m, "NativeDataset")
      .def_readonly("name", &Dataset::name)
      .def_readonly("inputs", &Dataset::inputs)
      .def_readonly("targets", &Dataset::targets)
      .def_property_readonly("target_kind",
                             [](const Dataset& d) { return std::string(target_kind_name(d.target_kind())); })
      .def_readonly("num_classes", &Dataset::num_classes)
      .def_readonly("mean", &Dataset::mean)
      .def_readonly("stddev", &Dataset::stddev)
      .def("size", &Dataset::size)
      .def("chance", &Dataset::chance)
      .def("narrow", [](const Dataset& d, int64_t start, int64_t count) {
        if (start < 0 || count < 1 || start + count > d.size()) {
          throw std::invalid_argument("narrow: [" + std::to_string(start) + ", " +
                                      std::to_string(start + count) + ") is outside the " +
                                      std::to_string(d.size()) + " samples");
        }
        Dataset s = d;
        s.inputs = d.inputs.narrow(0, start, count);
        s.targets = d.targets.narrow(0, start, count);
        return s;
      });

  m.def("dataset_from_tensors", &dataset_from_tensors, py::arg("inputs"), py::arg("targets"),
        py::arg("num_classes") = 0, py::arg("name") = "tensors");
  m.def(
      "read_tensor_file",
      [](const std::string& path) {
        py::gil_scoped_release release;
        return read_tensor_file(path);
      },
      py::arg("path"));
  m.def("metric_names", &Metric::names);
  m.def(
      "metric_info",
      [](const std::string& name) {
        const Metric m = Metric::parse(name);
        return py::make_tuple(m.name(), m.key(), m.label(), m.higher_is_better());
      },
      py::arg("name"));
  m.def(
      "load_dataset",
      [](const std::string& name, const std::string& dir, const std::string& split,
         int64_t limit, uint64_t shuffle_seed) {
        if (split != "train" && split != "test") {
          throw std::invalid_argument("split '" + split + "': expected train or test");
        }
        DataOptions o;
        o.name = name;
        o.dir = dir;
        o.split = split == "train" ? Split::kTrain : Split::kTest;
        o.limit = limit;
        o.shuffle_seed = shuffle_seed;
        py::gil_scoped_release release;
        return load_dataset(o);
      },
      py::arg("name"), py::arg("dir") = "", py::arg("split") = "train", py::arg("limit") = 0,
      py::arg("shuffle_seed") = 0);
  m.def("dataset_names", &dataset_names);
  m.def("default_data_dir", &default_data_dir);
  m.def("write_synthetic_idx", &write_synthetic_idx, py::arg("dir"), py::arg("n_train"),
        py::arg("n_test"), py::arg("seed") = 1, py::arg("gzip") = true);
}

}  // namespace quell::python
