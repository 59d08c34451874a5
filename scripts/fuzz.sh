#!/usr/bin/env bash
# Fuzzes what rlhf reads from users and model files (JSONL rows of every stage, chat templates,
# configs with --set overrides, safetensors and GGUF files) with cargo fuzz: SECONDS per target
# (default 30), two targets at a time, starting from the committed seeds in fuzz/corpus/.
# A crash fails the run and leaves its input in fuzz/artifacts/TARGET/; replay it with
# `cd fuzz && cargo +nightly fuzz run -s none TARGET artifacts/TARGET/crash-…`.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-30}"
source scripts/env.sh
if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "fuzz: skipped, no nightly toolchain (rustup toolchain install nightly)"
    exit 0
fi
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --quiet
# The targets link LibTorch through the rlhf library, without the binary's baked-in RUNPATH.
LD_LIBRARY_PATH="$(python -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export LD_LIBRARY_PATH seconds
cd fuzz
echo "fuzz: building the targets"
cargo +nightly fuzz build -s none 2>&1 | grep -v "^ *Compiling" || true
work=../target/fuzz
mkdir -p "$work"
export work

fuzz_one() {
    mkdir -p "$work/corpus/$1"
    # New inputs go to target/fuzz/corpus; the committed seeds are only read.
    cargo +nightly fuzz run -s none "$1" "$work/corpus/$1" "corpus/$1" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=4096 >"$work/$1.log" 2>&1
}
export -f fuzz_one
targets=(jsonl_rows chat_template config_overrides safetensors gguf)
failed=0
printf '%s\n' "${targets[@]}" | xargs -P 2 -I{} bash -c 'fuzz_one {}' || failed=1
for target in "${targets[@]}"; do
    log="$work/$target.log"
    if grep -q "Done [0-9]* runs" "$log"; then
        runs=$(grep -o "Done [0-9]* runs in [0-9]* second" "$log" | awk '{print $2 " executions in " $5 " s"}')
        echo "fuzz: $target: $runs, no crash"
    else
        echo "fuzz: $target FAILED:"
        grep -A30 -m1 "panicked\|ERROR: libFuzzer\|error" "$log" | head -40
        failed=1
    fi
done
exit "$failed"
