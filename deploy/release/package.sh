#!/usr/bin/env bash
# Assemble the portable release package from `cargo build --release -p moltbot --features portable`:
#   moltbot                      the binary (rpath $ORIGIN: finds the libraries beside it)
#   libllama.so libggml*.so      llama.cpp, shared
#   backends/libggml-cpu-*.so    one CPU backend per x86-64 level, chosen at startup (engine.cpu_variant)
# Usage: deploy/release/package.sh [OUT_DIR]   (default dist/moltbot-VERSION-linux-x86_64, plus a .tar.gz)
set -euo pipefail
cd "$(dirname "$0")/../.."
release="${CARGO_TARGET_DIR:-target}/release"
bin="$release/moltbot"
[[ -x "$bin" ]] || { echo "no $bin: run 'make dist' (cargo build --release -p moltbot --features portable)" >&2; exit 1; }

# The newest llama-cpp-sys-2 build of this profile that produced CPU backend modules.
backends=$(ls -dt "$release"/build/llama-cpp-sys-2-*/out/backends 2>/dev/null | while read -r d; do
  compgen -G "$d/libggml-cpu-*.so" >/dev/null && { echo "$d"; break; }; done)
[[ -n "$backends" ]] || { echo "no libggml-cpu-*.so under $release/build: was the binary built with --features portable?" >&2; exit 1; }
libs="$release:$(dirname "$backends")/lib:$(dirname "$backends")/lib64"
version=$(LD_LIBRARY_PATH="$libs" "$bin" --version | awk '{print $2}')
out="${1:-dist/moltbot-${version}-linux-x86_64}"

rm -rf "$out"
mkdir -p "$out/backends"
cp "$bin" "$out/"
# Every llama.cpp library the binary links (by soname), from where the build left them.
LD_LIBRARY_PATH="$libs" ldd "$bin" | awk '/lib(llama|ggml|mtmd)[^ ]*\.so/ {print $1, $3}' | while read -r name path; do
  [[ -f "$path" ]] || { echo "cannot find $name (ldd: $path)" >&2; exit 1; }
  cp -L "$path" "$out/$name"
done
cp "$backends"/libggml-cpu-*.so "$out/backends/"
strip --strip-unneeded "$out"/*.so "$out"/backends/*.so 2>/dev/null || true
tar -C "$(dirname "$out")" -czf "$out.tar.gz" "$(basename "$out")"
echo "$out"
du -sh "$out" "$out.tar.gz" | sed 's/^/  /'
