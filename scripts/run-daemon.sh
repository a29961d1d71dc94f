#!/usr/bin/env bash
# Installs dependencies, builds the daemon and cachectl from the release preset (only those
# targets: the tests and benchmarks are built by scripts/run-tests.sh and bench/run's
# instructions) and starts cachesvc on its default
# configuration (gRPC on 127.0.0.1:50051, files under ./cachesvc-data; no GPU needed).
# Extra arguments go to the daemon, e.g. scripts/run-daemon.sh --listen 0.0.0.0:50051.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cmake --preset release >/dev/null
cmake --build --preset release -j "$(nproc)" --target cachesvc cachectl
exec build/release/cachesvc/cachesvc "$@"
