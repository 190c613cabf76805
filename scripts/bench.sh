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

echo "== class mix at 1x and 3x of hybrid capacity"
# The server runs as its own process at nice 5 and the generator at normal
# priority, standing in for clients on other machines: on a shared 2-core
# box a starved generator would add its own lag to every latency.
cat > "$OUT/mix-config.yaml" <<YAML
data_dir: $DATA
models:
  - name: mlp
    path: $DATA/models/mlp/model.onnx
    instances: 2
    threads: 1
    classes:
      normal: {max_queue_size: 256, default_timeout: 100ms}
YAML
for r in ${MIX_RATES:-5000 15000}; do
  nice -n 5 $B serve --addr 127.0.0.1:${PORT:-18777} --config "$OUT/mix-config.yaml" --log-level warn &
  pid=$!
  for _ in $(seq 100); do curl -sf localhost:${PORT:-18777}/v2/health/ready >/dev/null && break; sleep 0.1; done
  $B bench --url http://127.0.0.1:${PORT:-18777} --data-dir "$DATA" --rate $r --mix urgent=0.1,normal=0.6,bulk=0.3 \
    --duration "$D" --warmup 1s --json | tee "$OUT/mix-$r.json"
  curl -s localhost:${PORT:-18777}/metrics | grep -E '^process_resident_memory_bytes|^infergate_requests_total' > "$OUT/mix-$r.metrics"
  kill $pid; wait $pid || true
done

echo "== batch job: alone against raw and one by one; then beside real-time traffic at about half capacity"
$B bench --data-dir "$DATA" --job 20000 --duration 3s --json | tee "$OUT/job-alone.json"
$B serve --addr 127.0.0.1:${PORT:-18777} --data-dir "$OUT/job-data" --log-level warn &
pid=$!
for _ in $(seq 100); do curl -sf localhost:${PORT:-18777}/v2/health/ready >/dev/null && break; sleep 0.1; done
$B bench --url http://127.0.0.1:${PORT:-18777} --data-dir "$DATA" --job 20000 --rate 3000 --duration 3s --warmup 1s --json \
  | tee "$OUT/job-overlap.json"
kill $pid; wait $pid || true
$B bench --data-dir "$DATA" --interference 8 --duration 3s | tee "$OUT/interference-8.txt"
$B bench --data-dir "$DATA" --interference 16 --duration 3s | tee "$OUT/interference-16.txt"

echo "== profiler against the raw curve; planner accuracy"
$B profile --data-dir "$DATA" --json | tee "$OUT/profile.json"
$B bench --data-dir "$DATA" --raw --batch 1,2,4,8,16,32,64 --duration 3s --json | tee "$OUT/raw-after-profile.json"
$B serve --addr 127.0.0.1:${PORT:-18777} --data-dir "$OUT/plan-data" --log-level warn &
pid=$!
for _ in $(seq 100); do curl -sf localhost:${PORT:-18777}/v2/health/ready >/dev/null && break; sleep 0.1; done
$B plan --data-dir "$DATA" --validate --url http://127.0.0.1:${PORT:-18777} | tee "$OUT/plan-validate.txt"
kill $pid; wait $pid || true
$B plan --data-dir "$DATA" --profile "$OUT/profile.json" --rate 5 --slo-ms 10 --cost-sensitivity low | tee "$OUT/plan-low.txt"
$B plan --data-dir "$DATA" --profile "$OUT/profile.json" --rate 2000 --slo-ms 21600000 --cost-sensitivity high | tee "$OUT/plan-high.txt"
