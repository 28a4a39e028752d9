#!/usr/bin/env python3
"""Summary of one kernel's ncu profile (bench/bwd_profile.sh): the stall reasons of
the whole kernel (raw page) and the SASS instructions with the most warp samples
(source page), each with its largest stall columns, plus samples per opcode, and
the phases of each loop: instructions executed the same number of times (a warp
role's per-block body: e.g. 2048 CTAs x 256 blocks x 8 consumer warps) in address
order, cut at every wait (WARPGROUP.DEPBAR, BAR, SYNCS) and at the first MUFU of a phase,
with their share of the samples (the share of the warps' time spent there).
Column names are matched loosely: ncu versions name them differently.
usage: bwd_profile_summary.py NAME SASS_CSV RAW_CSV"""
import csv
import sys
from collections import defaultdict


def num(x):
    try:
        return float(str(x).replace(",", ""))
    except ValueError:
        return None


def read_rows(path):
    try:
        with open(path, newline="") as f:
            rows = [r for r in csv.reader(f)]
    except OSError as e:
        print(f"  {path}: {e}")
        return None, []
    # skip ncu's leading "==PROF==" or blank lines: the header is the first row with many columns
    for i, r in enumerate(rows):
        if len(r) > 3:
            return r, rows[i + 1:]
    return None, []


def main():
    name, sass_csv, raw_csv = sys.argv[1:4]
    print(f"== {name}")
    head, rows = read_rows(raw_csv)
    if head and rows:
        vals = rows[1] if len(rows) > 1 and num(rows[1][-1]) is not None and num(rows[0][-1]) is None else rows[0]
        stalls = []
        for h, v in zip(head, vals):
            x = num(v)
            if x is None:
                continue
            if "pcsamp_warps_issue_stalled" in h or ("average_warp" in h and "stalled" in h):
                stalls.append((x, h))
            if h in ("gpu__time_duration.sum", "sm__throughput.avg.pct_of_peak_sustained_elapsed",
                     "smsp__issue_active.avg.pct_of_peak_sustained_active",
                     "sm__pipe_tensor_op_gmma_cycles_active.avg.pct_of_peak_sustained_active"):
                print(f"  {h} = {x:g}")
        stalls.sort(reverse=True)
        tot = sum(x for x, h in stalls if "pcsamp" in h and "not_issued" not in h) or 1.0
        print("  stall reasons (raw, largest first):")
        for x, h in stalls[:24]:
            share = f" ({100 * x / tot:.1f}%)" if "pcsamp" in h and "not_issued" not in h else ""
            print(f"    {x:14.4g}  {h}{share}")
    head, rows = read_rows(sass_csv)
    if not head:
        print("  no source page")
        return
    col = {h: i for i, h in enumerate(head)}
    src = next((i for h, i in col.items() if h.strip().lower() == "source"), None)
    addr = next((i for h, i in col.items() if h.strip().lower() == "address"), None)
    allc = next((i for h, i in col.items() if "Sampling" in h and "All" in h), None)
    notc = next((i for h, i in col.items() if "Sampling" in h and "Not" in h), None)
    stall_cols = [(h, i) for h, i in col.items() if h.startswith("stall_") or "Stall" in h and "Sampling" not in h]
    if src is None or allc is None:
        print("  columns:", head[:40])
        return
    data = []
    for r in rows:
        if len(r) <= max(src, allc):
            continue
        s = num(r[allc])
        if s is None:
            continue
        data.append((s, r))
    total = sum(s for s, _ in data) or 1.0
    print(f"  SASS: {len(data)} instructions, {total:.0f} samples")
    by_op = defaultdict(float)
    for s, r in data:
        op = r[src].strip().split()
        op = [t for t in op if not t.startswith("@")]
        by_op[op[0].split(".")[0] if op else "?"] += s
    print("  samples by opcode: " + ", ".join(f"{k} {100 * v / total:.1f}%" for k, v in sorted(by_op.items(), key=lambda kv: -kv[1])[:16]))
    phases(data, head, total)
    print("  hottest instructions (share of samples, not-issued, largest stall columns):")
    for s, r in sorted(data, key=lambda t: -t[0])[:45]:
        top = sorted(((num(r[i]) or 0.0, h) for h, i in stall_cols if i < len(r)), reverse=True)[:3]
        tops = ", ".join(f"{h.replace('stall_', '')} {v:.0f}" for v, h in top if v > 0)
        ni = r[notc] if notc is not None and notc < len(r) else ""
        a = r[addr] if addr is not None else ""
        print(f"    {100 * s / total:5.2f}%  {a:>6}  {r[src].strip()[:70]:70s}  ni {ni:>6}  {tops}")


def phases(data, head, total):
    col = {h: i for i, h in enumerate(head)}
    ex_i = next((i for h, i in col.items() if h.strip() == "Instructions Executed"), None)
    addr_i = next((i for h, i in col.items() if h.strip().lower() == "address"), None)
    src_i = next((i for h, i in col.items() if h.strip().lower() == "source"), None)
    if ex_i is None or addr_i is None:
        return
    by_count = defaultdict(float)
    for s, r in data:
        by_count[num(r[ex_i]) or 0] += s
    print("  samples by execution count (a loop body per count): " +
          ", ".join(f"{int(k)}: {100 * v / total:.1f}%" for k, v in sorted(by_count.items(), key=lambda kv: -kv[1])[:5]))
    for count, share in sorted(by_count.items(), key=lambda kv: -kv[1])[:3]:
        if share / total < 0.05 or count <= 0:
            continue
        print(f"  phases of the body executed {int(count)} times ({100 * share / total:.1f}% of the samples):")
        segs, cur = [], None
        def addr(r):
            try:
                return int(r[addr_i], 16)
            except ValueError:
                return -1
        for s, r in sorted(data, key=lambda t: addr(t[1])):
            if (num(r[ex_i]) or 0) != count:
                continue
            op = [t for t in r[src_i].split() if not t.startswith("@")]
            op = op[0] if op else "?"
            mufu = op.startswith("MUFU")
            # a wait, or the first exponential of a run (MUFUs interleaved with
            # their adds stay one phase)
            cut = op.startswith(("WARPGROUP.DEPBAR", "BAR.", "SYNCS")) or (mufu and cur is not None and cur["mufu"] == 0)
            if cur is None or cut:
                cur = {"first": r[src_i].strip()[:56], "n": 0, "s": 0.0, "hgmma": 0, "mufu": 0}
                segs.append(cur)
            cur["n"] += 1
            cur["s"] += s
            cur["hgmma"] += op.startswith("HGMMA")
            cur["mufu"] += mufu
        for g in segs:
            if g["s"] / total >= 0.005:
                print(f"    {100 * g['s'] / total:5.2f}%  {g['n']:4d} instr, {g['hgmma']:2d} HGMMA, {g['mufu']:2d} MUFU, from {g['first']}")


if __name__ == "__main__":
    main()
