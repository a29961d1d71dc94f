#!/usr/bin/python3
"""scripts/check-nodiscard.py [--fix] [FILE...]: every function that returns absl::Status or
absl::StatusOr<T> is declared [[nodiscard]].

Why a check of our own: Debian's Abseil marks absl::Status must-use only under Clang, so GCC
builds (dev, release) would let a dropped error through. With [[nodiscard]] on each
declaration, every compiler rejects a call whose result is ignored (-Werror), and the Clang
presets (clang, asan, tsan) also catch calls through functions this check cannot see.

What it looks at: the project's C++ sources (base, kernels, proto, tiers, cachesvc, client, bench,
tests), every declaration or definition whose return type is absl::Status or absl::StatusOr<...>
at the start of a line (after `static`, `virtual`, `inline`, `friend`, `constexpr`, `explicit`),
on one line or with the name on the next line. Out-of-line definitions of members (`Class::Name(`)
are skipped: the attribute belongs on the declaration in the class; so are definitions in a .cc
of a function that a header declares [[nodiscard]] under the same name. Exits 1 listing every
`file:line` that lacks it; --fix inserts `[[nodiscard]] ` instead.
"""
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FOLDERS = ["base", "kernels", "proto", "tiers", "cachesvc", "client", "bench", "tests"]
EXTENSIONS = (".h", ".cc", ".cuh", ".cu")

QUALIFIERS = r"(?:(?:static|virtual|inline|friend|constexpr|explicit)\s+)*"
RETURN_TYPE = r"(?:::)?absl::(?:Status|StatusOr<.*>)"
# `absl::Status Name(` or `absl::StatusOr<T> Name(` ; the name may be an operator or a template.
ONE_LINE = re.compile(r"^(\s*)(" + QUALIFIERS + RETURN_TYPE + r")\s+([A-Za-z_][\w:]*)\s*\(")
TYPE_ONLY = re.compile(r"^(\s*)(" + QUALIFIERS + RETURN_TYPE + r")\s*$")
NAME_NEXT = re.compile(r"^\s*([A-Za-z_][\w:]*)\s*\(")


def sources():
    for folder in FOLDERS:
        for dirpath, _, files in os.walk(os.path.join(ROOT, folder)):
            for f in sorted(files):
                if f.endswith(EXTENSIONS):
                    yield os.path.join(dirpath, f)


def balanced_template(type_text):
    return type_text.count("<") == type_text.count(">")


def declared_in_headers(paths):
    """Names of functions some header declares [[nodiscard]] with a Status/StatusOr return."""
    names = set()
    for path in paths:
        if not path.endswith((".h", ".cuh")):
            continue
        with open(path, encoding="utf-8") as f:
            lines = f.read().split("\n")
        for i, line in enumerate(lines):
            if "[[nodiscard]]" not in line and not (i > 0 and lines[i - 1].strip().endswith(
                    "[[nodiscard]]")):
                continue
            m = ONE_LINE.match(line.replace("[[nodiscard]] ", ""))
            if m:
                names.add(m.group(3))
            elif TYPE_ONLY.match(line.replace("[[nodiscard]] ", "")) and i + 1 < len(lines):
                n = NAME_NEXT.match(lines[i + 1])
                if n:
                    names.add(n.group(1))
    return names


def check(path, fix, header_names=frozenset()):
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    missing = []
    for i, line in enumerate(lines):
        m = ONE_LINE.match(line)
        name = None
        if m:
            name = m.group(3)
        else:
            m = TYPE_ONLY.match(line)
            if m and i + 1 < len(lines):
                n = NAME_NEXT.match(lines[i + 1])
                name = n.group(1) if n else None
        if not m or name is None or not balanced_template(m.group(2)):
            continue
        if "::" in name:
            continue  # an out-of-line member definition: the declaration carries the attribute
        if not path.endswith((".h", ".cuh")) and name in header_names:
            continue  # defines a function a header declares [[nodiscard]]
        before = lines[i - 1].strip() if i > 0 else ""
        if "[[nodiscard]]" in line or before.endswith("[[nodiscard]]"):
            continue
        missing.append(i)
    if fix and missing:
        for i in missing:
            m = re.match(r"^(\s*)(.*)$", lines[i])
            lines[i] = m.group(1) + "[[nodiscard]] " + m.group(2)
        with open(path, "w", encoding="utf-8") as f:
            f.write("\n".join(lines))
    return [(path, i + 1, lines[i].strip()) for i in missing]


def main():
    fix = "--fix" in sys.argv[1:]
    paths = [p for p in sys.argv[1:] if p != "--fix"] or list(sources())
    found = []
    headers = [p for p in paths if p.endswith((".h", ".cuh"))]
    for p in headers:
        found += check(p, fix)
    names = declared_in_headers(list(sources()))
    for p in paths:
        if p not in headers:
            found += check(p, fix, names)
    for path, line, text in found:
        print(f"{os.path.relpath(path, ROOT)}:{line}: {'fixed' if fix else 'not [[nodiscard]]'}: {text}",
              file=sys.stderr)
    if found and not fix:
        print(f"check-nodiscard: {len(found)} Status/StatusOr function(s) lack [[nodiscard]]",
              file=sys.stderr)
        return 1
    print(f"check-nodiscard: {'fixed ' + str(len(found)) if fix else 'all'} Status/StatusOr "
          "declarations [[nodiscard]]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
