#!/usr/bin/env bash
# .ci/daemon-check.sh CACHECTL -- COMMAND...: starts a daemon with COMMAND (which must end in the
# daemon's own flags, so this script can append --listen/--metrics-listen/--data-dir), then checks
# what a user checks: gRPC health SERVING (`cachectl health`), `cachectl status` exit 0, /metrics
# answering with the daemon's metrics, and that SIGTERM makes it exit 0. Used by .ci/run for the
# README's `scripts/run-daemon.sh`, the `cmake --install` tree and the .deb's unpacked root.
#
# Environment: DAEMON_CHECK_START_S (default 900: the command may build first),
# DAEMON_CHECK_EXTRA (more daemon flags, e.g. a --config). Exits non-zero on the first failure,
# with the daemon's log on stderr.
set -euo pipefail
cachectl="$1"
shift
[ "$1" = "--" ] && shift

free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
grpc_port="$(free_port)"
metrics_port="$(free_port)"
data_dir="$(mktemp -d /tmp/cachesvc-ci-data.XXXXXX)"
log="${data_dir}.log"
start_limit="${DAEMON_CHECK_START_S:-900}"

# shellcheck disable=SC2086  # DAEMON_CHECK_EXTRA is a list of flags
"$@" ${DAEMON_CHECK_EXTRA:-} --listen "127.0.0.1:${grpc_port}" \
  --metrics-listen "127.0.0.1:${metrics_port}" --ucx-listen 127.0.0.1:0 \
  --data-dir "${data_dir}" >"${log}" 2>&1 &
pid=$!
fail() {
  echo "daemon-check: FAIL: $*" >&2
  echo "---- daemon log (${log}) ----" >&2
  tail -n 60 "${log}" >&2 || true
  kill -KILL "${pid}" 2>/dev/null || true
  exit 1
}

deadline=$((SECONDS + start_limit))
until "${cachectl}" --addr "127.0.0.1:${grpc_port}" --timeout-ms 1000 health >/dev/null 2>&1; do
  kill -0 "${pid}" 2>/dev/null || fail "the daemon exited before answering health"
  [ "${SECONDS}" -lt "${deadline}" ] || fail "no health SERVING within ${start_limit} s"
  sleep 1
done
health="$("${cachectl}" --addr "127.0.0.1:${grpc_port}" health)" || fail "cachectl health"
echo "daemon-check: health: ${health}"
grep -q SERVING <<<"${health}" || fail "health is not SERVING: ${health}"
"${cachectl}" --addr "127.0.0.1:${grpc_port}" status >/dev/null || fail "cachectl status exit $?"
echo "daemon-check: cachectl status: exit 0"
metrics="$(/usr/bin/python3 -c 'import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())' \
  "http://127.0.0.1:${metrics_port}/metrics")" || fail "/metrics did not answer"
grep -q '^cachesvc_' <<<"${metrics}" || fail "/metrics has no cachesvc_ samples"
echo "daemon-check: /metrics: $(grep -c '^cachesvc_' <<<"${metrics}") cachesvc_ samples"
if [ -n "${DAEMON_CHECK_THEN:-}" ]; then
  # One more check against the running daemon: its address is the argument.
  ${DAEMON_CHECK_THEN} "127.0.0.1:${grpc_port}" || fail "${DAEMON_CHECK_THEN} failed"
fi
kill -TERM "${pid}"
rc=0
wait "${pid}" || rc=$?
[ "${rc}" -eq 0 ] || fail "exit status ${rc} after SIGTERM (wanted 0)"
echo "daemon-check: SIGTERM: exit 0"
rm -rf "${data_dir}" "${log}"
