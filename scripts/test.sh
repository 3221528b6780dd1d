#!/usr/bin/env bash
# Installs what is missing, builds, and runs every test (GoogleTest through ctest).
set -euo pipefail
cd "$(dirname "$0")/.."
# The CLI and the test binary (benchmarks are not needed to test).
scripts/bootstrap.sh build quell quell_tests
cd build
ctest --output-on-failure -j "$(nproc)" "$@"
