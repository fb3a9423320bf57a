#!/usr/bin/env bash
# Install or upgrade moltbot as a systemd service under /opt/moltbot, from a release package
# (deploy/release/package.sh: dist/moltbot-VERSION-linux-x86_64[-glibc2.28].tar.gz). Idempotent: run it again with
# a newer package to upgrade; moltbot.toml, .env, data/ and models/ are never overwritten.
#
#   /opt/moltbot/releases/VERSION/   the package's binary, llama.cpp libraries, backends/   root:root 0755
#   /opt/moltbot/bin -> releases/VERSION                  (switched atomically; older releases stay for rollback)
#   /opt/moltbot/moltbot.toml        a commented starting point, if missing               root:moltbot 0640
#   /opt/moltbot/.env                from moltbot.env.template, new JWT secret, if missing  moltbot:moltbot 0600
#   /opt/moltbot/data/ models/       writable by the service                              moltbot:moltbot 0750
#   /opt/moltbot/share/              README, LICENSE, example config, units, drop-ins (reference copies)
#   /etc/systemd/system/moltbot.service, moltbot-init-db.service
# Then: a system user `moltbot` (no login, no home), daemon-reload, `moltbot init-db` through
# moltbot-init-db.service (as the service user, in the same sandbox), enable both units, (re)start moltbot.
#
# Usage: install.sh [--dry-run] [--destdir DIR] [--no-init-db] [--no-start] [--user NAME] [PACKAGE]
#   PACKAGE       the .tar.gz or its unpacked directory (default: the package this script was unpacked with)
#   --dry-run     print every step, change nothing
#   --destdir DIR stage the tree under DIR (packaging, tests): no user, no chown unless run as root with the user
#                 present, no systemctl; init-db runs the installed binary directly in DIR/opt/moltbot unless
#                 --no-init-db
#   --no-start    install, migrate and enable, but do not (re)start moltbot.service
set -euo pipefail
prefix=/opt/moltbot
user=moltbot
destdir=""
dry=0
init_db=1
start=1
pkg=""
while (($#)); do
  case $1 in
    --dry-run) dry=1; shift ;;
    --destdir) destdir=$(realpath -m "$2"); shift 2 ;;
    --destdir=*) destdir=$(realpath -m "${1#*=}"); shift ;;
    --user) user=$2; shift 2 ;;
    --no-init-db) init_db=0; shift ;;
    --no-start) start=0; shift ;;
    -h|--help) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
    *) pkg=$1; shift ;;
  esac
done
root="${destdir}"           # every path below is "$root$prefix/…"
here=$(cd "$(dirname "$0")" && pwd)
[[ -n "$pkg" ]] || pkg=$(dirname "$here")   # install.sh ships in PACKAGE/systemd/

say() { echo "==> $*"; }
run() { if ((dry)); then echo "  + $*"; else "$@"; fi; }
die() { echo "install.sh: $*" >&2; exit 1; }

if [[ -z "$destdir" ]] && ((!dry)); then
  ((EUID == 0)) || die "run as root (or --destdir DIR / --dry-run)"
  command -v systemctl >/dev/null || die "systemctl not found: this installs a systemd service"
fi
# Ownership: always on a real install; under --destdir only when root and the user exists.
chown_ok=0
if [[ -z "$destdir" ]]; then chown_ok=1
elif ((EUID == 0)) && getent passwd "$user" >/dev/null; then chown_ok=1; fi
own() { if ((chown_ok)); then run chown "$@"; elif ((dry)); then echo "  (skip chown $*)"; fi; }

# --- the package --------------------------------------------------------------------------------------------
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if [[ -f "$pkg" ]]; then
  if [[ -f "$pkg.sha256" ]]; then
    (cd "$(dirname "$pkg")" && sha256sum -c --quiet "$(basename "$pkg").sha256") || die "$pkg does not match $pkg.sha256"
  fi
  tar -C "$tmp" -xzf "$pkg"
  pkg=$(ls -d "$tmp"/moltbot-*/ 2>/dev/null | head -1)
  [[ -n "$pkg" ]] || die "no moltbot-*/ directory in the tarball"
fi
pkg=${pkg%/}
[[ -x "$pkg/moltbot" && -f "$pkg/systemd/moltbot.service" ]] || die "$pkg is not a moltbot release package"
if [[ -f "$pkg/SHA256SUMS" ]]; then
  (cd "$pkg" && sha256sum -c --quiet SHA256SUMS) || die "$pkg: files do not match SHA256SUMS"
fi
version=$("$pkg/moltbot" --version 2>/dev/null | awk '{print $2}') || true
[[ -n "$version" ]] || die "$pkg/moltbot does not run here (--version failed): wrong architecture or glibc?"
say "moltbot $version from $pkg → $root$prefix"

# --- user ---------------------------------------------------------------------------------------------------
if [[ -z "$destdir" ]]; then
  if getent passwd "$user" >/dev/null; then say "user $user exists"
  else
    nologin=$(command -v nologin || echo /usr/sbin/nologin)
    say "creating system user $user"
    run useradd --system --user-group --home-dir "$prefix" --no-create-home --shell "$nologin" \
      --comment "moltbot service" "$user"
  fi
else say "--destdir: no system user (would be: useradd --system --user-group $user)"; fi

# --- tree ---------------------------------------------------------------------------------------------------
P="$root$prefix"
run install -d -m 0755 "$P" "$P/releases" "$P/share"
own root:root "$P" "$P/releases" "$P/share"
for d in data models; do
  run install -d -m 0750 "$P/$d"
  own "$user:$user" "$P/$d"
done

# The release: copied beside the running one, then bin/ switched with one rename.
rel="$P/releases/$version"
say "release $rel"
run rm -rf "$rel.new"
run mkdir -p "$rel.new"
for f in "$pkg"/moltbot "$pkg"/lib*.so* "$pkg"/backends; do
  [[ -e "$f" ]] && run cp -a "$f" "$rel.new/"
done
own -R root:root "$rel.new"
run chmod -R u=rwX,go=rX "$rel.new"
run chmod 0755 "$rel.new/moltbot"
run rm -rf "$rel"
run mv "$rel.new" "$rel"
run ln -sfn "releases/$version" "$P/bin.new"
run mv -T "$P/bin.new" "$P/bin"

# Reference files.
for f in README.md LICENSE moltbot.example.toml; do
  [[ -f "$pkg/$f" ]] && run install -m 0644 "$pkg/$f" "$P/share/$f"
done
run rm -rf "$P/share/systemd"
run cp -r "$pkg/systemd" "$P/share/systemd"
run chmod -R u=rwX,go=rX "$P/share/systemd"

# Configuration and secrets: created once, never overwritten; modes fixed on every run.
if [[ -e "$P/moltbot.toml" ]]; then say "keeping $P/moltbot.toml"
else
  say "writing $P/moltbot.toml (every key: share/moltbot.example.toml)"
  run install -m 0640 "$pkg/systemd/moltbot.toml" "$P/moltbot.toml"
fi
run chmod 0640 "$P/moltbot.toml"
own "root:$user" "$P/moltbot.toml"
if [[ -e "$P/.env" ]]; then say "keeping $P/.env"
else
  say "writing $P/.env (from moltbot.env.template, new JWT secret)"
  secret=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
  sed "s/@JWT_SECRET@/$secret/" "$pkg/systemd/moltbot.env.template" >"$tmp/env"
  run install -m 0600 "$tmp/env" "$P/.env"
fi
run chmod 0600 "$P/.env"
own "$user:$user" "$P/.env"

# Units, with the prefix and user of this install.
run install -d -m 0755 "$root/etc/systemd/system"
for unit in "$pkg"/systemd/*.service; do
  name=$(basename "$unit")
  sed -e "s#/opt/moltbot#$prefix#g" -e "s#^User=moltbot\$#User=$user#" -e "s#^Group=moltbot\$#Group=$user#" \
    "$unit" >"$tmp/$name"
  run install -m 0644 "$tmp/$name" "$root/etc/systemd/system/$name"
done

# --- database and service -----------------------------------------------------------------------------------
if [[ -n "$destdir" ]]; then
  if ((init_db)); then
    say "init-db (the installed binary, in $P)"
    if ((dry)); then echo "  + (cd $P && bin/moltbot init-db --config $P/moltbot.toml)"
    else (cd "$P" && bin/moltbot init-db --config "$P/moltbot.toml"); fi
  fi
  say "--destdir: not running systemctl daemon-reload / enable / restart"
  exit 0
fi
run systemctl daemon-reload
if ((init_db)); then
  say "migrations: systemctl restart moltbot-init-db.service"
  run systemctl restart moltbot-init-db.service ||
    die "init-db failed: journalctl -u moltbot-init-db -n 50 (and check $P/.env, $P/moltbot.toml)"
fi
run systemctl enable moltbot-init-db.service moltbot.service
if ((start)); then
  say "systemctl restart moltbot.service"
  run systemctl restart moltbot.service
  if ((!dry)); then
    sleep 2
    systemctl is-active --quiet moltbot.service || die "moltbot did not stay up: journalctl -u moltbot -n 50"
  fi
fi
[[ -f "$P/data/admin-key.txt" ]] && say "first admin key: $P/data/admin-key.txt (mode 0600; move it somewhere safe)"
say "done: moltbot $version; logs: journalctl -u moltbot -f; checks: cd $P && sudo -u $user bin/moltbot doctor"
