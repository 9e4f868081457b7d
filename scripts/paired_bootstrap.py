#!/usr/bin/env python3
"""How much of a CIDEr-D difference between two captioners is the choice of images?

Reads two `captioner eval --per-image` files of the same split and prints each model's score,
their difference, and a 95% interval for the difference from a paired bootstrap over images:
the images are resampled with replacement, and both models are scored on the same resample.

Only metrics whose corpus score is the mean of the per-image scores can be resampled this way.
CIDEr-D is (its document frequencies come from the whole split's references, and stay fixed);
BLEU and METEOR are not (their corpus scores pool n-gram and alignment counts), so this script
refuses them.

    captioner eval ... --model A --per-image a.jsonl
    captioner eval ... --model B --per-image b.jsonl
    python3 scripts/paired_bootstrap.py a.jsonl b.jsonl [--resamples 5000] [--seed 0]

The interval covers the sampling of images only. Two training runs of one recipe with different
seeds differ by more than that (models/README.md, session 25).
"""

import argparse
import json
import random
import sys

MEAN_METRICS = ("CIDEr",)


def per_image(path, metric):
    scores = {}
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                scores[row["image_id"]] = float(row[metric])
            except (ValueError, KeyError) as e:
                sys.exit(f"{path}:{number}: not a per-image score line with {metric!r}: {e}")
    return scores


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("a", help="per-image scores of model A (JSON lines)")
    parser.add_argument("b", help="per-image scores of model B, same images")
    parser.add_argument("--metric", default="CIDEr", choices=MEAN_METRICS)
    parser.add_argument("--resamples", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    a, b = per_image(args.a, args.metric), per_image(args.b, args.metric)
    if a.keys() != b.keys():
        only = sorted(a.keys() ^ b.keys())
        sys.exit(f"the two files score different images ({len(only)} differ, e.g. {only[0]})")
    ids = sorted(a)
    if not ids:
        sys.exit("no images")
    scores_a = [100 * a[i] for i in ids]
    scores_b = [100 * b[i] for i in ids]
    n = len(ids)
    rng = random.Random(args.seed)
    # Both models on the same draw: the difference of a draw is the difference of its two means.
    draws = {"A": [], "B": [], "A - B": []}
    for _ in range(args.resamples):
        draw = [rng.randrange(n) for _ in range(n)]
        mean_a = sum(scores_a[k] for k in draw) / n
        mean_b = sum(scores_b[k] for k in draw) / n
        draws["A"].append(mean_a)
        draws["B"].append(mean_b)
        draws["A - B"].append(mean_a - mean_b)
    full = {"A": sum(scores_a) / n, "B": sum(scores_b) / n}
    full["A - B"] = full["A"] - full["B"]
    print(f"{args.metric} over {n} images, 95% bootstrap intervals ({args.resamples} resamples):")
    for name, means in draws.items():
        means.sort()
        low = means[int(0.025 * (args.resamples - 1))]
        high = means[int(0.975 * (args.resamples - 1))]
        sign = "+" if name == "A - B" else ""
        print(f"  {name:5} {full[name]:{sign}7.2f}  [{low:{sign}.2f}, {high:{sign}.2f}]")

if __name__ == "__main__":
    main()
