#!/usr/bin/env bash
# Installs dependencies, builds and runs the whole test suite: the dev preset (with CUDA when
# nvcc is found; GPU tests skip without a GPU), then the asan preset (AddressSanitizer +
# UndefinedBehaviorSanitizer). Exits non-zero when any build or test fails.
# Set CACHESVC_TEST_PRESETS to choose presets, e.g. CACHESVC_TEST_PRESETS="dev tsan".
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
jobs="$(nproc)"
for preset in ${CACHESVC_TEST_PRESETS:-dev asan}; do
  echo "== preset ${preset}: configure and build"
  cmake --preset "${preset}" >/dev/null
  cmake --build --preset "${preset}" -j "${jobs}"
  echo "== preset ${preset}: test"
  ctest --preset "${preset}" -j "${jobs}"
done
