#!/usr/bin/env bash
# Runs the pipeline on the built-in demo data (data/demo/), as far as the stages exist:
# a tokenizer, a tiny model fine-tuned on demonstrations (sft), answers from it, and a reward
# model initialised from it and trained on comparisons, PPO against that reward model, and a
# moderation classifier on MiniLM.
# Everything goes to runs/ (git-ignored); re-running starts over.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x target/release/rlhf ] || scripts/setup.sh
RLHF=target/release/rlhf
rm -rf runs/tokenizer runs/sft runs/reward runs/ppo runs/moderate

echo "== tokenizer: byte-level BPE on the demo data"
$RLHF tokenizer train --data data/demo/sft.jsonl --vocab-size 1024 --out runs/tokenizer

echo "== sft: the tiny preset on data/demo/sft.jsonl (configs/sft.toml)"
$RLHF sft train --config configs/sft.toml

echo "== sft eval on the training data"
$RLHF sft eval --model runs/sft --data data/demo/sft.jsonl

echo "== answers (greedy)"
printf '%s\n' '{"prompt": "What is the capital of Japan?"}' '{"prompt": "Give me a tip for sleeping better."}' >runs/demo-prompts.jsonl
$RLHF generate --model runs/sft --data runs/demo-prompts.jsonl --max-new-tokens 48

echo "== reward: the SFT model with a scalar head, on data/demo/prefs.jsonl (configs/reward.toml)"
$RLHF reward train --config configs/reward.toml

echo "== reward eval and scores"
$RLHF reward eval --model runs/reward --data data/demo/prefs.jsonl
printf '%s\n' '{"prompt": "What is the capital of Japan?", "response": "The capital of Japan is Tokyo."}' \
    '{"prompt": "What is the capital of Japan?", "response": "Look it up, I am busy."}' >runs/demo-responses.jsonl
$RLHF reward score --model runs/reward --data runs/demo-responses.jsonl

echo "== ppo: the SFT policy against the reward model on data/demo/prompts.jsonl (configs/ppo.toml)"
$RLHF ppo train --config configs/ppo.toml

echo "== ppo eval: mean reward and KL to the SFT model, before and after PPO"
$RLHF ppo eval --policy runs/sft --reward runs/reward --data data/demo/prompts.jsonl --max-new-tokens 32
$RLHF ppo eval --policy runs/ppo --reward runs/reward --data data/demo/prompts.jsonl --max-new-tokens 32

echo "== moderate: MiniLM on data/demo/moderation.jsonl (configs/moderate.toml; 30 texts, so 15 epochs)"
$RLHF moderate train --config configs/moderate.toml --set train.epochs=15 --set train.lr=1e-4
$RLHF moderate score --model runs/moderate "I will hurt you if you come here again." \
    "Let's meet for coffee next week." "I keep thinking about hurting myself."

cat >&2 <<'MSG'
demo: tokenizer → sft → generate → reward → ppo → moderate done. Still to land: chat
(see the README's status table).
MSG
