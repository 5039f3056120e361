#!/usr/bin/env bash
# Install apexmusic and everything it needs into ./.venv, system packages included.
# Usage: bash scripts/setup.sh [extras]   (default extras: all)
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-all}"
apt_install() {
  command -v apt-get >/dev/null 2>&1 || return 0
  local sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}
packages=()
# Debian's Chromium drives the web-page test (Playwright uses it, never a downloaded browser).
[[ "$extras" == *dev* ]] && ! command -v chromium >/dev/null 2>&1 && packages+=(chromium)
# `--precision int8` compiles its fused quantisation kernels with torch.compile (inductor's C++
# backend); without a compiler it still runs, eagerly, at about 0.65x the speed of bf16.
command -v g++ >/dev/null 2>&1 || packages+=(g++ python3-dev)
[ ${#packages[@]} -eq 0 ] || apt_install "${packages[@]}"
PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
# torch is pinned to a range that takes the local CPU build where one is on disk.
.venv/bin/python -m pip install -q -e ".[$extras]"
