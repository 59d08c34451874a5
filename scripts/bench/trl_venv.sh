#!/usr/bin/env bash
# Makes (once) the virtualenv that scripts/bench/trl_*.py run in: target/bench/ppo/venv.
# Silent on success (pip's errors only), so callers can run it every time:
#
#   scripts/bench/trl_venv.sh && target/bench/ppo/venv/bin/python scripts/bench/trl_ppo.py ...
#   # or: source scripts/bench/trl_venv.sh && trl_venv
#
# TRL gets a venv of its own so that its dependencies (accelerate, datasets, pandas, ...) never
# touch the project's .venv, while reusing that venv's torch and transformers, so both sides of
# the benchmark run the very same PyTorch build.
#
# TRL 1.12.0 is pinned: it is the last release with PPOTrainer (trl.experimental.ppo; 1.13.0
# removed it), and it asks only transformers>=4.56.2, so the project's transformers 5.x stays.
TRL_VERSION=1.12.0

trl_venv() {
    local root venv base purelib
    root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
    venv="$root/target/bench/ppo/venv"
    base="$root/.venv/bin/python"
    # The stamp is written only after pip succeeded, so an interrupted install is redone.
    [ "$(cat "$venv/.trl-version" 2>/dev/null)" = "$TRL_VERSION" ] && return 0
    mkdir -p "$(dirname "$venv")"
    "$base" -m venv --system-site-packages "$venv" || return 1
    # --system-site-packages from a venv's python exposes the *interpreter's* site-packages, not
    # .venv's, so .venv's site-packages is added with a .pth file (after this venv's own: what
    # pip installs here wins).
    purelib=$("$base" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])') || return 1
    "$venv/bin/python" -c 'import sys, sysconfig; open(sysconfig.get_paths()["purelib"] + "/project-venv.pth", "w").write(sys.argv[1] + "\n")' "$purelib" || return 1
    # Everything .venv has is pinned as it is: otherwise a newer accelerate pulls a newer torch
    # (with its CUDA wheels, gigabytes) into this venv and the benchmark no longer compares
    # like with like.
    "$base" -m pip freeze --exclude-editable >"$venv/constraints.txt" || return 1
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        -c "$venv/constraints.txt" "trl==$TRL_VERSION" || return 1
    echo "$TRL_VERSION" >"$venv/.trl-version"
}

# Executed rather than sourced: do it now.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    set -euo pipefail
    trl_venv
fi
