#!/usr/bin/env bash
# `make bench`: the CPU serving comparison of issue 9 (docs/benchmarks.md). Starts llama.cpp's
# llama-server (built once by scripts/build-llama-server.sh into ~/.cache/sluice) and then
# build/sluice on the default model with the same thread count, runs the same scenarios against
# each with bench/serve.py, and prints both tables and the sluice/peer ratios:
#   random 512 in / 128 out at concurrency 1, 2, 4, 8, 16 (/v1/completions, token-id prompts);
#   a 2,000-token prompt with 1 output token (TTFT);
#   ShareGPT-like lengths at 1, 2 and 4 requests/s (/v1/chat/completions, Poisson arrivals).
# About 20 minutes on 2 quiet cores (10 per server); --quick is a smoke run of a minute or two.
# Other flags pass through to bench/run_serving.py (--servers peer, --scenarios a,b, --threads N,
# --sluice-args "...", --out DIR; see --help). Results: bench/results/<stamp>/summary.md.
# Run it on a quiet machine: both servers are OpenMP builds whose spinning barriers slow them
# 5-20x when other work shares the cores. OMP_WAIT_POLICY=passive (inherited by both) keeps a
# busy machine's numbers usable but costs ~4x in decode on a quiet one (docs/benchmarks.md).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=python3
[ -x .venv/bin/python ] && PY=.venv/bin/python
exec "$PY" bench/run_serving.py "$@"
