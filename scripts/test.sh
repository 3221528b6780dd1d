#!/usr/bin/env bash
# Installs what is missing, builds, and runs every test (GoogleTest through ctest).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh build
cd build
ctest --output-on-failure -j "$(nproc)" "$@"
