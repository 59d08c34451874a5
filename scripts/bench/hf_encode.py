"""transformers' side of scripts/bench/encode: runs a sequence classifier over JSONL rows as
`rlhf reward score` / `rlhf moderate score` do — sorted by length, batches of 16 — and prints
rows per second (best of --repeats), tokenization and forward passes timed, model loading not.
{"prompt", "response"} rows are pairs (tokenizer(prompt, response)); {"text"} rows single texts
read as rlhf reads them: windows of --max-length tokens ([CLS] … [SEP]) overlapping by 32,
each label's score the highest over a text's windows.
"""

import argparse
import json
import time

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer
from transformers.utils import logging

logging.set_verbosity_error()
logging.disable_progress_bar()


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model")
    parser.add_argument("rows")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForSequenceClassification.from_pretrained(args.model).to(args.device).eval()
    rows = [json.loads(line) for line in open(args.rows)]
    pairs = "response" in rows[0]
    cls, sep, pad = tok.cls_token_id, tok.sep_token_id, tok.pad_token_id

    def sequences():
        """Token ids and token types per sequence, and the row each belongs to."""
        if pairs:
            enc = tok([r["prompt"] for r in rows], [r["response"] for r in rows],
                      truncation="only_first", max_length=args.max_length)
            return enc["input_ids"], enc["token_type_ids"], list(range(len(rows)))
        out, owner = [], []
        body = args.max_length - 2
        for i, ids in enumerate(tok([r["text"] for r in rows], add_special_tokens=False)["input_ids"]):
            start = 0
            while True:
                end = min(start + body, len(ids))
                out.append([cls] + ids[start:end] + [sep])
                owner.append(i)
                if end == len(ids):
                    break
                start = end - 32
        return out, [[0] * len(x) for x in out], owner

    best = 0.0
    with torch.inference_mode():
        for _ in range(args.repeats):
            start = time.perf_counter()
            ids, type_ids, owner = sequences()
            order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
            scores = {}
            for i in range(0, len(order), args.batch_size):
                chunk = order[i : i + args.batch_size]
                width = max(len(ids[j]) for j in chunk)
                input_ids = torch.tensor([ids[j] + [pad] * (width - len(ids[j])) for j in chunk])
                mask = torch.tensor([[1] * len(ids[j]) + [0] * (width - len(ids[j])) for j in chunk])
                types = torch.tensor([type_ids[j] + [0] * (width - len(ids[j])) for j in chunk])
                logits = model(input_ids=input_ids.to(args.device), attention_mask=mask.to(args.device),
                               token_type_ids=types.to(args.device)).logits
                for j, row in zip(chunk, torch.sigmoid(logits) if not pairs else logits):
                    scores[owner[j]] = torch.maximum(scores[owner[j]], row) if owner[j] in scores else row
            if args.device != "cpu":
                torch.cuda.synchronize()
            best = max(best, len(rows) / (time.perf_counter() - start))
    print(f"{best:.1f}")


if __name__ == "__main__":
    main()
