#!/usr/bin/env bash
# certbot --deploy-hook for deploy/nginx: install the new certificate where nginx reads it, then reload nginx
# gracefully (old workers finish their requests with the old certificate; new connections get the new one).
#
#   certbot certonly --webroot -w /var/www/acme -d chat.example.com \
#       --deploy-hook /opt/moltbot/deploy/nginx/certbot-deploy-hook.sh
#
# certbot stores the hook in the lineage's renewal configuration, so `certbot renew` (its systemd timer) runs it
# after every renewal. certbot sets RENEWED_LINEAGE (/etc/letsencrypt/live/NAME). Settings (environment, or put
# them in front of the hook command):
#   MOLTBOT_NGINX_TLS_CERT   [/etc/nginx/tls/moltbot-fullchain.pem]  (the same as for render.sh)
#   MOLTBOT_NGINX_TLS_KEY    [/etc/nginx/tls/moltbot-privkey.pem]
#   MOLTBOT_NGINX_TEST       [nginx -t -q]  (checks the configuration with the new pair before the reload)
#   MOLTBOT_NGINX_RELOAD     [nginx -s reload]  (e.g. "systemctl reload nginx")
# Copies instead of symlinks into /etc/letsencrypt keep nginx's files readable by a restricted nginx and make each
# install atomic (rename). A failing test or reload puts the old pair back and exits non-zero (certbot logs it).
set -euo pipefail

cert="${MOLTBOT_NGINX_TLS_CERT:-/etc/nginx/tls/moltbot-fullchain.pem}"
key="${MOLTBOT_NGINX_TLS_KEY:-/etc/nginx/tls/moltbot-privkey.pem}"
check="${MOLTBOT_NGINX_TEST:-nginx -t -q}"
reload="${MOLTBOT_NGINX_RELOAD:-nginx -s reload}"
lineage="${RENEWED_LINEAGE:?certbot sets RENEWED_LINEAGE; run this as a --deploy-hook}"

mkdir -p "$(dirname "$cert")" "$(dirname "$key")"
for f in "$cert" "$key"; do
    if [[ -e "$f" ]]; then cp -p "$f" "$f.previous"; fi
done
install -m 0644 "$lineage/fullchain.pem" "$cert.new"
install -m 0600 "$lineage/privkey.pem" "$key.new"
mv -f "$cert.new" "$cert"
mv -f "$key.new" "$key"

read -r -a test_cmd <<<"$check"
read -r -a reload_cmd <<<"$reload"
if ! "${test_cmd[@]}" || ! "${reload_cmd[@]}"; then
    echo "certbot-deploy-hook: nginx refused the new certificate; the previous one is back in place" >&2
    for f in "$cert" "$key"; do
        if [[ -e "$f.previous" ]]; then mv -f "$f.previous" "$f"; fi
    done
    exit 1
fi
rm -f "$cert.previous" "$key.previous"
echo "certbot-deploy-hook: installed $(basename "$lineage") into $cert and reloaded nginx"
