// quell._quell: the native module of the Python package.
#include <Python.h>

#include "bindings.h"
#include "quell/io.h"

namespace quell::python {

StudyMonitor monitor_from(py::object progress_factory, py::object message) {
  StudyMonitor m;
  if (!progress_factory.is_none()) {
    // The factory is kept alive by the closure; it is only touched with the GIL held.
    auto factory = std::make_shared<py::object>(std::move(progress_factory));
    m.progress = [factory](const std::string& label) -> ProgressFn {
      py::gil_scoped_acquire gil;
      py::object bar = (*factory)(label);
      if (bar.is_none()) return nullptr;
      auto held = std::shared_ptr<py::object>(new py::object(std::move(bar)), [](py::object* p) {
        py::gil_scoped_acquire g;
        delete p;
      });
      return [held](const Progress& p) {
        py::gil_scoped_acquire gil;
        if (PyErr_CheckSignals() != 0) throw py::error_already_set();
        (*held)(p.done, p.total, p.what, p.loss, p.accuracy);
      };
    };
  }
  if (!message.is_none()) {
    auto fn = std::make_shared<py::object>(std::move(message));
    m.message = [fn](const std::string& line) {
      py::gil_scoped_acquire gil;
      (*fn)(line);
    };
    m.note = m.message;
  }
  return m;
}

}  // namespace quell::python

PYBIND11_MODULE(_quell, m) {
  namespace qp = quell::python;
  m.doc() = "The native part of quell: libquell's studies, models and data (see help(quell)).";
  m.attr("__version__") = quell::version_string();
  // c10::Error (TORCH_CHECK) is a bad argument: one line, no C++ backtrace.
  pybind11::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const c10::Error& e) {
      std::string msg = e.what_without_backtrace();
      PyErr_SetString(PyExc_ValueError, msg.substr(0, msg.find('\n')).c_str());
    }
  });
  qp::bind_models(m);
  qp::bind_data(m);
  qp::bind_reports(m);
  qp::bind_studies(m);
}
