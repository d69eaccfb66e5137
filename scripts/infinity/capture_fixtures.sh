#!/usr/bin/env bash
# Capture real Infinity /rerank responses (successes and errors) as JSON fixtures.
#
#   eval "$(scripts/start_infinity.sh)"
#   scripts/infinity/capture_fixtures.sh [OUT_DIR]     # default tests/data/infinity
#
# Each fixture is {"case", "captured", "request": {"method","path","body"|"body_summary"},
# "status", "content_type", "response"} where "response" is the parsed JSON body exactly as
# the server sent it (ids and "created" vary per call; scores depend on the random tiny model).
set -euo pipefail
: "${RERANK_ROUTER_INFINITY_URL:?run: eval \"\$(scripts/start_infinity.sh)\"}"
: "${RERANK_ROUTER_INFINITY_MODEL:?}"
URL="$RERANK_ROUTER_INFINITY_URL"
MODEL="$RERANK_ROUTER_INFINITY_MODEL"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
OUT="${1:-$ROOT/tests/data/infinity}"
VENV="${INFINITY_VENV:-/tmp/rerank-router-infinity}"
VERSION=$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("infinity_emb"))' 2>/dev/null || echo unknown)
DATE=$(date -u +%Y-%m-%dT%H:%M:%SZ)
mkdir -p "$OUT"
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT

# capture NAME METHOD PATH BODY_FILE|"" [SUMMARY]   (SUMMARY replaces the body in the fixture)
capture() {
  local name=$1 method=$2 path=$3 body=$4 summary=${5:-}
  local args=(-s -o "$TMP/resp" -w '%{http_code} %{content_type}' -X "$method" "$URL$path")
  [[ -n "$body" ]] && args+=(-H 'Content-Type: application/json' --data-binary "@$body")
  local meta status ctype
  meta=$(curl "${args[@]}")
  status=${meta%% *}; ctype=${meta#* }
  python3 "$TMP/fixture.py" "$OUT/$name.json" "$name" "$CAPTURED" "$method" "$path" "$body" "$summary" "$status" "$ctype" "$TMP/resp"
  echo "[capture] $name -> $status" >&2
}
CAPTURED="curl against infinity-emb $VERSION (scripts/infinity/capture_fixtures.sh), $DATE"
cat >"$TMP/fixture.py" <<'PY'
import json, sys
out, name, captured, method, path, body, summary, status, ctype, resp = sys.argv[1:]
elided = []

def elide(x, where):
    """Shorten huge echoes (the server echoes oversized inputs back in 422 bodies)."""
    if isinstance(x, str) and len(x) > 300:
        elided.append(f"{where}: {len(x)}-char string, kept first 60 chars")
        return x[:60] + "…"
    if isinstance(x, list) and len(x) > 20:
        elided.append(f"{where}: list of {len(x)} items, kept first 5")
        return [elide(v, f"{where}[{i}]") for i, v in enumerate(x[:5])]
    if isinstance(x, list):
        return [elide(v, f"{where}[{i}]") for i, v in enumerate(x)]
    if isinstance(x, dict):
        return {k: elide(v, f"{where}.{k}") for k, v in x.items()}
    return x

req = {"method": method, "path": path}
if body:
    raw = open(body, encoding="utf-8").read()
    if summary:
        req["body_summary"] = summary
    else:
        try:
            req["body"] = json.loads(raw)
        except ValueError:
            req["raw_body"] = raw
raw_resp = open(resp, encoding="utf-8").read()
try:
    response = json.loads(raw_resp)
except ValueError:
    response = raw_resp
fixture = {"case": name, "captured": captured, "request": req, "status": int(status),
           "content_type": ctype, "response": elide(response, "response")}
if elided:
    fixture["response_elided"] = elided
with open(out, "w", encoding="utf-8") as f:
    json.dump(fixture, f, indent=2, ensure_ascii=False)
    f.write("\n")
PY
body() { local f="$TMP/$1.json"; cat >"$f"; echo "$f"; }

Q="what is the capital of france"
DOCS='["paris is the capital of france","the cat sat on the mat","a river of water","hello world"]'

capture rerank_basic POST /rerank "$(body a <<<"{\"model\":\"$MODEL\",\"query\":\"$Q\",\"documents\":$DOCS}")"
capture rerank_return_documents POST /rerank "$(body b <<<"{\"model\":\"$MODEL\",\"query\":\"$Q\",\"documents\":$DOCS,\"return_documents\":true}")"
capture rerank_top_n POST /rerank "$(body c <<<"{\"model\":\"$MODEL\",\"query\":\"$Q\",\"documents\":$DOCS,\"top_n\":2}")"
capture rerank_top_n_return_documents POST /rerank "$(body d <<<"{\"model\":\"$MODEL\",\"query\":\"$Q\",\"documents\":$DOCS,\"top_n\":2,\"return_documents\":true}")"
capture rerank_top_n_exceeds_documents POST /rerank "$(body e <<<"{\"model\":\"$MODEL\",\"query\":\"$Q\",\"documents\":$DOCS,\"top_n\":10}")"
capture rerank_raw_scores POST /rerank "$(body f <<<"{\"model\":\"$MODEL\",\"query\":\"$Q\",\"documents\":$DOCS,\"raw_scores\":true}")"
capture rerank_model_omitted POST /rerank "$(body g <<<"{\"query\":\"$Q\",\"documents\":$DOCS}")"
capture rerank_wrong_model_accepted POST /rerank "$(body h <<<"{\"model\":\"no-such-model\",\"query\":\"$Q\",\"documents\":$DOCS}")"
capture rerank_empty_query_and_document POST /rerank "$(body i <<<"{\"model\":\"$MODEL\",\"query\":\"\",\"documents\":[\"a\",\"\"]}")"

capture error_empty_documents POST /rerank "$(body j <<<"{\"model\":\"$MODEL\",\"query\":\"$Q\",\"documents\":[]}")"
capture error_missing_query POST /rerank "$(body k <<<"{\"model\":\"$MODEL\",\"documents\":$DOCS}")"
capture error_missing_documents POST /rerank "$(body l <<<"{\"model\":\"$MODEL\",\"query\":\"$Q\"}")"
capture error_documents_not_a_list POST /rerank "$(body m <<<"{\"model\":\"$MODEL\",\"query\":\"$Q\",\"documents\":\"paris\"}")"
capture error_document_not_a_string POST /rerank "$(body n <<<"{\"model\":\"$MODEL\",\"query\":\"$Q\",\"documents\":[{\"text\":\"paris\"}]}")"
capture error_top_n_zero POST /rerank "$(body o <<<"{\"model\":\"$MODEL\",\"query\":\"$Q\",\"documents\":$DOCS,\"top_n\":0}")"
capture error_invalid_json POST /rerank "$(printf '{"query": ' >"$TMP/p.json"; echo "$TMP/p.json")"
capture error_wrong_path_v1 POST /v1/rerank "$(body q <<<"{\"model\":\"$MODEL\",\"query\":\"$Q\",\"documents\":$DOCS}")"

# Huge inputs (bodies not stored; body_summary says how they were built).
python3 - "$TMP" "$MODEL" <<'PY'
import json, sys
tmp, model = sys.argv[1], sys.argv[2]
def w(name, obj): json.dump(obj, open(f"{tmp}/{name}.json", "w"))
w("huge_ok", {"model": model, "query": "capital of france", "documents": ["paris " * 20000, "short doc"]})        # 120000 chars: under the limit
w("huge_bad", {"model": model, "query": "capital of france", "documents": ["paris " * 20481, "short doc"]})       # 122886 chars: over 8192*15
w("huge_query", {"model": model, "query": "paris " * 20481, "documents": ["short doc"]})
w("too_many", {"model": model, "query": "q", "documents": ["doc %d" % i for i in range(2049)]})
w("max_docs", {"model": model, "query": "q", "documents": ["doc %d" % i for i in range(2048)]})
PY
capture rerank_huge_document_truncated POST /rerank "$TMP/huge_ok.json" \
  'documents = ["paris " * 20000 (120000 chars, under the 122880-char limit), "short doc"], query = "capital of france"'
capture error_document_too_long POST /rerank "$TMP/huge_bad.json" \
  'documents = ["paris " * 20481 (122886 chars, over the 8192*15 = 122880-char limit), "short doc"], query = "capital of france"'
capture error_query_too_long POST /rerank "$TMP/huge_query.json" \
  'query = "paris " * 20481 (122886 chars), documents = ["short doc"]'
capture error_too_many_documents POST /rerank "$TMP/too_many.json" \
  'query = "q", documents = ["doc 0" .. "doc 2048"] (2049 items, over INFINITY_MAX_CLIENT_BATCH_SIZE default 2048)'
capture rerank_max_documents POST /rerank "$TMP/max_docs.json" \
  'query = "q", documents = ["doc 0" .. "doc 2047"] (2048 items, exactly the limit)'

capture error_method_not_allowed GET /rerank ""
capture models GET /models ""
capture health GET /health ""
echo "[capture] wrote $(ls "$OUT"/*.json | wc -l) fixtures to $OUT" >&2
