#!/usr/bin/env bash
# Switch the live colour of the blue-green layout: point Service `moltbot` at moltbot-<colour>.
#
#   deploy/k8s/bluegreen/switch.sh green [-n NAMESPACE] [--context CTX] [--timeout 300s] [--dry-run]
#
# Refuses unless the target colour is fully rolled out (every replica updated and Ready, which means its
# /ready answers 200: database reachable, schema known), then patches the selector and waits until the
# Service's endpoints are exactly the target's pods. In-flight requests and streams on the old colour
# finish there (nothing restarts it); new connections go to the new one. Switching back is the same
# command with the other colour. Procedure (expand → migrate → switch → contract): docs/deploy.md.
set -euo pipefail

usage() { sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
colour=""; ns=""; ctx=(); timeout=300s; dry=0
while (($#)); do
  case "$1" in
    blue|green) colour=$1 ;;
    -n|--namespace) ns=$2; shift ;;
    --context) ctx=(--context "$2"); shift ;;
    --timeout) timeout=$2; shift ;;
    --dry-run) dry=1 ;;
    -h|--help) usage ;;
    *) echo "switch.sh: unknown argument: $1" >&2; usage ;;
  esac
  shift
done
[[ -n "$colour" ]] || usage
k=(kubectl "${ctx[@]}")
[[ -n "$ns" ]] && k+=(--namespace "$ns")
deploy="moltbot-$colour"
label="moltbot/color"

current=$("${k[@]}" get service moltbot -o "jsonpath={.spec.selector['moltbot/color']}")
echo "live colour: ${current:-<none>}; switching to: $colour"
if [[ "$current" == "$colour" ]]; then echo "already live"; exit 0; fi

# 1. The target must be fully rolled out and Ready.
"${k[@]}" rollout status "deployment/$deploy" --timeout="$timeout"
want=$("${k[@]}" get deployment "$deploy" -o jsonpath='{.spec.replicas}')
ready=$("${k[@]}" get deployment "$deploy" -o jsonpath='{.status.readyReplicas}')
if [[ -z "$ready" || "$ready" -lt 1 || "$ready" -lt "$want" ]]; then
  echo "switch.sh: $deploy has ${ready:-0}/$want ready replicas; not switching" >&2
  exit 1
fi
# The migrate Job of the target colour, if it exists, must have completed.
if "${k[@]}" get job "moltbot-migrate-$colour" >/dev/null 2>&1; then
  done=$("${k[@]}" get job "moltbot-migrate-$colour" -o jsonpath='{.status.succeeded}')
  [[ "${done:-0}" -ge 1 ]] || { echo "switch.sh: job moltbot-migrate-$colour has not completed" >&2; exit 1; }
fi

patch="{\"spec\":{\"selector\":{\"$label\":\"$colour\"}}}"
if ((dry)); then echo "dry run: ${k[*]} patch service moltbot --type=merge -p '$patch'"; exit 0; fi

# 2. Flip the selector (one atomic update of the Service).
"${k[@]}" patch service moltbot --type=merge -p "$patch"

# 3. Wait until the endpoints are the target's pods only.
target_ips=$("${k[@]}" get pods -l "app.kubernetes.io/name=moltbot,app.kubernetes.io/component=server,$label=$colour" \
  -o jsonpath='{range .items[?(@.status.podIP)]}{.status.podIP}{"\n"}{end}' | sort)
for _ in $(seq 1 60); do
  eps=$("${k[@]}" get endpointslices -l kubernetes.io/service-name=moltbot \
    -o jsonpath='{range .items[*].endpoints[*]}{.addresses[0]} {.conditions.ready}{"\n"}{end}' |
    awk '$2 == "true" {print $1}' | sort)
  if [[ -n "$eps" ]] && [[ -z "$(comm -23 <(echo "$eps") <(echo "$target_ips"))" ]]; then
    echo "service moltbot now selects $deploy:"; echo "$eps" | sed 's/^/  /'
    echo "Keep moltbot-$current running until its streams have ended and you are sure (rollback: $0 $current)."
    echo "Then record '$colour' in deploy/k8s/bluegreen/kustomization.yaml (the Service patch)."
    exit 0
  fi
  sleep 1
done
echo "switch.sh: endpoints of service moltbot did not converge to $deploy within 60 s" >&2
exit 1
