#!/usr/bin/env bash
# The installed C++ package works: installs a built quell tree into a scratch prefix, builds
# examples/cpp against it with find_package(quell) (nothing from the source or build tree), and
# runs the example on a tiny synthetic dataset. ctest runs it as CppExample (tests/CMakeLists.txt).
#   tests/cpp_example.sh BUILD_DIR [SOURCE_DIR]     (QUELL_KEEP_TMP=1 keeps the scratch folder)
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 BUILD_DIR [SOURCE_DIR]" >&2; exit 2; }
build=$(cd "$1" && pwd)
src=$(cd "${2:-$(dirname "$0")/..}" && pwd)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/quell-cpp-example.XXXXXX")
if [ -z "${QUELL_KEEP_TMP:-}" ]; then trap 'rm -rf "$tmp"' EXIT; fi
fail() { echo "cpp_example: FAIL: $*" >&2; exit 1; }
prefix=$tmp/prefix

echo "== install $build -> $prefix"
cmake --install "$build" --prefix "$prefix" > "$tmp/install.log" || { cat "$tmp/install.log"; fail "install"; }
for f in include/quell/models.h include/quell/version_info.h include/quell/build_config.h \
         bin/quell; do
  [ -e "$prefix/$f" ] || fail "not installed: $f"
done
config=$(find "$prefix" -name quellConfig.cmake)
[ -n "$config" ] || fail "quellConfig.cmake not installed"
pkgdir=$(dirname "$config")
[ -e "$pkgdir/quellConfigVersion.cmake" ] || fail "quellConfigVersion.cmake not installed"
[ -n "$(find "$prefix" -name libquell.a)" ] || fail "libquell.a not installed"
# The exported target forces no precompiled header and points into neither tree.
! grep -q INTERFACE_PRECOMPILE_HEADERS "$pkgdir"/quellTargets*.cmake ||
  fail "quell::quell exports a precompiled header"
! grep -qF -e "$src" -e "$build" "$pkgdir"/quellTargets*.cmake ||
  fail "quell::quell refers to the source or build tree"
"$prefix/bin/quell" --version

echo "== configure and build examples/cpp against $prefix"
cmake -S "$src/examples/cpp" -B "$tmp/build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
      -DCMAKE_PREFIX_PATH="$prefix" > "$tmp/configure.log" || { cat "$tmp/configure.log"; fail "configure"; }
# The example sees the installed headers only.
! grep -qF -e "$src/include" -e "$build/generated" "$tmp/build/build.ninja" ||
  fail "the example compiles against the source or build tree"
cmake --build "$tmp/build" -j "$(nproc)" || fail "build"

echo "== run"
start=$(date +%s)
set +e
"$tmp/build/walk_and_denoise" --synthetic "$tmp/data" --limit 600 --epochs 1 | tee "$tmp/out.txt"
rc=${PIPESTATUS[0]}
set -e
echo "(ran in $(( $(date +%s) - start )) s)"
[ "$rc" -eq 0 ] || fail "walk_and_denoise exited with $rc"
sites=$(grep -cE '^site +[0-9]+ .* midpoint ' "$tmp/out.txt" || true)
[ "$sites" -ge 1 ] || fail "no midpoint lines in the output"
# The network learned (the synthetic classes: about 0.85 after this one short epoch).
clean=$(sed -n 's/^clean accuracy \([0-9.]*\),.*/\1/p' "$tmp/out.txt")
awk -v a="${clean:-0}" 'BEGIN { exit !(a >= 0.5) }' || fail "clean accuracy '$clean' < 0.5"
grep -q '^unmitigated ' "$tmp/out.txt" || fail "no comparison table of the denoise study"
grep -q '^noise-aware fine-tune ' "$tmp/out.txt" || fail "no fine-tuning row in the comparison"
echo "cpp_example: OK ($sites midpoint lines)"
