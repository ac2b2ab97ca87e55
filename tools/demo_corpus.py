#!/usr/bin/env python3
"""Build the demo's BEIR-style corpus from the manual pages installed on this machine (standard library only).

query   = the NAME line's description   ("ls \\- list directory contents" -> "list directory contents")
passage = the first words of the DESCRIPTION section (roff markup stripped)
qrels   = each query's own page (grade 1). Pages are picked deterministically (hash of the file name), queries
whose text repeats are dropped, so the corpus is the same on every machine with the same man pages.
Splits: qrels/test.tsv holds every query; qrels/dev.tsv every --dev-every'th query (the 4th, 8th, ...) and
qrels/train.tsv the others, so training and evaluation never share a query (they share the corpus, as BEIR does).
With --dev-slice-every J, qrels/dev_slice.tsv holds every J'th dev query: a small subset of dev.tsv that the demo
evaluates during training to draw its learning curve (cheap enough to repeat; nothing is selected on it).
Usage: demo_corpus.py OUT_DIR [--pages N] [--words W] [--dev-every K] [--dev-slice-every J] [--mandir /usr/share/man]
"""
import argparse, gzip, hashlib, json, os, re, sys

FONT = re.compile(r"\\f(\[[^\]]*\]|\(..|.)")
ESC = [(r"\-", "-"), (r"\(aq", "'"), (r"\(dq", '"'), (r"\(em", "--"), (r"\(en", "-"), (r"\(bu", "*"),
       (r"\(lq", '"'), (r"\(rq", '"'), (r"\e", "\\"), (r"\&", ""), (r"\|", ""), (r"\^", ""), (r"\ ", " "),
       (r"\/", ""), (r"\,", ""), (r"\%", ""), (r"\:", "")]


def clean(line):
    line = FONT.sub("", line)
    for a, b in ESC:
        line = line.replace(a, b)
    line = re.sub(r"\\\*\(..|\\\*\[[^\]]*\]|\\\*.", "", line)   # string registers
    line = re.sub(r"\\[a-zA-Z]\[[^\]]*\]|\\\(..", "", line)       # leftover named glyphs
    return line.strip()


def parse(text):
    """Return (name_description, description_words) or None."""
    sections, cur = {}, None
    for raw in text.splitlines():
        if raw.startswith(('.\\"', "'\\\"")):
            continue
        m = re.match(r'^\.(SH|Sh)\s+"?([^"]*)"?', raw)
        if m:
            cur = m.group(2).strip().upper()
            sections.setdefault(cur, [])
            continue
        if cur is None:
            continue
        if raw.startswith((".", "'")):
            macro = raw[1:].split(None, 1)
            if macro and macro[0] in ("B", "I", "BR", "IR", "RB", "RI", "BI", "IB", "Nm", "Nd", "Ar", "Fl", "Xr")\
                    and len(macro) > 1:
                arg = macro[1]
                if macro[0] in ("BR", "IR", "RB", "RI", "BI", "IB"):
                    arg = "".join(re.findall(r'"([^"]*)"|(\S+)', arg) and
                                  [a or b for a, b in re.findall(r'"([^"]*)"|(\S+)', arg)])
                sections[cur].append(clean(arg.replace('"', "")))
            continue
        sections[cur].append(clean(raw))
    name = " ".join(sections.get("NAME", [])).strip()
    if not name:
        return None
    m = re.split(r"\s+-+\s+|\s+\\-\s+", name, maxsplit=1)
    if len(m) != 2:
        return None
    query = m[1].strip().rstrip(".")
    desc = " ".join(w for l in sections.get("DESCRIPTION", []) for w in l.split())
    return query, desc.split()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--pages", type=int, default=600)
    ap.add_argument("--words", type=int, default=120)
    ap.add_argument("--dev-every", type=int, default=4)
    ap.add_argument("--dev-slice-every", type=int, default=0)
    ap.add_argument("--mandir", default="/usr/share/man")
    a = ap.parse_args()
    files = []
    for sec in ("man1", "man3", "man5", "man8"):
        d = os.path.join(a.mandir, sec)
        if os.path.isdir(d):
            files += [os.path.join(d, f) for f in sorted(os.listdir(d)) if f.endswith(".gz")]
    if not files:
        sys.exit(f"demo_corpus: no manual pages under {a.mandir} (install man-db / manpages)")
    files.sort(key=lambda p: hashlib.sha1(os.path.basename(p).encode()).hexdigest())
    seen_q, seen_p, rows = set(), set(), []
    for path in files:
        if len(rows) >= a.pages:
            break
        try:
            with gzip.open(path, "rt", encoding="utf-8", errors="replace") as f:
                text = f.read()
        except (OSError, EOFError):
            continue
        if text.lstrip().startswith(".so "):   # alias page
            continue
        r = parse(text)
        if not r:
            continue
        q, words = r
        if len(q.split()) < 3 or len(words) < 25 or q.lower() in seen_q:
            continue
        p = " ".join(words[:a.words])
        if p in seen_p:
            continue
        seen_q.add(q.lower()); seen_p.add(p)
        name = os.path.basename(path)[:-3]
        rows.append((name, q, p))
    os.makedirs(os.path.join(a.out, "qrels"), exist_ok=True)
    splits = ("test", "train", "dev") + (("dev_slice",) if a.dev_slice_every > 0 else ())
    qrels = {s: open(os.path.join(a.out, "qrels", s + ".tsv"), "w") for s in splits}
    with open(os.path.join(a.out, "corpus.jsonl"), "w") as fc, open(os.path.join(a.out, "queries.jsonl"), "w") as fq:
        for f in qrels.values():
            f.write("query-id\tcorpus-id\tscore\n")
        ndev = 0
        for i, (name, q, p) in enumerate(rows):
            fc.write(json.dumps({"_id": f"d{i}", "title": "", "text": p, "page": name}) + "\n")
            fq.write(json.dumps({"_id": f"q{i}", "text": q}) + "\n")
            dev = a.dev_every > 0 and i % a.dev_every == a.dev_every - 1
            for s in ("test", "dev" if dev else "train"):
                qrels[s].write(f"q{i}\td{i}\t1\n")
            if dev and a.dev_slice_every > 0:
                if ndev % a.dev_slice_every == 0:
                    qrels["dev_slice"].write(f"q{i}\td{i}\t1\n")
                ndev += 1
    for f in qrels.values():
        f.close()
    print(f"demo corpus: {len(rows)} man pages from {a.mandir} -> {a.out}")


if __name__ == "__main__":
    main()
