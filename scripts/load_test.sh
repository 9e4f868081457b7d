#!/usr/bin/env bash
# Issue-7 load test: `captioner serve` with the default model on 127.0.0.1, and wrk with 50
# concurrent connections POSTing Flickr8k test images (raw JPEG bodies) for 60 s.
#
#   scripts/load_test.sh [seconds] [connections] [query]     (defaults: 60 50 "")
#
# e.g. `scripts/load_test.sh 60 50 'beam=1'` for greedy decoding. Env: SERVE_ARGS (extra flags for
# `captioner serve`, e.g. "--max-batch 32"), CAPTIONER_SHARED_DATA (default ../shared/data),
# IMAGES (test images to cycle through, default 100). Needs wrk (Debian package `wrk`).
#
# Prints wrk's summary, one RESULT line (captions/s, answers by status, p50/p90/p99 latency) and
# the server's batch-size histogram from /metrics. Exits 1 when any answer is neither 200 nor an
# intended 503, or a socket error or timeout happened.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_="${1:-60}"
CONNECTIONS="${2:-50}"
QUERY="${3:-}"
SHARED="${CAPTIONER_SHARED_DATA:-../shared/data}"
IMAGES="${IMAGES:-100}"
command -v wrk >/dev/null || { echo "wrk not found: apt-get install wrk" >&2; exit 2; }

cargo build --release --locked -p captioner-cli >&2
TMP="$(mktemp -d)"
PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
# shellcheck disable=SC2086
CAPTIONER_SHARED_DATA="$SHARED" target/release/captioner serve --port "$PORT" ${SERVE_ARGS:-} \
  2> "$TMP/server.log" &
SERVER=$!
trap 'kill "$SERVER" 2>/dev/null || true; rm -rf "$TMP"' EXIT
for _ in $(seq 600); do
  curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break
  kill -0 "$SERVER" 2>/dev/null || { cat "$TMP/server.log" >&2; exit 1; }
  sleep 0.1
done

head -n "$IMAGES" "$SHARED/flickr8k/Flickr_8k.testImages.txt" \
  | sed "s|^|$SHARED/flickr8k/images/|" > "$TMP/images.txt"
URL="http://127.0.0.1:$PORT/v1/captions${QUERY:+?$QUERY}"
echo "== wrk: $CONNECTIONS connections, ${SECONDS_} s, $URL ($IMAGES images)"
IMAGES_LIST="$TMP/images.txt" wrk -t2 -c"$CONNECTIONS" -d"${SECONDS_}s" --timeout 30s \
  -s scripts/load_test.lua "$URL" | tee "$TMP/wrk.txt"
echo "== server batch sizes (/metrics)"
curl -s "http://127.0.0.1:$PORT/metrics" | grep -E '^captioner_(batch_size_(sum|count)|http_requests_total)'
kill -TERM "$SERVER"
wait "$SERVER"
grep -q 'other_status=0 socket_errors=0 timeouts=0' "$TMP/wrk.txt"
