#!/usr/bin/env bash
# Installs what sluice needs on a fresh Debian 12 machine, skipping whatever is already there:
# Debian packages for the build, a Python venv (.venv) with the test-only PyPI packages, and
# the default model. Safe to run again; quick when nothing is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

# g++, cmake: XGrammar (scripts/build-xgrammar.sh, structured output)
# chromium: tests/api/test_browser_cors.py drives it headless to check CORS from a real browser;
# chromium-driver + selenium: tests/api/test_web_ui.py drives the chat page with them.
# libjs-marked: the chat page's markdown renderer, built into the binary (Makefile, WEB_ASSETS);
# libyaml-dev: --config files (config/config_file.c).
# clang with libFuzzer (libclang-rt-dev, only a Recommends of clang) and OpenMP (libomp-dev, the
# build's -fopenmp) builds the fuzz harnesses of `make fuzz` (tests/fuzz/).
# jsonschema, langchain-*, openai-agents: the structured-output and tool tests validate outputs
# and drive LangChain and the OpenAI Agents SDK. openai-agents 0.3.3 is the last on openai 1.x
# (it needs >=1.107.1; 0.4 moves to openai 2), 1.109.1 is openai 1.x's last, and langchain-openai
# 0.3.35, the last of the line on langchain-core 0.3, takes it.
DEB_PKGS=(gcc g++ cmake make pkg-config libmicrohttpd-dev libcjson-dev libpcre2-dev libyaml-dev libjs-marked
          python3-venv python3-pip unzip curl wrk chromium chromium-driver clang libclang-rt-dev libomp-dev)
PY_PKGS=(pytest==8.3.3 openai==1.109.1 httpx==0.27.2 jinja2==3.1.4 requests==2.32.3 numpy==2.4.6 gguf==0.17.1
         selenium==4.27.1 jsonschema==4.26.0 langchain-core==0.3.86 langchain-openai==0.3.35 openai-agents==0.3.3)

missing=()
for p in "${DEB_PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing Debian packages: ${missing[*]}"
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# Test-only Python packages live in .venv so the system Python stays untouched.
stamp=.venv/.sluice-$(printf '%s\n' "${PY_PKGS[@]}" | md5sum | cut -c1-12)
if [ ! -f "$stamp" ]; then
    echo "setup: creating .venv with ${PY_PKGS[*]}"
    python3 -m venv .venv
    .venv/bin/pip install -q --disable-pip-version-check "${PY_PKGS[@]}"
    touch "$stamp"
fi

bash scripts/fetch-model.sh
