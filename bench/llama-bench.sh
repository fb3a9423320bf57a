#!/usr/bin/env bash
# Build llama.cpp's own llama-bench against the SAME llama.cpp library moltbot links (the one the
# llama-cpp-sys-2 crate vendors and builds): the crate ships no tools, so tools/llama-bench/llama-bench.cpp
# comes unchanged from the full llama.cpp tree that the llama-cpp-python sdist on PyPI vendors. Nothing
# fetched is committed: it all lives under target/llama-bench/.
#
# Usage: bench/llama-bench.sh   → prints the path of the llama-bench binary
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=target/llama-bench
SDIST_VERSION=${LLAMA_CPP_PYTHON_VERSION:-0.3.36}
mkdir -p "$OUT"
if [ -x "$OUT/llama-bench" ]; then echo "$OUT/llama-bench"; exit 0; fi

# The crate's vendored tree and the static libraries cargo built from it (any profile that has them).
SYS=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/llama-cpp-sys-2-0.1.161/llama.cpp | head -1)
LIBDIR=$(dirname "$(ls -t target/*/build/llama-cpp-sys-2-*/out/lib/libllama.a | head -1)")  # newest build
BUILD=$(dirname "$LIBDIR")/build
[ -d "$SYS" ] && [ -f "$LIBDIR/libllama.a" ] || { echo "build moltbot first (cargo build -p moltbot)" >&2; exit 1; }

if [ ! -f "$OUT/llama-bench.cpp" ]; then
  pip download --quiet --no-deps --no-binary :all: "llama-cpp-python==$SDIST_VERSION" -d "$OUT/dl" >&2
  tar -xzf "$OUT/dl/llama_cpp_python-$SDIST_VERSION.tar.gz" -C "$OUT/dl" \
    "llama_cpp_python-$SDIST_VERSION/vendor/llama.cpp/tools/llama-bench"
  cp "$OUT/dl/llama_cpp_python-$SDIST_VERSION/vendor/llama.cpp/tools/llama-bench/"*.cpp "$OUT/"
fi
echo "library: llama.cpp as vendored by llama-cpp-sys-2 0.1.161 ($LIBDIR); llama-bench sources: llama-cpp-python $SDIST_VERSION" >&2
# Same flags ggml-cpu was built with (the crate default: AVX/AVX2/FMA/F16C/BMI2, no -march=native).
g++ -O3 -DNDEBUG -std=c++17 -fopenmp -I"$SYS/include" -I"$SYS/ggml/include" -I"$SYS/common" -I"$BUILD/common" \
  "$OUT/llama-bench.cpp" "$OUT/main.cpp" -o "$OUT/llama-bench" \
  "$BUILD/common/libllama-common.a" "$BUILD/common/libllama-common-base.a" \
  "$BUILD/vendor/cpp-httplib/libcpp-httplib.a" "$BUILD/vendor/hash/libvendor-hash.a" \
  "$LIBDIR/libllama.a" "$LIBDIR/libggml.a" "$LIBDIR/libggml-cpu.a" "$LIBDIR/libggml-base.a" \
  -lssl -lcrypto -lpthread -ldl -lgomp >&2
echo "$OUT/llama-bench"
