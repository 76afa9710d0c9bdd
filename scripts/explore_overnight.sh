#!/usr/bin/env bash
# The overnight-style exploration run in one command: a Dask scheduler and N single-threaded
# workers on loopback, `flk sim explore --swarm` on them until the budget is spent (every
# failure shrunk and deduplicated, a sample of seeds rerun in two processes for determinism),
# then the same for liveness mode with a tenth of the budget; the scheduler and workers are
# stopped (by their own process ids) however the run ends.
# Usage: scripts/explore_overnight.sh [BUDGET=1h] [WORKERS=2] [OUT=runs/explore-overnight]
# Ports: FLK_DASK_PORT (default 8786) for the scheduler; every HTTP server on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
BUDGET=${1:-1h}
WORKERS=${2:-2}
OUT=${3:-runs/explore-overnight}
PORT=${FLK_DASK_PORT:-8786}
BIN=${FLK_VENV:-.venv}/bin
mkdir -p "$OUT"
"$BIN/dask" scheduler --host 127.0.0.1 --port "$PORT" --dashboard-address "127.0.0.1:$((PORT + 1))" \
    --no-dashboard >"$OUT/scheduler.log" 2>&1 &
SCHED=$!
"$BIN/dask" worker "tcp://127.0.0.1:$PORT" --host 127.0.0.1 --dashboard-address 127.0.0.1:0 --no-dashboard \
    --nworkers "$WORKERS" --nthreads 1 >"$OUT/workers.log" 2>&1 &
WORK=$!
trap 'kill "$WORK" "$SCHED" 2>/dev/null || true; wait 2>/dev/null || true' EXIT
for _ in $(seq 60); do
    "$BIN/python" - "$PORT" "$WORKERS" <<'EOF' && break
import sys
from distributed import Client
with Client(f"tcp://127.0.0.1:{sys.argv[1]}", timeout=5) as c:
    sys.exit(0 if len(c.nthreads()) >= int(sys.argv[2]) else 1)
EOF
    sleep 2
done
status=0
"$BIN/flk" sim explore --swarm --mode safety --budget "$BUDGET" --scheduler "tcp://127.0.0.1:$PORT" \
    --out "$OUT/safety" --determinism 20 --quiet | tee "$OUT/safety.txt" || status=$?
LIVE=$("$BIN/python" -c "from flk.sim.explore import parse_budget as p; import sys; print(int(p(sys.argv[1]) / 10))" "$BUDGET")
"$BIN/flk" sim explore --swarm --mode liveness --budget "${LIVE}s" --scheduler "tcp://127.0.0.1:$PORT" \
    --out "$OUT/liveness" --first-seed 1000001 --determinism 5 --quiet | tee "$OUT/liveness.txt" || status=$?
echo "wrote $OUT (safety/, liveness/: summary.json, runs.jsonl, coverage.csv, coverage.png; *.txt)"
exit "$status"
