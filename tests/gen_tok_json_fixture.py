"""Fixture for a BERT tokenizer saved without vocab.txt (transformers 5 saves tokenizer.json alone): loads the
tiny BERT vocabulary of fixtures/cli/bert_seqcls with the HF fast tokenizer, saves it, drops vocab.txt, and
writes the ids HF gives for a few pairs. Output: tests/fixtures/tok/bert_json/ (tokenizer.json,
tokenizer_config.json, pairs.jsonl with {"a", "b", "ids"}). Run with the reference venv; CI reads the output."""
import json, os, shutil, tempfile
from transformers import BertTokenizerFast

here = os.path.dirname(os.path.abspath(__file__))
src = os.path.join(here, "fixtures", "cli", "bert_seqcls")
out = os.path.join(here, "fixtures", "tok", "bert_json")
tok = BertTokenizerFast.from_pretrained(src)
tmp = tempfile.mkdtemp()
tok.save_pretrained(tmp)
os.makedirs(out, exist_ok=True)
for f in ("tokenizer.json", "tokenizer_config.json"):
    shutil.copy(os.path.join(tmp, f), os.path.join(out, f))
shutil.rmtree(tmp)
pairs = [("How do I list files?", "ls lists information about the FILEs."),
         ("Café naïve résumé", "Ünïcödé ACCENTS and 中文 characters"),
         ("unaffable tokenization", "the quick brown fox jumps over the lazy dog")]
with open(os.path.join(out, "pairs.jsonl"), "w") as f:
    for a, b in pairs:
        f.write(json.dumps({"a": a, "b": b, "ids": tok(a, b)["input_ids"]}) + "\n")
print("wrote", out)
