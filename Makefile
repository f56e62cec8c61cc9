# sluice build. `make` builds build/sluice and build/sluice-run (and kernels/cuda/*.cu for
# sm_90 when nvcc is present; CUDA=0 forces CPU-only). `make test` sets up what is missing,
# builds and runs every test; `make test-container` builds and runs the CPU image with podman;
# `make san` runs the suite under ASan + UBSan; `make fuzz` runs the libFuzzer harnesses
# (tests/fuzz/) for FUZZ_TIME seconds each; `make soak` runs the daemon under mixed abusive load
# for SOAK_MINUTES; `make run` starts the server on the default model at 127.0.0.1:8000. Objects
# and dependency files go under $(BUILD).

CC      ?= gcc
BUILD   ?= build
OPT     ?= -O2
ARCH    ?= -march=native
XCFLAGS ?=
CFLAGS  := -std=gnu11 $(OPT) $(ARCH) -g -Wall -Wextra -fopenmp -I. -MMD -MP $(XCFLAGS) \
           -DTEST_DATA_DIR='"$(CURDIR)/tests/data"' \
           -DTEST_MODEL_PATH='"$(CURDIR)/models/SmolLM2-135M-Instruct.Q4_1.gguf"'
# XGrammar (structured output): built from its pinned sdist into a cache outside the repository
# by scripts/build-xgrammar.sh the first time it is missing; engine/sampling/grammar.cc wraps it.
SLUICE_CACHE ?= $(HOME)/.cache/sluice
XGRAMMAR     := $(SLUICE_CACHE)/xgrammar-0.2.8
XGRAMMAR_LIB := $(XGRAMMAR)/lib/libxgrammar.a
CXX      ?= g++
CXXFLAGS := -std=c++17 $(OPT) $(ARCH) -g -Wall -Wextra -I. -isystem $(XGRAMMAR)/include -MMD -MP $(XCFLAGS)
LDLIBS  := $(XCFLAGS) -fopenmp $(XGRAMMAR_LIB) -lstdc++ -lpcre2-8 -lmicrohttpd -lcjson -lyaml -lpthread -lm

MODEL   ?= models/SmolLM2-135M-Instruct.Q4_1.gguf
comma   := ,

# ---- sources
LIB_SRC    := $(wildcard common/*.c config/*.c kernels/cpu/*.c scheduler/*.c engine/*.c engine/*/*.c)
LIB_CXX    := $(wildcard engine/*/*.cc)
SERVER_SRC := $(filter-out server/cli_run.c server/main.c,$(wildcard server/*.c))
TEST_SRC   := $(wildcard tests/unit/test_*.c)
TOOL_SRC   := $(wildcard tests/tools/*.c)
BENCH_SRC  := $(wildcard bench/*.c)

LIB_OBJ    := $(LIB_SRC:%.c=$(BUILD)/%.o) $(LIB_CXX:%.cc=$(BUILD)/%.o)
SERVER_OBJ := $(SERVER_SRC:%.c=$(BUILD)/%.o) $(BUILD)/server/web_assets.o
LIB        := $(BUILD)/libsluice.a
SERVER_LIB := $(BUILD)/libsluice_server.a
TESTS      := $(TEST_SRC:tests/unit/%.c=$(BUILD)/tests/%)
TOOLS      := $(TOOL_SRC:tests/tools/%.c=$(BUILD)/tools/%)
BENCHES    := $(BENCH_SRC:bench/%.c=$(BUILD)/bench/%)
BINS       := $(BUILD)/sluice $(BUILD)/sluice-run

# ---- CUDA: compiled for sm_90 when nvcc exists; linked by the GPU backend once it lands
NVCC    := $(shell command -v nvcc 2>/dev/null)
CUDA    ?= $(if $(NVCC),1,0)
CU_SRC  := $(wildcard kernels/cuda/*.cu)
CU_OBJ  := $(CU_SRC:%.cu=$(BUILD)/%.o)
NVFLAGS ?= -O3 -arch=sm_90 -std=c++17 -I. -Xcompiler -Wall,-Wextra
ifeq ($(CUDA),1)
CUDA_LIB := $(if $(CU_OBJ),$(BUILD)/libsluice_cuda.a)
else ifneq ($(wildcard $(BUILD)/cuda-on.stamp),)
# This build directory was built with CUDA=1: its gpu_runner.o calls the CUDA kernels (cuda.mk).
$(shell rm -f $(BUILD)/cuda-on.stamp $(BUILD)/engine/gpu_runner.o)
endif

.PHONY: all setup test test-container unit san fuzz fuzzers soak run bench clean golden
all: $(BINS) $(TESTS) $(TOOLS) $(BENCHES) $(CUDA_LIB)

$(LIB): $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(SERVER_LIB): $(SERVER_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/%.o: %.cc | $(XGRAMMAR_LIB)
	@mkdir -p $(dir $@)
	$(CXX) $(CXXFLAGS) -c $< -o $@

$(XGRAMMAR_LIB):
	@bash scripts/build-xgrammar.sh >/dev/null

$(BUILD)/%.o: %.cu
	@mkdir -p $(dir $@)
	$(NVCC) $(NVFLAGS) -c $< -o $@

# The chat page (server/web.h), built into the binary: web/ and Debian's libjs-marked (the
# markdown renderer, whose licence is served beside it), as URL,CONTENT_TYPE,FILE.
MARKED_JS      ?= /usr/share/javascript/marked/marked.min.js
MARKED_LICENSE ?= /usr/share/doc/libjs-marked/copyright
WEB_ASSETS := /chat,text/html;charset=utf-8,web/chat.html \
              /chat/chat.js,text/javascript;charset=utf-8,web/chat.js \
              /chat/chat.css,text/css;charset=utf-8,web/chat.css \
              /chat/marked.min.js,text/javascript;charset=utf-8,$(MARKED_JS) \
              /chat/marked-LICENSE.txt,text/plain;charset=utf-8,$(MARKED_LICENSE)
$(BUILD)/server/web_assets.c: scripts/embed-web.sh $(foreach a,$(WEB_ASSETS),$(lastword $(subst $(comma), ,$(a))))
	@mkdir -p $(dir $@)
	bash scripts/embed-web.sh $(foreach a,$(WEB_ASSETS),'$(a)') > $@.tmp && mv $@.tmp $@

$(MARKED_JS) $(MARKED_LICENSE):
	@echo "$@ is missing: install Debian's libjs-marked (scripts/setup.sh does)" >&2; exit 1

$(BUILD)/server/web_assets.o: $(BUILD)/server/web_assets.c
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/libsluice_cuda.a: $(CU_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/sluice: $(BUILD)/server/main.o $(SERVER_LIB) $(LIB)
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/sluice-run: $(BUILD)/server/cli_run.o $(LIB)
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/tests/%: $(BUILD)/tests/unit/%.o $(SERVER_LIB) $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

# Small drivers the Python tests call (e.g. the template renderer against jinja2).
$(BUILD)/tools/%: $(BUILD)/tests/tools/%.o $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

# Benchmarks (bench/*.c), built with everything so they stay warning-free; run by `make bench`.
$(BUILD)/bench/%: $(BUILD)/bench/%.o $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

# GPU tests and microbenchmarks (tests/gpu, bench/gpu): their rules live beside the kernels.
ifeq ($(CUDA),1)
-include kernels/cuda/cuda.mk
endif

# ---- set-up (Debian packages, Python test venv, default model); quick when all is there
setup:
	@bash scripts/setup.sh

# ---- tests: every unit binary, then the API tests; the last line is "N passed, N failed"
test: setup
	@$(MAKE) --no-print-directory all
	@BUILD=$(BUILD) bash scripts/run-tests.sh

# docker/Dockerfile built and run with podman (root; scripts/test-container.sh installs podman and
# makes the base image, cached under $SLUICE_CACHE, default ~/.cache/sluice).
test-container: setup
	@bash scripts/test-container.sh

unit: all
	@BUILD=$(BUILD) SKIP_API=1 bash scripts/run-tests.sh

# The same suite under AddressSanitizer + UndefinedBehaviorSanitizer, in its own build dir.
SAN_FLAGS := -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
san: setup
	@$(MAKE) --no-print-directory all BUILD=build-san OPT=-O1 CUDA=0 XCFLAGS="$(SAN_FLAGS)"
	@BUILD=build-san SANITIZED=1 ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 bash scripts/run-tests.sh

# libFuzzer harnesses (tests/fuzz/fuzz_*.c): clang instruments the whole library for coverage
# (fuzzer-no-link) with ASan + UBSan, in its own build dir; scripts/run-fuzz.sh runs each for
# FUZZ_TIME seconds (FUZZ_JOBS at once) and fails on any crash, leak or sanitizer report.
# (CXX=clang++: C++ sources of the library take the same flags, which g++ does not know.)
FUZZ_SRC   := $(wildcard tests/fuzz/fuzz_*.c)
FUZZERS    := $(FUZZ_SRC:tests/fuzz/%.c=$(BUILD)/fuzz/%)
FUZZ_TIME  ?= 60
# (-Wno-pass-failed: clang notes each `omp simd` loop it leaves scalar at -O1; -fno-sanitize=vptr:
# UBSan's C++ vptr check needs its C++ runtime, which the C link of the harnesses leaves out)
FUZZ_FLAGS := -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer \
              -fno-sanitize=vptr -Wno-pass-failed
fuzz: setup
	@$(MAKE) --no-print-directory fuzzers BUILD=build-fuzz CC=clang CXX=clang++ OPT=-O1 CUDA=0 XCFLAGS="$(FUZZ_FLAGS)"
	@BUILD=build-fuzz FUZZ_TIME=$(FUZZ_TIME) bash scripts/run-fuzz.sh

fuzzers: $(FUZZERS)

$(BUILD)/fuzz/%: $(BUILD)/tests/fuzz/%.o $(SERVER_LIB) $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -fsanitize=fuzzer -o $@ $^ $(LDLIBS)

# The soak test (tests/soak/soak.py): the daemon under mixed and abusive traffic for SOAK_MINUTES
# minutes, then KV usage, running requests, RSS and clean exit are checked. SOAK_SAN=1 runs the
# ASan + UBSan daemon of `make san` (build-san/) instead, with short prompts (soak.py --sanitized).
SOAK_MINUTES ?= 10
SOAK_SKIP    ?=
SOAK_SAN     ?= 0
soak: setup
ifeq ($(SOAK_SAN),1)
	@$(MAKE) --no-print-directory build-san/sluice BUILD=build-san OPT=-O1 CUDA=0 XCFLAGS="$(SAN_FLAGS)"
	@SLUICE_BUILD=build-san ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	    .venv/bin/python tests/soak/soak.py --minutes $(SOAK_MINUTES) --sanitized --skip "$(SOAK_SKIP)"
else
	@$(MAKE) --no-print-directory $(BUILD)/sluice
	@SLUICE_BUILD=$(BUILD) .venv/bin/python tests/soak/soak.py --minutes $(SOAK_MINUTES) --skip "$(SOAK_SKIP)"
endif

run: setup
	@$(MAKE) --no-print-directory $(BINS)
	$(BUILD)/sluice --model $(MODEL)

bench: setup
	@$(MAKE) --no-print-directory all
	bash bench/run.sh

golden:
	bash scripts/make-golden.sh

clean:
	rm -rf build build-san build-fuzz

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
