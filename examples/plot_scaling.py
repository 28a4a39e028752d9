#!/usr/bin/env python3
"""Plot `ringattn bench --scaling --json FILE` output to a PNG (needs matplotlib).
usage: plot_scaling.py scaling.json scaling.png"""
import json
import sys


def main():
    if len(sys.argv) != 3:
        print(__doc__)
        return 2
    data = json.load(open(sys.argv[1]))
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("plot_scaling: matplotlib not installed; table only")
        return 0
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, mode in zip(axes, ("weak", "strong")):
        rows = [r for r in data["rows"] if r["mode"] == mode]
        ranks = [r["ranks"] for r in rows]
        ax.plot(ranks, [r["efficiency"] for r in rows], "o-", label="efficiency")
        ax.plot(ranks, [r["exposed_pct"] / 100 for r in rows], "s--", label="exposed transfer (fraction)")
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
