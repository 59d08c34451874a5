"""Writes COUNT comparisons in TRL's conversational form for the DPO speed benchmark:
{"prompt": [user], "chosen": [assistant], "rejected": [assistant]}, the prompt the first
PROMPT_TOKENS tokens of an HH-RLHF transcript and the two answers the ANSWER_TOKENS tokens after
them in its chosen and its rejected version (with the given tokenizer), rows whose texts are
not exactly that many tokens once stripped of surrounding whitespace left out. Every
comparison is then the same length in the chat template: with the presets' ChatML template,
42 prompt tokens and 66 answer tokens for 32 + 64 (SmolLM2's adds its system prompt: 62).

    make_comparisons.py TOKENIZER_DIR OUT.jsonl --count 48 --prompt-tokens 32 --answer-tokens 64
"""

import argparse
import json
from pathlib import Path

from tokenizers import Tokenizer


def window(tok, ids, start, count):
    """The text of ids[start:start + count] without its surrounding whitespace, if that is
    exactly `count` tokens on its own. (A leading space or newline would merge with the chat
    template's newline before it, and the answer would no longer start where the prompt ends.)"""
    text = tok.decode(ids[start : start + count]).strip()
    return text if len(tok.encode(text).ids) == count else None


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("tokenizer", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--count", type=int, default=48)
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument("--answer-tokens", type=int, default=64)
    args = parser.parse_args()
    tok = Tokenizer.from_file(str(args.tokenizer / "tokenizer.json"))
    data = Path(__file__).resolve().parents[3] / "shared/data/hh-harmless.train.jsonl"
    p, a = args.prompt_tokens, args.answer_tokens
    rows = []
    for line in data.read_text().splitlines():
        row = json.loads(line)
        chosen, rejected = (tok.encode(row[key].strip()).ids for key in ("chosen", "rejected"))
        texts = [window(tok, chosen, 0, p), window(tok, chosen, p, a), window(tok, rejected, p, a)]
        if None in texts or texts[1] == texts[2]:
            continue
        prompt, good, bad = texts
        rows.append({"prompt": [{"role": "user", "content": prompt}],
                     "chosen": [{"role": "assistant", "content": good}],
                     "rejected": [{"role": "assistant", "content": bad}]})
        if len(rows) == args.count:
            break
    if len(rows) < args.count:
        raise SystemExit(f"{data}: only {len(rows)} comparisons of {p} + {a} tokens")
    args.out.write_text("".join(json.dumps(r) + "\n" for r in rows))


if __name__ == "__main__":
    main()
