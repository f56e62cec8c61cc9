# kernels/cuda/cuda.mk: the GPU tests (tests/gpu/test_*.c) and microbenchmarks (bench/gpu/*.c),
# included by the Makefile when CUDA=1. Each links the CUDA kernels, the CPU twins it compares
# against, common/ and the sampler, and nothing that needs the server's Debian libraries
# (libmicrohttpd, cJSON, pcre2): `make CUDA=1 gpu-check-bins` builds on the device machine, which
# has the CUDA toolkit but not those (scripts/gpu-check.sh). Binaries go to $(BUILD)/tests/gpu/
# and $(BUILD)/bench/gpu/, out of reach of scripts/run-tests.sh (CI has no GPU).

CUDA_HOME ?= $(patsubst %/bin/nvcc,%,$(NVCC))
CUDA_LDLIBS := -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcublas -lcudart -lstdc++ \
               -fopenmp -lpthread -lm

GPU_HOST_OBJ := $(patsubst %.c,$(BUILD)/%.o,$(wildcard common/*.c kernels/cpu/*.c) engine/sampler.c)
GPU_TESTS    := $(patsubst tests/gpu/%.c,$(BUILD)/tests/gpu/%,$(wildcard tests/gpu/test_*.c))
GPU_BENCHES  := $(patsubst bench/gpu/%.c,$(BUILD)/bench/gpu/%,$(wildcard bench/gpu/*.c))
GPU_BINS     += $(GPU_TESTS) $(GPU_BENCHES)

.PHONY: gpu-check-bins
all: $(GPU_BINS)
gpu-check-bins: $(GPU_BINS)

# The Makefile's nvcc rule writes no dependency files: rebuild every .cu on a header change.
$(CU_OBJ): $(wildcard kernels/cuda/*.cuh) kernels/cuda/cuda_ops.h kernels/kernels.h kernels/quant.h \
           common/common.h

$(GPU_TESTS): $(BUILD)/tests/gpu/%: $(BUILD)/tests/gpu/%.o $(GPU_HOST_OBJ) $(BUILD)/libsluice_cuda.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $^ $(CUDA_LDLIBS)

$(GPU_BENCHES): $(BUILD)/bench/gpu/%: $(BUILD)/bench/gpu/%.o $(GPU_HOST_OBJ) $(BUILD)/libsluice_cuda.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $^ $(CUDA_LDLIBS)
