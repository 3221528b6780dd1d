#!/usr/bin/env bash
# Installs what is missing, builds, installs the Python package for /usr/bin/python3, and runs
# every test through ctest: GoogleTest, the CLI end to end, the installed C++ package, pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
# The CLI, the test binary and the Python module (benchmarks are not needed to test).
scripts/bootstrap.sh build quell quell_tests quell_python
scripts/install_python.sh build
cd build
ctest --output-on-failure -j "$(nproc)" "$@"
