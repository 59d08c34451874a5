#!/usr/bin/env bash
# The long reliability run: 50 SIGKILLs per training stage at random moments (tests/crash.rs;
# RLHF_KILLS, RLHF_KILL_SEED), 5 minutes of fuzzing per target (FUZZ_SECONDS), and our GGUF
# exports loaded and run in llama.cpp itself (tests/llama_cpp.rs). About 25 minutes on 2 cores,
# plus about 20 the first time, to compile llama.cpp (scripts/llama_cpp_venv.sh; kept in
# target/llama-cpp). scripts/test.sh runs the short versions, and not llama.cpp.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
kills="${RLHF_KILLS:-50}"
seed="${RLHF_KILL_SEED:-$RANDOM}"
echo "stress: $kills SIGKILLs per stage, seed $seed"
log=target/stress-crash.log
mkdir -p target
if ! RLHF_KILLS="$kills" RLHF_KILL_SEED="$seed" cargo test --release --test crash -- \
    --test-threads 2 --nocapture >"$log" 2>&1; then
    grep -v "^step\|^ *at \|^   " "$log" | tail -40
    echo "stress: the kill test failed (seed $seed); the whole log is in $log"
    exit 1
fi
grep "SIGKILLs" "$log"
scripts/fuzz.sh "${FUZZ_SECONDS:-300}"
echo "stress: GGUF exports in llama.cpp itself"
if scripts/llama_cpp_venv.sh; then
    log=target/stress-llama-cpp.log
    if ! cargo test --release --test llama_cpp -- --test-threads 1 --nocapture >"$log" 2>&1; then
        grep -v "^ *at \|^ *[0-9]*: " "$log" | tail -40
        echo "stress: llama.cpp disagrees with rlhf; the whole log is in $log"
        exit 1
    fi
    grep -E "^test |tokens/s|byte for byte" "$log"
else
    echo "stress: llama.cpp could not be built here: tests/llama_cpp.rs skipped"
fi
