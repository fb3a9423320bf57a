#!/usr/bin/env bash
# nginx -t for the deployments: deploy/nginx/check.sh (its own renderings: three replicas, blue/green + admin),
# then the compose stack's rendering (deploy/compose/render-nginx.sh: upstream `moltbot:18789`, the official
# image's paths) with a throwaway certificate and the file paths moved into a temp directory. `moltbot` is
# resolved to 127.0.0.1 through a private /etc/hosts in a mount namespace (unshare), so nginx -t sees the
# compose upstream exactly as rendered; without unshare the upstream is replaced by 127.0.0.1:9.
#   tests/deploy/nginx_check.sh OUTDIR
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:?usage: nginx_check.sh OUTDIR}
rm -rf "$out"; mkdir -p "$out/logs" "$out/temp" "$out/acme" "$out/compose"

deploy/nginx/check.sh

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=localhost \
  -keyout "$out/key.pem" -out "$out/cert.pem" 2>/dev/null
(cat /etc/hosts; echo "127.0.0.1 moltbot") >"$out/hosts"
ns=(unshare -m bash -c 'mount --bind "$0" /etc/hosts && exec "$@"' "$out/hosts")
if ! "${ns[@]}" true 2>/dev/null; then
  echo "nginx_check: no mount namespace here; testing the compose rendering with 127.0.0.1:9 as upstream (nginx -t connects to nothing)"
  ns=(); export MOLTBOT_NGINX_CHAT_SERVERS=127.0.0.1:9
fi
DOMAIN=chat.example.com MOLTBOT_NGINX_TLS_CERT="$out/cert.pem" MOLTBOT_NGINX_TLS_KEY="$out/key.pem" \
  MOLTBOT_NGINX_ACME_WEBROOT="$out/acme" MOLTBOT_NGINX_USER="$(id -un)" MOLTBOT_NGINX_PID_FILE="$out/nginx.pid" \
  MOLTBOT_NGINX_LOG_DIR="$out/logs" MOLTBOT_NGINX_TEMP_DIR="$out/temp" MOLTBOT_NGINX_CONF_DIR="$out/compose" \
  MOLTBOT_NGINX_HTTP_LISTEN=127.0.0.1:18080 MOLTBOT_NGINX_HTTPS_LISTEN=127.0.0.1:18443 \
  deploy/compose/render-nginx.sh "$out/compose" >/dev/null
grep -q "server ${MOLTBOT_NGINX_CHAT_SERVERS:-moltbot:18789} " "$out/compose/upstream-chat.conf"
if log=$("${ns[@]}" nginx -t -p "$out/compose" -e "$out/logs/startup.log" -c "$out/compose/nginx.conf" 2>&1) &&
  ! grep -q '\[warn\]' <<<"$log"; then
  echo "nginx -t: compose rendering (upstream $(awk '{print $2}' "$out/compose/upstream-chat.conf")) ok"
else
  echo "$log" >&2; echo "nginx -t: compose rendering FAILED" >&2; exit 1
fi
# Self-test: a misspelt directive must fail nginx -t here too.
sed '0,/proxy_buffering off;/s//proxy_bufering off;/' "$out/compose/nginx.conf" >"$out/compose/broken.conf"
if "${ns[@]}" nginx -t -p "$out/compose" -e "$out/logs/startup.log" -c "$out/compose/broken.conf" >/dev/null 2>&1; then
  echo "nginx -t: self-test FAILED: a misspelt directive passed" >&2; exit 1
fi
echo "nginx -t: self-test: a misspelt directive is refused"
