#!/usr/bin/env python3
"""Write the pycocoevalcap reference fixtures that `crates/metrics` is tested against.

The Rust metrics crate claims to reproduce pycocoevalcap 1.2 (PTB tokenisation, BLEU-1..4,
ROUGE-L, CIDEr-D) without Java. This script runs the real thing and writes what it produced
into `crates/metrics/tests/fixtures/`, so CI can compare without Java or Python:

- `tokens_flickr8k.jsonl.gz`, `tokens_coco_val2017.jsonl.gz`: every caption of
  `Flickr8k.token.txt` (file order) and of `captions_val2017.json` (annotation order), tokenised
  by one `PTBTokenizer.tokenize` call per file, as `{"id": ..., "tokens": "..."}` lines.
- `scores_<set>.json.gz` (`scores_edge_cases.json` uncompressed): corpus and per-image Bleu_1..4, ROUGE_L, CIDEr for the evaluation sets
  (a) `coco_heldout`: COCO val2017, images sorted by id, candidate = the image's first caption
      (annotation order), references = the others;
  (b) `coco_shuffled`: the same references, candidates taken from another image
      (`candidate_from[k]` = the image whose held-out caption image k gets);
  (c) `flickr8k_test`: Flickr8k test split (file order), candidate = caption #0, refs = #1-#4;
  (d) `edge_cases`: small hand-made cases, stored inline (raw references and candidates).
  Sets (a)-(c) are rebuilt from the shared data by the Rust tests, so only their recipe and
  the scores are stored.

Run (needs Java and pycocoevalcap, e.g. `pip install pycocoevalcap`):

    python3 scripts/metrics_fixtures.py [--data ../shared/data] [--out crates/metrics/tests/fixtures]

Timing of pycocoevalcap on set (a) (tokenise + Bleu + Rouge + Cider, no METEOR/SPICE), as used
for the speed comparison in `crates/metrics/benches/evaluate.rs`:

    python3 scripts/metrics_fixtures.py --time-only [--repeat 3]

which prints one line `pycocoevalcap_seconds <best wall time>`.
"""

import argparse
import gzip
import json
import os
import random
import sys
import time

from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

# (d): hand-made cases. Each image: raw references and a raw candidate.
EDGE_CASES = [
    {"refs": ["A dog runs on the grass.", "A brown dog is running."], "candidate": ""},
    {"refs": ["A man rides a horse.", "Someone on a horse."], "candidate": "!!! ... ?"},
    {"refs": ["a cat", "the cat sat"], "candidate": "cat"},
    {"refs": ["Two dogs play tug-of-war with a green toy.", "Dogs play."],
     "candidate": "Two dogs play tug-of-war with a green toy."},
    {"refs": ["He doesn't like John's car; it's red.", "They'll go (maybe) to St. Louis."],
     "candidate": "He does n't like \"John's\" car ... it 's red!"},
    {"refs": ["Street signs at 22 3/4 St. and 8th Ave.", "A sign reads 12:43 on 10-29-2011."],
     "candidate": "A street sign at 22 3/4 St"},
    {"refs": ["A caf\u00e9 with na\u00efve art, \u00c9COLE sign.", "Stra\u00dfe in M\u00fcnchen."],
     "candidate": "a CAF\u00c9 sign"},
    {"refs": ["the the the the the the the", "the cat is on the mat"],
     "candidate": "the the the the the the the"},
    {"refs": ["A & B at AT&T, and/or x-ray.", "a [bracket] {brace} <tag>"],
     "candidate": "a & b at&t and/or x-ray"},
    {"refs": ["one", "two words"], "candidate": "one two words one two words one two"},
    {"refs": ["A U.S. flag near Mr. Smith's house.", "a flag near washington d.c."],
     "candidate": "a u.s.a flag near d.c."},
    {"refs": ["x"], "candidate": "x"},
    {"refs": ["They're gonna wanna call 555-123-4567 :) now", "A sign: 22 555-123-4567, #tag1 & foo@bar.org"],
     "candidate": "they 're gon na call 555-123-4567 now ;)"},
    {"refs": ["Rock 'n' roll in the '90s; 'tis o'clock, y'all!", "K. The end. No. 5 -- ok...", "a (b) [c] {d}"],
     "candidate": "rock n roll in the 90s"},
]


def load_coco(data):
    with open(os.path.join(data, "coco", "captions_val2017.json"), encoding="utf-8") as f:
        d = json.load(f)
    return d["annotations"]


def load_flickr(data):
    rows = []
    with open(os.path.join(data, "flickr8k", "Flickr8k.token.txt"), encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            key, caption = line.split("\t", 1)
            rows.append((key, caption))
    return rows


def tokenize_in_order(pairs):
    """One PTBTokenizer call over (id, caption) pairs, in order; returns id -> tokens."""
    tok = PTBTokenizer().tokenize({k: [{"caption": c}] for k, c in pairs})
    return {k: v[0] for k, v in tok.items()}


def score(images):
    """images: list of (image_id, [raw refs], raw candidate), in evaluation order."""
    gts = {str(i): [{"caption": r} for r in refs] for i, refs, _ in images}
    res = {str(i): [{"caption": c}] for i, _, c in images}
    tok = PTBTokenizer()
    gts, res = tok.tokenize(gts), tok.tokenize(res)
    out = {"corpus": {}, "per_image": {}}
    bleu, bleus = Bleu(4).compute_score(gts, res, verbose=0)
    for n in range(4):
        out["corpus"]["Bleu_%d" % (n + 1)] = bleu[n]
        out["per_image"]["Bleu_%d" % (n + 1)] = [float(x) for x in bleus[n]]
    for name, scorer in (("ROUGE_L", Rouge()), ("CIDEr", Cider())):
        s, ss = scorer.compute_score(gts, res)
        out["corpus"][name] = float(s)
        out["per_image"][name] = [float(x) for x in ss]
    return out


def coco_heldout(data):
    anns = load_coco(data)
    by_image = {}
    for a in anns:
        by_image.setdefault(a["image_id"], []).append(a["caption"])
    ids = sorted(by_image)
    return ids, [(i, by_image[i][1:], by_image[i][0]) for i in ids]


def shuffled_sources(n, seed=20150101):
    perm = list(range(n))
    random.Random(seed).shuffle(perm)
    return perm


def flickr_test(data):
    rows = load_flickr(data)
    caps = {}
    for key, caption in rows:
        name, k = key.split("#")
        caps.setdefault(name, {})[int(k)] = caption
    with open(os.path.join(data, "flickr8k", "Flickr_8k.testImages.txt"), encoding="utf-8") as f:
        names = [l.strip() for l in f if l.strip()]
    images = []
    for name in names:
        c = caps[name]
        images.append((name, [c[k] for k in sorted(c) if k != 0], c[0]))
    return images


def write_json(path, obj):
    text = json.dumps(obj, ensure_ascii=False, indent=None, separators=(",", ":")) + "\n"
    if path.endswith(".gz"):
        with gzip.GzipFile(path, "wb", mtime=0) as f:
            f.write(text.encode("utf-8"))
    else:
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
    print("wrote", os.path.relpath(path, REPO), file=sys.stderr)


def write_tokens(path, pairs):
    tokens = tokenize_in_order(pairs)
    with gzip.GzipFile(path, "wb", mtime=0) as f:
        for k, _ in pairs:
            f.write((json.dumps({"id": k, "tokens": tokens[k]}, ensure_ascii=False) + "\n").encode("utf-8"))
    print("wrote", os.path.relpath(path, REPO), file=sys.stderr)


def time_only(data, repeat):
    _, images = coco_heldout(data)
    best = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        score(images)
        dt = time.perf_counter() - t0
        best = dt if best is None else min(best, dt)
    print("pycocoevalcap_seconds %.4f" % best)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.path.join(REPO, "..", "shared", "data"))
    ap.add_argument("--out", default=os.path.join(REPO, "crates", "metrics", "tests", "fixtures"))
    ap.add_argument("--time-only", action="store_true")
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    if args.time_only:
        time_only(args.data, args.repeat)
        return
    os.makedirs(args.out, exist_ok=True)

    write_tokens(os.path.join(args.out, "tokens_flickr8k.jsonl.gz"), load_flickr(args.data))
    write_tokens(os.path.join(args.out, "tokens_coco_val2017.jsonl.gz"),
                 [(str(a["id"]), a["caption"]) for a in load_coco(args.data)])

    ids, images = coco_heldout(args.data)
    write_json(os.path.join(args.out, "scores_coco_heldout.json.gz"),
               {"set": "coco_heldout", "image_ids": ids, **score(images)})

    src = shuffled_sources(len(images))
    shuffled = [(i, refs, images[src[k]][2]) for k, (i, refs, _) in enumerate(images)]
    write_json(os.path.join(args.out, "scores_coco_shuffled.json.gz"),
               {"set": "coco_shuffled", "image_ids": ids, "candidate_from": src, **score(shuffled)})

    flickr = flickr_test(args.data)
    write_json(os.path.join(args.out, "scores_flickr8k_test.json.gz"),
               {"set": "flickr8k_test", "image_ids": [i for i, _, _ in flickr], **score(flickr)})

    edge = [(k, e["refs"], e["candidate"]) for k, e in enumerate(EDGE_CASES)]
    write_json(os.path.join(args.out, "scores_edge_cases.json"),
               {"set": "edge_cases", "images": EDGE_CASES, **score(edge)})


if __name__ == "__main__":
    main()
