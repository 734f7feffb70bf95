#!/usr/bin/env bash
# Obtain the Debian photo packages the offline birds benchmark is built from (`make assets`).
#
# Usage: scripts/fetch-birds-assets.sh [CACHE_DIR]    (PYTHON: default .venv/bin/python)
#
# Asks `python -m abs_ray.data.birds --missing-packages` which packages some listed file is
# missing from (nothing to do when none). As root: `apt-get install` them (after
# `apt-get update` when the first try fails: fresh containers have no package lists).
# Otherwise, or when that fails: `apt-get download` them into CACHE_DIR/debs and `dpkg -x`
# them into CACHE_DIR/root, where abs_ray.data.birds looks (CACHE_DIR: the library's
# DEFAULT_CACHE_DIR, .cache/abs_ray/debian under the working directory). Ends with
# `--check`, which fails (exit 2) when too few files are there. The packages are GPL/LGPL/CC:
# never commit them.
set -euo pipefail

PY=${PYTHON:-.venv/bin/python}
cache=${1:-$("$PY" -c 'from abs_ray.data.birds import DEFAULT_CACHE_DIR; print(DEFAULT_CACHE_DIR)')}
packages=()
while read -r package; do
  if [ -n "$package" ]; then packages+=("$package"); fi
done < <("$PY" -m abs_ray.data.birds --missing-packages --cache-dir "$cache")

apt_install() {
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}

extract() {
  mkdir -p "$cache/debs" "$cache/root"
  (cd "$cache/debs" && apt-get download "$@")
  local deb
  for deb in "$cache"/debs/*.deb; do
    dpkg -x "$deb" "$cache/root"
  done
}

if ((${#packages[@]})); then
  echo "birds assets: obtaining ${packages[*]}" >&2
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null \
    && { apt_install "${packages[@]}" || { apt-get update -qq && apt_install "${packages[@]}"; }; }; then
    :
  elif command -v apt-get >/dev/null && command -v dpkg >/dev/null; then
    extract "${packages[@]}" || echo "birds assets: apt-get download / dpkg -x failed" >&2
  else
    echo "birds assets: apt-get and dpkg are needed to obtain ${packages[*]}" >&2
  fi
fi
exec "$PY" -m abs_ray.data.birds --check --cache-dir "$cache"
