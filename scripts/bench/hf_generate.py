"""transformers' `generate` on the same prompts and settings as the rlhf side of
scripts/bench/generate; prints generated tokens per second (best of --repeats)."""

import argparse
import json
import time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.utils import logging

logging.set_verbosity_error()
logging.disable_progress_bar()


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model")
    parser.add_argument("prompts")
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).to(args.device).eval()
    texts = [json.loads(line)["prompt"] for line in open(args.prompts)]
    batch = tok(texts, return_tensors="pt", padding=True).to(args.device)
    settings = dict(do_sample=False, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens,
                    pad_token_id=tok.pad_token_id)
    best = 0.0
    with torch.inference_mode():
        model.generate(**batch, do_sample=False, max_new_tokens=2, pad_token_id=tok.pad_token_id)  # warm-up
        for _ in range(args.repeats):
            start = time.perf_counter()
            out = model.generate(**batch, **settings)
            if args.device != "cpu":
                torch.cuda.synchronize()
            seconds = time.perf_counter() - start
            new = (out.shape[1] - batch["input_ids"].shape[1]) * out.shape[0]
            best = max(best, new / seconds)
    print(f"{best:.1f}")


if __name__ == "__main__":
    main()
