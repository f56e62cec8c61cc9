# kernels/cuda/cuda.mk: the CUDA half of the build, included by the Makefile when CUDA=1.
#
#  - The daemon (build/sluice, build/sluice-run), the unit tests, tools and benchmarks link the
#    GPU backend: engine/gpu_runner.c is compiled with SLUICE_CUDA (without it, it only answers
#    "this build has no CUDA support"), and libsluice_cuda.a + cuBLAS + the CUDA runtime follow
#    libsluice.a on every link line. Such a build still runs on a machine without a GPU: the
#    runtime libraries load, kcuda_available() says no, --device auto picks the CPU.
#  - The GPU tests (tests/gpu/test_*.c) and microbenchmarks (bench/gpu/*.c) link the CUDA
#    kernels, the CPU twins they compare against, common/ and the sampler, and nothing that
#    needs the server's Debian libraries (libmicrohttpd, cJSON, pcre2): `make CUDA=1
#    gpu-check-bins` builds on the device machine, which has the CUDA toolkit but not those.
#  - The engine's GPU test (tests/gpu/test_gpu_engine.c) and benchmark (bench/gpu/bench_gpu_engine.c)
#    load models like the daemon, so they link libsluice.a and the daemon's libraries:
#    `make CUDA=1 gpu-engine-bins` (scripts/gpu-check.sh brings those libraries along).
# Binaries go to $(BUILD)/tests/gpu/ and $(BUILD)/bench/gpu/, out of reach of scripts/run-tests.sh
# (CI has no GPU).

CUDA_HOME ?= $(patsubst %/bin/nvcc,%,$(NVCC))
# NCCL (kernels/cuda/comm.cu): nccl.h and libnccl.so ship inside this CUDA install here
# (include/nccl.h, lib64/libnccl.so), so nvcc and the -L below find them.
CUDA_LDLIBS := -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 \
               -lnccl -lcublas -lcudart -lstdc++ -fopenmp -lpthread -lm

# ---- the daemon and everything linked with libsluice.a
# The stamp rebuilds gpu_runner.o when a build directory switches from CUDA=0 to CUDA=1 (the
# Makefile removes both when it switches back).
$(BUILD)/engine/gpu_runner.o: CFLAGS += -DSLUICE_CUDA
$(BUILD)/engine/gpu_runner.o: $(BUILD)/cuda-on.stamp
$(BUILD)/cuda-on.stamp:
	@mkdir -p $(dir $@)
	@touch $@
$(BINS) $(TESTS) $(TOOLS) $(BENCHES): $(BUILD)/libsluice_cuda.a
LDLIBS += $(BUILD)/libsluice_cuda.a $(CUDA_LDLIBS)

# ---- GPU tests and microbenchmarks
GPU_ENGINE_SRC := tests/gpu/test_gpu_engine.c bench/gpu/bench_gpu_engine.c
GPU_HOST_OBJ := $(patsubst %.c,$(BUILD)/%.o,$(wildcard common/*.c kernels/cpu/*.c) engine/sampling/sampler.c)
GPU_TESTS    := $(patsubst tests/gpu/%.c,$(BUILD)/tests/gpu/%,$(filter-out $(GPU_ENGINE_SRC),$(wildcard tests/gpu/test_*.c)))
GPU_BENCHES  := $(patsubst bench/gpu/%.c,$(BUILD)/bench/gpu/%,$(filter-out $(GPU_ENGINE_SRC),$(wildcard bench/gpu/*.c)))
GPU_BINS     += $(GPU_TESTS) $(GPU_BENCHES)
GPU_ENGINE_BINS := $(patsubst %.c,$(BUILD)/%,$(wildcard $(GPU_ENGINE_SRC)))

.PHONY: gpu-check-bins gpu-engine-bins
all: $(GPU_BINS) $(GPU_ENGINE_BINS)
gpu-check-bins: $(GPU_BINS)
gpu-engine-bins: $(BINS) $(GPU_ENGINE_BINS)

# The Makefile's nvcc rule writes no dependency files: rebuild every .cu on a header change.
$(CU_OBJ): $(wildcard kernels/cuda/*.cuh) kernels/cuda/cuda_ops.h kernels/cuda/cuda_engine.h kernels/kernels.h \
           kernels/quant.h common/common.h

$(GPU_TESTS): $(BUILD)/tests/gpu/%: $(BUILD)/tests/gpu/%.o $(GPU_HOST_OBJ) $(BUILD)/libsluice_cuda.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $^ $(CUDA_LDLIBS)

$(GPU_BENCHES): $(BUILD)/bench/gpu/%: $(BUILD)/bench/gpu/%.o $(GPU_HOST_OBJ) $(BUILD)/libsluice_cuda.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $^ $(CUDA_LDLIBS)

$(GPU_ENGINE_BINS): $(BUILD)/%: $(BUILD)/%.o $(LIB) $(BUILD)/libsluice_cuda.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $(filter %.o,$^) $(LIB) $(LDLIBS)
