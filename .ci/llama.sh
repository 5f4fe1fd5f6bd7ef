#!/usr/bin/env bash
# A real OpenAI-compatible model server for the endpoint tests: llama.cpp's
# server through PyPI's llama-cpp-python (built from source: a few minutes),
# PyPI's gguf (the tests write a tiny model with it) and the official openai
# client, in a virtual environment under target/. Prints what to eval:
# eval "$(bash .ci/llama.sh)".
set -euo pipefail
cd "$(dirname "$0")/.."
v="$PWD/target/ci-llama"
if ! "$v/bin/python" -c 'import llama_cpp.server, gguf, openai' >/dev/null 2>&1; then
  if ! python3 -m venv "$v" >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q python3-venv >/dev/null 2>&1 || \
      { apt-get update -q >/dev/null && apt-get install -y -q python3-venv >/dev/null; }
    python3 -m venv "$v" >/dev/null
  fi
  if ! command -v cmake >/dev/null 2>&1 && ! "$v/bin/pip" install -q cmake >&2; then
    apt-get install -y -q cmake >/dev/null
  fi
  # portable CPU code (no -march=native), no tests or examples
  CMAKE_ARGS="-DGGML_NATIVE=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF" \
    CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
    "$v/bin/pip" install -q 'llama-cpp-python[server]==0.3.36' 'gguf>=0.17' 'openai>=1.40' numpy >&2
fi
echo "export GIGAFAB_TEST_LLAMA_PYTHON=\"$v/bin/python\""
