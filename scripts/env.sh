# Sourced by the other scripts (and by you, for cargo by hand: `source scripts/env.sh`).
# Puts the project's virtualenv first on PATH and tells torch-sys where LibTorch is: the
# venv's PyTorch, unless you set LIBTORCH to a LibTorch of your own. Keep this the same for
# every cargo call: a change makes torch-sys rebuild, and everything above it with it.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export VIRTUAL_ENV="$ROOT/.venv"
export PATH="$VIRTUAL_ENV/bin:$PATH"
if [ -z "${LIBTORCH:-}" ]; then
    export LIBTORCH_USE_PYTORCH=1
fi
