#!/usr/bin/env bash
# `make bench-engine`: single-stream prompt/generation tokens/s of moltbot's engine (release binary)
# against (a) a raw decode loop over the same bindings and (b) llama.cpp's own llama-bench built against
# the same library (bench/llama-bench.sh), all with the same thread count; then aggregate generation
# tokens/s at 4 concurrent streams vs 1. Targets: engine ≥ 0.95× the baseline, 4 streams ≥ 1.5× one.
#
# Env: MODEL (default: the embedded Gemma 3 270M), THREADS (default 1 — more threads than idle cores
# collapses llama.cpp's speed; on a quiet machine use every core: THREADS=2 on 2 cores gave 4-vs-1 ×1.67,
# THREADS=1 ×1.4), PROMPT (512), GEN (128), BIN (default target/release/moltbot).
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${MODEL:-models/gemma-3-270m-q4_k_m.gguf}
THREADS=${THREADS:-1}
PROMPT=${PROMPT:-512}
GEN=${GEN:-128}
BIN=${BIN:-target/release/moltbot}
[ -n "${SKIP_BUILD:-}" ] || cargo build --release -p moltbot
echo "== moltbot bench-engine ($BIN, $MODEL, $THREADS threads)"
"$BIN" bench-engine --model "$MODEL" --threads "$THREADS" --prompt "$PROMPT" --gen "$GEN" --streams 4 --baseline
echo "== llama.cpp llama-bench (same library, same threads)"
LB=$(bench/llama-bench.sh)
"$LB" -m "$MODEL" -t "$THREADS" -p "$PROMPT" -n "$GEN" -r 3 -o md
