#!/usr/bin/env bash
# The benchmark suite: every speed benchmark, rlhf against its PyTorch reference (transformers,
# TRL's PPOTrainer, GRPOTrainer and DPOTrainer), interleaved runs in one go on this machine, with
# the machine's matrix-multiply peak and memory bandwidth; writes bench/results.md and
# bench/results.json (scripts/bench/run.py).
#
#   scripts/bench/run.sh --quick           # the reduced set: at most 10 minutes on 2 cores
#   scripts/bench/run.sh                   # the full suite (small, gpt2-124m, SmolLM2-135M): ~1 hour
#   scripts/bench/run.sh --device cuda     # the same on a GPU
#   scripts/bench/run.sh --only PPO        # the benchmarks whose group or name has "PPO"
#   scripts/bench/run.sh --runs 5          # more interleaved runs a figure (default 3)
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/env.sh
cargo build --release --quiet
scripts/bench/trl_venv.sh
exec .venv/bin/python scripts/bench/run.py "$@"
