#!/usr/bin/env bash
# Streams a large batch file end to end and shows that the server's memory
# does not grow with the file: for each size (lines, default 5000 and 50000;
# one 768-float request per line, about 4 KB, so 50,000 lines are just under
# the 200 MiB upload limit), a fresh server on the reference model, then
# `infergate batch submit FILE --model mlp --wait` (upload, validation, run,
# download of the results), and the server's resident memory when ready and
# its peak (VmHWM) after the job. Linux only (/proc). Usage:
#   scripts/bigfile.sh [LINES ...]     (BIN=bin/infergate, PORT=18094)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-bin/infergate}
PORT=${PORT:-18094}
[ -x "$BIN" ] || { echo "build first: make build ($BIN missing)" >&2; exit 1; }
work=$(mktemp -d)
trap 'kill "${srv:-}" 2>/dev/null || true; rm -rf "$work"' EXIT

kib() { awk -v k="$1" '$1 == k":" {print $2}' "/proc/$2/status"; }

for lines in "${@:-5000 50000}"; do
  for n in $lines; do
    input=$work/input-$n.jsonl
    awk -v n="$n" 'BEGIN {
      srand(1)
      for (i = 0; i < n; i++) {
        printf "{\"custom_id\":\"item-%d\",\"method\":\"POST\",\"url\":\"/v2/models/mlp/infer\",\"body\":{\"inputs\":[{\"name\":\"input\",\"datatype\":\"FP32\",\"shape\":[1,768],\"data\":[", i
        for (j = 0; j < 768; j++) printf "%s%.2f", (j ? "," : ""), rand()
        printf "]}]}}\n"
      }
    }' > "$input"
    data=$work/data-$n
    "$BIN" serve --addr "127.0.0.1:$PORT" --data-dir "$data" > "$work/serve-$n.log" 2>&1 &
    srv=$!
    for _ in $(seq 300); do
      curl -fs -o /dev/null "http://127.0.0.1:$PORT/v2/health/ready" && break
      sleep 0.1
    done
    ready=$(kib VmRSS "$srv")
    start=$(date +%s.%N)
    "$BIN" batch submit "$input" --model mlp --url "http://127.0.0.1:$PORT" --wait --out "$work/out-$n" > "$work/submit-$n.log" 2>&1 ||
      { cat "$work/submit-$n.log" >&2; exit 1; }
    end=$(date +%s.%N)
    peak=$(kib VmHWM "$srv")
    out=$(cat "$work"/out-"$n"/*_output.jsonl | wc -l)
    printf 'lines %d  file %d MiB  submit --wait %.1f s  output lines %d  server RSS ready %d MiB  peak %d MiB  (+%d MiB)\n' \
      "$n" $(($(stat -c %s "$input") >> 20)) "$(echo "$end - $start" | bc)" "$out" $((ready >> 10)) $((peak >> 10)) $(((peak - ready) >> 10))
    kill "$srv"; wait "$srv" 2>/dev/null || true
    rm -rf "$input" "$data" "$work/out-$n"
  done
done
