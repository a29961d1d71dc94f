#!/usr/bin/env bash
# Installs dependencies, builds and runs the whole test suite: the dev preset (GCC, with CUDA when
# nvcc is found; GPU tests skip without a GPU), the asan preset (AddressSanitizer +
# UndefinedBehaviorSanitizer), then the tsan preset (Clang 14: the whole tree compiled with
# -Wthread-safety -Werror, and the tests labelled `concurrent` under ThreadSanitizer). Exits
# non-zero when any build or test fails.
# Set CACHESVC_TEST_PRESETS to choose presets, e.g. CACHESVC_TEST_PRESETS="dev clang".
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
jobs="$(nproc)"
for preset in ${CACHESVC_TEST_PRESETS:-dev asan tsan}; do
  echo "== preset ${preset}: configure and build"
  cmake --preset "${preset}" >/dev/null
  cmake --build --preset "${preset}" -j "${jobs}"
  echo "== preset ${preset}: test"
  ctest --preset "${preset}" -j "${jobs}"
done
