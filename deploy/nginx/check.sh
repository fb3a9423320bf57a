#!/usr/bin/env bash
# `nginx -t` on the rendered template, offline: renders deploy/nginx/moltbot.conf.template twice into a temp
# directory (three replicas; then blue/green lists with the operator admin server), with a throwaway
# self-signed certificate, and lets nginx parse each result. Needs nginx, openssl, envsubst (gettext-base).
#
#   deploy/nginx/check.sh          # exit 0 when both configurations pass nginx -t
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin" # nginx is in /usr/sbin, often not on a non-root PATH
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

for tool in nginx openssl envsubst; do
    command -v "$tool" >/dev/null || { echo "check.sh: $tool is not installed" >&2; exit 2; }
done

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=localhost \
    -keyout "$tmp/key.pem" -out "$tmp/cert.pem" 2>/dev/null
mkdir -p "$tmp/logs" "$tmp/temp" "$tmp/acme"

common=(
    MOLTBOT_NGINX_SERVER_NAME=chat.example.com
    MOLTBOT_NGINX_HTTP_LISTEN=127.0.0.1:18080
    MOLTBOT_NGINX_HTTPS_LISTEN=127.0.0.1:18443
    MOLTBOT_NGINX_TLS_CERT="$tmp/cert.pem"
    MOLTBOT_NGINX_TLS_KEY="$tmp/key.pem"
    MOLTBOT_NGINX_ACME_WEBROOT="$tmp/acme"
    MOLTBOT_NGINX_USER="$(id -un)"
    MOLTBOT_NGINX_PID_FILE="$tmp/nginx.pid"
    MOLTBOT_NGINX_LOG_DIR="$tmp/logs"
    MOLTBOT_NGINX_TEMP_DIR="$tmp/temp"
)

check() { # NAME, then extra VAR=value
    local name="$1"
    shift
    env "${common[@]}" "$@" "$here/render.sh" "$tmp/$name" >/dev/null
    # -e: nginx writes its startup errors to the default error log before reading the config. A warning
    # (deprecated directive, ignored option) fails the check too — except, when not run as root, the one
    # saying that `user` is ignored.
    local log
    if log="$(nginx -t -p "$tmp/$name" -e "$tmp/logs/startup.log" -c "$tmp/$name/nginx.conf" 2>&1)" &&
        ! grep -v '"user" directive makes sense only' <<<"$log" | grep -q '\[warn\]'; then
        echo "nginx -t: $name ok"
    else
        echo "$log" >&2
        echo "nginx -t: $name FAILED" >&2
        return 1
    fi
}

check three-replicas MOLTBOT_NGINX_CHAT_SERVERS="10.0.0.10:18789 10.0.0.11:18789 10.0.0.12:18789"
check blue-green-admin \
    MOLTBOT_NGINX_CHAT_SERVERS_BLUE="10.0.0.10:18789,10.0.0.11:18789" \
    MOLTBOT_NGINX_CHAT_SERVERS_GREEN="10.0.0.20:18789,10.0.0.21:18789" \
    MOLTBOT_NGINX_ADMIN_LISTEN=127.0.0.1:18444 \
    MOLTBOT_NGINX_ADMIN_SERVERS_BLUE="10.0.0.10:8080,10.0.0.11:8080" \
    MOLTBOT_NGINX_ADMIN_SERVERS_GREEN="10.0.0.20:8080,10.0.0.21:8080" \
    MOLTBOT_NGINX_ADMIN_ALLOW="10.8.0.0/24,127.0.0.1/32"
