#!/usr/bin/env bash
# Self-test of deploy/k8s/bluegreen/switch.sh against a fake kubectl (tests/deploy/fake_kubectl.py) that
# keeps a tiny cluster state in a JSON file: each colour's Deployment and migrate Job, pod IPs, and
# EndpointSlices that follow the selector. The Service is the one `kubectl kustomize deploy/k8s/bluegreen`
# renders, read and patched by the real kubectl offline. Checks: a ready colour is switched to and the
# endpoints converge; a colour with unready replicas or an unfinished migration is refused (selector
# unchanged); switching to the live colour is a no-op; switching back works.
#   tests/deploy/switch_test.sh [KUBECTL]   (default: .venv-deploy/bin/kubectl)
set -euo pipefail
cd "$(dirname "$0")/../.."
export REAL_KUBECTL=${1:-$PWD/.venv-deploy/bin/kubectl}
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/bin"
ln -s "$PWD/tests/deploy/fake_kubectl.py" "$tmp/bin/kubectl"
KUBECONFIG=/dev/null "$REAL_KUBECTL" kustomize deploy/k8s/bluegreen >"$tmp/rendered.yaml"
python3 - "$tmp/rendered.yaml" "$tmp/service.json" <<'PY'
import json, sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
svc = next(d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == "moltbot")
json.dump(svc, open(sys.argv[2], "w"))
PY
export PATH="$tmp/bin:$PATH" FAKE_KUBECTL_STATE="$tmp/state.json"
switch=deploy/k8s/bluegreen/switch.sh
failed=0

state() {  # state LIVE GREEN_READY GREEN_JOB_SUCCEEDED
  python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); s["spec"]["selector"]["moltbot/color"]=sys.argv[2]
json.dump(s, open(sys.argv[3], "w"))' "$tmp/service.json" "$1" "$tmp/live-service.json"
  cat >"$FAKE_KUBECTL_STATE" <<EOF
{"live": "$1", "service_file": "$tmp/live-service.json",
 "deployments": {"moltbot-blue": {"replicas": 3, "ready": 3, "ips": ["10.1.0.1", "10.1.0.2", "10.1.0.3"]},
                 "moltbot-green": {"replicas": 3, "ready": $2, "ips": ["10.1.0.4", "10.1.0.5", "10.1.0.6"]}},
 "jobs": {"moltbot-migrate-blue": 1, "moltbot-migrate-green": $3},
 "patches": 0}
EOF
}
live() { python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); print(s["live"], s["patches"])' "$FAKE_KUBECTL_STATE"; }
check() {  # check DESCRIPTION EXPECTED_RC EXPECTED_"LIVE PATCHES" ARGS…
  local desc=$1 want_rc=$2 want_state=$3; shift 3
  local rc=0
  "$switch" "$@" >"$tmp/out" 2>&1 || rc=$?
  if [[ $rc == "$want_rc" && "$(live)" == "$want_state" ]]; then
    echo "ok   switch.sh: $desc (exit $rc, live/patches: $(live))"
  else
    echo "FAIL switch.sh: $desc: exit $rc (want $want_rc), live/patches $(live) (want $want_state)"
    sed 's/^/    /' "$tmp/out"; failed=1
  fi
}

state blue 3 1; check "switches blue → green when green is ready and migrated" 0 "green 1" green -n moltbot
grep -q 'now selects moltbot-green' "$tmp/out" || { echo "FAIL switch.sh: no endpoint confirmation"; failed=1; }
state blue 1 1; check "refuses green with 1/3 ready replicas" 1 "blue 0" green
state blue 3 0; check "refuses green before its migrate Job completed" 1 "blue 0" green
state green 3 1; check "no-op when green is already live" 0 "green 0" green
state green 3 1; check "switches back (rollback) to blue" 0 "blue 1" blue
exit $failed
