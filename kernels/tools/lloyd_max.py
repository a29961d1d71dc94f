#!/usr/bin/python3
"""Lloyd-Max quantizer for one coordinate of a scaled random unit vector (kernels/FORMAT.md).

If u is uniform on the unit sphere in R^d, t = sqrt(d) * u_1 has density proportional to
(1 - t^2/d)^((d-3)/2) on [-sqrt(d), sqrt(d)], which tends to N(0,1) as d grows. This script finds
the 2^b-level Lloyd-Max quantizer for that density (centroids = conditional means of their cells,
thresholds = midpoints), prints the tables as fp32 (the values FORMAT.md and kernels/tq_tables.h
fix), and the distortion E[(t - q(t))^2], i.e. the expected relative MSE per coordinate.

    kernels/tools/lloyd_max.py            # all tables, as C++ for kernels/tq_tables.h
    kernels/tools/lloyd_max.py --report   # distortions only

Pure Python (double precision, composite Simpson on a fine grid): no numpy needed.
"""
import argparse
import math
import struct

GRID = 400_000  # Simpson intervals over [-sqrt(d), sqrt(d)]; enough for ~1e-12 in the moments


def f32(x):
    return struct.unpack("<f", struct.pack("<f", x))[0]


def make_density(d):
    half = math.sqrt(d)
    n = GRID
    h = 2 * half / n
    xs = [-half + i * h for i in range(n + 1)]
    e = (d - 3) / 2
    ws = [max(0.0, 1 - x * x / d) ** e for x in xs]
    # Simpson weights and normalization.
    simpson = [1 if i in (0, n) else (4 if i % 2 else 2) for i in range(n + 1)]
    w = [ws[i] * simpson[i] * h / 3 for i in range(n + 1)]
    total = sum(w)
    w = [v / total for v in w]
    return xs, w


def lloyd_max(xs, w, levels, iters=2000):
    # Start from Gaussian-ish quantiles.
    cs = [(-1 + (2 * k + 1) / levels) * 2.0 for k in range(levels)]
    for _ in range(iters):
        ts = [(cs[k] + cs[k + 1]) / 2 for k in range(levels - 1)]
        m0 = [0.0] * levels
        m1 = [0.0] * levels
        k = 0
        for x, wi in zip(xs, w):
            while k < levels - 1 and x > ts[k]:
                k += 1
            m0[k] += wi
            m1[k] += wi * x
            if k and x <= ts[k - 1]:
                k = 0  # xs are sorted; never happens
        new = [m1[i] / m0[i] for i in range(levels)]
        # Symmetrize to remove integration noise.
        new = [(new[i] - new[levels - 1 - i]) / 2 for i in range(levels)]
        delta = max(abs(a - b) for a, b in zip(new, cs))
        cs = new
        if delta < 1e-13:
            break
    ts = [(cs[k] + cs[k + 1]) / 2 for k in range(levels - 1)]
    return cs, ts


def distortion(xs, w, cs32, ts32):
    err = 0.0
    for x, wi in zip(xs, w):
        k = sum(1 for t in ts32 if x > t)
        err += wi * (x - cs32[k]) ** 2
    return err


def c_float(x):
    text = f"{x:.9g}"
    if not any(ch in text for ch in ".en"):
        text += ".0"
    return text + "f"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--report", action="store_true")
    args = ap.parse_args()
    for d in (64, 128, 256):
        xs, w = make_density(d)
        for bits in (3, 4):
            cs, ts = lloyd_max(xs, w, 1 << bits)
            cs32 = [f32(c) for c in cs]
            ts32 = [f32(t) for t in ts]
            dist = distortion(xs, w, cs32, ts32)
            if args.report:
                print(f"d={d} bits={bits} distortion={dist:.6f}")
                continue
            print(f"// d = {d}, {bits} bits: distortion E[(t - q(t))^2] = {dist:.6f}")
            print(f"inline constexpr float kCentroidsD{d}B{bits}[{1 << bits}] = {{")
            for c in cs32:
                print(f"    {c_float(c)},  // {struct.unpack('<I', struct.pack('<f', c))[0]:#010x}")
            print("};")
            print(f"inline constexpr float kThresholdsD{d}B{bits}[{(1 << bits) - 1}] = {{")
            for t in ts32:
                print(f"    {c_float(t)},  // {struct.unpack('<I', struct.pack('<f', t))[0]:#010x}")
            print("};")


if __name__ == "__main__":
    main()
