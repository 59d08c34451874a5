#!/usr/bin/env bash
# Installs everything rlhf needs, idempotently, then builds target/release/rlhf:
#   .venv/  PyTorch 2.9.0 (the LibTorch that tch 0.22 links against) and the pinned
#           packages the tests compare with (transformers, numpy).
# Honours LIBTORCH: set it to link against your own LibTorch 2.9.0 instead of the venv's.
set -euo pipefail
cd "$(dirname "$0")/.."

# The versions the tests are run against. torch must stay 2.9.0 (tch 0.22 checks it).
PINS=(torch==2.9.0 transformers==5.23.0 numpy==2.4.6 safetensors==0.8.0 tokenizers==0.23.3)
PYTHON=${PYTHON:-python3}

say() { printf 'setup: %s\n' "$*"; }

if [ ! -x .venv/bin/python ]; then
    say "creating .venv with $($PYTHON --version)"
    "$PYTHON" -m venv .venv
fi

if .venv/bin/python - "${PINS[@]}" <<'PY' 2>/dev/null
import sys
from importlib.metadata import version
for pin in sys.argv[1:]:
    name, wanted = pin.split("==")
    if version(name).split("+")[0] != wanted:
        sys.exit(1)
PY
then
    say ".venv has ${PINS[*]}"
else
    say "installing ${PINS[*]} into .venv (first time: ~2 min, ~7 GB with CUDA libraries)"
    .venv/bin/python -m pip install --quiet --disable-pip-version-check "${PINS[@]}"
fi

source scripts/env.sh
if [ -n "${LIBTORCH:-}" ]; then
    say "linking against LIBTORCH=$LIBTORCH"
fi
say "building target/release/rlhf (first time: ~10 min on 2 cores)"
cargo build --release --quiet
say "ready: target/release/rlhf"
