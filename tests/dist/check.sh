#!/usr/bin/env bash
# Test the package we ship (deploy/release/package.sh), unpacked somewhere else, as a user would run it:
#  1. its llama.cpp libraries resolve inside the package, nothing is "not found";
#  2. `engine.cpu_variant = auto` picks a backend and generates;
#  3. every variant forced by config either runs, or is refused with a clear error — never a crash;
#  4. a variant whose probe dies (a real child-process abort, as SIGILL would) is passed over by auto;
#  5. a wrong backends_dir / unknown variant is a clear error;
#  6. `moltbot serve` answers a chat with the embedded default model (when models/ has it).
# Usage: tests/dist/check.sh PACKAGE_DIR_OR_TAR_GZ
set -euo pipefail
pkg=${1:?usage: tests/dist/check.sh PACKAGE_DIR_OR_TAR_GZ}
repo=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d)
trap 'kill ${server:-} 2>/dev/null || true; rm -rf "$work"' EXIT
if [[ -f "$pkg" ]]; then tar -C "$work" -xzf "$pkg"; else cp -a "$pkg" "$work/"; fi
root=$(ls -d "$work"/moltbot-*/ | head -1); root=${root%/}
bin="$root/moltbot"
cd "$work"
fails=0
ok()   { echo "ok   - $*"; }
bad()  { echo "FAIL - $*"; fails=$((fails + 1)); }
bench() { "$bin" bench-engine --synthetic tiny --prompt 32 --gen 8 --streams 2 --threads 1 --json "$@"; }

# 1. libraries
ldd_out=$(env -u LD_LIBRARY_PATH ldd "$bin")
if grep -q "not found" <<<"$ldd_out"; then bad "unresolved libraries: $(grep 'not found' <<<"$ldd_out" | tr -s ' ')"; else ok "every library resolves"; fi
if grep -E 'lib(llama|ggml)' <<<"$ldd_out" | grep -qv "$root/"; then bad "llama.cpp libraries resolve outside the package"; else ok "llama.cpp libraries load from the package"; fi
variants=$(cd "$root/backends" && ls libggml-cpu-*.so | sed 's/^libggml-cpu-//; s/\.so$//')
echo "     variants shipped: $(echo $variants)"

# 2. auto
if out=$(bench 2>"$work/err"); then
  auto=$(python3 -c 'import json,sys; d=json.loads(sys.stdin.read()); assert d["gen_tps"]>0; print(d["cpu_backend"])' <<<"$out")
  ok "auto selected '$auto' and generated"
else bad "auto failed: $(tail -3 "$work/err")"; auto=""; fi

# 3. every variant, forced
for v in $variants; do
  set +e; out=$(MOLTBOT_ENGINE__CPU_VARIANT=$v bench 2>"$work/err"); rc=$?; set -e
  if ((rc == 0)); then
    got=$(python3 -c 'import json,sys; print(json.loads(sys.stdin.read())["cpu_backend"])' <<<"$out")
    [[ "$got" == "$v" ]] && ok "forced $v runs" || bad "forced $v but got $got"
  elif ((rc >= 128)); then bad "forced $v crashed (exit $rc)"
  elif grep -q "cannot run on this machine" "$work/err"; then ok "forced $v refused: $(grep -o "cannot run on this machine.*" "$work/err" | cut -c1-110)"
  else bad "forced $v failed without a clear message: $(tail -2 "$work/err")"; fi
done

# 4. the probe of auto's first choice dies: auto must pass it over
if [[ -n "$auto" ]]; then
  set +e; out=$(MOLTBOT_TEST_CPU_PROBE_CRASH=$auto bench 2>"$work/err"); rc=$?; set -e
  if ((rc == 0)); then
    got=$(python3 -c 'import json,sys; print(json.loads(sys.stdin.read())["cpu_backend"])' <<<"$out")
    [[ "$got" != "$auto" ]] && ok "a crashing $auto probe was passed over for $got" || bad "auto kept $auto though its probe crashed"
  else bad "auto failed when $auto's probe crashed: $(tail -2 "$work/err")"; fi
fi

# 5. configuration errors
set +e; MOLTBOT_ENGINE__CPU_VARIANT=nosuchcpu bench >/dev/null 2>"$work/err"; rc=$?; set -e
((rc != 0 && rc < 128)) && grep -q 'is not in' "$work/err" && ok "unknown variant: $(grep -o 'engine.cpu_variant.*' "$work/err" | head -1 | cut -c1-100)" || bad "unknown variant not reported clearly (exit $rc)"
set +e; MOLTBOT_ENGINE__BACKENDS_DIR=$work/nowhere bench >/dev/null 2>"$work/err"; rc=$?; set -e
((rc != 0 && rc < 128)) && grep -q 'holds no llama.cpp CPU backend' "$work/err" && ok "missing backends dir reported" || bad "missing backends dir not reported clearly (exit $rc)"

# 6. serve the embedded default model and chat
model="$repo/models/gemma-3-270m-q4_k_m.gguf"
if [[ -f "$model" ]]; then
  mkdir -p "$work/run/models" && ln -s "$model" "$work/run/models/"
  cd "$work/run"
  key=mb_Distchk1$(head -c 64 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 43)
  env -u MODEL_ENDPOINT -u API_KEY MOLTBOT_BOOTSTRAP_ADMIN_KEY="$key" "$bin" serve --chat-addr 127.0.0.1:0 \
    --admin-addr 127.0.0.1:0 --ready-file ready.json >serve.log 2>&1 & server=$!
  for _ in $(seq 1 300); do [[ -s ready.json ]] && break; sleep 0.1; done
  if [[ -s ready.json ]]; then
    reply=$(python3 - "$key" <<'PY'
import json, sys, urllib.request
addr = json.load(open("ready.json"))["chat_addr"]
req = urllib.request.Request(f"http://{addr}/v1/chat/completions", method="POST",
    data=json.dumps({"model": "default", "max_tokens": 24,
                     "messages": [{"role": "user", "content": "What is the capital of France?"}]}).encode(),
    headers={"Authorization": f"Bearer {sys.argv[1]}", "Content-Type": "application/json"})
print(json.load(urllib.request.urlopen(req, timeout=120))["choices"][0]["message"]["content"].strip())
PY
)
    [[ -n "$reply" ]] && ok "serve + chat with the default model: \"${reply:0:60}\"" || bad "empty reply"
    grep -o 'CPU backend selected.*' serve.log | head -1 | cut -c1-120 | sed 's/^/     /' || true
  else bad "serve did not become ready: $(tail -5 serve.log)"; fi
  kill $server; wait $server 2>/dev/null || true
else echo "skip - serve + chat: $model missing (make model)"; fi

((fails == 0)) && echo "package OK" || { echo "$fails check(s) failed"; exit 1; }
