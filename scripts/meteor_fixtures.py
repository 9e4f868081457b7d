#!/usr/bin/env python3
"""Write the pycocoevalcap METEOR fixtures that `crates/metrics/src/meteor` is tested against.

pycocoevalcap 1.2 computes METEOR by piping to `java -jar meteor-1.5.jar - - -stdio -l en -norm`
(`pycocoevalcap/meteor/meteor.py`): one `SCORE ||| ref 1 ||| ... ||| hypothesis` line per image
answered by 23 sufficient statistics, then one `EVAL ||| stats ||| stats ...` line answered by the
per-image scores and the corpus score computed by METEOR from the summed statistics. This script
speaks exactly that protocol through pycocoevalcap's own `Meteor` object (its `_stat` method and
its subprocess), on the PTB-tokenised captions, and records for each evaluation set:

- `corpus`: the corpus METEOR (what `COCOEvalCap` reports as `METEOR`);
- `per_image`: the per-image scores;
- `stats`: the 23 statistics of each image (what `SCORE` answered), so that the Rust scorer's
  formula and aggregation can be checked in CI without the METEOR data files.

The sets are those of `scripts/metrics_fixtures.py` (same recipe, rebuilt by the Rust tests from
the shared data): `coco_heldout`, `coco_shuffled`, `flickr8k_test` (gzipped) and `edge_cases`
(inline). Files: `crates/metrics/tests/fixtures/meteor_<set>.json[.gz]`.

Run (needs Java and pycocoevalcap, e.g. the venv of README.md's "Long runs"):

    python3 scripts/meteor_fixtures.py [--data ../shared/data] [--out crates/metrics/tests/fixtures]

Timing of pycocoevalcap's METEOR (JVM start, data loading and scoring, as `COCOEvalCap` runs it)
on set (a), for the speed comparison:

    python3 scripts/meteor_fixtures.py --time-only [--repeat 1]

which prints one line `pycocoevalcap_meteor_seconds <best wall time>`.
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from metrics_fixtures import (  # noqa: E402
    EDGE_CASES,
    REPO,
    coco_heldout,
    flickr_test,
    shuffled_sources,
    write_json,
)
from pycocoevalcap.meteor.meteor import Meteor  # noqa: E402
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer  # noqa: E402


def tokenized(images):
    gts = {str(i): [{"caption": r} for r in refs] for i, refs, _ in images}
    res = {str(i): [{"caption": c}] for i, _, c in images}
    tok = PTBTokenizer()
    return tok.tokenize(gts), tok.tokenize(res)


def meteor(images):
    """images: list of (image_id, [raw refs], raw candidate), in evaluation order."""
    gts, res = tokenized(images)
    keys = [str(i) for i, _, _ in images]
    m = Meteor()
    # Meteor.compute_score, keeping the SCORE answers: same lines, same order, same process.
    stats = []
    eval_line = "EVAL"
    with m.lock:
        for k in keys:
            assert len(res[k]) == 1
            stat = m._stat(res[k][0], gts[k])
            stats.append([int(float(x)) for x in stat.split()])
            eval_line += " ||| {}".format(stat)
        m.meteor_p.stdin.write("{}\n".format(eval_line).encode())
        m.meteor_p.stdin.flush()
        per_image = [float(m.meteor_p.stdout.readline().strip()) for _ in keys]
        corpus = float(m.meteor_p.stdout.readline().strip())
    # Cross-check against the unmodified compute_score on a fresh process.
    check, check_per_image = Meteor().compute_score(gts, res)
    assert abs(check - corpus) < 1e-12, (check, corpus)
    assert all(abs(a - b) < 1e-12 for a, b in zip(check_per_image, per_image))
    return {"corpus": {"METEOR": corpus}, "per_image": {"METEOR": per_image}, "stats": stats}


def time_only(data, repeat):
    _, images = coco_heldout(data)
    gts, res = tokenized(images)
    best = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        Meteor().compute_score(gts, res)
        dt = time.perf_counter() - t0
        best = dt if best is None else min(best, dt)
    print("pycocoevalcap_meteor_seconds %.4f" % best)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.path.join(REPO, "..", "shared", "data"))
    ap.add_argument("--out", default=os.path.join(REPO, "crates", "metrics", "tests", "fixtures"))
    ap.add_argument("--time-only", action="store_true")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--sets", default="edge_cases,flickr8k_test,coco_heldout,coco_shuffled")
    args = ap.parse_args()
    if args.time_only:
        time_only(args.data, args.repeat)
        return
    os.makedirs(args.out, exist_ok=True)
    sets = args.sets.split(",")

    if "edge_cases" in sets:
        edge = [(k, e["refs"], e["candidate"]) for k, e in enumerate(EDGE_CASES)]
        write_json(os.path.join(args.out, "meteor_edge_cases.json"),
                   {"set": "edge_cases", "images": EDGE_CASES, **meteor(edge)})

    if "flickr8k_test" in sets:
        flickr = flickr_test(args.data)
        write_json(os.path.join(args.out, "meteor_flickr8k_test.json.gz"),
                   {"set": "flickr8k_test", "image_ids": [i for i, _, _ in flickr], **meteor(flickr)})

    ids, images = coco_heldout(args.data)
    if "coco_heldout" in sets:
        write_json(os.path.join(args.out, "meteor_coco_heldout.json.gz"),
                   {"set": "coco_heldout", "image_ids": ids, **meteor(images)})

    if "coco_shuffled" in sets:
        src = shuffled_sources(len(images))
        shuffled = [(i, refs, images[src[k]][2]) for k, (i, refs, _) in enumerate(images)]
        write_json(os.path.join(args.out, "meteor_coco_shuffled.json.gz"),
                   {"set": "coco_shuffled", "image_ids": ids, "candidate_from": src, **meteor(shuffled)})


if __name__ == "__main__":
    main()
