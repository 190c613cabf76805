#!/usr/bin/env bash
# Issue 5 acceptance for adaptive batching (docs/benchmarks.md section 8):
# on the bursty pattern (calm, 3x burst for the middle third, calm), the
# goodput at p99 <= 50 ms of fixed hybrid settings (max queue delay D) and
# of the adaptive policy bounded by the same D, in-process, one invocation
# per D (both policies measured in the same run).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench-out/bursty}
DATA=${DATA:-$(mktemp -d)}
DELAYS=${DELAYS:-1ms 2ms 5ms 10ms 20ms}
mkdir -p "$OUT"
make -s build fetch
for d in $DELAYS; do
  bin/infergate bench --data-dir "$DATA" --policy hybrid,adaptive --pattern bursty --goodput --slo-ms 50 \
    --lo "${LO:-1000}" --hi "${HI:-3200}" --steps "${STEPS:-9}" --duration "${DUR:-4s}" --warmup 1s --max-queue-delay "$d" --json \
    >"$OUT/bursty-$d.json" 2>"$OUT/bursty-$d.log"
done
python3 - "$OUT" $DELAYS <<'PY'
import json, sys
out, delays = sys.argv[1], sys.argv[2:]
best = (0, None)
print("| max queue delay | hybrid goodput / p99 / within SLO | adaptive goodput / p99 / within SLO |")
print("|---|---|---|")
rows = []
for d in delays:
    r = json.load(open(f"{out}/bursty-{d}.json"))["runs"]
    by = {x["policy"]: x for x in r}
    h, a = by["hybrid"], by["adaptive"]
    cell = lambda x: f'{x.get("goodput_rps", 0):,.0f} / {x.get("p99_ms", 0):.1f} ms / {100*x.get("slo_attainment", 0):.2f}%'
    print(f"| {d} | {cell(h)} | {cell(a)} |")
    if h.get("goodput_rps", 0) > best[0]:
        best = (h["goodput_rps"], d)
    rows.append((d, a))
print(f"best fixed hybrid in hindsight: {best[0]:,.0f} req/s at {best[1]}")
for d, a in rows:
    print(f"adaptive bounded by {d}: {a.get('goodput_rps', 0) / best[0]:.3f} of it, {100*a.get('slo_attainment', 0):.2f}% within 50 ms")
PY
