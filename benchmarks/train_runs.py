#!/usr/bin/env python3
"""train_runs.py: the record of one timed `xrank train` run and the tables of the scaling drivers
(bench_train_scaling.sh, bench_scaling.sh). Standard library only.

  train_runs.py run METRICS LOG key=value...  one JSON line: pairs/s over the logging windows after the first
                                              (warm-up), the per-step split the trainer logs (mean over ranks):
                                              compute / exposed communication / data, the slowest rank's compute,
                                              the share of communication hidden behind the backward; the
                                              key=value pairs are copied in (numbers as numbers)
  train_runs.py scaling JSONL                 the strong / weak scaling table (markdown)
"""
import collections
import json
import re
import statistics
import sys


def run_record(metrics, log, extra):
    lines = [json.loads(l) for l in open(metrics) if '"train"' in l]
    if len(lines) < 2:
        sys.exit(f"{metrics}: {len(lines)} train lines; need the warm-up window and at least one timed one")
    timed = lines[1:]
    steps = sum(l["steps_logged"] for l in timed)
    dt = lines[-1]["elapsed_s"] - lines[0]["elapsed_s"]
    gb = int(extra.get("global_batch", 0))

    def mean(k):  # per-step mean over the timed windows, weighted by their steps
        v = [(l.get(k), l["steps_logged"]) for l in timed if l.get(k) is not None]
        return round(sum(x * w for x, w in v) / sum(w for _, w in v), 4) if v else None

    hid = [(l["comm_hidden_s"], l["comm_exposed_s"], l["steps_logged"]) for l in timed if "comm_hidden_s" in l]
    hs, xs = sum(h * w for h, _, w in hid), sum(x * w for _, x, w in hid)
    txt = open(log).read()
    rows = re.search(r"word embeddings: ([0-9]+) of ([0-9]+) rows", txt)
    exch = re.search(r"gradients: ([a-z ]+?), [0-9]+ bucket", txt)
    rec = dict(extra)
    # pairs/s from the steps and the global batch (pairs; groups x group size), over the timed windows
    rec.update({"pairs_per_s": round(steps * gb / dt, 2) if gb else None, "timed_steps": steps,
                "timed_s": round(dt, 2), "step_s": mean("step_s"), "data_s": mean("data_s"),
                "compute_s": mean("compute_s"), "compute_max_s": mean("compute_max_s"),
                "comm_exposed_s": mean("comm_exposed_s"), "cpu_s": mean("cpu_s"),
                "pairs_per_cpu_s": round(gb / mean("cpu_s"), 3) if gb and mean("cpu_s") else None,
                "comm_hidden_frac": round(hs / (hs + xs), 4) if hs + xs > 0 else None,
                "exchange": exch.group(1) if exch else None,
                "emb_rows_per_step": int(rows.group(1)) if rows else None})
    return rec


def scaling_table(path):
    rows = [json.loads(l) for l in open(path) if l.strip()]
    by = collections.defaultdict(list)
    for r in rows:
        by[(r["mode"], r["ranks"])].append(r)
    out = ["| mode | ranks x threads | global batch | pairs/s (median of rounds; min-max) | per rank | efficiency | "
           "pairs per CPU-second (CPU efficiency) | step s: compute / exposed comm / data | comm hidden | load at start "
           "| note |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for mode in ("strong", "weak"):
        keys = sorted(k for k in by if k[0] == mode)
        if not keys:
            continue
        base = statistics.median(r["pairs_per_s"] for r in by[keys[0]]) / keys[0][1]
        cbase = statistics.median(r["pairs_per_cpu_s"] for r in by[keys[0]])
        for k in keys:
            v = by[k]
            p = [r["pairs_per_s"] for r in v]
            med = statistics.median(p)
            f = lambda key: statistics.median([r[key] for r in v if r.get(key) is not None] or [0])
            hid = [r["comm_hidden_frac"] for r in v if r.get("comm_hidden_frac") is not None]
            over = v[0].get("oversubscribed")
            out.append("| %s | %d x %d | %d | %.2f (%.2f-%.2f) | %.2f | %.0f%% | %.2f (%.0f%%) | %.3f / %.3f / %.3f | %s "
                       "| %s | %s |" % (
                mode, k[1], v[0]["threads"], v[0]["global_batch"], med, min(p), max(p), med / k[1],
                100 * med / (k[1] * base), f("pairs_per_cpu_s"), 100 * f("pairs_per_cpu_s") / cbase,
                f("compute_s"), f("comm_exposed_s"), f("data_s"),
                "%.0f%%" % (100 * statistics.median(hid)) if hid else "-",
                " / ".join("%.1f" % r["load_start"] for r in v if "load_start" in r),
                "oversubscribed (%d ranks x %d threads on %d cores)" % (k[1], v[0]["threads"], v[0]["cores"])
                if over else ""))
    return "\n".join(out)


def main():
    if len(sys.argv) >= 4 and sys.argv[1] == "run":
        extra = {}
        for kv in sys.argv[4:]:
            k, _, v = kv.partition("=")
            try:
                extra[k] = json.loads(v)
            except ValueError:
                extra[k] = v
        print(json.dumps(run_record(sys.argv[2], sys.argv[3], extra)))
    elif len(sys.argv) == 3 and sys.argv[1] == "scaling":
        print(scaling_table(sys.argv[2]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
