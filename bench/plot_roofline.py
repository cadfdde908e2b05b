#!/usr/bin/env python3
"""bench/plot_roofline.py - bench_moe CSV -> PNG roofline plots.

    python3 bench/plot_roofline.py results.csv [-o roofline.png]

Two panels:
  left   floor / time (%) against T, one subplot line per (config, mode):
         how close each way of running the layer comes to its floor;
  right  achieved TFLOP/s against arithmetic intensity (FLOPs per byte of
         expert weights touched), with the two measured ceilings of the run
         (copy bandwidth slope, FP8 tensor rate) read from the CSV's
         `# device=...; copy_GBps=...; fp8_TFLOPs=...` comment line.

Rows whose time is missing (e.g. an unsupported cuBLASLt peer) are skipped.
Needs matplotlib; nothing else.
"""
import argparse
import csv
import math
import re
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

MARKERS = {"nonrouted": "o", "routed": "s", "cublaslt-peer": "^"}
STYLES = {"nonrouted": "-", "routed": "--", "cublaslt-peer": ":"}


def read(path):
    meta, rows = {}, []
    with open(path, newline="") as f:
        lines = []
        for line in f:
            if line.startswith("#"):
                for kv in line[1:].split(";"):
                    if "=" in kv:
                        k, v = kv.split("=", 1)
                        meta[k.strip()] = v.strip()
            elif line.strip():
                lines.append(line)
    for r in csv.DictReader(lines):
        try:
            r["T"] = int(r["T"])
            for k in ("time_us", "floor_us", "floor_pct", "weight_GBps", "TFLOPs"):
                r[k] = float(r[k])
        except (KeyError, ValueError):
            continue
        rows.append(r)
    return meta, rows


def finite(*v):
    return all(isinstance(x, float) and math.isfinite(x) for x in v)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("csv")
    ap.add_argument("-o", "--output", default=None, help="PNG path (default: CSV name with .png)")
    args = ap.parse_args()
    meta, rows = read(args.csv)
    if not rows:
        sys.exit("plot_roofline: no rows in %s" % args.csv)
    out = args.output or re.sub(r"\.csv$", "", args.csv) + ".png"
    bw = float(meta.get("copy_GBps", "nan")) * 1e9
    peak = float(meta.get("fp8_TFLOPs", "nan")) * 1e12

    configs = list(dict.fromkeys(r["config"] for r in rows))
    colors = {c: plt.cm.tab10(i % 10) for i, c in enumerate(configs)}
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(15, 6))

    # left: floor % vs T
    for c in configs:
        for mode in MARKERS:
            pts = sorted((r["T"], r["floor_pct"]) for r in rows
                         if r["config"] == c and r["mode"] == mode and finite(r["floor_pct"]))
            if pts:
                a1.plot([p[0] for p in pts], [p[1] for p in pts], STYLES[mode], marker=MARKERS[mode],
                        color=colors[c], label="%s %s" % (c, mode))
    a1.set_xscale("log", base=2)
    a1.set_xlabel("tokens T")
    a1.set_ylabel("floor / time (%)")
    a1.set_ylim(0, 105)
    a1.axhline(100, color="gray", lw=0.8)
    a1.grid(True, which="both", alpha=0.3)
    a1.set_title("how close to the floor")
    a1.legend(fontsize=7, ncol=2)

    # right: roofline, intensity = FLOPs / weight byte = TFLOPs / weight_GBps * 1000
    xs = []
    for c in configs:
        for mode in MARKERS:
            pts = [(r["TFLOPs"] * 1e12 / (r["weight_GBps"] * 1e9), r["TFLOPs"]) for r in rows
                   if r["config"] == c and r["mode"] == mode and finite(r["TFLOPs"], r["weight_GBps"])
                   and r["weight_GBps"] > 0 and r["TFLOPs"] > 0]
            pts.sort()
            if pts:
                xs += [p[0] for p in pts]
                a2.plot([p[0] for p in pts], [p[1] for p in pts], STYLES[mode], marker=MARKERS[mode],
                        color=colors[c], label="%s %s" % (c, mode))
    if xs and math.isfinite(bw) and math.isfinite(peak):
        lo, hi = min(xs) / 2, max(xs) * 2
        ridge = peak / bw
        grid = [lo * (hi / lo) ** (i / 200) for i in range(201)]
        a2.plot(grid, [min(bw * x, peak) / 1e12 for x in grid], color="black", lw=1.5,
                label="ceiling: %.0f GB/s copy, %.0f TFLOP/s FP8" % (bw / 1e9, peak / 1e12))
        a2.axvline(ridge, color="gray", lw=0.8, ls="--")
    a2.set_xscale("log")
    a2.set_yscale("log")
    a2.set_xlabel("FLOPs per byte of expert weights touched")
    a2.set_ylabel("achieved TFLOP/s")
    a2.grid(True, which="both", alpha=0.3)
    a2.set_title("roofline")
    a2.legend(fontsize=7, ncol=2)

    dev = meta.get("device", "?")
    fig.suptitle("fp8moe layer on %s" % dev)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    print("plot_roofline: wrote %s" % out)


if __name__ == "__main__":
    main()
