#!/usr/bin/env bash
# Render deploy/nginx's configuration for this compose stack into deploy/compose/nginx/ (compose mounts it at
# /etc/nginx/moltbot in the official nginx image). Run it again after changing anything below, then
# `docker compose exec nginx nginx -s reload`.
#
#   DOMAIN=chat.example.com deploy/compose/render-nginx.sh [OUTDIR]
#
# Upstream: the compose service `moltbot:18789` — Docker's DNS answers with every replica, so nginx gets one
# `server` per replica (resolved when nginx starts or reloads: reload after `docker compose up --scale`).
# Certificates: certbot on the host (/etc/letsencrypt, mounted read-only; docs/deploy.md, "TLS").
# Any MOLTBOT_NGINX_* variable of deploy/nginx/render.sh set in the environment wins over these defaults.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
: "${DOMAIN:?set DOMAIN to the public host name, e.g. DOMAIN=chat.example.com}"
export MOLTBOT_NGINX_SERVER_NAME="${MOLTBOT_NGINX_SERVER_NAME:-$DOMAIN}"
export MOLTBOT_NGINX_CHAT_SERVERS="${MOLTBOT_NGINX_CHAT_SERVERS:-moltbot:18789}"
export MOLTBOT_NGINX_TLS_CERT="${MOLTBOT_NGINX_TLS_CERT:-/etc/letsencrypt/live/$DOMAIN/fullchain.pem}"
export MOLTBOT_NGINX_TLS_KEY="${MOLTBOT_NGINX_TLS_KEY:-/etc/letsencrypt/live/$DOMAIN/privkey.pem}"
export MOLTBOT_NGINX_ACME_WEBROOT="${MOLTBOT_NGINX_ACME_WEBROOT:-/var/www/acme}"
# The official image's user, pid file, log directory (linked to the container's stdout/stderr) and cache.
export MOLTBOT_NGINX_USER="${MOLTBOT_NGINX_USER:-nginx}"
export MOLTBOT_NGINX_PID_FILE="${MOLTBOT_NGINX_PID_FILE:-/var/run/nginx.pid}"
export MOLTBOT_NGINX_LOG_DIR="${MOLTBOT_NGINX_LOG_DIR:-/var/log/nginx}"
export MOLTBOT_NGINX_TEMP_DIR="${MOLTBOT_NGINX_TEMP_DIR:-/var/cache/nginx}"
export MOLTBOT_NGINX_CONF_DIR="${MOLTBOT_NGINX_CONF_DIR:-/etc/nginx/moltbot}"
exec "$here/../nginx/render.sh" "${1:-$here/nginx}"
