#!/usr/bin/env python3
"""Loss and accuracy curves of ringattn_train runs (their --json logs).

    python3 examples/train/plot_train.py OUT.png RUN.json [RUN.json ...]

Prints one line per run (options that differ, final training loss and
accuracy, held-out accuracy, time) and, where matplotlib is installed, draws
training loss (log scale) and accuracy (a moving average over 25 steps, with
the held-out evaluations as points) of every run into OUT.png. Without
matplotlib it prints the table and says so (exit 0).
"""
import json
import sys


def human(n):
    n = int(n)
    for unit, v in (("M", 1 << 20), ("k", 1 << 10)):
        if n >= v and n % v == 0:
            return "%d%s" % (n // v, unit)
    return str(n)


def label(run):
    """N, the branches and where the weights came from (a curriculum's stage)."""
    o = run["options"]
    args = run.get("args", [])
    start = ""
    if "--init-from" in args and args.index("--init-from") + 1 < len(args):
        start = ", from " + args[args.index("--init-from") + 1].rstrip("/").split("/")[-1]
    return "N=%s, %s%s" % (human(o["seq"]), o["branches"], start)


def smooth(xs, k=25):
    out, acc = [], 0.0
    for i, x in enumerate(xs):
        acc += x
        if i >= k:
            acc -= xs[i - k]
        out.append(acc / min(i + 1, k))
    return out


def main():
    if len(sys.argv) < 3:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    out, paths = sys.argv[1], sys.argv[2:]
    runs = []
    for p in paths:
        with open(p) as f:
            runs.append(json.load(f))
    # A curriculum's stages in order: by branches (dilated, local-only), then N.
    runs.sort(key=lambda r: (len(r["options"]["branches"]) < 8, int(r["options"]["seq"])))
    print("%-60s %6s %10s %9s %9s %8s" % ("run", "steps", "loss", "train acc", "held-out", "wall s"))
    for r in runs:
        s = r["steps"]
        ev = r["evals"][-1]["accuracy"] if r["evals"] else float("nan")
        print("%-60s %6d %10.4f %9.3f %9.4f %8.1f" % (label(r), s[-1]["step"], s[-1]["loss"],
                                                      smooth([x["accuracy"] for x in s])[-1], ev, r["wall_s"]))
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (apt-get install python3-matplotlib)")
        return 0
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(15, 4.8))
    for r in runs:
        s = r["steps"]
        x = [v["step"] for v in s]
        line, = ax1.plot(x, [v["loss"] for v in s], lw=0.8)
        ax2.plot(x, smooth([v["accuracy"] for v in s]), lw=1.2, color=line.get_color(), label=label(r))
        if r["evals"]:
            ax2.plot([e["step"] for e in r["evals"]], [e["accuracy"] for e in r["evals"]], "o", color=line.get_color())
    chance = runs[0]["chance"]
    ax2.axhline(chance, color="gray", ls=":", lw=1, label="chance (1/values)")
    ax1.set_yscale("log")
    ax1.set_xlabel("step")
    ax1.set_ylabel("cross-entropy on answers")
    ax2.set_xlabel("step")
    ax2.set_ylabel("recall accuracy (train: mean of 25 steps; dots: held-out)")
    ax2.set_ylim(-0.02, 1.02)
    o = runs[0]["options"]
    seqs = sorted({int(r["options"]["seq"]) for r in runs})
    span = human(seqs[0]) if len(seqs) == 1 else "%s to %s" % (human(seqs[0]), human(seqs[-1]))
    pairs = "/".join(sorted({str(r["options"]["pairs"]) for r in runs}, key=int))
    fig.suptitle("ringattn_train, recall over N = %s tokens on %d ranks (%s, %s pairs, %s values)" %
                 (span, runs[0]["ranks"], runs[0].get("device", ""), pairs, o["values"]))
    ax2.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print("wrote", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
