#!/usr/bin/env bash
# Render deploy/nginx/moltbot.conf.template into a complete nginx configuration.
#
#   MOLTBOT_NGINX_CHAT_SERVERS="10.0.0.10:18789 10.0.0.11:18789 10.0.0.12:18789" \
#   MOLTBOT_NGINX_SERVER_NAME=chat.example.com deploy/nginx/render.sh /etc/nginx/moltbot
#   nginx -t -c /etc/nginx/moltbot/nginx.conf
#
# Writes into OUTDIR: nginx.conf, upstream-chat.conf (the replicas), admin-server.conf (empty unless
# MOLTBOT_NGINX_ADMIN_LISTEN is set) and upstream-admin.conf. For blue-green on bare servers, give
# MOLTBOT_NGINX_CHAT_SERVERS_BLUE and _GREEN instead of MOLTBOT_NGINX_CHAT_SERVERS (likewise ADMIN): then
# upstream-chat.blue.conf and upstream-chat.green.conf are written, upstream-chat.conf is a copy of the active
# colour (OUTDIR/active-color, kept across re-renders; MOLTBOT_NGINX_ACTIVE_COLOR for the first render), and
# deploy/bluegreen/switch.sh flips it.
#
# Only the variables listed in VARS are substituted (envsubst with an explicit list), so nginx's own $host,
# $request_uri, … pass through untouched.
#
# Variables (default in brackets):
#   MOLTBOT_NGINX_SERVER_NAME          server_name [_]
#   MOLTBOT_NGINX_HTTP_LISTEN          plain-HTTP listen (ACME + redirect) [80]
#   MOLTBOT_NGINX_HTTPS_LISTEN         HTTPS listen [443]
#   MOLTBOT_NGINX_TLS_CERT / _TLS_KEY  PEM files [/etc/nginx/tls/moltbot-fullchain.pem, …-privkey.pem]
#                                      (deploy/nginx/certbot-deploy-hook.sh installs certbot's there)
#   MOLTBOT_NGINX_ACME_WEBROOT         certbot --webroot path [/var/www/acme]
#   MOLTBOT_NGINX_CHAT_SERVERS         dialog listeners of the replicas, host:port, space or comma separated
#   MOLTBOT_NGINX_MAX_FAILS / _FAIL_TIMEOUT   passive health check per replica [1, 10s]
#   MOLTBOT_NGINX_ADMIN_LISTEN         operator-only admin server, e.g. 10.0.0.5:8443 [unset = none]
#   MOLTBOT_NGINX_ADMIN_SERVERS        admin listeners of the replicas (required with ADMIN_LISTEN)
#   MOLTBOT_NGINX_ADMIN_ALLOW          CIDRs allowed on the admin server [127.0.0.1/32]
#   MOLTBOT_NGINX_CLIENT_MAX_BODY_SIZE [4m]  (= moltbot's server.body_limit_bytes default)
#   MOLTBOT_NGINX_RATE / _RATE_BURST   per-client-address request rate at the edge [20r/s, 40]
#   MOLTBOT_NGINX_CONN_PER_IP          open connections per client address [64]
#   MOLTBOT_NGINX_STREAM_TIMEOUT       read timeout of SSE and WebSocket [600s]
#   MOLTBOT_NGINX_READ_TIMEOUT         read timeout of other requests [330s] (> server.request_timeout)
#   MOLTBOT_NGINX_OCSP_STAPLING        on | off [off]
#   MOLTBOT_NGINX_HTTP2                listen (`listen … ssl http2`, nginx < 1.25.1) | directive (`http2 on;`,
#                                      1.25.1+, where the listen flag is deprecated) | auto [auto: by the
#                                      local `nginx -v` if there is one, else listen]
#   MOLTBOT_NGINX_USER                 worker user [www-data]
#   MOLTBOT_NGINX_WORKER_PROCESSES / _WORKER_CONNECTIONS   [auto, 4096]
#   MOLTBOT_NGINX_PID_FILE / _LOG_DIR / _TEMP_DIR          [/run/nginx.pid, /var/log/nginx, /var/lib/nginx]
#   MOLTBOT_NGINX_CONF_DIR             where the included files will live [OUTDIR]
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
die() { echo "render.sh: $*" >&2; exit 2; }

[[ $# -eq 1 ]] || die "usage: render.sh OUTDIR"
mkdir -p "$1"
out="$(cd "$1" && pwd)"

: "${MOLTBOT_NGINX_SERVER_NAME:=_}"
: "${MOLTBOT_NGINX_HTTP_LISTEN:=80}"
: "${MOLTBOT_NGINX_HTTPS_LISTEN:=443}"
: "${MOLTBOT_NGINX_TLS_CERT:=/etc/nginx/tls/moltbot-fullchain.pem}"
: "${MOLTBOT_NGINX_TLS_KEY:=/etc/nginx/tls/moltbot-privkey.pem}"
: "${MOLTBOT_NGINX_ACME_WEBROOT:=/var/www/acme}"
: "${MOLTBOT_NGINX_MAX_FAILS:=1}"
: "${MOLTBOT_NGINX_FAIL_TIMEOUT:=10s}"
: "${MOLTBOT_NGINX_ADMIN_LISTEN:=}"
: "${MOLTBOT_NGINX_ADMIN_ALLOW:=127.0.0.1/32}"
: "${MOLTBOT_NGINX_CLIENT_MAX_BODY_SIZE:=4m}"
: "${MOLTBOT_NGINX_RATE:=20r/s}"
: "${MOLTBOT_NGINX_RATE_BURST:=40}"
: "${MOLTBOT_NGINX_CONN_PER_IP:=64}"
: "${MOLTBOT_NGINX_STREAM_TIMEOUT:=600s}"
: "${MOLTBOT_NGINX_READ_TIMEOUT:=330s}"
: "${MOLTBOT_NGINX_OCSP_STAPLING:=off}"
: "${MOLTBOT_NGINX_USER:=www-data}"
: "${MOLTBOT_NGINX_WORKER_PROCESSES:=auto}"
: "${MOLTBOT_NGINX_WORKER_CONNECTIONS:=4096}"
: "${MOLTBOT_NGINX_PID_FILE:=/run/nginx.pid}"
: "${MOLTBOT_NGINX_LOG_DIR:=/var/log/nginx}"
: "${MOLTBOT_NGINX_TEMP_DIR:=/var/lib/nginx}"
: "${MOLTBOT_NGINX_CONF_DIR:=$out}"

case "$MOLTBOT_NGINX_OCSP_STAPLING" in on | off) ;; *) die "MOLTBOT_NGINX_OCSP_STAPLING must be on or off" ;; esac

# HTTP/2 on the HTTPS listener, in the syntax the nginx that runs this understands.
http2="${MOLTBOT_NGINX_HTTP2:-auto}"
if [[ "$http2" == auto ]]; then
    http2=listen
    version="$(nginx -v 2>&1 | sed -n 's|.*nginx/\([0-9.]*\).*|\1|p' || true)"
    if [[ -n "$version" ]] && [[ "$(printf '%s\n' 1.25.1 "$version" | sort -V | head -n1)" == 1.25.1 ]]; then
        http2=directive
    fi
fi
case "$http2" in
listen) export MOLTBOT_NGINX_LISTEN_HTTP2=" http2" MOLTBOT_NGINX_HTTP2_DIRECTIVE="# HTTP/2: on the listen line" ;;
directive) export MOLTBOT_NGINX_LISTEN_HTTP2="" MOLTBOT_NGINX_HTTP2_DIRECTIVE="http2 on;" ;;
*) die "MOLTBOT_NGINX_HTTP2 must be auto, listen or directive" ;;
esac

# The redirect goes to the HTTPS listener's port; ":443" is left out of URLs.
https_port="${MOLTBOT_NGINX_HTTPS_LISTEN##*:}"
https_port="${https_port%% *}"
[[ "$https_port" =~ ^[0-9]+$ ]] || die "MOLTBOT_NGINX_HTTPS_LISTEN must end in a port: $MOLTBOT_NGINX_HTTPS_LISTEN"
export MOLTBOT_NGINX_HTTPS_PORT_SUFFIX=":$https_port"
if [[ "$https_port" == 443 ]]; then MOLTBOT_NGINX_HTTPS_PORT_SUFFIX=""; fi

# "a:1 b:2" or "a:1,b:2" → one `server` line each, with the passive health-check parameters.
server_lines() {
    local list="${1//,/ }" s n=0
    for s in $list; do
        [[ "$s" =~ ^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9_.-]+):[0-9]+$ ]] || die "not host:port: $s"
        echo "server $s max_fails=$MOLTBOT_NGINX_MAX_FAILS fail_timeout=$MOLTBOT_NGINX_FAIL_TIMEOUT;"
        n=$((n + 1))
    done
    [[ $n -gt 0 ]] || die "empty server list"
}

write_atomically() { # FILE, content on stdin
    cat >"$1.tmp.$$"
    mv -f "$1.tmp.$$" "$1"
}

# upstream-NAME.conf, or with blue/green lists the two colour files plus the active copy.
upstream_files() { # NAME PLAIN BLUE GREEN
    local name="$1" plain="$2" blue="$3" green="$4" color
    if [[ -n "$blue" || -n "$green" ]]; then
        [[ -n "$blue" && -n "$green" ]] || die "set both ${name^^} _BLUE and _GREEN server lists"
        [[ -z "$plain" ]] || die "set either the plain ${name^^} server list or _BLUE/_GREEN, not both"
        server_lines "$blue" | write_atomically "$out/upstream-$name.blue.conf"
        server_lines "$green" | write_atomically "$out/upstream-$name.green.conf"
        color="$(cat "$out/active-color" 2>/dev/null || echo "${MOLTBOT_NGINX_ACTIVE_COLOR:-blue}")"
        [[ "$color" == blue || "$color" == green ]] || die "active colour must be blue or green: $color"
        echo "$color" | write_atomically "$out/active-color"
        write_atomically "$out/upstream-$name.conf" <"$out/upstream-$name.$color.conf"
    else
        [[ -n "$plain" ]] || die "set the ${name^^} server list"
        server_lines "$plain" | write_atomically "$out/upstream-$name.conf"
    fi
}

upstream_files chat "${MOLTBOT_NGINX_CHAT_SERVERS:-}" "${MOLTBOT_NGINX_CHAT_SERVERS_BLUE:-}" \
    "${MOLTBOT_NGINX_CHAT_SERVERS_GREEN:-}"

# shellcheck disable=SC2016 # the literal ${NAME} list is envsubst's argument
VARS='${MOLTBOT_NGINX_SERVER_NAME} ${MOLTBOT_NGINX_HTTP_LISTEN} ${MOLTBOT_NGINX_HTTPS_LISTEN}
${MOLTBOT_NGINX_HTTPS_PORT_SUFFIX} ${MOLTBOT_NGINX_TLS_CERT} ${MOLTBOT_NGINX_TLS_KEY}
${MOLTBOT_NGINX_ACME_WEBROOT} ${MOLTBOT_NGINX_ADMIN_LISTEN} ${MOLTBOT_NGINX_ADMIN_ALLOW_RULES}
${MOLTBOT_NGINX_CLIENT_MAX_BODY_SIZE} ${MOLTBOT_NGINX_RATE} ${MOLTBOT_NGINX_RATE_BURST}
${MOLTBOT_NGINX_CONN_PER_IP} ${MOLTBOT_NGINX_STREAM_TIMEOUT} ${MOLTBOT_NGINX_READ_TIMEOUT}
${MOLTBOT_NGINX_OCSP_STAPLING} ${MOLTBOT_NGINX_USER} ${MOLTBOT_NGINX_WORKER_PROCESSES}
${MOLTBOT_NGINX_WORKER_CONNECTIONS} ${MOLTBOT_NGINX_PID_FILE} ${MOLTBOT_NGINX_LOG_DIR}
${MOLTBOT_NGINX_TEMP_DIR} ${MOLTBOT_NGINX_CONF_DIR} ${MOLTBOT_NGINX_LISTEN_HTTP2}
${MOLTBOT_NGINX_HTTP2_DIRECTIVE}'

MOLTBOT_NGINX_ADMIN_ALLOW_RULES=""
if [[ -n "$MOLTBOT_NGINX_ADMIN_LISTEN" ]]; then
    upstream_files admin "${MOLTBOT_NGINX_ADMIN_SERVERS:-}" "${MOLTBOT_NGINX_ADMIN_SERVERS_BLUE:-}" \
        "${MOLTBOT_NGINX_ADMIN_SERVERS_GREEN:-}"
    for cidr in ${MOLTBOT_NGINX_ADMIN_ALLOW//,/ }; do
        [[ "$cidr" =~ ^[0-9a-fA-F.:]+(/[0-9]+)?$ ]] || die "not a CIDR: $cidr"
        MOLTBOT_NGINX_ADMIN_ALLOW_RULES+="    allow $cidr;"$'\n'
    done
fi

export "${!MOLTBOT_NGINX_@}"
if [[ -n "$MOLTBOT_NGINX_ADMIN_LISTEN" ]]; then
    envsubst "$VARS" <"$here/admin-server.conf.template" | write_atomically "$out/admin-server.conf"
else
    echo "# No operator admin server (MOLTBOT_NGINX_ADMIN_LISTEN is unset)." | write_atomically "$out/admin-server.conf"
fi
envsubst "$VARS" <"$here/moltbot.conf.template" | write_atomically "$out/nginx.conf"

# A variable missing from VARS would survive as literal text: refuse that instead of shipping it.
if grep -nE '\$\{MOLTBOT_NGINX_[A-Z_]+\}' "$out/nginx.conf" "$out/admin-server.conf" >&2; then
    die "unsubstituted variables (add them to VARS)"
fi
echo "$out/nginx.conf"
