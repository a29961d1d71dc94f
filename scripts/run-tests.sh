#!/usr/bin/env bash
# Installs dependencies, builds and runs the whole test suite: the release preset (GCC at -O2,
# with CUDA when nvcc is found; GPU tests skip without a GPU; also the build that
# scripts/run-daemon.sh, bench/run and cmake --install use), the asan preset (AddressSanitizer +
# UndefinedBehaviorSanitizer under Clang 14, Debug, so assertions are checked; Clang also checks
# the lock annotations of the whole tree, -Wthread-safety -Werror), then the tsan preset (Clang
# 14: the tests labelled `concurrent`, and only what they need, under ThreadSanitizer). Exits
# non-zero when any build or test fails.
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
  # Twice as many tests as cores: most of them wait on sockets, child processes and timers.
  ctest --preset "${preset}" -j "$((2 * jobs))"
done
