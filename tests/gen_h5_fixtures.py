#!/usr/bin/env python3
"""Write tests/fixtures/h5: small text inputs for `xrank tokenize` and what reading them must give.

Inputs: a 50-document BEIR directory (46 man-page documents picked as tools/demo_corpus.py picks them, plus
4 hand-written ones: accents, CJK, emoji, JSON escapes, a numeric _id, null / missing / title-only titles),
pair files (csv with RFC 4180 quoting and CRLF, tsv with and without a header, jsonl with named columns and
list negatives, labeled pairs), FlagEmbedding jsonl (+ the same gzipped), and bad inputs, one fault each.

Expected outputs (expected/*.json) come from an independent Python reading of the same rules
(docs/FORMATS.md "Text inputs"): BEIR's loader order and (title + " " + text).strip(), first-appearance
order for merged queries and de-duplicated passages, positives removed from negatives, triples sorted by
query. expected/beir_tokens.json holds the Hugging Face fast tokenizer's ids (no special tokens) for every
query and passage of the BEIR set, from all-MiniLM-L6-v2's tokenizer.json: the committed C test checks the
stores against them without Python.

Usage: /work/venv/bin/python tests/gen_h5_fixtures.py [--model /work/models/all-MiniLM-L6-v2]
"""
import argparse, csv, gzip, importlib.util, io, json, math, os, shutil, sys

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "fixtures", "h5")


def man_rows(n):
    spec = importlib.util.spec_from_file_location("demo_corpus", os.path.join(HERE, "..", "tools", "demo_corpus.py"))
    dc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(dc)
    files = []
    for sec in ("man1", "man3", "man5", "man8"):
        d = os.path.join("/usr/share/man", sec)
        if os.path.isdir(d):
            files += [os.path.join(d, f) for f in sorted(os.listdir(d)) if f.endswith(".gz")]
    import hashlib
    files.sort(key=lambda p: hashlib.sha1(os.path.basename(p).encode()).hexdigest())
    rows, seen_q, seen_p = [], set(), set()
    for path in files:
        if len(rows) >= n:
            break
        try:
            with gzip.open(path, "rt", encoding="utf-8", errors="replace") as f:
                text = f.read()
        except (OSError, EOFError):
            continue
        if text.lstrip().startswith(".so "):
            continue
        r = dc.parse(text)
        if not r:
            continue
        q, words = r
        if len(q.split()) < 3 or len(words) < 25 or q.lower() in seen_q:
            continue
        p = " ".join(words[:40])
        if p in seen_p:
            continue
        seen_q.add(q.lower())
        seen_p.add(p)
        rows.append((os.path.basename(path)[:-3], q, p))
    if len(rows) < n:
        sys.exit(f"only {len(rows)} usable man pages")
    return rows


def wjsonl(path, recs):
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for r in recs:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def wtext(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write(text)


def gz(src, dst):
    with open(src, "rb") as f:
        data = f.read()
    with open(dst, "wb") as f:
        with gzip.GzipFile(fileobj=f, mode="wb", mtime=0, filename="") as g:
            g.write(data)


class Ref:
    """The merge rules, written independently of the C code."""

    def __init__(self):
        self.q, self.qi, self.p, self.pi = [], {}, [], {}
        self.qrels, self.qrel_set, self.neg, self.neg_set, self.lab = [], set(), [], set(), []
        self.c = dict(rows=0, merged_query_rows=0, dup_passage_texts=0, dup_qrels=0, dup_negatives=0,
                      negatives_dropped_as_positive=0)

    def intern(self, text, lst, idx, dup_key):
        if text in idx:
            self.c[dup_key] += 1
            return idx[text]
        idx[text] = len(lst)
        lst.append(text)
        return idx[text]

    def row(self, q, pos, neg, label=None):
        self.c["rows"] += 1
        qi = self.intern(q, self.q, self.qi, "merged_query_rows")
        for text, score in pos:
            pi = self.intern(text, self.p, self.pi, "dup_passage_texts")
            if label is not None:
                self.lab.append([qi, pi, label])
            elif (qi, pi) in self.qrel_set:
                self.c["dup_qrels"] += 1
            else:
                self.qrel_set.add((qi, pi))
                self.qrels.append([qi, pi, 1, score])
        for text, score in neg:
            pi = self.intern(text, self.p, self.pi, "dup_passage_texts")
            if (qi, pi) in self.neg_set:
                self.c["dup_negatives"] += 1
            else:
                self.neg_set.add((qi, pi))
                self.neg.append([qi, pi, score])

    def result(self, fmt):
        neg = []
        for n in self.neg:
            if (n[0], n[1]) in self.qrel_set:
                self.c["negatives_dropped_as_positive"] += 1
            else:
                neg.append(n)
        key = lambda t: t[0]
        has_qs = any(r[3] is not None for r in self.qrels)
        has_ns = any(r[2] is not None for r in neg)
        return dict(format=fmt, queries=self.q, query_ids=[], passages=self.p, passage_ids=[],
                    qrels=[r[:3] + ([r[3]] if has_qs else []) for r in sorted(self.qrels, key=key)],
                    negatives=[r[:2] + ([r[2]] if has_ns else []) for r in sorted(neg, key=key)],
                    labels=sorted(self.lab, key=key), counts=self.c)


def nan_none(x):
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else x


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="/work/models/all-MiniLM-L6-v2")
    a = ap.parse_args()
    if os.path.isdir(OUT):
        shutil.rmtree(OUT)
    os.makedirs(os.path.join(OUT, "expected"))
    man = man_rows(70)
    P = [p for _, _, p in man]
    Q = [q for _, q, _ in man]

    # ---------------- BEIR
    beir = os.path.join(OUT, "beir")
    os.makedirs(os.path.join(beir, "qrels"))
    corpus = []
    for i in range(46):
        name = man[i][0]
        corpus.append({"_id": f"d{i}", "title": name if i % 2 else "", "text": P[i], "page": name})
    corpus.append({"_id": 9001, "title": "Café naïve",
                   "text": "Ünïcödé accents, CJK 中文字符 and emoji 🙂 with \"quotes\", a \\ backslash and a\ttab"})
    corpus.append({"_id": "t-2", "title": None, "text": "  leading and trailing spaces  "})
    corpus.append({"_id": "t-3", "text": "no title field at all"})
    corpus.append({"_id": "t-4", "title": "Only a title", "text": ""})
    wjsonl(os.path.join(beir, "corpus.jsonl"), corpus)
    queries = [{"_id": f"q{i}", "text": Q[i]} for i in range(12)]
    queries.insert(5, {"_id": "q-extra", "text": "a query that no qrel names"})
    queries.append({"_id": 9002, "text": "café 中文 🙂"})
    wjsonl(os.path.join(beir, "queries.jsonl"), queries)
    qrels = [("9002", "9001", 2), ("9002", "d3", 0)] + [(f"q{i}", f"d{i}", 1) for i in range(12)] + \
            [("q1", "d20", 2), ("q0", "t-2", 1), ("q1", "d20", 1)]
    wtext(os.path.join(beir, "qrels", "test.tsv"),
          "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t{s}\n" for q, d, s in qrels))
    wtext(os.path.join(beir, "qrels", "dev.tsv"), "query-id\tcorpus-id\tscore\nq3\td7\t1\n")

    def beir_expected(qrels_rows):
        pid = [str(c["_id"]) for c in corpus]
        ptxt = []
        for c in corpus:
            t = c.get("title") or ""
            ptxt.append((t + " " + c["text"]).strip())
        seen, qr, dup = set(), [], 0
        for q, d, s in qrels_rows:
            if (q, d) in seen:
                dup += 1
                continue
            seen.add((q, d))
            qr.append((q, d, s))
        used = {q for q, _, _ in qr}
        kept = [x for x in queries if str(x["_id"]) in used]
        qidx = {str(x["_id"]): i for i, x in enumerate(kept)}
        trip = [[qidx[q], pid.index(d), s] for q, d, s in qr]
        trip.sort(key=lambda t: t[0])
        return dict(format="beir", queries=[x["text"] for x in kept], query_ids=[str(x["_id"]) for x in kept],
                    passages=ptxt, passage_ids=pid, qrels=trip, negatives=[], labels=[],
                    counts=dict(rows=len(corpus) + len(queries) + len(qrels_rows), dup_qrels=dup,
                                queries_without_qrels=len(queries) - len(kept)))

    exp_beir = beir_expected(qrels)
    json.dump(exp_beir, open(os.path.join(OUT, "expected", "beir.json"), "w"), ensure_ascii=False, indent=0)
    json.dump(beir_expected([("q3", "d7", 1)]), open(os.path.join(OUT, "expected", "beir_dev.json"), "w"),
              ensure_ascii=False, indent=0)

    # ---------------- pairs.csv (csv module: minimal quoting, CRLF line ends)
    ref = Ref()
    rows = [(Q[20 + i], P[20 + i], P[21 + i]) for i in range(10)]
    rows.append((Q[20], P[40], P[41]))                                   # same anchor: merged
    rows.append(('what is "quoted", here?', "line one\nline two, with a comma", P[22]))  # quoting, dedup
    rows.append((Q[20], P[42], P[20]))                                   # negative = a positive: dropped
    rows.append((Q[21], P[21], P[23]))                                   # duplicate qrel, new negative
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["anchor", "positive", "negative"])
    for r in rows:
        w.writerow(r)
        ref.row(r[0], [(r[1], None)], [(r[2], None)])
    wtext(os.path.join(OUT, "pairs.csv"), buf.getvalue())
    json.dump(ref.result("pairs"), open(os.path.join(OUT, "expected", "pairs_csv.json"), "w"), ensure_ascii=False,
              indent=0)

    # ---------------- tsv with header (2 columns) and without (triples)
    ref = Ref()
    lines = ["query\tanswer"]
    for i in range(8):
        lines.append(f"{Q[32 + i]}\t{P[32 + i]}")
        ref.row(Q[32 + i], [(P[32 + i], None)], [])
    wtext(os.path.join(OUT, "pairs.tsv"), "\n".join(lines) + "\n")
    json.dump(ref.result("pairs"), open(os.path.join(OUT, "expected", "pairs_tsv.json"), "w"), ensure_ascii=False,
              indent=0)
    ref = Ref()
    lines = []
    for i in range(6):
        lines.append(f"{Q[40 + i]}\t{P[40 + i]}\t{P[50 + i]}")
        ref.row(Q[40 + i], [(P[40 + i], None)], [(P[50 + i], None)])
    wtext(os.path.join(OUT, "triples_noheader.tsv"), "\r\n".join(lines))   # CRLF, no final newline
    json.dump(ref.result("pairs"), open(os.path.join(OUT, "expected", "triples_noheader.json"), "w"),
              ensure_ascii=False, indent=0)

    # ---------------- jsonl: named columns with list negatives; labeled pairs
    ref = Ref()
    recs = []
    for i in range(6):
        r = {"id": i, "question": Q[46 + i], "answer": P[46 + i], "hard": [P[56 + i], P[57 + i]], "other": "x"}
        recs.append(r)
        ref.row(r["question"], [(r["answer"], None)], [(t, None) for t in r["hard"]])
    wjsonl(os.path.join(OUT, "named.jsonl"), recs)
    json.dump(ref.result("pairs"), open(os.path.join(OUT, "expected", "named.json"), "w"), ensure_ascii=False,
              indent=0)
    ref = Ref()
    recs = []
    for i in range(8):
        r = {"sentence1": Q[60 + i % 4], "sentence2": P[60 + i], "label": [1.0, 0.0, 0.5, 1][i % 4]}
        recs.append(r)
        ref.row(r["sentence1"], [(r["sentence2"], None)], [], label=float(r["label"]))
    wjsonl(os.path.join(OUT, "labeled.jsonl"), recs)
    json.dump(ref.result("pairs"), open(os.path.join(OUT, "expected", "labeled.json"), "w"), ensure_ascii=False,
              indent=0)

    # ---------------- FlagEmbedding jsonl (+ gz)
    ref = Ref()
    recs = []
    for i in range(8):
        r = {"query": Q[i], "pos": [P[i]], "neg": [P[10 + i], P[11 + i], P[30 + i]],
             "pos_scores": [0.9 - i * 0.01], "neg_scores": [0.5, 0.25, 0.125], "prompt": "Represent this"}
        if i == 5:
            del r["pos_scores"], r["neg_scores"]
        recs.append(r)
    recs.append({"query": Q[0], "pos": [P[1], P[0]], "neg": [P[2]], "pos_scores": [0.75, 0.5], "neg_scores": [0.1]})
    for r in recs:
        ps = r.get("pos_scores", [None] * len(r["pos"]))
        ns = r.get("neg_scores", [None] * len(r["neg"]))
        ref.row(r["query"], list(zip(r["pos"], ps)), list(zip(r["neg"], ns)))
    wjsonl(os.path.join(OUT, "flag.jsonl"), recs)
    gz(os.path.join(OUT, "flag.jsonl"), os.path.join(OUT, "flag.jsonl.gz"))
    res = ref.result("flagembedding")
    json.dump(res, open(os.path.join(OUT, "expected", "flag.json"), "w"), ensure_ascii=False, indent=0)

    # ---------------- bad inputs: one fault each; the C test checks file:line and message
    bad = os.path.join(OUT, "bad")
    os.makedirs(bad)
    good = json.dumps({"query": "q", "pos": ["p"], "neg": ["n"]})
    wtext(os.path.join(bad, "malformed.jsonl"), good + "\n" + good + "\n" + '{"query": "q", "pos": ["p"\n')
    wtext(os.path.join(bad, "missing_field.jsonl"), good + "\n" + json.dumps({"query": "q2", "neg": ["n"]}) + "\n")
    wtext(os.path.join(bad, "not_object.jsonl"), good + "\n\n[1, 2]\n")
    wtext(os.path.join(bad, "scores_mismatch.jsonl"),
          json.dumps({"query": "q", "pos": ["p", "p2"], "pos_scores": [1.0]}) + "\n")
    wtext(os.path.join(bad, "empty_text.csv"), "anchor,positive\nq1,p1\nq2,\nq3,p3\n")
    wtext(os.path.join(bad, "ragged.csv"), "anchor,positive,negative\na,b,c\nd,e,f\ng,h\n")
    wtext(os.path.join(bad, "unterminated.csv"), "anchor,positive\na,b\n\"c,d\ne,f\n")
    wtext(os.path.join(bad, "bad_quote.csv"), "anchor,positive\n\"abc\"x,def\n")
    wtext(os.path.join(bad, "bad_label.csv"), "sentence1,sentence2,label\na,b,1\nc,d,high\n")
    wtext(os.path.join(bad, "header_only.csv"), "anchor,positive\n")
    with open(os.path.join(OUT, "flag.jsonl.gz"), "rb") as f:
        data = f.read()
    with open(os.path.join(bad, "truncated.jsonl.gz"), "wb") as f:
        f.write(data[: len(data) // 2])

    def beir_variant(name, corpus_recs, qrels_text):
        d = os.path.join(bad, name)
        os.makedirs(os.path.join(d, "qrels"))
        wjsonl(os.path.join(d, "corpus.jsonl"), corpus_recs)
        wjsonl(os.path.join(d, "queries.jsonl"), [{"_id": "q1", "text": "first"}, {"_id": "q2", "text": "second"}])
        wtext(os.path.join(d, "qrels", "test.tsv"), "query-id\tcorpus-id\tscore\n" + qrels_text)

    docs = [{"_id": "d1", "title": "", "text": "one"}, {"_id": "d2", "title": "", "text": "two"}]
    beir_variant("beir_dangling", docs, "q1\td1\t1\nq2\td999\t1\n")
    beir_variant("beir_unknown_query", docs, "q1\td1\t1\nq7\td2\t1\n")
    beir_variant("beir_dup_id", docs + [{"_id": "d1", "text": "again"}], "q1\td1\t1\n")
    beir_variant("beir_bad_score", docs, "q1\td1\t1\nq2\td2\thigh\n")
    beir_variant("beir_empty_doc", docs + [{"_id": "d3", "title": "", "text": "   "}], "q1\td1\t1\n")
    beir_variant("beir_short_qrels", docs, "q1\td1\t1\nq2\td2\n")

    # ---------------- HF tokenizer ids for every BEIR text
    from tokenizers import Tokenizer
    tk = Tokenizer.from_file(os.path.join(a.model, "tokenizer.json"))
    tk.no_truncation()
    tk.no_padding()
    enc = lambda t: tk.encode(t, add_special_tokens=False).ids
    json.dump({"queries": [enc(t) for t in exp_beir["queries"]], "passages": [enc(t) for t in exp_beir["passages"]]},
              open(os.path.join(OUT, "expected", "beir_tokens.json"), "w"))
    total = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(OUT) for f in fs)
    print(f"wrote {OUT}: {total} bytes")


if __name__ == "__main__":
    main()
