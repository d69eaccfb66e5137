#!/usr/bin/env bash
# Stop the Infinity server started by scripts/start_infinity.sh (by its PID file).
set -uo pipefail
PID_FILE="${INFINITY_PID_FILE:-/tmp/rerank-router-infinity.pid}"
if [[ ! -f "$PID_FILE" ]]; then
  echo "[stop_infinity] no pid file $PID_FILE; nothing to stop" >&2
  exit 0
fi
pid=$(cat "$PID_FILE")
if kill -0 "$pid" 2>/dev/null; then
  echo "[stop_infinity] stopping pid $pid" >&2
  kill -TERM "$pid" 2>/dev/null
  for _ in $(seq 1 30); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.5
  done
  if kill -0 "$pid" 2>/dev/null; then
    echo "[stop_infinity] pid $pid still alive after 15 s; sending KILL" >&2
    kill -KILL "$pid" 2>/dev/null
  fi
else
  echo "[stop_infinity] pid $pid not running" >&2
fi
rm -f "$PID_FILE"
