#!/usr/bin/env bash
# Checks the HTTP API against its own OpenAPI document: validates docs/openapi.json with
# openapi-spec-validator, then starts a gateway (temporary SQLite data directory, an
# admin key, the test MCP server as an upstream over Streamable HTTP) and runs
# schemathesis against the document the gateway serves. It fails on any 5xx (but an
# upstream's fault reported as documented: 502/503/504 upstream-*), any answer whose
# status, content type or body the document does not describe, and any error body not
# shaped {"error": {"code", "message"}} (.ci/schemathesis_hooks.py).
#
# Run alone after a build: `bash .ci/schemathesis.sh`. Needs openapi-spec-validator and
# schemathesis (.ci/run installs them). OMNI_BIN and OMNI_TEST_MCP choose the binaries
# (default: the debug builds); SCHEMATHESIS_MAX_TIME bounds the run (default 120 s, all of
# which schemathesis spends fuzzing);
# SCHEMATHESIS_EXTRA_ARGS is added to schemathesis's (e.g. `--report har` to see every
# exchange, or `--phases examples` for a quick look).
set -euo pipefail
cd "$(dirname "$0")/.."

BIN="${OMNI_BIN:-target/debug/omni-bridge}"
TEST_MCP="${OMNI_TEST_MCP:-target/debug/omni-test-mcp}"
MAX_TIME="${SCHEMATHESIS_MAX_TIME:-120}"
for program in "$BIN" "$TEST_MCP"; do
  [ -x "$program" ] || { echo "$program is not built (cargo build --bins)" >&2; exit 1; }
done

echo "openapi-spec-validator docs/openapi.json"
openapi-spec-validator docs/openapi.json

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Polls `curl ARGS...` until it succeeds, for at most $1 seconds.
wait_for() {
  local deadline=$((SECONDS + $1)); shift
  until curl -fsS -o /dev/null "$@" 2>/dev/null; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "no answer from $* within the deadline" >&2
      return 1
    fi
    sleep 0.2
  done
}

mcp_port=$(free_port)
# The fuzzer calls every tool, `crash` included: the test server comes back each time it
# exits, on the same port, as an upstream that dies would.
(
  trap 'kill "$child" 2>/dev/null; exit 0' TERM
  while :; do
    "$TEST_MCP" --http "127.0.0.1:$mcp_port" >>"$work/test-mcp.log" 2>&1 &
    child=$!
    wait "$child" || true
    sleep 0.2
  done
) &
pids+=($!)

data="$work/data"
export OMNI_CI_KEY_NAME=schemathesis-admin OMNI_CI_SERVER_NAME=demo
key=$("$BIN" keys --data-dir "$data" create --name "$OMNI_CI_KEY_NAME" --role admin \
  --rate-limit 100000/s 2>/dev/null)

port=$(free_port)
base="http://127.0.0.1:$port"
# Fuzzed server declarations name random URLs: every upstream connection that is not to
# loopback goes to a proxy that is not there, so none leaves the machine.
HTTP_PROXY=http://127.0.0.1:9 HTTPS_PROXY=http://127.0.0.1:9 ALL_PROXY=http://127.0.0.1:9 \
  NO_PROXY=127.0.0.1,localhost \
  "$BIN" --bind "127.0.0.1:$port" --data-dir "$data" --log warn >"$work/gateway.log" 2>&1 &
pids+=($!)
wait_for 30 "$base/readyz" || { cat "$work/gateway.log" >&2; exit 1; }

auth=(-H "Authorization: Bearer $key")
wait_for 30 "$base/api/v1/openapi.json" "${auth[@]}"
# So that the tool, cache and event operations have something real to reach; a 5 s call
# timeout keeps `sleep` and `freeze` under schemathesis's request timeout (20 s).
curl -fsS -o /dev/null "${auth[@]}" -H 'Content-Type: application/json' \
  -d "{\"name\": \"$OMNI_CI_SERVER_NAME\", \"transport\": \"streamable_http\", \"url\": \"http://127.0.0.1:$mcp_port/mcp\", \"timeout\": \"5s\"}" \
  "$base/api/v1/servers"
deadline=$((SECONDS + 30))
until curl -fsS "${auth[@]}" "$base/api/v1/tools" | grep -q '"tool":"echo"'; do
  [ "$SECONDS" -lt "$deadline" ] || { echo "demo's tools never showed" >&2; exit 1; }
  sleep 0.2
done

echo "schemathesis against $base (at most $MAX_TIME s)"
# `timeout` is the wall-clock bound whatever schemathesis does; --max-time its own.
status=0
SCHEMATHESIS_HOOKS=schemathesis_hooks PYTHONPATH="$PWD/.ci" \
  timeout --kill-after=10 $((MAX_TIME + 60)) \
  schemathesis --no-color run "$base/api/v1/openapi.json" \
    "${auth[@]}" \
    --checks no_gateway_fault,status_code_conformance,content_type_conformance,response_schema_conformance,error_body_shape \
    --max-examples 5 \
    --max-time "$MAX_TIME" \
    --workers 2 \
    --seed 20261201 \
    --request-timeout 20 \
    ${SCHEMATHESIS_EXTRA_ARGS:-} || status=$?
if [ "$status" -ne 0 ]; then
  echo "schemathesis failed ($status); the gateway's log:" >&2
  tail -n 50 "$work/gateway.log" >&2
fi
exit "$status"
