#!/usr/bin/env bash
# The whole check: set-up, formatting, lints, reference fixtures, every test, fuzzing.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
source scripts/env.sh

echo "test: cargo fmt --check"
cargo fmt --all -- --check
echo "test: cargo clippy"
cargo clippy --release --all-targets --quiet -- -D warnings
echo "test: reference fixtures from transformers"
python scripts/fixtures/make_fixtures.py --out target/fixtures --seed "${RLHF_FIXTURE_SEED:-0}"
python scripts/fixtures/make_gguf.py --out target/fixtures/gguf --tokenizer target/fixtures/tokenizer \
    --seed "${RLHF_FIXTURE_SEED:-0}"
echo "test: cargo test"
cargo test --release -- --test-threads 2
echo "test: fuzzing, 30 s a target"
scripts/fuzz.sh 30
