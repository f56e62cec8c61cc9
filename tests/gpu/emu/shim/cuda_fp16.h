// cuda_fp16.h: the SIMT emulator's stand-in (tests/gpu/emu/shim/emu.h).
#include "emu.h"
