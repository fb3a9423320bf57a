#!/usr/bin/env bash
# The bare-server install (deploy/systemd/), tested offline — no systemd as PID 1 is needed:
#  1. a release package (PACKAGE, or one assembled by deploy/release/package.sh from target/debug/moltbot);
#  2. install.sh --dry-run changes nothing; install.sh --destdir installs the /opt/moltbot layout with the right
#     modes, a 0600 .env with a generated JWT secret, runs init-db from the installed binary;
#  3. a second run is idempotent (secret, database, admin key kept; no leftovers);
#  4. the installed tree starts: `moltbot config check` and `serve` + /health from /opt/moltbot as the unit runs it
#     (and, for a portable package, the local engine loads a CPU backend through the bin -> releases/ symlink);
#  5. `systemd-analyze verify --root` on the installed units (the ExecStart binary must exist there), with no
#     warning at all, and with each drop-in of deploy/systemd/drop-ins/;
#  6. `systemd-analyze security --offline` exposure at most 2.0 ("OK") for both units; TimeoutStopSec covers
#     server.shutdown_delay + server.shutdown_grace (their defaults, from docs/config.md);
#  7. self-tests: a unit with an unknown key or a missing binary, and a weakened unit, must fail.
# Usage: tests/deploy/systemd-check.sh [PACKAGE.tar.gz|DIR]   (make check-systemd; needs Debian's `systemd`)
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d)
trap 'kill ${server:-} 2>/dev/null || true; rm -rf "$work"' EXIT
fails=0
ok()  { echo "ok   - $*"; }
bad() { echo "FAIL - $*"; fails=$((fails + 1)); }
mode() { stat -c '%a' "$1"; }
command -v systemd-analyze >/dev/null || { echo "systemd-analyze not found (Debian: apt-get install systemd)" >&2; exit 2; }

# 1. package
pkg=${1:-}
if [[ -z "$pkg" ]]; then
  [[ -x "$repo/target/debug/moltbot" ]] || { echo "no target/debug/moltbot: make bins (or pass a package)" >&2; exit 2; }
  RELEASE_DIR="$repo/target/debug" "$repo/deploy/release/package.sh" "$work/pkg/moltbot-test-linux-x86_64" >/dev/null
  pkg="$work/pkg/moltbot-test-linux-x86_64.tar.gz"
fi
echo "     package: $pkg"
install_sh="$repo/deploy/systemd/install.sh"

# 2. dry run, then a staged install
if out=$("$install_sh" --dry-run --destdir "$work/dry" "$pkg" 2>&1) && [[ ! -e "$work/dry" ]] &&
   grep -q 'install -m 0600 .*/opt/moltbot/.env' <<<"$out"; then ok "--dry-run prints the steps and changes nothing"
else bad "--dry-run: $(tail -3 <<<"$out")"; fi
if out=$("$install_sh" --dry-run "$pkg" 2>&1) && grep -q 'useradd --system' <<<"$out" &&
   grep -q 'systemctl restart moltbot-init-db.service' <<<"$out" && grep -q 'systemctl enable' <<<"$out"; then
  ok "--dry-run of a real install: useradd, init-db unit, enable, restart"
else bad "--dry-run (real install): $(tail -3 <<<"$out")"; fi

root="$work/root"
P="$root/opt/moltbot"
if "$install_sh" --destdir "$root" "$pkg" >"$work/install.log" 2>&1; then ok "install.sh --destdir"
else bad "install.sh --destdir failed: $(tail -5 "$work/install.log")"; fi
version=$(readlink "$P/bin" | sed 's|^releases/||')
[[ -x "$P/bin/moltbot" && -d "$P/releases/$version" ]] && ok "bin -> releases/$version" || bad "no bin/moltbot symlink into releases/"
declare -A want=(["$P"]=755 ["$P/releases"]=755 ["$P/releases/$version"]=755 ["$P/releases/$version/moltbot"]=755
  ["$P/data"]=750 ["$P/models"]=750 ["$P/moltbot.toml"]=640 ["$P/.env"]=600 ["$P/data/admin-key.txt"]=600
  ["$root/etc/systemd/system/moltbot.service"]=644 ["$root/etc/systemd/system/moltbot-init-db.service"]=644
  ["$P/share/systemd/drop-ins/gpu-nvidia.conf"]=644)
wrong=""
for f in "${!want[@]}"; do
  if [[ ! -e "$f" ]]; then wrong+=" ${f#"$root"}(missing)"
  elif [[ "$(mode "$f")" != "${want[$f]}" ]]; then wrong+=" ${f#"$root"}($(mode "$f") != ${want[$f]})"; fi
done
[[ -z "$wrong" ]] && ok "layout and modes (${#want[@]} paths)" || bad "layout/modes:$wrong"
secret=$(sed -n 's/^MOLTBOT_AUTH__JWT_SECRET=//p' "$P/.env")
[[ "$secret" =~ ^[0-9a-f]{64}$ ]] && grep -qx 'MOLTBOT_PROFILE=production' "$P/.env" &&
  ok ".env: production profile, generated 256-bit JWT secret" || bad ".env has no generated secret / profile"
[[ -f "$P/data/moltbot.db" ]] && grep -q 'schema version' "$work/install.log" && ok "init-db ran from the installed binary" ||
  bad "init-db did not create data/moltbot.db"

# 3. idempotent
sums() { (cd "$P" && sha256sum .env moltbot.toml data/admin-key.txt 2>&1; readlink bin); }
before=$(sums)
if "$install_sh" --destdir "$root" "$pkg" >"$work/install2.log" 2>&1 && [[ "$(sums)" == "$before" ]] &&
   ! compgen -G "$P/releases/*.new" >/dev/null && [[ ! -e "$P/bin.new" ]]; then
  ok "second run: .env, moltbot.toml, admin key and bin kept, no leftovers"
else bad "second run changed state or failed: $(tail -3 "$work/install2.log")"; fi

# 4. the installed tree runs, from its working directory, as ExecStart does; a remote model as an operator would
#    set it in .env (never contacted here), else serve wants the embedded default model in models/
printf 'MODEL_ENDPOINT=http://127.0.0.1:9/v1\n' >>"$P/.env"
if (cd "$P" && bin/moltbot config check --config "$P/moltbot.toml") >"$work/check.log" 2>&1; then ok "moltbot config check in /opt/moltbot"
else bad "config check: $(tail -3 "$work/check.log")"; fi
(cd "$P" && exec bin/moltbot serve --config "$P/moltbot.toml" --chat-addr 127.0.0.1:0 --admin-addr 127.0.0.1:0 \
  --ready-file "$work/ready.json") >"$work/serve.log" 2>&1 & server=$!
for _ in $(seq 1 150); do [[ -s "$work/ready.json" ]] && break; sleep 0.1; done
if [[ -s "$work/ready.json" ]] && python3 - "$work/ready.json" <<'PY'
import json, sys, urllib.request
addr = json.load(open(sys.argv[1]))["admin_addr"]
assert urllib.request.urlopen(f"http://{addr}/health", timeout=10).status == 200
PY
then ok "serve from the installed tree answers /health"
else bad "serve: $(tail -5 "$work/serve.log")"; fi
kill -TERM "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; server=""

# A portable package: llama.cpp's libraries and CPU backends resolve through the bin -> releases/VERSION symlink.
if [[ -d "$P/bin/backends" ]]; then
  if out=$(cd "$P" && bin/moltbot bench-engine --synthetic tiny --prompt 16 --gen 4 --threads 1 --json 2>"$work/bench.err"); then
    ok "local engine from the installed tree: CPU backend $(python3 -c 'import json,sys; print(json.load(sys.stdin)["cpu_backend"])' <<<"$out")"
  else bad "bench-engine in the installed tree: $(tail -3 "$work/bench.err")"; fi
fi

# 5. systemd-analyze verify against the installed tree (system units copied in for the targets they name)
mkdir -p "$root/usr/lib/systemd" && cp -a /usr/lib/systemd/system "$root/usr/lib/systemd/"
verify() { systemd-analyze verify --man=no --root="$root" moltbot.service moltbot-init-db.service 2>&1; }
if out=$(verify) && [[ -z "$out" ]]; then ok "systemd-analyze verify: both units, no warnings"
else bad "systemd-analyze verify: $out"; fi
sdver=$(systemd-analyze --version | awk 'NR==1 {print $2}')
dropdir="$root/etc/systemd/system/moltbot.service.d"
for conf in "$repo"/deploy/systemd/drop-ins/*.conf; do
  mkdir -p "$dropdir" && cp "$conf" "$dropdir/"
  out=$(verify) && rc=0 || rc=$?
  # RestartSteps/RestartMaxDelaySec exist from systemd 254 on; older ones warn (and ignore them), as documented.
  if ((sdver < 254)); then out=$(grep -Ev "Unknown key '(RestartSteps|RestartMaxDelaySec)'" <<<"$out" || true); fi
  ((rc == 0)) && [[ -z "$out" ]] && ok "verify with drop-in $(basename "$conf")" || bad "drop-in $(basename "$conf"): $out"
  rm -rf "$dropdir"
done

# 6. exposure and stop timeout
if out=$(systemd-analyze security --offline=yes --threshold=20 --root="$root" moltbot.service moltbot-init-db.service 2>&1); then
  ok "systemd-analyze security: $(grep -o 'Overall exposure level for moltbot.service: [0-9.]*' <<<"$out" | awk '{print $NF}') (≤ 2.0)"
else bad "exposure above 2.0: $(grep Overall <<<"$out")"; fi
secs() { python3 -c 'import re,sys; u={"ms":.001,"s":1,"sec":1,"m":60,"min":60,"h":3600}
print(sum(float(n)*u[x] for n,x in re.findall(r"(\d+(?:\.\d+)?)\s*(ms|sec|min|s|m|h)", sys.argv[1])))' "$1"; }
default() { grep -F "| \`$1\` |" "$repo/docs/config.md" | awk -F'|' '{print $5}' | tr -d ' `'; }
need=$(python3 -c "print($(secs "$(default server.shutdown_delay)") + $(secs "$(default server.shutdown_grace)"))")
have=$(secs "$(sed -n 's/^TimeoutStopSec=//p' "$root/etc/systemd/system/moltbot.service")")
python3 -c "import sys; sys.exit(not ($have > $need))" && ok "TimeoutStopSec ${have}s > shutdown_delay + shutdown_grace = ${need}s" ||
  bad "TimeoutStopSec ${have}s does not cover shutdown_delay + shutdown_grace = ${need}s"

# 7. self-tests: the checks above can fail
unit="$root/etc/systemd/system/moltbot.service"
cp "$unit" "$work/unit.orig"
sed -i 's/^Restart=on-failure/Restart=on-failure\nRestartt=always/' "$unit"
[[ -n "$(verify)" ]] && ok "self-test: an unknown key is reported" || bad "self-test: unknown key not reported"
cp "$work/unit.orig" "$unit"
mv "$P/releases/$version/moltbot" "$work/moltbot.moved"
verify >/dev/null && bad "self-test: missing ExecStart binary not reported" || ok "self-test: a missing ExecStart binary fails verify"
mv "$work/moltbot.moved" "$P/releases/$version/moltbot"
sed -i '/^\(ProtectSystem\|ProtectHome\|PrivateDevices\|CapabilityBoundingSet\|SystemCallFilter\|NoNewPrivileges\|RestrictNamespaces\)=/d' "$unit"
systemd-analyze security --offline=yes --threshold=20 --root="$root" moltbot.service >/dev/null 2>&1 &&
  bad "self-test: a weakened unit passes the exposure threshold" || ok "self-test: a weakened unit fails the exposure threshold"
cp "$work/unit.orig" "$unit"

((fails == 0)) && echo "systemd install OK" || { echo "$fails check(s) failed"; exit 1; }
