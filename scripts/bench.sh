#!/usr/bin/env bash
# Reproduces the figures of docs/benchmarks.md on this machine. Each step is
# one `infergate bench` invocation; the JSON of each goes to $OUT (default
# bench-out/). The server runs in-process, sharing the cores with the load
# generator: each run reports the process's CPU use.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench-out}
DATA=${DATA:-$(mktemp -d)}
mkdir -p "$OUT"
make -s build fetch
B=bin/infergate
D=${DUR:-4s}

echo "== raw runtime curve (batch 1..64)"
$B bench --data-dir "$DATA" --raw --batch 1,2,4,8,16,32,64 --duration 3s --json | tee "$OUT/raw.json"
$B bench --data-dir "$DATA" --raw --instances 1 --threads 2 --batch 1,2,4,8,16,32,64 --duration 3s --json | tee "$OUT/raw-1x2.json"

echo "== goodput at p99 <= 100 ms: single, time, size, hybrid (one invocation)"
$B bench --data-dir "$DATA" --policy single,time,size,hybrid --goodput --slo-ms 100 --lo 100 \
  --duration "$D" --warmup 1s --json | tee "$OUT/goodput.json"

echo "== saturation vs raw at batch 32: closed loop (64 and 128 clients), binary and JSON payloads"
for p in binary json; do
  for c in 64 128; do
    $B bench --data-dir "$DATA" --policy hybrid --policy-max-batch 32 --concurrency $c --payload $p --with-raw \
      --duration "$D" --warmup 1s --json | tee "$OUT/saturation-$p-c$c.json"
  done
done

echo "== class mix at 1x and 3x of hybrid capacity (separate processes, so max RSS is per run)"
for r in ${MIX_RATES:-5000 15000}; do
  $B bench --data-dir "$DATA" --policy hybrid --rate $r --mix urgent=0.1,normal=0.6,bulk=0.3 \
    --queue 256 --duration "$D" --warmup 1s --json | tee "$OUT/mix-$r.json"
done
