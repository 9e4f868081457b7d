#!/usr/bin/env bash
# Issue-6 captioning speed: our image -> caption pipeline vs the same pipeline in PyTorch, back to
# back on the same machine and threads.
#
#   scripts/bench_caption.sh [rounds] [runs]        (defaults: 2 rounds, 20 single-image runs)
#
# Env: BATCH (folder batch size, default 32), IMAGES (folder size, default 1000), TORCH_PY (default
# /work/venvs/torch/bin/python), TORCH_ARGS (extra flags for the PyTorch script, e.g.
# --channels-last), CAPTIONER_BENCH_MODEL (bundle; default models/default, else
# runs/default/best), RAYON_NUM_THREADS (default 2, also PyTorch's thread count and both sides'
# decoding threads/workers).
#
# 1. Builds crates/generate/benches/caption_pipeline.rs once and copies the executable and the
#    model bundle aside, so edits or a retrained model during the run change nothing.
# 2. Parity: both caption PNG copies of the first 20 Flickr8k test images (identical pixels on
#    both sides) and the PyTorch script prints how many captions agree.
# 3. Alternates Rust and PyTorch `rounds` times: single-image latency (median of `runs`) and the
#    1,000 test images in batches (images/s, with the JPEG-caption agreement of that round).
# 4. Prints the medians over rounds, the ratios and the issue's targets (<= 60 ms single,
#    >= 1.5x PyTorch's folder throughput).
# Run it on a quiet machine: `/work/features/quiet.sh scripts/bench_caption.sh`.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS="${1:-2}"
RUNS="${2:-20}"
BATCH="${BATCH:-32}"
IMAGES="${IMAGES:-1000}"
TORCH_PY="${TORCH_PY:-/work/venvs/torch/bin/python}"
# shellcheck disable=SC2206
TORCH_ARGS=(${TORCH_ARGS:-})
export RAYON_NUM_THREADS="${RAYON_NUM_THREADS:-2}"
export OMP_NUM_THREADS="$RAYON_NUM_THREADS"
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
SHARED="${CAPTIONER_SHARED_DATA:-../shared/data}"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

MODEL="${CAPTIONER_BENCH_MODEL:-}"
if [[ -z "$MODEL" ]]; then
  if [[ -f models/default/model.safetensors ]]; then MODEL=models/default; else MODEL=runs/default/best; fi
fi
cp -r "$MODEL" "$TMP/model"
export CAPTIONER_BENCH_MODEL="$TMP/model"

build() { cargo bench -p captioner-generate --bench caption_pipeline --no-run "$@"; }
build -q >/dev/null 2>&1 || build
BIN="$(build -q --message-format=json 2>/dev/null | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "caption_pipeline" and m.get("executable"):
        print(m["executable"])')"
cp "$BIN" "$TMP/caption_pipeline"
RUST="$TMP/caption_pipeline"
TORCH=("$TORCH_PY" crates/generate/benches/caption_pipeline_torch.py "${TORCH_ARGS[@]}")
LOG="$TMP/log"

echo "model: $MODEL (copied)   threads: $RAYON_NUM_THREADS   rounds: $ROUNDS   single runs: $RUNS   folder: $IMAGES images, batch $BATCH"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)   cpus: $(nproc)"

# Parity on identical pixels (PNG copies: no JPEG decoder in the way).
mkdir -p "$TMP/png"
"$TORCH_PY" - "$SHARED/flickr8k" "$TMP/png" <<'PY'
import os, sys
from PIL import Image
flickr, out = sys.argv[1:]
names = [l.strip() for l in open(os.path.join(flickr, "Flickr_8k.testImages.txt")) if l.strip()][:20]
for n in names:
    Image.open(os.path.join(flickr, "images", n)).convert("RGB").save(
        os.path.join(out, os.path.splitext(n)[0] + ".png"))
PY
"$RUST" --only folder --folder "$TMP/png" --captions-out "$TMP/png_rust.tsv" | sed 's/^/parity ours  /'
"${TORCH[@]}" --only folder --folder "$TMP/png" --captions-out "$TMP/png_torch.tsv" \
  --compare "$TMP/png_rust.tsv" | sed 's/^/parity torch /' | tee "$TMP/parity"

for r in $(seq "$ROUNDS"); do
  "$RUST" --runs "$RUNS" --batch-size "$BATCH" --images "$IMAGES" \
    --captions-out "$TMP/rust.tsv" | sed 's/^/ours  /' | tee -a "$LOG"
  "${TORCH[@]}" --runs "$RUNS" --batch-size "$BATCH" --images "$IMAGES" \
    --captions-out "$TMP/torch.tsv" --compare "$TMP/rust.tsv" | sed 's/^/torch /' | tee -a "$LOG"
done
echo "load after:  $(cut -d' ' -f1-3 /proc/loadavg)"
echo

python3 - "$LOG" "$TMP/parity" <<'PY'
import re, statistics, sys
runs = {}
for line in open(sys.argv[1]):
    m = re.match(r"(ours|torch)\s+(single ms/image|folder images/s): ([0-9.]+)", line)
    if m:
        runs.setdefault((m[1], m[2]), []).append(float(m[3]))
med = {k: statistics.median(v) for k, v in runs.items()}
print(f"{'measure':<18} {'ours':>9} {'torch':>9}  ratio")
if ("ours", "single ms/image") in med and ("torch", "single ms/image") in med:
    o, t = med["ours", "single ms/image"], med["torch", "single ms/image"]
    print(f"{'single ms/image':<18} {o:>9.2f} {t:>9.2f}  torch/ours {t / o:.2f} (>1: we are faster)  "
          f"(target <= 60 ms: {'met' if o <= 60 else 'NOT met'})")
if ("ours", "folder images/s") in med and ("torch", "folder images/s") in med:
    o, t = med["ours", "folder images/s"], med["torch", "folder images/s"]
    print(f"{'folder images/s':<18} {o:>9.2f} {t:>9.2f}  {o / t:.2f}x PyTorch's throughput  "
          f"(target >= 1.5x: {'met' if o / t >= 1.5 else 'NOT met'})")
print("each value: median over rounds of that round's result (single: itself a median of runs)")
for line in open(sys.argv[2]):
    if "agreement" in line:
        print("same pixels (PNG):", line.split("torch ", 1)[-1].strip())
PY
grep -h "agreement with Rust (all)" "$LOG" | tail -1 | sed 's/^torch /JPEG files, last round: /'
