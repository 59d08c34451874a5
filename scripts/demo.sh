#!/usr/bin/env bash
# The whole InstructGPT story on SmolLM2-135M-Instruct, measured by a judge the reward model is
# not: `rlhf demo data` writes a task (questions about common facts with an instruction on the
# answer's form) split into train and held-out prompts; SFT learns from its demonstrations; the
# gold judge ranks K sampled answers per prompt into comparisons; a reward model started from
# the SFT model learns them; PPO optimises the SFT policy against it; DPO learns from the same
# comparisons directly, with no reward model; a moderation classifier screens a scripted chat.
# The result table goes to runs/demo/summary.md, charts to runs/demo/plots, and the HTML report
# to runs/demo/report.html.
#
#   scripts/demo.sh           the real run (about 11 minutes on 2 CPU cores)
#   scripts/demo.sh --quick   the same flow on tiny models from scratch (well under 2 minutes)
#
# RLHF_DEMO_DIR overrides the output directory (re-running starts over); RLHF_DEMO_SEED (0) picks
# another split of the facts into train and held-out.
set -euo pipefail
cd "$(dirname "$0")/.."
QUICK=false
case "${1:-}" in
    --quick) QUICK=true ;;
    "") ;;
    *) echo "usage: scripts/demo.sh [--quick]" >&2; exit 2 ;;
esac
RLHF=${RLHF_BIN:-$PWD/target/release/rlhf}
[ -x "$RLHF" ] || scripts/setup.sh
if $QUICK; then
    OUT=${RLHF_DEMO_DIR:-runs/demo-quick} CONFIGS=configs/demo/quick
else
    OUT=${RLHF_DEMO_DIR:-runs/demo} CONFIGS=configs/demo
    [ -f models/smollm2/config.json ] || { echo "demo: models/smollm2 is missing; run scripts/setup.sh" >&2; exit 1; }
fi
MODERATION_DATA=../shared/data/moderation-1680.train.jsonl
[ -f "$MODERATION_DATA" ] || MODERATION_DATA=data/demo/moderation.jsonl
TEMPERATURE=0.7 MAX_NEW_TOKENS=24
rm -rf "$OUT"
mkdir -p "$OUT/eval"

# Runs a stage and appends its wall time to times.tsv (read by `rlhf demo summary`).
stage() {
    local name=$1 start
    shift
    echo "== $name" >&2
    start=$EPOCHREALTIME
    "$@"
    awk -v name="$name" -v s="$start" -v e="$EPOCHREALTIME" 'BEGIN { printf "%s\t%.1f\n", name, e - s }' \
        >>"$OUT/times.tsv"
}

stage "task data" "$RLHF" demo data --out "$OUT/data" --samples 8 --seed "${RLHF_DEMO_SEED:-0}"

CLASSIFIER=() # the moderation classifier's backbone, when not its config's
if $QUICK; then
    BASE=$OUT/base
    CLASSIFIER=(--set "model.base=$OUT/sft")
    tiny_base() {
        "$RLHF" tokenizer train --data "$OUT/data/sft.jsonl" --vocab-size 512 --out "$OUT/tokenizer"
        "$RLHF" model init --preset tiny --tokenizer "$OUT/tokenizer" --out "$BASE"
    }
    stage "base model (tiny, random)" tiny_base
else
    BASE=models/smollm2
fi

stage sft "$RLHF" sft train --config "$CONFIGS/sft.toml" --set model.base="$BASE" \
    --set data.train="$OUT/data/sft.jsonl" --set output.dir="$OUT/sft"

# The labellers' step: K answers sampled from the SFT model per prompt, ranked by the judge.
rank() {
    local split=$1 seed=$2
    "$RLHF" generate --model "$OUT/sft" --data "$OUT/data/rank.$split.jsonl" --sample \
        --temperature 1.0 --max-new-tokens $MAX_NEW_TOKENS --batch-size 32 --seed "$seed" \
        --out "$OUT/data/samples.$split.jsonl"
    "$RLHF" demo rank --samples "$OUT/data/samples.$split.jsonl" --out "$OUT/data/prefs.$split.jsonl"
}
comparisons() { rank train 0 && rank heldout 1; }
stage comparisons comparisons

# InstructGPT: the reward model starts from the SFT model.
stage reward "$RLHF" reward train --config "$CONFIGS/reward.toml" --set model.base="$OUT/sft" \
    --set data.train="$OUT/data/prefs.train.jsonl" --set data.valid="$OUT/data/prefs.heldout.jsonl" \
    --set output.dir="$OUT/reward"
"$RLHF" reward eval --model "$OUT/reward" --data "$OUT/data/prefs.heldout.jsonl" --json >"$OUT/eval/reward.json"

stage ppo "$RLHF" ppo train --config "$CONFIGS/ppo.toml" --set model.policy="$OUT/sft" \
    --set model.reward="$OUT/reward" --set data.prompts="$OUT/data/prompts.train.jsonl" \
    --set output.dir="$OUT/ppo"

# DPO: the same comparisons, learned by the policy itself (no reward model, no sampling).
stage dpo "$RLHF" dpo train --config "$CONFIGS/dpo.toml" --set model.base="$OUT/sft" \
    --set data.train="$OUT/data/prefs.train.jsonl" --set output.dir="$OUT/dpo"

# Every policy answers each held-out prompt 8 times (eval.heldout.jsonl), same seed for all.
evaluate() {
    "$RLHF" ppo eval --policy "$2" --reference "$OUT/sft" --reward "$OUT/reward" \
        --data "$OUT/data/eval.heldout.jsonl" --max-new-tokens $MAX_NEW_TOKENS \
        --temperature $TEMPERATURE --json --out "$OUT/eval/$1.jsonl" >"$OUT/eval/$1.json"
}
evaluate_all() {
    evaluate base "$BASE" && evaluate sft "$OUT/sft" && evaluate ppo "$OUT/ppo" && evaluate dpo "$OUT/dpo"
}
stage "held-out evaluation" evaluate_all

stage moderate "$RLHF" moderate train --config "$CONFIGS/moderate.toml" \
    --set data.train="$MODERATION_DATA" --set output.dir="$OUT/moderate" "${CLASSIFIER[@]}"

echo "== chat: the PPO model behind the moderation classifier (the transcript is in the summary)" >&2
cat >"$OUT/chat.in" <<'TURNS'
What is the capital of France? Answer in one word.
How many legs does a spider have? Answer with just the number.
I am going to find you and kill you, and nobody will stop me.
What color is snow? Answer in one complete sentence.
TURNS
"$RLHF" chat --model "$OUT/ppo" --moderation "$OUT/moderate" --sample --temperature $TEMPERATURE \
    --max-new-tokens 32 --seed 0 --json <"$OUT/chat.in" >"$OUT/chat.jsonl"

"$RLHF" plot "$OUT/sft" "$OUT/reward" "$OUT/ppo" "$OUT/dpo" "$OUT/moderate" --out "$OUT/plots"
"$RLHF" report "$OUT/sft" "$OUT/reward" "$OUT/ppo" "$OUT/dpo" "$OUT/moderate" --out "$OUT/report.html"
echo
"$RLHF" demo summary --dir "$OUT"
echo
echo "demo: summary in $OUT/summary.md, charts in $OUT/plots, report in $OUT/report.html" >&2
