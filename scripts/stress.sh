#!/usr/bin/env bash
# The long reliability run: 50 SIGKILLs per training stage at random moments (tests/crash.rs;
# RLHF_KILLS, RLHF_KILL_SEED) and 5 minutes of fuzzing per target (FUZZ_SECONDS). About 20
# minutes on 2 cores. scripts/test.sh runs the short versions.
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
