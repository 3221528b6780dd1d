// Models: built-in by name, from a checkpoint or TorchScript file, from TorchScript bytes (an
// nn.Module scripted or traced in Python), and the site table.
#include "bindings.h"
#include "quell/checkpoint.h"
#include "quell/load.h"
#include "quell/models.h"
#include "quell/script.h"

namespace quell::python {
namespace {

Json meta_to_json(const CheckpointMeta& m) {
  return Json{{"spec", m.spec.to_json()},       {"dataset", m.dataset},
              {"data", m.data},                 {"train_config", m.train_config},
              {"metrics", m.metrics},           {"provenance", m.provenance}};
}

CheckpointMeta meta_from_json(const Json& j) {
  CheckpointMeta m;
  if (j.contains("spec")) m.spec = ModelSpec::from_json(j.at("spec"));
  m.dataset = j.value("dataset", "");
  m.data = j.value("data", Json::object());
  m.train_config = j.value("train_config", Json::object());
  m.metrics = j.value("metrics", Json::object());
  m.provenance = j.value("provenance", Json::object());
  return m;
}

ModelSpec spec_of(const std::string& name, int64_t c, int64_t h, int64_t w, int64_t classes) {
  ModelSpec s;
  s.name = name;
  s.in_channels = c;
  s.height = h;
  s.width = w;
  s.num_classes = classes;
  return s;
}

// Any input: an image [C, H, W] of float32 as before, anything else as input_shape / dtype.
ModelSpec spec_of_input(const std::string& name, const std::vector<int64_t>& shape,
                        const std::string& dtype, int64_t classes) {
  if (shape.size() == 3 && dtype == "float32") {
    return spec_of(name, shape[0], shape[1], shape[2], classes);
  }
  ModelSpec s = spec_of(name, 0, 0, 0, classes);
  s.input_shape = shape;
  s.input_dtype = dtype;
  (void)s.input_scalar_type();  // validates
  return s;
}

}  // namespace

void bind_models(py::module_& m) {
  py::class_<ModelImpl, std::shared_ptr<ModelImpl>>(m, "NativeModel")
      .def("spec", [](const ModelImpl& self) { return self.spec().to_json().dump(); })
      .def("site_names", &ModelImpl::site_names)
      .def("num_sites", &ModelImpl::num_sites)
      .def("num_params", &ModelImpl::num_params)
      .def("num_denoiser_params", &ModelImpl::num_denoiser_params)
      .def("sites",
           [](const ModelImpl& self) {
             py::list out;
             for (const auto& s : self.sites()) {
               py::dict d;
               d["index"] = s.index;
               d["name"] = s.name;
               d["op"] = s.op;
               d["shape"] = s.shape;
               d["numel"] = s.numel();
               d["params"] = s.params;
               out.append(d);
             }
             return out;
           })
      .def("denoisers",
           [](const ModelImpl& self) {
             py::list out;
             const auto info = self.sites();
             for (const auto& b : self.denoiser_placement()) {
               py::dict d;
               d["site"] = b.site;
               d["name"] = info[static_cast<size_t>(b.site)].name;
               d["block"] = b.block.str();
               d["params"] = b.block.params(info[static_cast<size_t>(b.site)].shape);
               out.append(d);
             }
             return out;
           })
      .def("unplaced_ops",
           [](const ModelImpl& self) {
             py::list out;
             if (const ScriptInfo* s = self.script_info()) {
               for (const auto& u : s->unplaced) {
                 out.append(py::make_tuple(u.op, u.where, u.reason));
               }
             }
             return out;
           })
      .def(
          "forward",
          [](ModelImpl& self, const torch::Tensor& x) {
            torch::NoGradGuard no_grad;
            py::gil_scoped_release release;
            self.eval();
            return self.forward(x);
          },
          "Clean logits of x [N, C, H, W] (eval mode, no noise, no gradient).")
      .def(
          "calibrate",
          [](ModelImpl& self, const torch::Tensor& images, int64_t max_samples) {
            py::gil_scoped_release release;
            self.calibrate(images, max_samples);
          },
          py::arg("images"), py::arg("max_samples") = 2048)
      .def(
          "save",
          [](ModelImpl& self, const std::string& path, const std::string& meta_json) {
            CheckpointMeta meta = meta_from_json(Json::parse(meta_json));
            meta.spec = self.spec();
            py::gil_scoped_release release;
            save_checkpoint(path, self, meta);
          },
          py::arg("path"), py::arg("meta_json") = "{}")
      .def("is_calibrated",
           [](const ModelImpl& self) { return !self.engine().calibration().empty(); })
      .def("clone", [](ModelImpl& self) { return clone_model(self).ptr(); })
      .def("to_device", [](ModelImpl& self, const std::string& device) {
        self.to(torch::Device(device));
      });

  m.def("model_names", &model_names);
  m.def(
      "make_model",
      [](const std::string& name, int64_t c, int64_t h, int64_t w, int64_t classes,
         uint64_t seed) {
        torch::manual_seed(seed);
        return make_model(spec_of(name, c, h, w, classes)).ptr();
      },
      py::arg("name"), py::arg("channels"), py::arg("height"), py::arg("width"),
      py::arg("classes"), py::arg("seed") = 1);
  m.def(
      "load_model",
      [](const std::string& path, const std::string& expected) {
        CheckpointMeta meta;
        LoadOptions o;
        o.expected_model = expected;
        Model model{nullptr};
        {
          py::gil_scoped_release release;
          model = load_model(path, &meta, o);
        }
        return py::make_tuple(model.ptr(), meta_to_json(meta).dump());
      },
      py::arg("path"), py::arg("expected_model") = "");
  m.def(
      "load_script",
      [](const std::string& path, const std::vector<int64_t>& shape, const std::string& dtype,
         int64_t classes) {
        const ModelSpec spec = spec_of_input(path, shape, dtype, classes);
        py::gil_scoped_release release;
        return load_script_model(spec).ptr();
      },
      py::arg("path"), py::arg("input_shape"), py::arg("input_dtype") = "float32",
      py::arg("classes") = 0);
  m.def(
      "load_script_bytes",
      [](py::bytes archive, const std::string& source, const std::vector<int64_t>& shape,
         const std::string& dtype, int64_t classes) {
        std::string bytes = archive;
        const ModelSpec spec = spec_of_input(source, shape, dtype, classes);
        py::gil_scoped_release release;
        return load_script_model(spec, std::move(bytes), source).ptr();
      },
      py::arg("archive"), py::arg("source"), py::arg("input_shape"),
      py::arg("input_dtype") = "float32", py::arg("classes") = 0);
  m.def("is_torchscript_model", &is_torchscript_model);
  m.def("file_digest", &file_digest);
}

}  // namespace quell::python
