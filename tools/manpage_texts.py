#!/usr/bin/env python3
"""manpage_texts.py: deterministic benchmark texts from the manual pages of this machine (standard library only).

texts: paragraphs of the DESCRIPTION sections of /usr/share/man/man1 pages (roff markup stripped), 12-250 words;
pairs: (the page's NAME description, one of its paragraphs), e.g. ("list directory contents", "List information
about the FILEs ..."). Pages in sorted file-name order, so the same man pages give the same texts.
Usage: manpage_texts.py OUT_DIR [--n 1024] [--mandir /usr/share/man/man1]
writes OUT_DIR/texts.jsonl ({"id","text"}) and OUT_DIR/pairs.jsonl ({"id","query","passage"}).
"""
import argparse
import gzip
import json
import os
import re

FONT = re.compile(r"\\f(\[[^\]]*\]|\(..|.)|\\s[+-]?\d")
ESCAPES = [(r"\-", "-"), (r"\(aq", "'"), (r"\(dq", '"'), (r"\(em", "--"), (r"\(en", "-"), (r"\(bu", "*"),
           (r"\(lq", '"'), (r"\(rq", '"'), (r"\e", "\\"), (r"\&", ""), (r"\|", ""), (r"\^", ""), (r"\ ", " "),
           (r"\/", ""), (r"\,", ""), (r"\%", ""), (r"\:", "")]
BREAKS = (".PP", ".P", ".LP", ".TP", ".IP", ".HP", ".SS", ".sp", ".br", ".RS", ".RE", ".nf", ".fi", ".in")


def plain(line):
    line = FONT.sub("", line)
    for a, b in ESCAPES:
        line = line.replace(a, b)
    line = re.sub(r"\\[*(]..|\\.", "", line)
    return line.strip()


def page(path):
    """(NAME description, DESCRIPTION paragraphs) of one roff page, or None."""
    try:
        with gzip.open(path, "rt", encoding="utf-8", errors="replace") as f:
            lines = f.read().split("\n")
    except (OSError, EOFError):
        return None
    section, name, paras, cur = None, [], [], []
    for raw in lines:
        if raw.startswith(".SH") or raw.startswith(".Sh"):
            section = raw[3:].strip().strip('"').upper()
            if cur:
                paras.append(" ".join(cur))
                cur = []
            continue
        if raw.startswith(".\\\"") or raw.startswith("'\\\""):
            continue
        if section == "NAME":
            if not raw.startswith("."):
                name.append(plain(raw))
        elif section == "DESCRIPTION":
            head = raw.split(" ")[0]
            if raw.startswith(".") or raw.startswith("'"):
                if head in BREAKS and cur:
                    paras.append(" ".join(cur))
                    cur = []
                if head in (".B", ".I", ".BR", ".IR", ".RB", ".RI", ".BI", ".IB"):
                    t = plain(" ".join(w.strip('"') for w in raw.split(" ")[1:]))
                    if t:
                        cur.append(t)
                continue
            t = plain(raw)
            if t:
                cur.append(t)
    if cur:
        paras.append(" ".join(cur))
    desc = " ".join(name)
    if " - " in desc:
        desc = desc.split(" - ", 1)[1]
    paras = [p for p in paras if 12 <= len(p.split()) <= 250]
    return (desc.strip(), paras) if desc.strip() and paras else None


def collect(n, mandir):
    texts, pairs = [], []
    files = sorted(f for f in os.listdir(mandir) if f.endswith(".gz"))
    for f in files:
        got = page(os.path.join(mandir, f))
        if not got:
            continue
        desc, paras = got
        for p in paras[:3]:
            if len(texts) < n:
                texts.append(p)
                pairs.append((desc, p))
        if len(texts) >= n:
            break
    return texts, pairs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out_dir")
    ap.add_argument("--n", type=int, default=1024)
    ap.add_argument("--mandir", default="/usr/share/man/man1")
    a = ap.parse_args()
    texts, pairs = collect(a.n, a.mandir)
    if len(texts) < a.n:
        raise SystemExit(f"only {len(texts)} paragraphs found under {a.mandir}")
    os.makedirs(a.out_dir, exist_ok=True)
    with open(os.path.join(a.out_dir, "texts.jsonl"), "w", encoding="utf-8") as f:
        for i, t in enumerate(texts):
            f.write(json.dumps({"id": i, "text": t}, ensure_ascii=False) + "\n")
    with open(os.path.join(a.out_dir, "pairs.jsonl"), "w", encoding="utf-8") as f:
        for i, (q, p) in enumerate(pairs):
            f.write(json.dumps({"id": i, "query": q, "passage": p}, ensure_ascii=False) + "\n")
    words = [len(t.split()) for t in texts]
    print(f"{len(texts)} paragraphs, {sum(words) / len(words):.1f} words on average (min {min(words)}, max {max(words)})")


if __name__ == "__main__":
    main()
