"""transformers' side of scripts/bench/encode: scores (prompt, response) rows with a
cross-encoder reward model as `rlhf reward score` does — sorted by length, batches of 16,
tokenizer(prompt, response) — and prints responses per second (best of --repeats),
tokenization and forward passes timed, model loading not.
"""

import argparse
import json
import time

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer
from transformers.utils import logging

logging.set_verbosity_error()


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model")
    parser.add_argument("rows")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForSequenceClassification.from_pretrained(args.model).eval()
    rows = [json.loads(line) for line in open(args.rows)]
    best = 0.0
    with torch.inference_mode():
        for _ in range(args.repeats):
            start = time.perf_counter()
            lengths = tok([r["prompt"] for r in rows], [r["response"] for r in rows], truncation="only_first", max_length=512)
            order = sorted(range(len(rows)), key=lambda i: len(lengths["input_ids"][i]))
            for i in range(0, len(order), args.batch_size):
                chunk = [rows[j] for j in order[i : i + args.batch_size]]
                batch = tok([r["prompt"] for r in chunk], [r["response"] for r in chunk], padding=True,
                            truncation="only_first", max_length=512, return_tensors="pt")
                model(**batch)
            best = max(best, len(rows) / (time.perf_counter() - start))
    print(f"{best:.1f}")


if __name__ == "__main__":
    main()
