#!/usr/bin/env bash
# Start a real, self-hosted Infinity rerank server (CPU, offline, loopback) for CI.
#
#   eval "$(scripts/start_infinity.sh)"
#
# Idempotent: reuses the virtual environment, the model folder and an already-running
# server.  Only the two `export` lines go to stdout; everything else goes to stderr.
#
# Environment (all optional):
#   INFINITY_VENV        virtual environment           (/tmp/rerank-router-infinity)
#   INFINITY_MODEL_DIR   tiny cross-encoder folder     (/tmp/rerank-router-infinity-model)
#   INFINITY_PORT        port on 127.0.0.1             (7997)
#   INFINITY_LOG         server log file               (/tmp/rerank-router-infinity.log)
#   INFINITY_PID_FILE    server PID file               (/tmp/rerank-router-infinity.pid)
#   INFINITY_READY_TIMEOUT  seconds to wait for ready   (180)
#   INFINITY_PYTHON      python used to create the venv (python3)
set -euo pipefail

exec 3>&1 1>&2   # fd 3 = real stdout (exports only); everything else -> stderr

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${INFINITY_VENV:-/tmp/rerank-router-infinity}"
MODEL_DIR="${INFINITY_MODEL_DIR:-/tmp/rerank-router-infinity-model}"
PORT="${INFINITY_PORT:-7997}"
HOST=127.0.0.1
LOG="${INFINITY_LOG:-/tmp/rerank-router-infinity.log}"
PID_FILE="${INFINITY_PID_FILE:-/tmp/rerank-router-infinity.pid}"
READY_TIMEOUT="${INFINITY_READY_TIMEOUT:-180}"
PYTHON="${INFINITY_PYTHON:-python3}"
INFINITY_VERSION=0.0.78
TORCH_VERSION=2.13.0   # pinned: an unpinned torch pulls a multi-GB CUDA build
URL="http://$HOST:$PORT"

log() { echo "[start_infinity] $*"; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN{printf "%.1f", b-a}'; }

# --- 1. virtual environment -------------------------------------------------
if [[ ! -x "$VENV/bin/infinity_emb" ]]; then
  log "creating venv $VENV (torch==$TORCH_VERSION, infinity-emb==$INFINITY_VERSION)"
  t0=$(now)
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV"
  # (the local find-links/extra-index config prints one harmless "Location ... is ignored" warning per package)
  "$VENV/bin/pip" install --quiet "torch==$TORCH_VERSION" "infinity-emb[server,torch]==$INFINITY_VERSION" \
    2> >(grep -v "^WARNING: Location 'file://.*' is ignored" >&2)
  log "venv ready in $(elapsed "$t0") s"
else
  log "reusing venv $VENV"
fi

# --- 2. tiny cross-encoder ---------------------------------------------------
if [[ ! -f "$MODEL_DIR/config.json" || ! -f "$MODEL_DIR/tokenizer.json" ]]; then
  log "building tiny cross-encoder into $MODEL_DIR"
  "$VENV/bin/python" "$HERE/infinity/build_tiny_model.py" "$MODEL_DIR"
else
  log "reusing model $MODEL_DIR"
fi
# Infinity names the model by the --model-id string unless --served-model-name is given.
MODEL_ID="$MODEL_DIR"

probe() {  # 0 when POST /rerank answers 200
  local code
  code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 -X POST "$URL/rerank" \
    -H 'Content-Type: application/json' \
    -d "{\"model\":\"$MODEL_ID\",\"query\":\"ready?\",\"documents\":[\"yes\"]}" 2>/dev/null) || true
  [[ "$code" == "200" ]]
}

emit() {
  local served
  served=$(curl -s --max-time 10 "$URL/models" | "$VENV/bin/python" -c \
    'import json,sys; print(json.load(sys.stdin)["data"][0]["id"])' 2>/dev/null) || served="$MODEL_ID"
  echo "export RERANK_ROUTER_INFINITY_URL=$URL" >&3
  echo "export RERANK_ROUTER_INFINITY_MODEL=$served" >&3
}

# --- 3. already running? -----------------------------------------------------
if [[ -f "$PID_FILE" ]] && kill -0 "$(cat "$PID_FILE")" 2>/dev/null; then
  if probe; then
    log "server already running (pid $(cat "$PID_FILE")) at $URL"
    emit
    exit 0
  fi
  log "pid $(cat "$PID_FILE") alive but $URL not answering yet; waiting for it"
  started_pid=$(cat "$PID_FILE")
else
  if probe; then
    log "ERROR: something else already answers /rerank on $URL (no live pid in $PID_FILE)"
    exit 1
  fi
  # --- 4. start ---------------------------------------------------------------
  log "starting infinity_emb on $URL (log: $LOG)"
  : >"$LOG"
  # Popen closes every inherited descriptor above stderr (close_fds): a server holding this
  # script's stdout pipe open would make a caller's $(start_infinity.sh) wait for ever.
  started_pid=$(HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 DO_NOT_TRACK=1 INFINITY_ANONYMOUS_USAGE_STATS=0 \
    "$VENV/bin/python" - "$LOG" "$VENV/bin/infinity_emb" v2 \
      --model-id "$MODEL_DIR" \
      --host "$HOST" --port "$PORT" \
      --engine torch --device cpu --no-bettertransformer <<'PY'
import subprocess, sys
log = open(sys.argv[1], "ab")
server = subprocess.Popen(sys.argv[2:], stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                          start_new_session=True, close_fds=True)
print(server.pid)
PY
  )
  echo "$started_pid" >"$PID_FILE"
fi

# --- 5. wait for ready ---------------------------------------------------------
t0=$(now)
deadline=$(( $(date +%s) + READY_TIMEOUT ))
while :; do
  if probe; then
    log "ready in $(elapsed "$t0") s (pid $started_pid)"
    emit
    exit 0
  fi
  if ! kill -0 "$started_pid" 2>/dev/null; then
    log "ERROR: server process $started_pid exited; log tail:"
    tail -n 60 "$LOG" || true
    rm -f "$PID_FILE"
    exit 1
  fi
  if (( $(date +%s) >= deadline )); then
    log "ERROR: not ready after ${READY_TIMEOUT}s; log tail:"
    tail -n 60 "$LOG" || true
    exit 1
  fi
  sleep 1
done
