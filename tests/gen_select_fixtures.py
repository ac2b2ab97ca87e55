#!/usr/bin/env python3
"""gen_select_fixtures.py: runs sentence-transformers' REAL mine_hard_negatives (use_faiss=False) on a tiny data
set with a tiny random SentenceTransformer (a StaticEmbedding over a word-level tokenizer, no hub access), under
several parameter sets, and writes tests/fixtures/select/ for tests/test_select.c:

  cands.txt     per query: its positives (corpus index, score), the corpus passage whose text equals the query
                (-1 if none) and every corpus passage in torch.topk order with the scores mine_hard_negatives
                computed (model.similarity on the same embeddings), floats as exact hex
  expected.txt  per parameter set: the options, the range_max and skip counts mine_hard_negatives printed, and
                per query the negatives it returned (corpus indices, in its order)

The corpus indices are mine_hard_negatives' own: list(dict.fromkeys(corpus + positives)). No two candidates of
a query tie in score (checked), so torch.topk's order is unambiguous.

    /work/venv/bin/pip install datasets      # mine_hard_negatives needs it
    /work/venv/bin/python tests/gen_select_fixtures.py
"""
import contextlib
import io
import os

os.environ.setdefault("TQDM_DISABLE", "1")
import random
import re

import numpy as np
import torch
from datasets import Dataset
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.modules import StaticEmbedding
from sentence_transformers.util import mine_hard_negatives
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import Whitespace

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "fixtures", "select")


def make_model(words, dim, seed):
    vocab = {"[UNK]": 0, "[PAD]": 1}
    for w in words:
        vocab[w] = len(vocab)
    tok = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = Whitespace()
    g = np.random.default_rng(seed)
    emb = StaticEmbedding(tok, embedding_weights=g.standard_normal((len(vocab), dim)).astype(np.float32))
    return SentenceTransformer(modules=[emb], device="cpu")


def make_data(rng, words):
    seen = set()

    def text():
        while True:
            t = [rng.choice(words) for _ in range(rng.randrange(2, 7))]
            key = tuple(sorted(t))  # a mean of word vectors: same bag of words = same embedding
            if key not in seen:
                seen.add(key)
                return " ".join(t)

    def near(a):  # a positive: the anchor's words with one or two changed, so it scores high
        while True:
            t = a.split()
            for _ in range(rng.choice([1, 2])):
                t[rng.randrange(len(t))] = rng.choice(words)
            t.append(rng.choice(words))
            key = tuple(sorted(t))
            if key not in seen:
                seen.add(key)
                return " ".join(t)

    anchors, positives = [], []
    for q in range(40):
        a = text()
        for _ in range(rng.choice([1, 1, 1, 2, 3])):
            anchors.append(a)
            positives.append(near(a) if rng.random() < 0.8 else text())
    # a positive shared by two queries, as real data has
    anchors.append(anchors[0 + 5])
    positives.append(positives[0])
    corpus = [text() for _ in range(160)]
    # queries whose own text is a corpus passage: sentence-transformers (v6) removes that passage from the
    # candidates and reserves one extra candidate slot for it; and one query that is its own positive (kept
    # by include_positives)
    for q in (3, 9, 17):
        corpus.append(anchors[q])
    anchors.append(anchors[22])
    positives.append(anchors[22])
    return anchors, positives, corpus


def h(x):
    return float(np.float32(x)).hex()


CONFIGS = [
    dict(name="default"),
    dict(name="n5_rmin3", num_negatives=5, range_min=3),
    dict(name="abs_margin", num_negatives=4, absolute_margin=0.05),
    dict(name="abs_margin0", num_negatives=3, absolute_margin=0.0),
    dict(name="rel_margin", num_negatives=4, relative_margin=0.1),
    dict(name="max_score", num_negatives=3, max_score="q90"),
    dict(name="min_score", num_negatives=6, min_score="q85", range_max=40),
    dict(name="min_score_auto", num_negatives=3, min_score="q80"),
    dict(name="combo", num_negatives=6, range_min=2, range_max=30, absolute_margin=0.02, relative_margin=0.05,
         max_score="q97", min_score="q40"),
    dict(name="narrow", num_negatives=3, range_min=4, range_max=8, absolute_margin=0.03),
    dict(name="rmin_big", num_negatives=2, range_min=20, relative_margin=0.0),
    dict(name="random", num_negatives=4, relative_margin=0.05, sampling_strategy="random"),
    dict(name="random_rmin", num_negatives=3, range_min=5, range_max=25, sampling_strategy="random"),
    dict(name="include_pos", num_negatives=5, include_positives=True),
    # few survivors: the last slots come from the candidates past range_max + max_positives (issue 16)
    dict(name="short_rel", num_negatives=5, range_max=30, relative_margin=0.05),
    dict(name="short_abs", num_negatives=5, range_max=6, absolute_margin=0.1),
    dict(name="short_random", num_negatives=3, range_max=5, relative_margin=0.02, sampling_strategy="random"),
]


def main():
    rng = random.Random(7)
    words = ["w%d" % i for i in range(24)]
    model = make_model(words, dim=12, seed=3)
    anchors, positives, extra = make_data(rng, words)
    dataset = Dataset.from_dict({"query": anchors, "answer": positives})

    # what mine_hard_negatives builds internally (same calls, same order)
    corpus = list(dict.fromkeys(extra + positives))
    cidx = {t: i for i, t in enumerate(corpus)}
    queries = list(dict.fromkeys(anchors))
    qidx = {t: i for i, t in enumerate(queries)}
    pos_of = [[] for _ in queries]
    for a, p in zip(anchors, positives):
        if cidx[p] not in pos_of[qidx[a]]:
            pos_of[qidx[a]].append(cidx[p])
    max_positives = max(len(p) for p in pos_of)
    self_of = [cidx.get(t, -1) for t in queries]  # the passage equal to the query, as mine_hard_negatives finds it
    c_emb = model.encode_document(corpus, batch_size=32, normalize_embeddings=True, convert_to_numpy=True)
    q_emb = model.encode_query(queries, batch_size=32, normalize_embeddings=True, convert_to_numpy=True)
    scores = model.similarity(q_emb, torch.as_tensor(c_emb))
    top_s, top_i = torch.topk(scores, k=len(corpus), dim=1)
    flat_q = [q for q in range(len(queries)) for _ in pos_of[q]]
    pos_scores = model.similarity_pairwise(q_emb[flat_q], c_emb[[p for ps in pos_of for p in ps]])
    for q in range(len(queries)):
        s = top_s[q].tolist()
        assert len(set(s)) == len(s), "tied candidate scores for query %d: regenerate" % q
    allv = top_s.flatten().numpy()

    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "cands.txt"), "w") as f:
        f.write("queries %d corpus %d max_positives %d\n" % (len(queries), len(corpus), max_positives))
        k = 0
        for q in range(len(queries)):
            f.write("pos %d %d" % (q, len(pos_of[q])))
            for p in pos_of[q]:
                f.write(" %d %s" % (p, h(pos_scores[k].item())))
                k += 1
            f.write("\nself %d %d" % (q, self_of[q]))
            f.write("\ncand %d %d" % (q, len(corpus)))
            for i, s in zip(top_i[q].tolist(), top_s[q].tolist()):
                f.write(" %d %s" % (i, h(s)))
            f.write("\n")

    out = open(os.path.join(OUT, "expected.txt"), "w")
    for cfg in CONFIGS:
        cfg = dict(cfg)
        name = cfg.pop("name")
        for key in ("max_score", "min_score"):
            if isinstance(cfg.get(key), str):  # a quantile of all scores, rounded so it is not a score itself
                cfg[key] = round(float(np.quantile(allv, int(cfg[key][1:]) / 100)), 4)
        buf = io.StringIO()
        random.seed(11)
        with contextlib.redirect_stdout(buf):
            res = mine_hard_negatives(dataset, model, corpus=extra, use_faiss=False, output_format="labeled-list",
                                      output_scores=True, verbose=True, batch_size=32, **cfg)
        log = buf.getvalue()
        m = re.search(r"Setting range_max to (\d+)", log)
        rmax = int(m.group(1)) if m else cfg.get("range_max", 0)
        skipped = {}
        for mm in re.finditer(r"Skipped ([\d,]+) potential negatives \([\d.]+%\) due to the (\w+)", log):
            skipped[mm.group(2)] = int(mm.group(1).replace(",", ""))
        negs = {}
        col = "answer"
        if "negative_1" not in res.column_names:
            for row in res:
                q = qidx[row["query"]]
                docs, sc = row[col], row["scores"]
                got = [(cidx[d], s) for d, s in zip(docs[1:], sc[1:])]
                assert negs.get(q, got) == got, "query %d: rows of one query disagree" % q
                negs[q] = got
        else:  # n-tuple (include_positives forces it): negative_1..negative_n
            ncols = [c for c in res.column_names if c.startswith("negative_")]
            for row in res:
                q = qidx[row["query"]]
                got = [(cidx[row[c]], s) for c, s in zip(ncols, row["scores"][1:])]
                negs[q] = got
        # the scores mine_hard_negatives reports are the candidate scores written above
        for q, lst in negs.items():
            table = dict(zip(top_i[q].tolist(), top_s[q].tolist()))
            for i, s in lst:
                assert abs(table[i] - s) < 1e-6, (name, q, i, s, table[i])
        fmt = lambda key: h(cfg[key]) if cfg.get(key) is not None else "nan"
        out.write("config %s negatives %d range_min %d range_max %d resolved_range_max %d absolute_margin %s "
                  "relative_margin %s max_score %s min_score %s sampling %s include_positives %d\n" % (
                      name, cfg.get("num_negatives", 3), cfg.get("range_min", 0), cfg.get("range_max") or 0, rmax,
                      fmt("absolute_margin"), fmt("relative_margin"), fmt("max_score"), fmt("min_score"),
                      cfg.get("sampling_strategy", "top"), int(cfg.get("include_positives", False))))
        out.write("skipped absolute_margin %d relative_margin %d max_score %d min_score %d\n" % (
            skipped.get("absolute_margin", 0), skipped.get("relative_margin", 0), skipped.get("max_score", 0),
            skipped.get("min_score", 0)))
        total = 0
        for q in range(len(queries)):
            lst = negs.get(q, [])
            total += len(lst)
            out.write("neg %d %d%s\n" % (q, len(lst), "".join(" %d" % i for i, _ in lst)))
        print("%-14s range_max %3d  negatives %3d  skipped %s" % (name, rmax, total, skipped))
    out.close()


if __name__ == "__main__":
    main()
