#!/usr/bin/env bash
# Installs dependencies, builds and runs the whole test suite: the release preset (GCC at -O2,
# with CUDA when nvcc is found; GPU tests skip without a GPU; also the build that
# scripts/run-daemon.sh, bench/run and cmake --install use), the asan preset (AddressSanitizer +
# UndefinedBehaviorSanitizer, Debug, so assertions are checked), then the tsan preset (Clang 14:
# the whole tree compiled with -Wthread-safety -Werror, and the tests labelled `concurrent` under
# ThreadSanitizer). Exits non-zero when any build or test fails.
# Set CACHESVC_TEST_PRESETS to choose presets, e.g. CACHESVC_TEST_PRESETS="dev" for the everyday
# Debug build.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
jobs="$(nproc)"
for preset in ${CACHESVC_TEST_PRESETS:-release asan tsan}; do
  echo "== preset ${preset}: configure and build"
  cmake --preset "${preset}" >/dev/null
  cmake --build --preset "${preset}" -j "${jobs}"
  echo "== preset ${preset}: test"
  ctest --preset "${preset}" -j "${jobs}"
done
