#!/usr/bin/env bash
# Shows that a change kept behaviour: runs the quick demo (sft, reward, ppo, moderate, the
# evaluations and a scripted chat, all on tiny models) with two rlhf binaries and compares what
# they wrote — every metrics.jsonl and evaluation file less its timing fields, and every weight
# file byte for byte. PPO with the demo's shared value head is not repeatable even with one
# binary (two runs of the same binary differ after the first update), so what descends from
# it (ppo/, eval/ppo.*, chat.jsonl) is left out and PPO is compared with a separate value
# model instead (ppo-separate/).
#
#   scripts/compare_binaries.sh OLD_BINARY NEW_BINARY
#
# Build the old binary first, e.g. `git stash; cargo build --release; cp target/release/rlhf
# /tmp/rlhf-old; git stash pop; cargo build --release`. Exits 1 when anything differs.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -eq 2 ] || { echo "usage: scripts/compare_binaries.sh OLD_BINARY NEW_BINARY" >&2; exit 2; }
old=$(realpath "$1") new=$(realpath "$2")
work=$(mktemp -d "${TMPDIR:-/tmp}/rlhf-compare.XXXXXX")
# Kept when they differ, to look into.
trap 'if [ "${kept:-}" != 1 ]; then rm -rf "$work"; fi' EXIT
source scripts/env.sh

for side in old new; do
    bin=$old; [ $side = new ] && bin=$new
    echo "compare: the quick demo with the $side binary ($bin)" >&2
    RLHF_BIN=$bin RLHF_DEMO_DIR="$work/$side" scripts/demo.sh --quick >"$work/$side.log" 2>&1 \
        || { tail -20 "$work/$side.log" >&2; echo "compare: the $side binary failed" >&2; exit 1; }
    run=$work/$side
    "$bin" ppo train --config configs/demo/quick/ppo.toml --set model.value_model=separate \
        --set model.policy="$run/sft" --set model.reward="$run/reward" \
        --set data.prompts="$run/data/prompts.train.jsonl" --set output.dir="$run/ppo-separate" \
        >>"$work/$side.log" 2>&1
done

python - "$work/old" "$work/new" <<'PY' || { kept=1; echo "compare: both runs kept in $work" >&2; exit 1; }
import hashlib, json, pathlib, sys

old, new = map(pathlib.Path, sys.argv[1:])
# Wall-clock fields and whatever is derived from them.
TIMING = ("seconds", "_s", "elapsed", "time", "ms", "rate")

def timeless(value):
    if isinstance(value, dict):
        return {k: timeless(v) for k, v in value.items()
                if not any(k == t or k.endswith(t) for t in TIMING)}
    if isinstance(value, list):
        return [timeless(v) for v in value]
    return value

# Not repeatable with one binary either (see the header).
SKIPPED = ("ppo/", "eval/ppo.", "chat.jsonl")

def text(path, root):
    return path.read_text().replace(str(root), "RUN")  # paths inside the run directory

def lines(path, root):
    return [timeless(json.loads(l)) for l in text(path, root).splitlines() if l.strip()]

compared, differ = 0, []
for a in sorted(old.rglob("*")):
    if not a.is_file():
        continue
    rel = a.relative_to(old)
    if str(rel).startswith(SKIPPED):
        continue
    b = new / rel
    if not b.is_file():
        differ.append(f"{rel}: missing from the new run")
        continue
    if a.suffix == ".safetensors" or a.name == "optimizer.safetensors":
        same = hashlib.sha256(a.read_bytes()).digest() == hashlib.sha256(b.read_bytes()).digest()
    elif a.suffix in (".jsonl", ".json") and a.name != "rlhf.json":
        try:
            same = lines(a, old) == lines(b, new)
        except json.JSONDecodeError:
            same = timeless(json.loads(text(a, old))) == timeless(json.loads(text(b, new)))
    else:
        continue
    compared += 1
    if not same:
        differ.append(f"{rel}: differs")
for line in differ:
    print(f"compare: {line}")
print(f"compare: {compared} files compared (weights byte for byte, metrics less timing): "
      + ("identical" if not differ else f"{len(differ)} differ"))
sys.exit(1 if differ else 0)
PY
