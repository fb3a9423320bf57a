#!/usr/bin/env bash
# Blue-green switch for bare servers behind nginx (deploy/nginx): point the balancer at the other colour.
#
#   deploy/bluegreen/switch.sh [--conf-dir DIR] [--nginx "nginx -c DIR/nginx.conf"] [--no-ready-check] green
#
# DIR is where deploy/nginx/render.sh wrote the configuration with MOLTBOT_NGINX_CHAT_SERVERS_BLUE/_GREEN
# (default /etc/nginx/moltbot). For every upstream-NAME.COLOR.conf there, upstream-NAME.conf (the file nginx
# includes) is replaced by a copy of it, atomically. Then:
#   1. before touching anything, every replica of the target colour must answer GET /ready with 200
#      (skip with --no-ready-check) — never switch traffic to a colour that is not up;
#   2. `nginx -t` checks the new configuration; on failure the previous files are put back;
#   3. `nginx -s reload`: the master starts workers with the new upstreams, and the old workers stop
#      accepting, finish the requests they have (streams included) and exit — nothing in flight is cut.
# The colour now serving is recorded in DIR/active-color. Switching back is the same command with the other
# colour. The procedure around it (migrate first, expand/contract) is in docs/deploy.md.
set -euo pipefail

conf_dir=/etc/nginx/moltbot
nginx_cmd=""
ready_check=1
color=""
die() { echo "switch.sh: $*" >&2; exit 2; }

while [[ $# -gt 0 ]]; do
    case "$1" in
    --conf-dir) conf_dir="$2"; shift 2 ;;
    --nginx) nginx_cmd="$2"; shift 2 ;;
    --no-ready-check) ready_check=0; shift ;;
    blue | green) color="$1"; shift ;;
    *) die "usage: switch.sh [--conf-dir DIR] [--nginx CMD] [--no-ready-check] blue|green" ;;
    esac
done
[[ -n "$color" ]] || die "which colour? blue or green"
[[ -n "$nginx_cmd" ]] || nginx_cmd="nginx -c $conf_dir/nginx.conf"
read -r -a nginx <<<"$nginx_cmd"

if [[ "$(cat "$conf_dir/active-color" 2>/dev/null || true)" == "$color" ]]; then
    echo "switch.sh: $color is already live; nothing to do"
    exit 0
fi

shopt -s nullglob
sources=("$conf_dir"/upstream-*."$color".conf)
[[ ${#sources[@]} -gt 0 ]] || die "no $conf_dir/upstream-*.$color.conf (render with MOLTBOT_NGINX_CHAT_SERVERS_BLUE/_GREEN)"

if [[ $ready_check -eq 1 ]]; then
    # Only the dialog upstream: its /ready is the replica's readiness (database reachable, not draining).
    while read -r server; do
        code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://$server/ready" || true)"
        [[ "$code" == 200 ]] || die "$color replica $server is not ready (GET /ready: ${code:-no answer}); not switching"
    done < <(sed -n 's/^ *server \([^ ;]*\).*/\1/p' "$conf_dir/upstream-chat.$color.conf")
fi

backup="$(mktemp -d)"
trap 'rm -rf "$backup"' EXIT
restore() {
    local saved
    for saved in "$backup"/*; do
        mv -f "$saved" "$conf_dir/$(basename "$saved")"
    done
}
for src in "${sources[@]}"; do
    active="${src%."$color".conf}.conf"
    if [[ -f "$active" ]]; then cp -p "$active" "$backup/$(basename "$active")"; fi
    cp "$src" "$active.tmp.$$"
    mv -f "$active.tmp.$$" "$active"
done

if ! "${nginx[@]}" -t -q; then
    restore
    die "nginx -t failed; previous upstreams restored, nothing reloaded"
fi
if ! "${nginx[@]}" -s reload; then
    restore
    die "nginx -s reload failed (is nginx running?); previous upstreams restored"
fi
echo "$color" >"$conf_dir/active-color.tmp.$$"
mv -f "$conf_dir/active-color.tmp.$$" "$conf_dir/active-color"
echo "switch.sh: nginx now sends new requests to $color; old workers finish what they have in flight"
