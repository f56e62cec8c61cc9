#!/usr/bin/env bash
# gpu-check.sh: the GPU backend's whole check (DESIGN.md §10, issues 6 and 7), one device call:
#   kernels  build for sm_90, the kernels' resource report (registers, spills, stack) and
#            tensor-core instructions, tests/gpu against the CPU twins, the microbenchmarks;
#   engine   the daemon built for sm_90, tests/gpu/test_gpu_engine.c (the whole forward on the
#            GPU against the CPU backend), bench/gpu/bench_gpu_engine.c (decode step time, graphs
#            and eager, Llama-3.1-8B shape with dummy weights);
#   serve    that 8B shape served over HTTP: exec -> ready, streaming chat, batch invariance of
#            greedy requests, then bench/serve.py at concurrency 1, 16, 64, 256 with 1000-token
#            random prompts and 1000 outputs (batch-1 TPOT and output throughput);
# then a summary table last (the device tool returns the end of the output). Full logs go to
# $OUT when the device tool runs it (the folder that comes back), else to $BUILD/gpu-check.
#
#   bash scripts/gpu-check.sh               all stages (kernels, engine, serve)
#   STAGES="engine serve" bash scripts/gpu-check.sh
#   QUICK=1 bash scripts/gpu-check.sh       benchmarks at small sizes (a smoke run)
#   SANITIZE=1 bash scripts/gpu-check.sh    also run the kernel tests under compute-sanitizer
#   bash scripts/gpu-check.sh bundle        (here, not on the device) puts what the device lacks
#                                           into build/gpu-deps: carry it to the device
#
# The kernels stage needs the CUDA toolkit and gcc only (make gpu-check-bins, kernels/cuda/cuda.mk).
# The daemon also needs libmicrohttpd, cJSON and pcre2 (headers and libraries) and the serving
# stage a tokenizer; a device machine without them gets them from build/gpu-deps, made here by
# the bundle mode: the headers, the shared libraries with their own dependencies (glibc and CUDA
# excepted), and tokenizer.gguf (the default model's tokenizer and chat template without its
# weights, 2 MB instead of 98). Run on the device as
#   device run (carry: build/gpu-deps): bash scripts/gpu-check.sh
# Without a GPU every test binary prints SKIP.
set -uo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
DEPS=$BUILD/gpu-deps
MODEL=${MODEL:-models/SmolLM2-135M-Instruct.Q4_1.gguf}

# ---- bundle mode (on the development machine): what the device machine may lack
if [ "${1:-}" = bundle ]; then
    rm -rf "$DEPS" && mkdir -p "$DEPS/include/cjson" "$DEPS/lib"
    cp /usr/include/microhttpd.h /usr/include/pcre2.h "$DEPS/include/"
    cp /usr/include/cjson/cJSON.h "$DEPS/include/cjson/"
    for lib in libmicrohttpd libcjson libpcre2-8; do
        so=$(ldconfig -p | awk -v l="$lib.so." '$1 ~ "^"l {print $NF; exit}')
        [ -n "$so" ] || { echo "$lib not found (scripts/setup.sh installs it)"; exit 1; }
        cp -L "$so" "$DEPS/lib/" && ln -sf "$(basename "$so")" "$DEPS/lib/$lib.so"
        # its own dependencies, glibc's excepted (the device has a C library of its own)
        ldd "$so" | awk '$3 ~ /^\// {print $3}' | grep -vE '/(libc|libm|libpthread|libdl|librt|ld-linux[^/]*)\.so' |
            while read -r dep; do cp -Ln "$dep" "$DEPS/lib/" 2>/dev/null; done
    done
    # the tokenizer and chat template of the default model, without its weights
    py=/opt/refvenv/bin/python3
    [ -x $py ] || { python3 -m venv /opt/refvenv && $py -m pip install -q gguf==0.17.1 numpy; }
    $py - "$MODEL" "$DEPS/tokenizer.gguf" <<'PY' || exit 1
import sys, gguf
r = gguf.GGUFReader(sys.argv[1])
arch = bytes(r.fields["general.architecture"].parts[-1]).decode()
w = gguf.GGUFWriter(sys.argv[2], arch)
for name, f in r.fields.items():
    if not name.startswith("tokenizer."):
        continue
    t = f.types[0]
    if t == gguf.GGUFValueType.ARRAY:
        it = f.types[1]
        vals = [f.parts[i] for i in f.data]
        vals = [bytes(v).decode("utf-8", "surrogateescape") if it == gguf.GGUFValueType.STRING else v.tolist()[0] for v in vals]
        w.add_key_value(name, vals, t, sub_type=it)
    elif t == gguf.GGUFValueType.STRING:
        w.add_key_value(name, bytes(f.parts[-1]).decode(), t)
    else:
        w.add_key_value(name, f.parts[-1].tolist()[0], t)
w.write_header_to_file(); w.write_kv_data_to_file(); w.close()
PY
    du -sh "$DEPS"
    echo "carry $DEPS to the device: device run (carry: [\"$DEPS\"]) bash scripts/gpu-check.sh"
    exit 0
fi

STAGES=${STAGES:-kernels engine serve}
stage() { [[ " $STAGES " == *" $1 "* ]]; }
LOG=${OUT:-$BUILD/gpu-check}
mkdir -p "$LOG"
rows=()
row() { rows+=("$1"); }
summary() {
    echo
    echo "== summary ($(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1))"
    printf '%s\n' "${rows[@]}" | sed 's/ *| */|/g' | column -t -s '|' 2>/dev/null || printf '%s\n' "${rows[@]}"
}
trap summary EXIT

echo "== device"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,clocks.mem \
    --format=csv 2>&1 | tee "$LOG/device.txt" || true
command -v nvcc >/dev/null || { echo "nvcc not found"; exit 1; }
nvcc --version | tail -n 2

if stage kernels; then
echo "== build: make CUDA=1 gpu-check-bins"
if ! make -j"$(nproc)" CUDA=1 BUILD="$BUILD" gpu-check-bins >"$LOG/build.log" 2>&1; then
    tail -n 40 "$LOG/build.log"
    echo "build FAILED (full log: $LOG/build.log)"
    exit 1
fi
n_warn=$(grep -ci 'warning' "$LOG/build.log")
row "build | sm_90, -Wall -Wextra | $n_warn warnings"

echo "== resources (ptxas -v): registers, shared memory, stack, spills"
: >"$LOG/resources.txt"
for f in kernels/cuda/*.cu; do
    echo "-- $f" >>"$LOG/resources.txt"
    nvcc -O3 -arch=sm_90 -std=c++17 -I. -Xptxas -v -c "$f" -o /dev/null 2>&1 |
        grep -E 'Compiling entry|registers|spill|stack' >>"$LOG/resources.txt"
done
spills=$(grep -E 'bytes spill (stores|loads)' "$LOG/resources.txt" | grep -cvE ' 0 bytes spill stores, 0 bytes spill loads')
# The attention kernels must keep everything in registers and shared memory: no stack at all.
# (rope's double sincos has a small frame of its own: CUDA's slow-path argument reduction.)
attn_stack=$(grep -A1 -E 'entry function .*attn_' "$LOG/resources.txt" | grep -E 'bytes stack frame' |
    grep -cv '^ *0 bytes stack frame')
grep -A2 -E 'attn_(decode|prefill)' "$LOG/resources.txt" | grep -E 'entry|registers' | sed 's/ptxas info *: //' | head -n 24
row "resources | kernels with spills / attention kernels with a stack frame | $spills / $attn_stack"
if command -v cuobjdump >/dev/null; then
    cuobjdump -sass "$BUILD/kernels/cuda/attention.o" >"$LOG/attention.sass" 2>&1
    hmma=$(grep -c 'HMMA' "$LOG/attention.sass"); ldsm=$(grep -c 'LDSM' "$LOG/attention.sass")
    ldgsts=$(grep -c 'LDGSTS' "$LOG/attention.sass"); ldl=$(grep -cE '\b(LDL|STL)\b' "$LOG/attention.sass")
    row "attention SASS | HMMA / LDSM / LDGSTS / local LDL+STL | $hmma / $ldsm / $ldgsts / $ldl"
fi

echo "== tests"
for t in "$BUILD"/tests/gpu/test_*; do
    [ -x "$t" ] || continue
    name=$(basename "$t")
    [ "$name" = test_gpu_engine ] && continue # the engine stage's
    GT_VERBOSE=1 timeout 600 "$t" >"$LOG/$name.log" 2>&1
    rc=$?
    grep -E '^(FAIL|  FAIL|SKIP|device)|passed, [0-9]+ failed' "$LOG/$name.log" | head -n 40
    line=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$LOG/$name.log" | tail -n 1)
    row "$name | ${line:-no summary line} | rc $rc"
    if [ "${SANITIZE:-0}" = 1 ] && command -v compute-sanitizer >/dev/null; then
        timeout 900 compute-sanitizer --tool memcheck --leak-check full "$t" >"$LOG/$name.memcheck.log" 2>&1
        mrc=$?
        msum=$(grep -E 'ERROR SUMMARY' "$LOG/$name.memcheck.log" | tail -n 1)
        row "$name memcheck | ${msum:-no summary} | rc $mrc"
    fi
done

echo "== benchmarks${QUICK:+ (quick)}"
for b in "$BUILD"/bench/gpu/*; do
    [ -x "$b" ] || continue
    name=$(basename "$b")
    [ "$name" = bench_gpu_engine ] && continue # the engine stage's
    BENCH_QUICK=${QUICK:-0} timeout 420 "$b" 2>&1 | tee "$LOG/$name.log"
    rc=${PIPESTATUS[0]}
    [ "$rc" -ne 0 ] && row "$name | FAILED | rc $rc"
    while IFS= read -r l; do row "${l#SUMMARY | }"; done < <(grep '^SUMMARY' "$LOG/$name.log")
done
fi

if stage engine || stage serve; then
echo "== build: the daemon and the engine's test for sm_90 (make CUDA=1 gpu-engine-bins)"
# The daemon's Debian libraries: the system's, else the bundle's (headers, and an rpath to its .so files)
XC=""
if [ ! -f /usr/include/microhttpd.h ] || [ ! -f /usr/include/cjson/cJSON.h ] || [ ! -f /usr/include/pcre2.h ]; then
    [ -d "$DEPS/lib" ] || { echo "no libmicrohttpd/cJSON/pcre2 here and no $DEPS (make it with: bash scripts/gpu-check.sh bundle)"; exit 1; }
    XC="-I$PWD/$DEPS/include -L$PWD/$DEPS/lib -Wl,-rpath,$PWD/$DEPS/lib"
fi
if ! make -j"$(nproc)" CUDA=1 BUILD="$BUILD" XCFLAGS="$XC" gpu-engine-bins >"$LOG/build-engine.log" 2>&1; then
    tail -n 40 "$LOG/build-engine.log"
    echo "build FAILED (full log: $LOG/build-engine.log)"
    exit 1
fi
row "build daemon | sm_90, -Wall -Wextra | $(grep -ci 'warning' "$LOG/build-engine.log") warnings"
fi

if stage engine; then
echo "== engine test: the GPU forward against the CPU backend"
timeout 900 "$BUILD/tests/gpu/test_gpu_engine" >"$LOG/test_gpu_engine.log" 2>&1
rc=$?
grep -vE '^(INFO|DEBUG|SUMMARY)' "$LOG/test_gpu_engine.log" | tail -n 40
[ -f "$MODEL" ] || row "default model | not here ($MODEL): its case skipped | tests/gpu/emu runs it on the CPU"
line=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$LOG/test_gpu_engine.log" | tail -n 1)
row "test_gpu_engine | ${line:-no summary line} | rc $rc"
while IFS= read -r l; do row "${l#SUMMARY | }"; done < <(grep '^SUMMARY' "$LOG/test_gpu_engine.log")

echo "== engine benchmark: decode steps, Llama-3.1-8B shape (dummy weights)"
timeout 600 "$BUILD/bench/gpu/bench_gpu_engine" config/models/llama-3.1-8b dummy >"$LOG/bench_gpu_engine.log" 2>&1
rc=$?
grep -E '^SUMMARY|SKIP|FATAL|error' "$LOG/bench_gpu_engine.log" | head -n 30
[ "$rc" -ne 0 ] && row "bench_gpu_engine | FAILED | rc $rc"
while IFS= read -r l; do row "${l#SUMMARY | }"; done < <(grep '^SUMMARY' "$LOG/bench_gpu_engine.log")
fi

if stage serve; then
echo "== serving: Llama-3.1-8B shape, dummy weights, over HTTP"
TOK=$MODEL
[ -f "$TOK" ] || TOK=$DEPS/tokenizer.gguf
PORT=${PORT:-8123}
URL=http://127.0.0.1:$PORT
t0=$(date +%s.%N)
"$BUILD/sluice" --model config/models/llama-3.1-8b --load-format dummy --tokenizer "$TOK" --device cuda \
    --port "$PORT" --max-model-len 4096 --max-num-seqs 256 >"$LOG/sluice.log" 2>&1 &
pid=$!
ready=""
for _ in $(seq 1 3000); do # 300 s
    if python3 -c "import urllib.request,sys; urllib.request.urlopen('$URL/health/ready', timeout=1)" 2>/dev/null; then
        ready=$(python3 -c "print('%.2f' % ($(date +%s.%N) - $t0))"); break
    fi
    kill -0 $pid 2>/dev/null || break
    sleep 0.1
done
grep -E 'GPU|memory plan|  [a-zA-Z ]+ +[0-9.]+ [GM]iB|start-up|ready|error' "$LOG/sluice.log" | head -n 30
if [ -z "$ready" ]; then
    tail -n 20 "$LOG/sluice.log"
    row "serve 8B dummy | did not become ready | see sluice.log"
else
    row "serve 8B dummy | exec -> ready | $ready s"
    python3 bench/gpu/serve_check.py --base-url "$URL" 2>&1 | tee "$LOG/serve_check.log"
    row "serve checks | streaming chat + batch invariance | rc ${PIPESTATUS[0]}"
    while IFS= read -r l; do row "${l#SUMMARY | }"; done < <(grep '^SUMMARY' "$LOG/serve_check.log")
    LEN=1000
    [ "${QUICK:-0}" = 1 ] && LEN=100
    for c in 1 16 64 256; do
        n=$((c == 1 ? 4 : c))
        timeout 900 python3 bench/serve.py --base-url "$URL" --backend openai --tokenizer-gguf "$TOK" \
            --dataset-name random --random-input-len $LEN --random-output-len $LEN --ignore-eos \
            --max-concurrency $c --num-prompts $n --num-warmups 1 >"$LOG/serve_c$c.log" 2>&1
        rc=$?
        thr=$(awk -F: '/^Output token throughput/ {gsub(/ /,"",$2); print $2}' "$LOG/serve_c$c.log")
        tpot=$(awk -F: '/^Mean TPOT/ {gsub(/ /,"",$2); print $2}' "$LOG/serve_c$c.log")
        ttft=$(awk -F: '/^Mean TTFT/ {gsub(/ /,"",$2); print $2}' "$LOG/serve_c$c.log")
        row "serve.py c=$c, ${LEN}/${LEN} random | out ${thr:-?} tok/s, TPOT ${tpot:-?} ms, TTFT ${ttft:-?} ms | rc $rc"
    done
fi
kill $pid 2>/dev/null
wait $pid 2>/dev/null
fi
