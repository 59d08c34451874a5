#!/usr/bin/env bash
# Runs the pipeline on the built-in demo data (data/demo/), as far as the stages exist:
# a tokenizer, a tiny model fine-tuned on demonstrations (sft), and answers from it.
# Everything goes to runs/ (git-ignored); re-running starts over.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x target/release/rlhf ] || scripts/setup.sh
RLHF=target/release/rlhf
rm -rf runs/tokenizer runs/sft

echo "== tokenizer: byte-level BPE on the demo data"
$RLHF tokenizer train --data data/demo/sft.jsonl --vocab-size 1024 --out runs/tokenizer

echo "== sft: the tiny preset on data/demo/sft.jsonl (configs/sft.toml)"
$RLHF sft train --config configs/sft.toml

echo "== sft eval on the training data"
$RLHF sft eval --model runs/sft --data data/demo/sft.jsonl

echo "== answers (greedy)"
printf '%s\n' '{"prompt": "What is the capital of Japan?"}' '{"prompt": "Give me a tip for sleeping better."}' >runs/demo-prompts.jsonl
$RLHF generate --model runs/sft --data runs/demo-prompts.jsonl --max-new-tokens 48

cat >&2 <<'MSG'
demo: tokenizer → sft → generate done. Still to land: reward, ppo, moderate, chat
(see the README's status table).
MSG
