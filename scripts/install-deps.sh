#!/usr/bin/env bash
# Installs every build and test dependency of cachesvc from Debian 12 packages.
# Idempotent: when all packages are already present it only checks and exits (well under a second).
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config git ca-certificates
  clang-format clang-tidy clang-14 libclang-rt-14-dev dpkg-dev systemd
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libabsl-dev libxxhash-dev
  librocksdb-dev libucx-dev liburing-dev libnuma-dev fio redis-server
  libgtest-dev libgmock-dev libbenchmark-dev
  libcli11-dev libspdlog-dev libfmt-dev libtomlplusplus-dev
  libcpp-httplib-dev nlohmann-json3-dev pybind11-dev
  libssl-dev openssl
  python3 python3-grpcio python3-protobuf python3-xxhash python3-numpy python3-torch python3-dev
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages present"
  exit 0
fi

echo "install-deps: installing ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "install-deps: need root or sudo to run apt-get" >&2; exit 1; }
  SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
