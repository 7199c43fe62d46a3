#!/usr/bin/env bash
# Set up (or update) ./.venv with progan and its test tools. Idempotent: quick when already done.
# PyTorch is pinned to the CPU build on this machine's disk (torch==2.13.0); on a GPU machine
# install the CUDA build of your choice first (https://pytorch.org) and skip that line.
set -euo pipefail
cd "$(dirname "$0")"
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -c "import torch" 2>/dev/null || .venv/bin/pip install -q torch==2.13.0
.venv/bin/pip install -q -e ".[dev]"
