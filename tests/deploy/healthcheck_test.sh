#!/usr/bin/env bash
# The container health checks, run for real: the Dockerfile's HEALTHCHECK command and compose's moltbot
# healthcheck (from `docker compose config`), against a real `moltbot serve` (SQLite in a temp dir, ephemeral
# ports; the probe runs with the image's environment but MOLTBOT_CHAT_ADDR set to the bound address, and
# /usr/local/bin/moltbot replaced by the binary under test). Must pass while serving, fail while draining (SIGTERM
# → /ready 503) and fail when nothing listens.
#   tests/deploy/healthcheck_test.sh MOLTBOT_BIN COMPOSE_CONFIG.json
set -euo pipefail
bin=$(realpath "$1") compose_json=$2
tmp=$(mktemp -d); pid=""
cleanup() { [[ -n "$pid" ]] && kill "$pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT
dockerfile=$(cd "$(dirname "$0")/../.." && pwd)/deploy/docker/Dockerfile

python3 - "$dockerfile" "$compose_json" "$tmp" <<'PY'
import json, re, sys
dockerfile, compose, tmp = sys.argv[1:]
m = re.search(r'^HEALTHCHECK .*\\\n\s+CMD (\[.*\])$', open(dockerfile).read(), re.M)
cmd = json.loads(m.group(1))
assert cmd[:2] == ["/usr/local/bin/moltbot", "healthcheck"], cmd
open(f"{tmp}/dockerfile.args", "w").write("\n".join(cmd[1:]))
test = json.load(open(compose))["services"]["moltbot"]["healthcheck"]["test"]
assert test[:3] == ["CMD", "/usr/local/bin/moltbot", "healthcheck"], test
open(f"{tmp}/compose.args", "w").write("\n".join(test[2:]))
PY

(cd "$tmp" && exec env -i PATH=/usr/bin:/bin MOLTBOT_CHAT_ADDR=127.0.0.1:0 MOLTBOT_ADMIN_ADDR=127.0.0.1:0 \
  MOLTBOT_SERVER__SHUTDOWN_DELAY=3s MODEL_ENDPOINT=http://127.0.0.1:9/v1 HOME="$tmp" \
  "$bin" serve --ready-file ready.json >serve.log 2>&1) &
pid=$!
for _ in $(seq 1 100); do [[ -s "$tmp/ready.json" ]] && break; sleep 0.1; done
[[ -s "$tmp/ready.json" ]] || { echo "FAIL healthcheck: moltbot did not start:"; cat "$tmp/serve.log"; exit 1; }
port=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["chat_addr"].rsplit(":", 1)[1])' "$tmp/ready.json")
probe() {
  local args; mapfile -t args <"$tmp/$1.args"
  (cd "$tmp" && env -i PATH=/usr/bin:/bin MOLTBOT_CHAT_ADDR="127.0.0.1:$port" MOLTBOT_ADMIN_ADDR=127.0.0.1:0 \
    "$bin" "${args[@]}" 2>/dev/null)
}
failed=0
expect() {  # expect WHAT WANT(0|1)
  for p in dockerfile compose; do
    local rc=0; probe "$p" || rc=1
    if [[ $rc == "$2" ]]; then echo "ok   healthcheck ($p): $1 → exit $rc"
    else echo "FAIL healthcheck ($p): $1 → exit $rc, want $2"; failed=1; fi
  done
}
expect "serving" 0
kill -TERM "$pid"; sleep 0.5
expect "draining after SIGTERM (/ready 503)" 1
wait "$pid" || true; pid=""
expect "stopped (connection refused)" 1
exit $failed
