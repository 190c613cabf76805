#!/usr/bin/env bash
# Issue 5 acceptance for dynamic mode switching (docs/live-control.md):
#  1. measures the server's capacity (hybrid goodput at p99 <= 50 ms) on a
#     server without switching;
#  2. starts a server whose normal class switches modes (thresholds at
#     LOW and HIGH times that capacity) and drives a load that steps
#     5% -> 80% -> 5% -> 5% of capacity, PHASE seconds each;
#  3. at the start of the fourth phase forces a bad switch (hybrid with a
#     200 ms queue delay against the 50 ms SLO), which must roll back;
#  4. prints the events (GET /v1/events) on the run's time axis.
# The server runs as its own process; the generator competes for the same
# cores (2 on the reference machine).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench-out/switch}
DATA=${DATA:-$(mktemp -d)}
PHASE=${PHASE:-45}
LOW=${LOW:-0.15}
HIGH=${HIGH:-0.4}
PORT=${PORT:-18090}
mkdir -p "$OUT"
make -s build fetch
B=bin/infergate
URL=http://127.0.0.1:$PORT

cleanup() { [[ -n "${PID:-}" ]] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null; true; }
trap cleanup EXIT

serve() { # config file
  $B serve --config "$1" >"$OUT/serve.log" 2>&1 &
  PID=$!
  for _ in $(seq 100); do curl -sf "$URL/v2/health/ready" >/dev/null && return; sleep 0.2; done
  echo "server did not start" >&2; cat "$OUT/serve.log" >&2; exit 1
}

base() {
  cat <<YAML
addr: 127.0.0.1:$PORT
data_dir: $DATA
models:
  - name: mlp
    path: $DATA/models/mlp/model.onnx
    instances: 2
    threads: 1
YAML
}

$B model gen --out "$DATA/models/mlp/model.onnx" >/dev/null
base >"$OUT/plain.yaml"
serve "$OUT/plain.yaml"
echo "== capacity: hybrid goodput at p99 <= 50 ms"
$B bench --url "$URL" --goodput --slo-ms 50 --lo 500 --hi 12000 --steps 8 --duration 3s --warmup 1s --json >"$OUT/capacity.json"
CAP=$(python3 -c 'import json,sys; print(round(json.load(open(sys.argv[1]))["goodput_rps"]))' "$OUT/capacity.json")
cleanup; PID=
echo "capacity $CAP req/s"

LOWRPS=$(python3 -c "print(round($CAP*$LOW))")
HIGHRPS=$(python3 -c "print(round($CAP*$HIGH))")
{ base; cat <<YAML
    switching:
      normal:
        slo: 50ms
        low_rps: $LOWRPS
        high_rps: $HIGHRPS
        switch_delay: 5s
        bake_time: 3s
YAML
} >"$OUT/switch.yaml"
serve "$OUT/switch.yaml"
RATE=$CAP
DUR=$((4 * PHASE))
echo "== load steps 5% -> 80% -> 5% -> 5% of $CAP req/s, ${PHASE}s each (thresholds $LOWRPS / $HIGHRPS req/s)"
START=$(date +%s.%N)
$B bench --url "$URL" --rate "$RATE" --pattern steps:0.05,0.8,0.05,0.05 --duration "${DUR}s" --warmup 0s --slo-ms 50 --json >"$OUT/steps.json" &
GEN=$!
sleep $((3 * PHASE))
echo "== forcing a bad switch: hybrid with max_queue_delay 200ms"
curl -s -X POST "$URL/v1/models/mlp/modes/normal" -d '{"action":"switch","mode":"hybrid","policy":{"max_queue_delay":"200ms"}}' >"$OUT/force.json"
wait $GEN
curl -s "$URL/v1/events?model=mlp" >"$OUT/events.json"
if [[ -n "${SHOT:-}" ]]; then # a screenshot of the dashboard over the whole run
  chromium --headless=new --no-sandbox --disable-gpu --disable-dev-shm-usage --user-data-dir="$(mktemp -d)" \
    --virtual-time-budget=8000 --window-size=1400,1500 --screenshot="$SHOT" "$URL/" 2>/dev/null || true
fi
python3 - "$OUT/events.json" "$START" "$PHASE" <<'PY'
import json, sys, datetime
evs = json.load(open(sys.argv[1]))["data"]
start, phase = float(sys.argv[2]), float(sys.argv[3])
names = ["5%", "80%", "5%", "5% (forced)"]
starts = {}
for e in evs:
    t = datetime.datetime.fromisoformat(e["time"].replace("Z", "+00:00")).timestamp() - start
    p = min(int(t // phase), 3)
    f = e.get("figures", {})
    keys = [k for k in ("rate_rps", "share", "old_p99_ms", "new_p99_ms", "p99_ms", "expected_saving", "old_cost_per_1k", "new_cost_per_1k") if k in f]
    print(f"{t:7.1f}s  phase {names[p]:12s} {e['kind']:12s} {e.get('trigger',''):9s} {e.get('from','')}->{e.get('to','')}  " +
          " ".join(f"{k}={f[k]:.4g}" for k in keys))
    if e["kind"] == "switch_start":
        starts[p] = starts.get(p, 0) + 1
print("switch starts per phase:", {names[k]: v for k, v in sorted(starts.items())})
print("rollbacks:", sum(1 for e in evs if e["kind"] == "rollback"))
PY
