#!/usr/bin/python3
"""Checks that stdin's last line is a bench/run report (DESIGN.md): a JSON object with the fields
every benchmark report carries and at least one result. Prints one summary line; exits 1 if not."""
import json
import sys

lines = sys.stdin.read().splitlines()
if not lines:
    sys.exit("no output at all")
try:
    report = json.loads(lines[-1])
except json.JSONDecodeError as e:
    sys.exit(f"the last line is not JSON: {e}")
if not isinstance(report, dict):
    sys.exit("the last line is not a JSON object")
for field in ("bench", "machine", "commit", "command", "baselines", "results"):
    if field not in report:
        sys.exit(f"no {field!r} in the JSON line")
if not report["results"]:
    sys.exit("no results")
bench = report["bench"]
count = len(report["results"])
print(f"bench/run {bench} --quick: {count} results")
