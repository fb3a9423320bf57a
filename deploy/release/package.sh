#!/usr/bin/env bash
# Assemble the release package from a release build (`make dist`: `--features portable`; `make release-compat`:
# the same, linked against glibc 2.28 by deploy/release/build-compat.sh):
#   moltbot                      the binary (rpath $ORIGIN: finds the libraries beside it)
#   libllama.so libggml*.so      llama.cpp, shared (portable builds)
#   backends/libggml-cpu-*.so    one CPU backend per x86-64 level, chosen at startup (engine.cpu_variant)
#   README.md LICENSE moltbot.example.toml
#   systemd/                     the /opt/moltbot install (deploy/systemd/): units, drop-ins/, .env template,
#                                moltbot.toml starting point, install.sh
#   SHA256SUMS                   every file of the package
# A build without `portable` (llama.cpp linked in statically) is packaged as the binary alone plus the files above.
# The tarball is reproducible (sorted, owner 0, mtime of the last commit, gzip -n) and gets a .sha256 beside it.
#
# Usage: deploy/release/package.sh [OUT_DIR]   (default dist/moltbot-VERSION-linux-x86_64[SUFFIX], plus .tar.gz
#                                               and .tar.gz.sha256)
# Env:   RELEASE_DIR (default ${CARGO_TARGET_DIR:-target}/release): where the build left moltbot
#        SUFFIX      appended to the default name, e.g. -glibc2.28
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD
release="${RELEASE_DIR:-${CARGO_TARGET_DIR:-target}/release}"
bin="$release/moltbot"
[[ -x "$bin" ]] || { echo "no $bin: run 'make dist' (cargo build --release -p moltbot --features portable)" >&2; exit 1; }

# The newest llama-cpp-sys-2 build of this profile that produced CPU backend modules.
backends=$(ls -dt "$release"/build/llama-cpp-sys-2-*/out/backends 2>/dev/null | while read -r d; do
  compgen -G "$d/libggml-cpu-*.so" >/dev/null && { echo "$d"; break; }; done || true)
libs="$release"
[[ -n "$backends" ]] && libs="$libs:$(dirname "$backends")/lib:$(dirname "$backends")/lib64"
# Does the binary load llama.cpp as shared libraries (a portable build)?
portable=0
LD_LIBRARY_PATH="$libs" ldd "$bin" | grep -Eq 'lib(llama|ggml)[^ ]*\.so' && portable=1
if ((portable)) && [[ -z "$backends" ]]; then
  echo "no libggml-cpu-*.so under $release/build: was the binary built with --features portable?" >&2; exit 1
fi
version=$(LD_LIBRARY_PATH="$libs" "$bin" --version | awk '{print $2}')
out="${1:-dist/moltbot-${version}-linux-x86_64${SUFFIX:-}}"

rm -rf "$out" "$out.tar.gz" "$out.tar.gz.sha256"
mkdir -p "$out"
cp "$bin" "$out/"
if ((portable)); then
  mkdir -p "$out/backends"
  # Every llama.cpp library the binary links (by soname), from where the build left them.
  LD_LIBRARY_PATH="$libs" ldd "$bin" | awk '/lib(llama|ggml|mtmd)[^ ]*\.so/ {print $1, $3}' | while read -r name path; do
    [[ -f "$path" ]] || { echo "cannot find $name (ldd: $path)" >&2; exit 1; }
    cp -L "$path" "$out/$name"
  done
  cp "$backends"/libggml-cpu-*.so "$out/backends/"
  strip --strip-unneeded "$out"/lib*.so* "$out"/backends/*.so 2>/dev/null || true
fi

# Documentation, configuration example and the systemd install.
cp "$repo/README.md" "$repo/moltbot.example.toml" "$out/"
if [[ -f "$repo/LICENSE" ]]; then cp "$repo/LICENSE" "$out/"
else echo "moltbot is licensed under $(awk -F'"' '/^license *=/ {print $2; exit}' "$repo/Cargo.toml")." >"$out/LICENSE"; fi
mkdir -p "$out/systemd"
cp "$repo"/deploy/systemd/*.service "$repo"/deploy/systemd/moltbot.env.template "$repo"/deploy/systemd/moltbot.toml \
  "$repo"/deploy/systemd/install.sh "$out/systemd/"
cp -r "$repo"/deploy/systemd/drop-ins "$out/systemd/"
(cd "$out" && find . -type f ! -name SHA256SUMS | LC_ALL=C sort | sed 's|^\./||' | xargs sha256sum >SHA256SUMS)

# Reproducible tarball: same inputs, same bytes.
epoch=${SOURCE_DATE_EPOCH:-$(git -C "$repo" log -1 --format=%ct 2>/dev/null || echo 0)}
tar -C "$(dirname "$out")" --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$epoch" \
  --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime -cf - "$(basename "$out")" | gzip -n -9 >"$out.tar.gz"
(cd "$(dirname "$out")" && sha256sum "$(basename "$out").tar.gz" >"$(basename "$out").tar.gz.sha256")
echo "$out"
du -sh "$out" "$out.tar.gz" | sed 's/^/  /'
