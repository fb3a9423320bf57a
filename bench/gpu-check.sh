#!/usr/bin/env bash
# GPU check for the local engine: build moltbot with llama.cpp's CUDA backend and measure a random-weight
# model (no download) with every layer on the GPU, then on the CPU only, with the same binary.
#
# Needs: an NVIDIA GPU + driver, the CUDA toolkit (nvcc), cmake, libclang-dev, a Rust toolchain.
# Env: SIZE (synthetic model: tiny|270m|1b|3b|8b; default 1b), WEIGHTS (q8_0), PROMPT (512), GEN (128),
#      THREADS (CPU run; default: all cores), CUDA_ARCH (default 90 = H100/H200; one arch keeps the build short).
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${SIZE:-1b}
WEIGHTS=${WEIGHTS:-q8_0}
PROMPT=${PROMPT:-512}
GEN=${GEN:-128}
THREADS=${THREADS:-$(nproc)}
export CMAKE_CUDA_ARCHITECTURES=${CUDA_ARCH:-90}
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}

nvidia-smi --query-gpu=name,driver_version,memory.total,memory.free --format=csv,noheader || true
nvcc --version | tail -1 || true
# A separate target dir: the CUDA build of llama.cpp must not replace the CPU one in target/.
CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target/cuda} cargo build --release -p moltbot --features cuda
BIN=${CARGO_TARGET_DIR:-target/cuda}/release/moltbot

run() { "$BIN" bench-engine --synthetic "$SIZE" --weights "$WEIGHTS" --prompt "$PROMPT" --gen "$GEN" --streams 4 --json "$@"; }
echo "== GPU: all layers offloaded"
GPU=$(run --gpu-layers 999 --threads "$THREADS")
echo "$GPU"
echo "== CPU only ($THREADS threads)"
CPU=$(run --gpu-layers 0 --threads "$THREADS")
echo "$CPU"
python3 - "$GPU" "$CPU" <<'PY'
import json, sys
g, c = (json.loads(a) for a in sys.argv[1:3])
print(f"synthetic {g['model']}: gpu_offload={g['gpu_offload']} cuda_build={g['cuda_build']}")
for k, name in [("prompt_tps", "prompt"), ("gen_tps", "generation"), ("aggregate_n_tps", f"{g['streams']}-stream aggregate")]:
    print(f"{name:>24}: GPU {g[k]:10.1f} tok/s   CPU {c[k]:10.1f} tok/s   ({g[k] / c[k]:.1f}x)")
PY
