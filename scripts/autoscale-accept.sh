#!/usr/bin/env bash
# Issue 5 acceptance for the autoscaler (docs/live-control.md): a server
# whose model starts at one instance and may scale between 1 and 4, under a
# load that steps from 1x to 4x and back (PHASE1, PHASE2, PHASE3 seconds).
# Prints the scaling events on the run's time axis, the instance count
# sampled every second, and the generator's failures (an accepted request
# dropped on scale-down would show as an error).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench-out/autoscale}
DATA=${DATA:-$(mktemp -d)}
RATE=${RATE:-400}          # 1x, requests per second
PHASE1=${PHASE1:-60}
PHASE2=${PHASE2:-150}
PHASE3=${PHASE3:-210}
UP=${UP:-30s}
DOWN=${DOWN:-90s}
POLICY=${POLICY:-single}
PORT=${PORT:-18091}
mkdir -p "$OUT"
make -s build fetch
B=bin/infergate
URL=http://127.0.0.1:$PORT
$B model gen --out "$DATA/models/mlp/model.onnx" >/dev/null
cat >"$OUT/autoscale.yaml" <<YAML
addr: 127.0.0.1:$PORT
data_dir: $DATA
models:
  - name: mlp
    path: $DATA/models/mlp/model.onnx
    instances: 1
    threads: 1
    bulk_instances: -1
    classes:
      normal: {policy: $POLICY}
    autoscale:
      min_instances: 1
      max_instances: 4
      target_utilization: 0.6
      scale_up_cooldown: $UP
      scale_down_cooldown: $DOWN
      slo: 50ms
YAML
$B serve --config "$OUT/autoscale.yaml" >"$OUT/serve.log" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null; true' EXIT
for _ in $(seq 100); do curl -sf "$URL/v2/health/ready" >/dev/null && break; sleep 0.2; done
TOTAL=$((PHASE1 + PHASE2 + PHASE3))
# Equal thirds are the pattern's phases: express the step as fractions of
# one-second slots.
F=$(python3 -c "
p1,p2,p3=$PHASE1,$PHASE2,$PHASE3
print('steps:' + ','.join(['1']*p1 + ['4']*p2 + ['1']*p3))")
if (( TOTAL > 100 )); then
  # The pattern takes up to 100 phases: use 10-second slots.
  F=$(python3 -c "
p1,p2,p3=$PHASE1//10,$PHASE2//10,$PHASE3//10
print('steps:' + ','.join(['1']*p1 + ['4']*p2 + ['1']*p3))")
fi
START=$(date +%s.%N)
( for _ in $(seq "$TOTAL"); do
    printf '%s %s\n' "$(date +%s.%N)" "$(curl -s "$URL/metrics" | awk '/^infergate_instances\{/ {print $2}')"
    sleep 1
  done ) >"$OUT/instances.txt" &
SAMPLER=$!
$B bench --url "$URL" --rate "$RATE" --pattern "$F" --duration "${TOTAL}s" --warmup 0s --slo-ms 50 --json >"$OUT/steps.json"
kill $SAMPLER 2>/dev/null || true
curl -s "$URL/v1/events?model=mlp" >"$OUT/events.json"
python3 - "$OUT" "$START" "$PHASE1" "$PHASE2" <<'PY'
import json, sys, datetime
out, start, p1, p2 = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
evs = json.load(open(out + "/events.json"))["data"]
def phase(t): return "1x" if t < p1 else ("4x" if t < p1 + p2 else "1x again")
for e in evs:
    t = datetime.datetime.fromisoformat(e["time"].replace("Z", "+00:00")).timestamp() - start
    f = e.get("figures", {})
    keys = [k for k in ("utilization", "p99_ms", "queue_delay_ms", "utilization_recommendation", "stabilized_recommendation") if k in f]
    print(f"{t:7.1f}s  {phase(t):8s} {e['kind']:10s} {e.get('trigger',''):12s} {e.get('from','')}->{e.get('to','')} {e.get('outcome','')}  " +
          " ".join(f"{k}={f[k]:.3g}" for k in keys))
counts = []
for line in open(out + "/instances.txt"):
    ts, n = line.split()[:2] if len(line.split()) >= 2 else (line.split()[0], "nan")
    counts.append((float(ts) - start, float(n)))
mx = max(n for _, n in counts)
changes = sum(1 for a, b in zip(counts, counts[1:]) if a[1] != b[1])
dirs = [1 if b[1] > a[1] else -1 for a, b in zip(counts, counts[1:]) if a[1] != b[1]]
flips = sum(1 for a, b in zip(dirs, dirs[1:]) if a != b)
print(f"instances: max {mx:.0f}, {changes} changes, {flips} direction changes")
r = json.load(open(out + "/steps.json"))
print("generator:", {k: r.get(k) for k in ("sent", "ok", "errors", "rejected_429", "dropped", "throughput_rps", "p99_ms", "slo_attainment") if k in r})
PY
