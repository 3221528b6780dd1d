#!/usr/bin/env bash
# Installs the Python package built in BUILD_DIR/python/quell (the native module and the
# package's .py files) for Debian's /usr/bin/python3, into its site directory under /usr/local,
# so that `/usr/bin/python3 -c 'import quell'` works from any directory. Idempotent: a second run
# replaces the installed copy with the build's.
#   scripts/install_python.sh [BUILD_DIR]     (default: build)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${1:-build}
PY=/usr/bin/python3
src="$BUILD_DIR/python/quell"
if ! ls "$src"/_quell*.so > /dev/null 2>&1; then
  echo "install_python: no native module in $src (build the target quell_python first)" >&2
  exit 1
fi
site=$($PY -c 'import sysconfig; print(sysconfig.get_path("purelib", "posix_local"))')
dest="$site/quell"
mkdir -p "$site"
# A fresh copy in a temporary folder, renamed over the old one: never half a package.
tmp=$(mktemp -d "$site/.quell-install.XXXXXX")
cp "$src"/*.py "$src"/_quell*.so "$tmp"/
rm -rf "$dest.old"
[ -d "$dest" ] && mv "$dest" "$dest.old"
mv "$tmp" "$dest"
rm -rf "$dest.old"
chmod 755 "$dest"
(cd / && $PY -c 'import quell; print("install_python: quell", quell.__version__, "in", quell.__path__[0])') >&2
