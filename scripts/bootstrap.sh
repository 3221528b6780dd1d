#!/usr/bin/env bash
# Installs what quell needs from Debian's packages (only what is missing) and builds it.
# Idempotent: a second run installs nothing and rebuilds only what changed.
#   scripts/bootstrap.sh [BUILD_DIR [TARGET...]]   (default: build, all targets;
#                                                  QUELL_BUILD_TYPE=Release)
#   QUELL_EXTRA_PACKAGES="clang-14 ..." installs those too; BUILD_DIR "-" installs only.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${1:-build}
targets=("${@:2}")
BUILD_TYPE=${QUELL_BUILD_TYPE:-Release}

packages=(build-essential cmake ninja-build git pkg-config libtorch-dev libopenblas0-pthread
          libcli11-dev nlohmann-json3-dev zlib1g-dev libjpeg-dev libpng-dev libgtest-dev
          libgmock-dev libbenchmark-dev gnuplot-nox dataset-fashion-mnist libopenmpi-dev openmpi-bin
          python3-dev python3-torch pybind11-dev python3-pytest python3-numpy python3-pandas
          python3-tqdm ${QUELL_EXTRA_PACKAGES:-})
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "bootstrap: installing ${missing[*]}" >&2
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >&2
fi

[ "$BUILD_DIR" = "-" ] && exit 0
if [ ! -f "$BUILD_DIR/build.ninja" ]; then
  cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE="$BUILD_TYPE" >&2
fi
# Two cores and ~2 GB per torch translation unit: -j of the core count is fine.
if [ ${#targets[@]} -gt 0 ]; then
  cmake --build "$BUILD_DIR" -j "$(nproc)" --target "${targets[@]}" >&2
else
  cmake --build "$BUILD_DIR" -j "$(nproc)" >&2
fi
