#!/usr/bin/env bash
# Encoder benchmark: our fast kernels (and candle) vs PyTorch, back to back, same thread count.
#   scripts/bench_encoders.sh [--runs N] [--threads T] [--no-candle]
# Prints both raw results and a table of ms, ratio to PyTorch (same run) and GFLOP/s.
# Needs the torch venv at $TORCH_PY (default /work/venvs/torch/bin/python).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=10
THREADS=2
CASES="fast_lite0_b1,fast_lite0_b32,fast_resnet50_b8,candle_lite0_b1,candle_lite0_b32"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --runs) RUNS="$2"; shift 2 ;;
    --threads) THREADS="$2"; shift 2 ;;
    --no-candle) CASES="fast_lite0_b1,fast_lite0_b32,fast_resnet50_b8"; shift ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
TORCH_PY="${TORCH_PY:-/work/venvs/torch/bin/python}"
export RAYON_NUM_THREADS="$THREADS" OMP_NUM_THREADS="$THREADS"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

cargo bench -p captioner-encode --bench encoders --no-run >/dev/null 2>&1 || \
  cargo bench -p captioner-encode --bench encoders --no-run
echo "load before: $(uptime)"
cargo bench -q -p captioner-encode --bench encoders -- --runs "$RUNS" --only "$CASES" --json \
  | tee "$tmp/rust.txt"
"$TORCH_PY" scripts/bench_encoders_torch.py --threads "$THREADS" --runs "$RUNS" | tee "$tmp/torch.json"
echo "load after: $(uptime)"

"$TORCH_PY" - "$tmp/rust.txt" "$tmp/torch.json" <<'PY'
import json, sys
rust = json.loads([l for l in open(sys.argv[1]) if l.startswith("{")][-1])
torch = json.load(open(sys.argv[2]))
ref = {}
for r in torch["results"]:
    ref.setdefault(r["case"], {})[r["layout"]] = r["median_ms"]
print(f"\n{'case':<20}{'ms':>10}{'torch NCHW':>12}{'torch CL':>10}{'ratio':>8}{'ratio CL':>9}{'GFLOP/s':>9}")
for r in rust["results"]:
    key = r["case"].split("_", 1)[1]
    t = ref.get(key, {})
    nchw, cl = t.get("nchw"), t.get("channels_last")
    ms = r["median_ms"]
    fmt = lambda v: f"{v:.1f}" if v else "-"
    ratio = lambda v: f"{ms / v:.2f}" if v else "-"
    print(f"{r['case']:<20}{ms:>10.1f}{fmt(nchw):>12}{fmt(cl):>10}{ratio(nchw):>8}{ratio(cl):>9}"
          f"{r['gflop'] / (ms / 1e3):>9.1f}")
for k, t in ref.items():
    g = next((r["gflop"] for r in rust["results"] if r["case"].endswith(k)), None)
    if g:
        best = min(t.values())
        print(f"torch {k:<14}{best:>10.1f} ms best layout, {g / (best / 1e3):.1f} GFLOP/s")
print("ratio = our median / PyTorch median (default NCHW); ratio CL = vs PyTorch channels_last")
PY
