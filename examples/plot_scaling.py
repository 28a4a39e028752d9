#!/usr/bin/env python3
"""Print the table of `ringattn bench --scaling --json FILE` and plot it to a PNG
(the plot needs matplotlib; without it the table is printed and the PNG skipped).
usage: plot_scaling.py scaling.json scaling.png"""
import json
import sys


def fmt(x, width, digits):
    """A number of the table; null (a non-finite value in the JSON) as '-'."""
    return f"{x:>{width}.{digits}f}" if x is not None else f"{'-':>{width}}"


def nan_if_null(x):
    return float("nan") if x is None else x


def main():
    if len(sys.argv) != 3:
        print(__doc__)
        return 2
    with open(sys.argv[1]) as f:
        data = json.load(f)
    print(f"# {data['config']} on {data['device']} ({data['backend']})")
    print(f"# {'mode':<6} {'ranks':>6} {'tokens':>10} {'median_ms':>11} {'TFLOP/s':>9} {'exposed%':>9} {'efficiency':>11}")
    for r in data["rows"]:
        print(f"  {r['mode']:<6} {r['ranks']:>6} {r['tokens']:>10} {fmt(r['median_ms'], 11, 3)} {fmt(r['tflops'], 9, 4)} "
              f"{fmt(r['exposed_pct'], 9, 2)} {fmt(r['efficiency'], 11, 3)}")
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("plot_scaling: matplotlib not installed: table only, no", sys.argv[2])
        return 0
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, mode in zip(axes, ("weak", "strong")):
        rows = [r for r in data["rows"] if r["mode"] == mode]
        ranks = [r["ranks"] for r in rows]
        ax.plot(ranks, [nan_if_null(r["efficiency"]) for r in rows], "o-", label="efficiency")
        ax.plot(ranks, [nan_if_null(r["exposed_pct"]) / 100 for r in rows], "s--", label="exposed transfer (fraction)")
        ax.set_xscale("log", base=2)
        ax.set_xticks(ranks)
        ax.set_xticklabels([str(r) for r in ranks])
        ax.set_ylim(0, 1.2)
        ax.set_xlabel("ranks")
        ax.set_title(f"{mode} scaling, {data['config']} ({data['device']})")
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(sys.argv[2], dpi=100)
    print("plot_scaling: wrote", sys.argv[2])
    return 0


if __name__ == "__main__":
    sys.exit(main())
