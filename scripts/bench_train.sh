#!/usr/bin/env bash
# Issue-5 training-step benchmark: our fused kernels vs PyTorch on the same machine, back to back.
#
#   scripts/bench_train.sh [iters] [rounds] [models...]   (models: lstm gru sat; default all three)
#
# Builds crates/decode/benches/train_step.rs, then alternates Rust and PyTorch runs `rounds` times
# (default 2) so both see the same background load, and prints each model's median over rounds and
# the ratio ours/PyTorch (< 1 means we are faster), with two other views of the same rounds (the
# median of per-round ratios, and fastest against fastest). PyTorch comes from $TORCH_PY
# (default /work/venvs/torch/bin/python), a venv outside the repo; both use 2 threads.
#
# PyTorch's matrix products go through Intel MKL, which takes a slower AVX2 path on CPUs it does not
# recognise as Intel's: on an AMD Zen 5 it multiplies at about half the speed it reaches on its
# AVX-512 path. TORCH_MKL_INTEL_PATH=1 preloads a one-function shim (`mkl_serv_intel_cpu_true`
# returning 1, built here with cc) so MKL takes its Intel path, for a comparison that does not
# depend on MKL's vendor check.
set -euo pipefail
cd "$(dirname "$0")/.."
ITERS="${1:-10}"
ROUNDS="${2:-2}"
shift $(( $# < 2 ? $# : 2 ))
MODELS=("${@:-lstm gru sat}")
# shellcheck disable=SC2206
MODELS=(${MODELS[*]})
TORCH_PY="${TORCH_PY:-/work/venvs/torch/bin/python}"
export RAYON_NUM_THREADS="${RAYON_NUM_THREADS:-2}"
LOG="$(mktemp)"
SHIM_DIR="$(mktemp -d)"
trap 'rm -f "$LOG"; rm -rf "$SHIM_DIR"' EXIT
TORCH_ENV=()
if [[ "${TORCH_MKL_INTEL_PATH:-0}" == 1 ]]; then
  echo 'int mkl_serv_intel_cpu_true(void) { return 1; }' > "$SHIM_DIR/shim.c"
  cc -shared -fPIC -o "$SHIM_DIR/libmkl_intel_path.so" "$SHIM_DIR/shim.c"
  TORCH_ENV=("LD_PRELOAD=$SHIM_DIR/libmkl_intel_path.so")
  echo "PyTorch's MKL forced onto its Intel code path (TORCH_MKL_INTEL_PATH=1)"
fi

cargo bench -q -p captioner-decode --bench train_step --no-run 2>/dev/null
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)   cpus: $(nproc)"
for r in $(seq "$ROUNDS"); do
  cargo bench -q -p captioner-decode --bench train_step -- "$ITERS" "${MODELS[@]}" | sed 's/^/ours  /' | tee -a "$LOG"
  env "${TORCH_ENV[@]}" "$TORCH_PY" crates/decode/benches/train_step_torch.py "$ITERS" "${MODELS[@]}" | sed 's/^/torch /' | tee -a "$LOG"
done
echo "load after:  $(cut -d' ' -f1-3 /proc/loadavg)"
echo
python3 - "$LOG" <<'PY'
import re, statistics, sys
runs = {}
for line in open(sys.argv[1]):
    m = re.match(r"(ours|torch)\s+(\w+) ms/step: ([0-9.]+)", line)
    if m:
        runs.setdefault((m[1], m[2]), []).append(float(m[3]))
# ratio: median over rounds of ours / median of PyTorch (the figure the issue asks for); paired:
# the median of each round's own ratio (both sides of a round share its background load); best:
# fastest round / fastest round (what each side does on a quiet machine).
print(f"{'model':<6} {'ours ms/step':>13} {'torch ms/step':>14} {'ratio':>7} {'paired':>7} {'best':>7}")
for model in ("lstm", "gru", "sat"):
    if ("ours", model) in runs and ("torch", model) in runs:
        ours, torch = runs["ours", model], runs["torch", model]
        o, t = statistics.median(ours), statistics.median(torch)
        paired = statistics.median(a / b for a, b in zip(ours, torch))
        best = min(ours) / min(torch)
        print(f"{model:<6} {o:>13.1f} {t:>14.1f} {o / t:>7.2f}x {paired:>6.2f}x {best:>6.2f}x")
PY
