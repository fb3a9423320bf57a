#!/usr/bin/env bash
# Offline validation of the deployment artefacts (no Docker engine, no cluster):
#   hadolint            deploy/docker/Dockerfile
#   docker compose      config -q of deploy/compose (with .env.example), then tests/deploy/consistency.py
#   promtool            deploy/compose/prometheus.yml (when promtool is installed)
#   kustomize           every layout of deploy/k8s (base, overlays/*, bluegreen) rendered with kubectl kustomize,
#                       kubernetes-validate --strict against the oldest and newest Kubernetes we support
#                       (any WARN fails too), tests/deploy/consistency.py (selectors, ports, HPA targets,
#                       Secret/ConfigMap references, termination grace, PDB, security context)
#   moltbot config check  on the exact environment + moltbot.toml each container/service gets
#   healthchecks        the Dockerfile's HEALTHCHECK and compose's, run against a real `moltbot serve`
#   nginx -t            deploy/nginx/check.sh, and deploy/compose/render-nginx.sh's rendering (nginx_check.sh)
#   shell               bash -n and the blue-green switch script's self-test against a fake kubectl
# Every checker is also run on a deliberately broken input and must fail there (self-tests).
#
# Usage: tests/deploy/validate.sh   (make check-deploy; MOLTBOT_BIN defaults to target/debug/moltbot)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
VENV=${DEPLOY_VENV:-$ROOT/.venv-deploy}
OUT=$ROOT/target/deploy-check
MOLTBOT_BIN=${MOLTBOT_BIN:-$ROOT/target/debug/moltbot}
K8S_VERSIONS=(1.30.0 1.37.0)
FAILED=0

step() { printf '\n::: %s\n' "$*"; }
fail() { echo "FAIL: $*"; FAILED=$((FAILED + 1)); }
# expect_fail DESCRIPTION CMD…: the command must exit non-zero (a checker that cannot fail checks nothing).
expect_fail() {
  local desc=$1; shift
  if "$@" >"$OUT/expect-fail.log" 2>&1; then
    fail "self-test: $desc was NOT detected"; sed 's/^/    /' "$OUT/expect-fail.log"
  else
    echo "ok   self-test: $desc → $(grep -m1 -E 'FAIL|ERROR|WARN|DL[0-9]|SC[0-9]|error|invalid' "$OUT/expect-fail.log" | cut -c1-160)"
  fi
}

# kv_strict FILE VERSION: kubernetes-validate --strict, failing on WARN (an unknown kind or apiVersion is
# only a warning there, exit status 0) as well as ERROR, and when nothing was validated at all.
kv_strict() {
  local log
  log=$("$VENV/bin/kubernetes-validate" --strict -k "$2" "$1" 2>&1) || true
  if grep -qE '^(WARN|ERROR)' <<<"$log" || ! grep -q '^INFO' <<<"$log"; then
    grep -vE '^INFO' <<<"$log" | sed 's/^/    /'; return 1
  fi
  echo "ok   kubernetes-validate --strict -k $2: $(grep -c '^INFO.*passed' <<<"$log") resources"
}

rm -rf "$OUT"; mkdir -p "$OUT"

step "tools (.venv-deploy from tests/deploy/requirements.txt)"
if [[ ! -f "$VENV/.ok" || tests/deploy/requirements.txt -nt "$VENV/.ok" ]]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -r tests/deploy/requirements.txt
  touch "$VENV/.ok"
fi
PY=$VENV/bin/python
COMPOSE_PLUGIN=$("$PY" -c 'import compose, os; print(os.path.join(os.path.dirname(compose.__file__), "docker-compose"))')
# `docker compose` = the docker CLI + this plugin (DOCKER_CONFIG/cli-plugins); without a docker CLI the plugin
# binary runs standalone with the same subcommands.
if command -v docker >/dev/null; then
  export DOCKER_CONFIG=$OUT/docker-config
  mkdir -p "$DOCKER_CONFIG/cli-plugins"
  ln -sf "$COMPOSE_PLUGIN" "$DOCKER_CONFIG/cli-plugins/docker-compose"
  COMPOSE=(docker compose)
else
  COMPOSE=("$COMPOSE_PLUGIN")
fi
KUBECTL=$VENV/bin/kubectl
"$VENV/bin/hadolint" --version
"${COMPOSE[@]}" version
"$KUBECTL" version --client | sed 's/^/  /'
[[ -x "$MOLTBOT_BIN" ]] || { echo "no moltbot binary at $MOLTBOT_BIN (make bins, or set MOLTBOT_BIN)"; exit 1; }

step "hadolint deploy/docker/Dockerfile"
"$VENV/bin/hadolint" --no-color deploy/docker/Dockerfile && echo "ok   Dockerfile" || fail "hadolint"
printf 'FROM debian:latest\nRUN apt-get update && apt-get install -y curl\n' >"$OUT/bad.Dockerfile"
expect_fail "hadolint on an unpinned base image and apt-get without --no-install-recommends" \
  "$VENV/bin/hadolint" --no-color "$OUT/bad.Dockerfile"
grep -qE '^EXPOSE 18789 8080$' deploy/docker/Dockerfile && ! grep -qE '^EXPOSE.*\b5000\b' deploy/docker/Dockerfile \
  && grep -qE '^USER [0-9]+:[0-9]+$' deploy/docker/Dockerfile && grep -q '^HEALTHCHECK' deploy/docker/Dockerfile \
  && echo "ok   Dockerfile exposes 18789 and 8080 only, numeric USER, HEALTHCHECK" || fail "Dockerfile EXPOSE/USER/HEALTHCHECK"

step "docker compose config (deploy/compose, .env.example)"
compose=("${COMPOSE[@]}" --project-directory deploy/compose -f deploy/compose/compose.yaml --env-file deploy/compose/.env.example)
"${compose[@]}" config -q && echo "ok   compose.yaml" || fail "docker compose config -q"
"${compose[@]}" config --format json >"$OUT/compose.json"
"$PY" tests/deploy/consistency.py compose "$OUT/compose.json" --self-test || fail "compose consistency"
"$PY" tests/deploy/config_check.py "$MOLTBOT_BIN" compose "$OUT/compose.json" || fail "moltbot config check (compose)"
sed 's/MOLTBOT_LOG__FORMAT: json/MOLTBOT_LOG__FORMT: json/' deploy/compose/compose.yaml >"$OUT/compose-broken.yaml"
"${COMPOSE[@]}" --project-directory deploy/compose -f "$OUT/compose-broken.yaml" \
  --env-file deploy/compose/.env.example config --format json >"$OUT/compose-broken.json"
expect_fail "moltbot config check on a misspelt MOLTBOT_* variable" \
  "$PY" tests/deploy/config_check.py "$MOLTBOT_BIN" compose "$OUT/compose-broken.json"
tests/deploy/healthcheck_test.sh "$MOLTBOT_BIN" "$OUT/compose.json" || fail "container health checks against a real moltbot"
if command -v promtool >/dev/null; then
  promtool check config deploy/compose/prometheus.yml >/dev/null && echo "ok   deploy/compose/prometheus.yml (promtool)" \
    || fail "promtool check config deploy/compose/prometheus.yml"
fi

step "kustomize → kubernetes-validate --strict → consistency → moltbot config check"
mapfile -t overlays < <(cd deploy/k8s && ls -d overlays/*)
layouts=(base "${overlays[@]}" bluegreen)
for layout in "${layouts[@]}"; do
  out="$OUT/k8s-${layout//\//-}.yaml"
  if ! "$KUBECTL" kustomize "deploy/k8s/$layout" >"$out"; then fail "kustomize build deploy/k8s/$layout"; continue; fi
  echo "ok   kustomize deploy/k8s/$layout: $(grep -c '^kind:' "$out") objects"
  for v in "${K8S_VERSIONS[@]}"; do
    kv_strict "$out" "$v" || fail "kubernetes-validate --strict -k $v deploy/k8s/$layout"
  done
  "$PY" tests/deploy/consistency.py k8s "$out" --self-test >"$OUT/consistency.log" \
    && grep -v 'self-test' "$OUT/consistency.log" && echo "ok   consistency self-test: $(grep -c '^ok   self-test' "$OUT/consistency.log") breakages detected" \
    || { cat "$OUT/consistency.log"; fail "consistency deploy/k8s/$layout"; }
  "$PY" tests/deploy/config_check.py "$MOLTBOT_BIN" k8s "$out" || fail "moltbot config check deploy/k8s/$layout"
done
sed 's/readOnlyRootFilesystem: true/readOnlyRootFileSystem: true/' "$OUT/k8s-base.yaml" >"$OUT/k8s-broken.yaml"
expect_fail "kubernetes-validate --strict on a misspelt field" kv_strict "$OUT/k8s-broken.yaml" 1.37.0
printf 'apiVersion: policy/v1beta1\nkind: PodDisruptionBudget\nmetadata: {name: x}\nspec: {minAvailable: 1}\n' >"$OUT/k8s-old.yaml"
expect_fail "kubernetes-validate: a removed API version is only a WARN, which must fail too" kv_strict "$OUT/k8s-old.yaml" 1.37.0
sed 's/^    shutdown_grace = "25s"/    shutdown_grce = "25s"/' "$OUT/k8s-base.yaml" >"$OUT/k8s-broken.yaml"
expect_fail "moltbot config check on a misspelt key in moltbot.toml" \
  "$PY" tests/deploy/config_check.py "$MOLTBOT_BIN" k8s "$OUT/k8s-broken.yaml"

step "nginx -t (deploy/nginx/check.sh, and the compose rendering)"
tests/deploy/nginx_check.sh "$OUT/nginx" || fail "nginx -t"

step "shell scripts"
for s in deploy/k8s/bluegreen/switch.sh deploy/compose/render-nginx.sh; do bash -n "$s" && echo "ok   bash -n $s" || fail "bash -n $s"; done
PATH="$VENV/bin:$PATH" tests/deploy/switch_test.sh "$KUBECTL" || fail "deploy/k8s/bluegreen/switch.sh self-test"
mine=(tests/deploy/validate.sh tests/deploy/switch_test.sh tests/deploy/nginx_check.sh tests/deploy/healthcheck_test.sh
  deploy/k8s/bluegreen/switch.sh deploy/compose/render-nginx.sh)
if command -v shellcheck >/dev/null; then
  shellcheck -S warning "${mine[@]}" && echo "ok   shellcheck -S warning: ${#mine[@]} scripts" || fail "shellcheck"
fi

echo
if ((FAILED)); then echo "check-deploy: $FAILED check(s) failed"; exit 1; fi
echo "check-deploy: all deployment checks passed"
