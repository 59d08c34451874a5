"""Writes COUNT prompts of exactly TOKENS tokens (with the given tokenizer) as {"prompt"} JSONL,
cut from the HH-RLHF transcripts in ../shared/data."""

import argparse
import json
from pathlib import Path

from tokenizers import Tokenizer


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("tokenizer", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--count", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=32)
    args = parser.parse_args()
    tok = Tokenizer.from_file(str(args.tokenizer / "tokenizer.json"))
    data = Path(__file__).resolve().parents[3] / "shared/data/hh-harmless.train.jsonl"
    prompts = []
    for line in data.read_text().splitlines():
        ids = tok.encode(json.loads(line)["chosen"]).ids[: args.tokens]
        text = tok.decode(ids)
        if len(ids) == args.tokens and tok.encode(text).ids == ids:  # round-trips exactly
            prompts.append({"prompt": text})
        if len(prompts) == args.count:
            break
    args.out.write_text("".join(json.dumps(p) + "\n" for p in prompts))


if __name__ == "__main__":
    main()
