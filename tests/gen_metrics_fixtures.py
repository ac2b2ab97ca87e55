#!/usr/bin/env python3
"""gen_metrics_fixtures.py: writes tests/fixtures/metrics/{qrels,run,expected}.tsv with pytrec_eval's numbers on
~200 random queries (grades -1..3, scores drawn from a few values so ties are common, doc ids whose string order
differs from their numeric order), for tests/test_metrics.c.

Reference: pytrec_eval (trec_eval 9). The PyPI sdist 'pytrec_eval' downloads trec_eval from GitHub at build time;
'pytrec-eval-terrier' ships the same binding with trec_eval bundled (import name pytrec_eval). Either works:
    /work/venv/bin/pip install pytrec-eval-terrier
    /work/venv/bin/python tests/gen_metrics_fixtures.py
"""
import os
import random

import pytrec_eval

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "fixtures", "metrics")
CUTS = {"ndcg_cut": [1, 3, 5, 10, 100], "map_cut": [10, 100], "recall": [1, 5, 10, 100], "P": [1, 5, 10]}
# trec_eval measure -> xrank spec name
def xr_name(measure):
    if measure == "ndcg":
        return "ndcg"
    if measure == "map":
        return "map"
    if measure == "recip_rank":
        return "mrr"
    base, k = measure.rsplit("_", 1)
    return {"ndcg_cut": "ndcg", "map_cut": "map", "recall": "recall", "P": "precision"}[base] + "@" + k


def doc_name(rng, i):
    # ids whose strcmp order disagrees with numeric order and with case: d9 > d10 > D3 ...
    return rng.choice(["d", "D", "doc_", "d0"]) + str(i)


def main():
    rng = random.Random(20240611)
    qrels, run = {}, {}
    for q in range(200):
        qid = "q%d" % q
        pool = list(dict.fromkeys(doc_name(rng, rng.randrange(60)) for _ in range(rng.randrange(5, 45))))
        judged = rng.sample(pool, rng.randrange(1, min(len(pool), 16) + 1))
        qrels[qid] = {}
        kind = q % 10
        for d in judged:
            g = rng.choice([0, 0, 1, 1, 2, 3]) if kind else rng.choice([0, -1])  # every 10th: nothing relevant
            if rng.random() < 0.05:
                g = -1
            qrels[qid][d] = g
        if q % 17 == 0:
            continue  # judged but not ranked: pytrec_eval leaves the query out
        ranked = rng.sample(pool, rng.randrange(0, len(pool) + 1)) if q % 13 else pool[:]
        if not ranked:
            ranked = pool[:1]
        # few distinct values -> many ties; every 7th query all tied
        levels = [rng.choice([0.5, 0.25, -1.0, 2.0, 0.125, 1e-3, 3.75]) for _ in range(4)]
        run[qid] = {d: (1.0 if q % 7 == 0 else rng.choice(levels + [rng.random()])) for d in ranked}

    measures = {"ndcg", "map", "recip_rank"} | {"%s.%s" % (m, ",".join(map(str, ks))) for m, ks in CUTS.items()}
    ev = pytrec_eval.RelevanceEvaluator(qrels, measures)
    res = ev.evaluate(run)

    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "qrels.tsv"), "w") as f:
        for qid, docs in qrels.items():
            for d, g in docs.items():
                f.write("%s\t%s\t%d\n" % (qid, d, g))
    with open(os.path.join(OUT, "run.tsv"), "w") as f:
        for qid, docs in run.items():
            for d, s in docs.items():
                f.write("%s\t%s\t%r\n" % (qid, d, s))
    n = 0
    with open(os.path.join(OUT, "expected.tsv"), "w") as f:
        for qid in sorted(res, key=lambda s: int(s[1:])):
            vals = res[qid]
            for m in sorted(vals):
                f.write("%s\t%s\t%r\n" % (qid, xr_name(m), vals[m]))
                n += 1
            # MRR@k from trec_eval's uncut recip_rank: the first relevant rank is 1/rr, kept when <= k
            rr = vals["recip_rank"]
            for k in (1, 3, 10):
                v = rr if rr > 0 and round(1 / rr) <= k else 0.0
                f.write("%s\tmrr@%d\t%r\n" % (qid, k, v))
                n += 1
        # means over the evaluated queries, as BEIR reports them
        for m in sorted(next(iter(res.values()))):
            mean = sum(res[q][m] for q in res) / len(res)
            f.write("MEAN\t%s\t%r\n" % (xr_name(m), mean))
    # how much the fixture depends on the tie rule: evaluate with ties broken the other way (doc id ascending)
    flipped = {}
    for qid, docs in run.items():
        order = sorted(docs, key=lambda d: (-docs[d], d))  # ascending id among equal scores
        flipped[qid] = {d: float(len(order) - i) for i, d in enumerate(order)}
    res_flip = pytrec_eval.RelevanceEvaluator(qrels, measures).evaluate(flipped)
    differ = sum(any(abs(res[q][m] - res_flip[q][m]) > 1e-12 for m in res[q]) for q in res)
    print("%d of %d queries score differently when ties are broken by ascending doc id" % (differ, len(res)))
    print("wrote %d per-query values for %d queries (%d judged) to %s" % (n, len(res), len(qrels), OUT))


if __name__ == "__main__":
    main()
