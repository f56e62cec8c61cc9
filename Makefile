# sluice build. `make` builds build/sluice and build/sluice-run (and kernels/cuda/*.cu for
# sm_90 when nvcc is present; CUDA=0 forces CPU-only). `make test` sets up what is missing,
# builds and runs every test; `make san` runs the suite under ASan + UBSan; `make run` starts
# the server on the default model at 127.0.0.1:8000. Objects and dependency files go under $(BUILD).

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

.PHONY: all setup test unit san run bench clean golden
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

unit: all
	@BUILD=$(BUILD) SKIP_API=1 bash scripts/run-tests.sh

# The same suite under AddressSanitizer + UndefinedBehaviorSanitizer, in its own build dir.
SAN_FLAGS := -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
san: setup
	@$(MAKE) --no-print-directory all BUILD=build-san OPT=-O1 CUDA=0 XCFLAGS="$(SAN_FLAGS)"
	@BUILD=build-san SANITIZED=1 ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 bash scripts/run-tests.sh

run: setup
	@$(MAKE) --no-print-directory $(BINS)
	$(BUILD)/sluice --model $(MODEL)

bench: setup
	@$(MAKE) --no-print-directory all
	bash bench/run.sh

golden:
	bash scripts/make-golden.sh

clean:
	rm -rf build build-san

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
