#!/usr/bin/env bash
# .ci/install-check.sh BUILD_DIR: what an operator installs works (docs/operations.md,
# "Installing"), from a built release folder:
#   - `cmake --install` into a temporary prefix puts every piece in its place; the daemon started
#     with its systemd unit's ExecStart answers health and stops on SIGTERM; the C ABI test
#     program, compiled against the installed header and linked against the installed
#     libcachesvc_client.so only, passes against it; both Python packages import;
#   - `cpack -G DEB` builds the package; its dependencies resolve on this Debian (apt-get's
#     simulation), and unpacked into a temporary root it holds the same pieces, its unit passes
#     `systemd-analyze verify`, and its daemon starts from the unit's command line.
# The daemon is run directly, not through systemd (CI machines and containers have no systemd
# running); the unit's command line is what systemd would run, with --data-dir replaced by a
# temporary folder (systemd's StateDirectory= makes /var/lib/cachesvc).
set -euo pipefail
cd "$(dirname "$0")/.."
build="$(realpath "$1")"
work="$(mktemp -d /tmp/cachesvc-install.XXXXXX)"
trap 'rm -rf "${work}"' EXIT

need() { [ -e "$1" ] || { echo "install-check: missing $1" >&2; exit 1; }; }

# The unit's ExecStart, re-rooted under $2 (empty for a prefix install), without --data-dir.
unit_command() {
  local unit="$1" root="$2"
  local line
  line="$(grep '^ExecStart=' "${unit}" | head -n 1)"
  line="${line#ExecStart=}"
  local args=() skip=0
  for word in ${line}; do
    if [ "${skip}" -eq 1 ]; then skip=0; continue; fi
    if [ "${word}" = "--data-dir" ]; then skip=1; continue; fi
    case "${word}" in /*) word="${root}${word}" ;; esac
    args+=("${word}")
  done
  printf '%s\n' "${args[@]}"
}

check_tree() {
  local base="$1" etc="$2"
  need "${base}/bin/cachesvc"
  need "${base}/bin/cachectl"
  need "${base}/lib/libcachesvc_client.so"
  need "${base}/lib/libcachesvc_client.so.1"
  need "${base}/include/cachesvc/cachesvc_client.h"
  need "${base}/share/cachesvc/cachesvc_client.map"
  need "${base}/share/doc/cachesvc/operations.md"
  need "${base}/lib/systemd/system/cachesvc.service"
  need "${base}/lib/python3/dist-packages/cachesvc/__init__.py"
  need "${base}/lib/python3/dist-packages/cachesvc_sessions/__init__.py"
  need "${base}/lib/python3/dist-packages/cachesvc_sessions_gen/cachesvc/v1/cachesvc_pb2.py"
  ls "${base}"/lib/python3/dist-packages/cachesvc/_cachesvc_connector*.so >/dev/null
  need "${etc}/cachesvc/cachesvc.toml"
  # Only the C ABI is exported (the version script), nothing of gRPC, protobuf or abseil.
  local exported
  exported="$(nm -D --defined-only "${base}/lib/libcachesvc_client.so" | awk '$2 ~ /[TDBR]/ {print $3}' |
    grep -v '^cachesvc_' | grep -v '^CACHESVC_CLIENT_1$' || true)"
  [ -z "${exported}" ] || { echo "install-check: exported beyond the C ABI: ${exported}" >&2; exit 1; }
  PYTHONPATH="${base}/lib/python3/dist-packages" /usr/bin/python3 -c \
    'import cachesvc, cachesvc_sessions; print("install-check: python packages import:", cachesvc.__file__)'
}

# The C ABI test program (tests/client/c_abi_test.c) against the installed header and library:
# the source includes "client/cachesvc_client.h", which here is a shim over the installed one.
abi_test() {
  local base="$1"
  mkdir -p "${work}/shim/client"
  echo '#include <cachesvc/cachesvc_client.h>' >"${work}/shim/client/cachesvc_client.h"
  cc -std=c11 -Wall -Wextra -Wpedantic -Werror -I"${work}/shim" -I"${base}/include" \
    tests/client/c_abi_test.c -L"${base}/lib" -lcachesvc_client -Wl,-rpath,"${base}/lib" \
    -o "${work}/c_abi_test"
  # Linked against the installed library, not the build tree's.
  local libs
  libs="$(ldd "${work}/c_abi_test")"  # not piped into grep -q: pipefail and SIGPIPE
  grep -q "${base}/lib/libcachesvc_client.so.1" <<<"${libs}" || {
    echo "install-check: c_abi_test does not link the installed library" >&2; exit 1; }
  local token=ci-abi-token
  local hash
  hash="$(printf '%s' "${token}" | "${base}/bin/cachectl" hash-token)"
  cat >"${work}/tenants.toml" <<EOF
[[tenants]]
name = "ci"
token_sha256 = ["${hash}"]
EOF
  cat >"${work}/abi-run.sh" <<EOF
#!/bin/sh
exec "${work}/c_abi_test" "\$1" "${token}"
EOF
  chmod +x "${work}/abi-run.sh"
  DAEMON_CHECK_START_S=60 DAEMON_CHECK_EXTRA="--config ${work}/tenants.toml" \
    DAEMON_CHECK_THEN="${work}/abi-run.sh" \
    .ci/daemon-check.sh "${base}/bin/cachectl" -- "${base}/bin/cachesvc"
  echo "install-check: c_abi_test passed against the installed library"
}

echo "---- cmake --install into a temporary prefix"
prefix="${work}/prefix"
cmake --install "${build}" --prefix "${prefix}" >"${work}/install.log"
check_tree "${prefix}" "${prefix}/etc"
mapfile -t cmd < <(unit_command "${prefix}/lib/systemd/system/cachesvc.service" "")
echo "install-check: unit ExecStart (data dir replaced): ${cmd[*]}"
[ "${cmd[0]}" = "${prefix}/bin/cachesvc" ] || { echo "install-check: the unit runs ${cmd[0]}" >&2; exit 1; }
DAEMON_CHECK_START_S=60 .ci/daemon-check.sh "${prefix}/bin/cachectl" -- "${cmd[@]}"
abi_test "${prefix}"

echo "---- cpack -G DEB"
(cd "${build}" && cpack -G DEB -B "${work}/deb" >"${work}/cpack.log") ||
  { tail -n 30 "${work}/cpack.log" >&2; exit 1; }
deb="$(ls "${work}"/deb/cachesvc_*.deb)"
echo "install-check: $(basename "${deb}"), $(du -h "${deb}" | cut -f1)"
echo "install-check: Depends: $(dpkg-deb -f "${deb}" Depends)"
conffiles="$(dpkg-deb -I "${deb}" conffiles)"
grep -qx /etc/cachesvc/cachesvc.toml <<<"${conffiles}"
apt-get install --simulate --no-install-recommends "${deb}" >"${work}/apt.log" 2>&1 ||
  { cat "${work}/apt.log" >&2; echo "install-check: the .deb's dependencies do not resolve" >&2; exit 1; }
echo "install-check: apt-get resolves the package's dependencies"
root="${work}/root"
dpkg-deb -x "${deb}" "${root}"
check_tree "${root}/usr" "${root}/etc"
unit="${root}/usr/lib/systemd/system/cachesvc.service"
grep -q '^ExecStart=/usr/bin/cachesvc --config /etc/cachesvc/cachesvc.toml ' "${unit}" ||
  { grep '^ExecStart' "${unit}" >&2; echo "install-check: the packaged unit's ExecStart" >&2; exit 1; }
# verify resolves ExecStart on this machine: point it at the unpacked binary.
sed "s|^ExecStart=/usr/bin/cachesvc|ExecStart=${root}/usr/bin/cachesvc|" "${unit}" \
  >"${work}/cachesvc.service"
if command -v systemd-analyze >/dev/null; then
  systemd-analyze verify "${work}/cachesvc.service" 2>&1 | grep -v 'Documentation=' |
    grep -E '\S' && { echo "install-check: systemd-analyze verify found problems" >&2; exit 1; }
  echo "install-check: systemd-analyze verify: clean"
fi
mapfile -t cmd < <(unit_command "${unit}" "${root}")
LD_LIBRARY_PATH="${root}/usr/lib" DAEMON_CHECK_START_S=60 \
  .ci/daemon-check.sh "${root}/usr/bin/cachectl" -- "${cmd[@]}"
echo "install-check: the .deb's daemon starts from its unit's command line"
