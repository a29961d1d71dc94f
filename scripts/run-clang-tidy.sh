#!/usr/bin/env bash
# scripts/run-clang-tidy.sh [--no-analyzer] BUILD_DIR FOLDER...: clang-tidy (Debian's clang-tidy-14, the checks in
# .clang-tidy) on every .cc file of FOLDER... listed in BUILD_DIR/compile_commands.json, and on
# the project headers they include (.clang-tidy's HeaderFilterRegex). Any finding is an error:
# exits 1 and lists them. BUILD_DIR should be a Clang build (the clang or asan preset), so that
# clang-tidy parses with the flags the code really compiles with.
#
#   scripts/run-clang-tidy.sh build/clang cachesvc tiers
#
# Runs one clang-tidy per core. A header included by several files is reported once.
# --no-analyzer leaves out clang-analyzer-* (the static analyzer), which is three quarters of the
# time (block_store.cc: 100 s with it, 24 s without, on one core here); .ci/run uses it to stay in
# its time budget, and the full run is for before a submission.
set -euo pipefail
cd "$(dirname "$0")/.."
extra=()
if [ "${1:-}" = "--no-analyzer" ]; then
  extra=(--checks=-clang-analyzer-*)
  shift
fi
build="$1"
shift
[ -f "${build}/compile_commands.json" ] || {
  echo "run-clang-tidy: no ${build}/compile_commands.json (configure and build a clang or asan preset)" >&2
  exit 2
}
tidy="$(command -v clang-tidy-14 || command -v clang-tidy)"
files=()
for folder in "$@"; do
  while IFS= read -r f; do files+=("$f"); done < <(git ls-files "${folder}/*.cc")
done
# Only the files the build compiles (a CUDA-only or disabled source has no compile command).
mapfile -t files < <(/usr/bin/python3 - "${build}" "${files[@]}" <<'EOF'
import json, os, sys
build, files = sys.argv[1], sys.argv[2:]
listed = {os.path.realpath(e["file"]) for e in json.load(open(os.path.join(build, "compile_commands.json")))}
for f in files:
    if os.path.realpath(f) in listed:
        print(f)
EOF
)
out="$(mktemp -d)"
echo "run-clang-tidy: ${#files[@]} files under $* with ${tidy}"
printf '%s\n' "${files[@]}" |
  xargs -P "$(nproc)" -I{} sh -c '"$0" -p "$1" --quiet $4 "$2" >"$3/$(echo "$2" | tr / _).log" 2>&1 || true' \
    "${tidy}" "${build}" {} "${out}" "${extra[*]:-}"
# Findings are "path:line:col: warning|error: text [check]"; one header finding may appear once
# per including file.
findings="$(cat "${out}"/*.log | grep -E '^[^ ]+:[0-9]+:[0-9]+: (warning|error): ' | sort -u || true)"
rm -rf "${out}"
if [ -n "${findings}" ]; then
  echo "${findings}" >&2
  echo "run-clang-tidy: $(wc -l <<<"${findings}") finding(s)" >&2
  exit 1
fi
echo "run-clang-tidy: no findings"
