// The Python package's bindings (quell._quell): thin conversions between Python and libquell.
// No study logic lives here: every call maps to one library call (docs/python.md).
#pragma once

#include <torch/extension.h>

#include <string>

#include "quell/progress.h"

namespace quell::python {

namespace py = pybind11;

/// Thrown by a progress callback when Python has a pending signal (Ctrl-C): unwinds the study
/// (a resumable study keeps what it finished) and becomes the Python exception on return.
struct Interrupted : std::exception {
  const char* what() const noexcept override { return "interrupted"; }
};

/// A StudyMonitor calling `progress(label)` -> Python callable(done, total, what, loss, accuracy)
/// and `message(line)` with the GIL held; between calls it checks for signals.
StudyMonitor monitor_from(py::object progress_factory, py::object message);

void bind_models(py::module_& m);
void bind_data(py::module_& m);
void bind_studies(py::module_& m);
void bind_reports(py::module_& m);

}  // namespace quell::python
