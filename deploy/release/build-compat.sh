#!/usr/bin/env bash
# Build the release binary for old Linux servers: linked against glibc 2.28, so it starts on Ubuntu 20.04+,
# Debian 10+, CentOS/RHEL/Rocky/Alma 8+ (`deploy/release/check-glibc.sh` proves it), then package it
# (`deploy/release/package.sh` → dist/moltbot-VERSION-linux-x86_64-glibc2.28.tar.gz + .sha256).
#
# How: cargo-zigbuild (crates.io) with Zig from PyPI (`ziglang`, in a venv). `zig cc` / `zig c++` are the C/C++
# compilers and the linker for the target `x86_64-unknown-linux-gnu.2.28`; cargo-zigbuild hands them to the
# cc crate (CC_/CXX_<target>) and to cmake (CMAKE_TOOLCHAIN_FILE_<target>), so llama.cpp, built by
# llama-cpp-sys-2 through cmake, is compiled by zig too. Zig links against glibc 2.28 symbol stubs, and it links
# LLVM's libc++ statically instead of the host's libstdc++ (whose newest symbols would need GLIBCXX_3.4.30). The
# build has `--features portable` (llama.cpp's CPU backends as modules for every x86-64 level, picked at startup,
# as `make dist`): with a cmake toolchain file cmake counts the build as cross-compiling, so a non-portable
# llama.cpp would fall back to plain x86-64 (SSE2) kernels. OpenMP ends up off (zig's clang ships no OpenMP
# runtime, so cmake turns GGML_OPENMP off and ggml uses its own thread pool): no libgomp to ship (see the stub below).
# The result imports only libc, libm, libpthread, libdl and ld-linux besides its own libraries.
#
# Usage: deploy/release/build-compat.sh            build, check the GLIBC versions, package
#        deploy/release/build-compat.sh --no-package
# Env:   CARGO_TARGET_DIR (default target/), ZIGLANG_VERSION, ZIGBUILD_VERSION, ZIG_VENV,
#        GLIBC_MAX (default 2.28), FEATURES (default "portable"; CI's `make check-glibc-ci` sets it empty:
#        one baseline CPU backend linked in, ~3× less to compile, the same glibc linkage — not for shipping). Tools: cargo-zigbuild in ~/.cargo/bin, Zig in ~/.cache/moltbot/zig-VERSION/.
set -euo pipefail
cd "$(dirname "$0")/../.."
ZIGLANG_VERSION=${ZIGLANG_VERSION:-0.14.1}
ZIGBUILD_VERSION=${ZIGBUILD_VERSION:-0.24.1}
GLIBC_MAX=${GLIBC_MAX:-2.28}
# Outside the repository on purpose: zig prints its include paths relative to the working directory when they
# lie under it, and cargo-zigbuild hands those paths to bindgen, which runs in another directory
# (llama-cpp-sys-2's bindgen then fails with "'stdbool.h' file not found").
venv=${ZIG_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/moltbot/zig-$ZIGLANG_VERSION}
target=x86_64-unknown-linux-gnu
package=1
[[ "${1:-}" == "--no-package" ]] && package=0
FEATURES=${FEATURES-portable}

# Tools, pinned: cargo-zigbuild from crates.io, Zig from PyPI.
if ! cargo-zigbuild --version 2>/dev/null | grep -qw "$ZIGBUILD_VERSION"; then
  cargo install cargo-zigbuild --locked --version "$ZIGBUILD_VERSION"
fi
[[ -x "$venv/bin/python" ]] || { mkdir -p "$(dirname "$venv")"; python3 -m venv "$venv"; }
if [[ "$("$venv/bin/python" -m ziglang version 2>/dev/null)" != "$ZIGLANG_VERSION" ]]; then
  "$venv/bin/pip" install --quiet --disable-pip-version-check "ziglang==$ZIGLANG_VERSION"
fi
# cargo-zigbuild runs `python3 -m ziglang` when no `zig` is on PATH: the venv's python3 first.
export PATH="$venv/bin:$PATH"
echo "zig $(python3 -m ziglang version), $(cargo-zigbuild --version)"
# zig cc turns -mavx512f into its own CPU feature set without LLVM's `evex512` (which clang implies), so the
# AVX-512 CPU backends (skylakex … zen4, sapphirerapids) fail: "'_mm512_loadu_ps' requires target feature 'evex512'".
# -mevex512 alone enables no instruction (it only qualifies AVX-512, which each variant turns on itself).
export CFLAGS_x86_64_unknown_linux_gnu="${CFLAGS_x86_64_unknown_linux_gnu:+$CFLAGS_x86_64_unknown_linux_gnu }-mevex512"
export CXXFLAGS_x86_64_unknown_linux_gnu="${CXXFLAGS_x86_64_unknown_linux_gnu:+$CXXFLAGS_x86_64_unknown_linux_gnu }-mevex512"

release="${CARGO_TARGET_DIR:-target}/$target/release"
# llama-cpp-2's default `openmp` feature makes llama-cpp-sys-2 link `-lgomp` unconditionally, but cmake finds no
# OpenMP with zig's clang (GGML_OPENMP_ENABLED=OFF: ggml uses its own thread pool) and nothing references libgomp.
# An empty stub satisfies the link; --as-needed leaves it out of the binary (check-glibc lists the NEEDED libraries).
stubs="${CARGO_TARGET_DIR:-target}/zig-stubs"
mkdir -p "$stubs"
: >"$stubs/empty.c"
python3 -m ziglang cc -target "x86_64-linux-gnu.$GLIBC_MAX" -shared -o "$stubs/libgomp.so" "$stubs/empty.c"

start=$SECONDS
# `rustc … -- -L` passes the stub directory to the final link only (dependencies keep their fingerprints).
cargo-zigbuild rustc --release -p moltbot --bin moltbot ${FEATURES:+--features "$FEATURES"} --target "$target.$GLIBC_MAX" \
  -- -L "native=$(realpath "$stubs")"
echo "build: $((SECONDS - start)) s"
if objdump -p "$release/moltbot" | grep -q 'NEEDED.*libgomp'; then echo "moltbot links libgomp: the stub leaked" >&2; exit 1; fi
if ((package)); then
  packaged=$(RELEASE_DIR="$release" SUFFIX="-glibc$GLIBC_MAX" deploy/release/package.sh)
  echo "$packaged"
  out=$(head -1 <<<"$packaged")
  deploy/release/check-glibc.sh --max "$GLIBC_MAX" "$out"
  ls -l "$out.tar.gz" "$out.tar.gz.sha256"
else
  # The binary and the llama.cpp libraries the build produced.
  out_dir=$(ls -dt "$release"/build/llama-cpp-sys-2-*/out 2>/dev/null | head -1)
  deploy/release/check-glibc.sh --max "$GLIBC_MAX" "$release/moltbot" ${out_dir:+$(find "$out_dir" -name '*.so*' -type f)}
  # It runs here too (the check proves the linkage; this proves the binary is whole).
  "$release/moltbot" --version
fi
