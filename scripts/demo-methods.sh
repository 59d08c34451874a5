#!/usr/bin/env bash
# The demo's method table: from one demo run's SFT model, reward model and rankings, several ways
# to optimise the policy, each with several seeds, scored on the held-out prompts by the gold
# judge. The online methods get the same wall-clock budget (about 2.5 minutes on 2 cores):
#   ppo          PPO against the reward model (configs/demo/ppo.toml, the demo's own stage)
#   ppo-warmup   the same with the learning rate warmed up over 5 iterations (not in the default
#                set: Adam's first step moves every trained weight by about lr at once)
#   grpo-rm      GRPO against the reward model (configs/demo/grpo.toml)
#   grpo-judge   GRPO against the gold judge as a reward program (RLVR)
#   rloo-judge   RLOO (leave-one-out baseline) against the gold judge
#   grpo-judge-lora  grpo-judge with LoRA adapters (rank 16, every block) instead of training
#                the top 4 blocks whole, at 3× the learning rate (1e-3 overshot: KL 14.7; not in the
#                default set)
#   dpo          DPO on the judge's rankings (offline: the reward model's comparisons, no sampling)
#
#   scripts/demo.sh && scripts/demo-methods.sh            runs/demo, seeds 0 1 2 (about 45 min)
#   scripts/demo-methods.sh DIR [--seeds "0 1"] [--methods "ppo grpo-judge"]
#
# Writes DIR/methods/ (one checkpoint and evaluation per method and seed, times.tsv) and the table
# to DIR/methods.md. Each policy answers the demo's held-out prompts as scripts/demo.sh evaluates.
set -euo pipefail
cd "$(dirname "$0")/.."
ALL_METHODS="ppo ppo-warmup grpo-rm grpo-judge grpo-judge-lora rloo-judge dpo"
DIR=runs/demo SEEDS="0 1 2" METHODS="ppo grpo-rm grpo-judge rloo-judge dpo"
while [ $# -gt 0 ]; do
    case "$1" in
        --seeds) SEEDS=$2; shift 2 ;;
        --methods) METHODS=$2; shift 2 ;;
        -*) echo "usage: scripts/demo-methods.sh [DIR] [--seeds \"0 1 2\"] [--methods \"ppo ppo-warmup grpo-rm …\"]" >&2; exit 2 ;;
        *) DIR=$1; shift ;;
    esac
done
RLHF=${RLHF_BIN:-$PWD/target/release/rlhf}
for need in sft reward data/prompts.train.jsonl data/prefs.train.jsonl data/eval.heldout.jsonl; do
    [ -e "$DIR/$need" ] || { echo "demo-methods: $DIR/$need is missing; run scripts/demo.sh first" >&2; exit 2; }
done
OUT=$DIR/methods
mkdir -p "$OUT/eval"
JUDGE='{name = "judge", command = ["rlhf", "demo", "judge", "--reward-program"]}'
# The judge is cheaper than the reward model: 70 iterations take PPO's 2.5 minutes on 2 cores.
JUDGE_STEPS=70
REWARD_MODEL="{name = \"reward\", model = \"$DIR/reward\"}"

train() {
    local method=$1 seed=$2 run=$OUT/$1.s$2
    local common=(--set train.seed="$seed" --set output.dir="$run" --set output.overwrite=true)
    local online=("${common[@]}" --set data.prompts="$DIR/data/prompts.train.jsonl")
    case "$method" in
        ppo) "$RLHF" ppo train --config configs/demo/ppo.toml "${online[@]}" \
            --set model.policy="$DIR/sft" --set model.reward="$DIR/reward" ;;
        ppo-warmup) "$RLHF" ppo train --config configs/demo/ppo.toml "${online[@]}" \
            --set model.policy="$DIR/sft" --set model.reward="$DIR/reward" --set train.warmup_steps=5 ;;
        grpo-rm) "$RLHF" grpo train --config configs/demo/grpo.toml "${online[@]}" \
            --set model.base="$DIR/sft" --set "rewards=[$REWARD_MODEL]" ;;
        grpo-judge) "$RLHF" grpo train --config configs/demo/grpo.toml "${online[@]}" \
            --set model.base="$DIR/sft" --set "rewards=[$JUDGE]" --set train.max_steps=$JUDGE_STEPS ;;
        grpo-judge-lora) "$RLHF" grpo train --config configs/demo/grpo.toml "${online[@]}" \
            --set model.base="$DIR/sft" --set "rewards=[$JUDGE]" --set train.max_steps=$JUDGE_STEPS \
            --set model.train_layers=0 --set model.lora.rank=16 --set train.lr=3e-4 ;;
        rloo-judge) "$RLHF" grpo train --config configs/demo/grpo.toml "${online[@]}" \
            --set model.base="$DIR/sft" --set "rewards=[$JUDGE]" --set train.max_steps=$JUDGE_STEPS \
            --set grpo.advantage=rloo ;;
        dpo) "$RLHF" dpo train --config configs/demo/dpo.toml "${common[@]}" \
            --set model.base="$DIR/sft" --set data.train="$DIR/data/prefs.train.jsonl" ;;
        *) echo "demo-methods: unknown method $method" >&2; exit 2 ;;
    esac
}

# As scripts/demo.sh's held-out evaluation (24 tokens at temperature 0.7, the same seed for every
# policy), in batches of 64 rows.
evaluate() {
    "$RLHF" ppo eval --policy "$2" --reference "$DIR/sft" --reward "$DIR/reward" \
        --data "$DIR/data/eval.heldout.jsonl" --max-new-tokens 24 --temperature 0.7 --batch-size 64 \
        --json --out "$OUT/eval/$1.jsonl" >"$OUT/eval/$1.json"
    "$RLHF" demo judge --data "$OUT/eval/$1.jsonl" --json >"$OUT/eval/$1.judge.json"
}

# A method and seed already evaluated is not run again, so an interrupted study resumes.
[ -s "$OUT/eval/sft.judge.json" ] || evaluate sft "$DIR/sft"
touch "$OUT/times.tsv"
for seed in $SEEDS; do
    for method in $METHODS; do
        [ -s "$OUT/eval/$method.s$seed.judge.json" ] && continue
        echo "== $method, seed $seed" >&2
        start=$EPOCHREALTIME
        train "$method" "$seed" >"$OUT/$method.s$seed.log" 2>&1 \
            || { tail -5 "$OUT/$method.s$seed.log" >&2; exit 1; }
        awk -v m="$method" -v s="$seed" -v a="$start" -v b="$EPOCHREALTIME" \
            'BEGIN { printf "%s\t%s\t%.1f\n", m, s, b - a }' >>"$OUT/times.tsv"
        evaluate "$method.s$seed" "$OUT/$method.s$seed"
    done
done

# The table: every method and seed evaluated so far in DIR, this call's or an earlier one's.
python3 - "$OUT" "$ALL_METHODS" >"$DIR/methods.md" <<'PY'
import json, statistics, sys
out, methods = sys.argv[1], sys.argv[2].split()
def load(name):
    report, judge = (json.load(open(f"{out}/eval/{name}{ext}")) for ext in (".json", ".judge.json"))
    return {"score": judge["score"], "correct": judge["correct"], "form": judge["form"],
            "reward": report["reward_mean"], "kl": report["kl_mean"]}
times = {}
for line in open(f"{out}/times.tsv"):
    method, seed, seconds = line.split("\t")
    times[(method, seed)] = float(seconds)
def cell(values, digits=3, percent=False, signed=False):
    """The mean over seeds, ± their standard deviation when there are several."""
    scale, unit = (100, " %") if percent else (1, "")
    form = f"{'+' if signed else ''}.{0 if percent else digits}f"
    text = format(statistics.mean(values) * scale, form)
    if len(values) > 1:
        text += " ± " + format(statistics.stdev(values) * scale, f".{0 if percent else digits}f")
    return text + unit
sft = load("sft")
print(f"| method | seeds | gold score | vs SFT | correct | form | reward model | KL to SFT | train time |")
print("|---|---|---|---|---|---|---|---|---|")
print(f"| SFT | – | {sft['score']:.3f} | – | {100 * sft['correct']:.0f} % | {sft['form']:.3f} "
      f"| {sft['reward']:+.3f} | – | – |")
for method in methods:
    seeds = sorted(s for m, s in times if m == method)
    if not seeds:
        continue
    runs = [load(f"{method}.s{s}") for s in seeds]
    col = lambda key: [r[key] for r in runs]
    gains = [r["score"] - sft["score"] for r in runs]
    seconds = statistics.mean(times[(method, s)] for s in seeds)
    print(f"| {method} | {len(seeds)} | {cell(col('score'))} | {statistics.mean(gains):+.3f} "
          f"({', '.join(f'{g:+.3f}' for g in gains)}) | {cell(col('correct'), percent=True)} "
          f"| {cell(col('form'))} | {cell(col('reward'), signed=True)} | {cell(col('kl'), 2)} | {seconds:.0f} s |")
PY
cat "$DIR/methods.md"
