"""transformers' side of scripts/bench/chat, and its report.

--write-script FILE writes the scripted conversation (one user turn a line). With --model, the
same conversation runs twice through `generate` — re-encoding the whole history each turn, and
reusing a DynamicCache cropped to the prefix it shares with the new prompt — and the table
compares both with rlhf's per-turn `timing` (from `rlhf chat --json` runs). Time to first token
is from the call to the first token chosen (a logits processor's first call), tokens/s is over
the rest of the answer; each figure is the best over --repeats runs of the conversation (the
machine is shared, and a slow turn is noise, not the method).

--conversation reencode|reuse runs the conversation once that way and prints its per-turn
[time to first token in s, tokens/s] as JSON (scripts/bench/run.py reads it).
"""

import argparse
import json
import time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LogitsProcessor, LogitsProcessorList
from transformers.utils import logging

logging.set_verbosity_error()
logging.disable_progress_bar()

TOPICS = ["the ocean", "volcanoes", "bread", "the moon", "chess", "trains", "bees", "rain",
          "libraries", "bicycles", "coffee", "glaciers", "owls", "maps", "music", "gardens",
          "clocks", "deserts", "bridges", "stars"]
TURNS = [f"Tell me one short fact about {t}." for t in TOPICS]
REPORTED = [1, 5, 10, 20]


class FirstToken(LogitsProcessor):
    """Records when `generate` chooses its first token (after the prefill)."""

    def __init__(self):
        self.at = None

    def __call__(self, input_ids, scores):
        if self.at is None:
            if scores.is_cuda:
                torch.cuda.synchronize()
            self.at = time.perf_counter()
        return scores


def converse(model, tok, new_tokens, reuse):
    history, timings, cache, cached_ids = [], [], None, None
    for text in TURNS:
        history.append({"role": "user", "content": text})
        ids = tok.apply_chat_template(history, add_generation_prompt=True, return_tensors="pt",
                                      return_dict=True)["input_ids"].to(model.device)
        kwargs = {}
        if reuse and cache is not None:
            shared = 0
            limit = min(cached_ids.shape[1], ids.shape[1] - 1)
            while shared < limit and cached_ids[0, shared] == ids[0, shared]:
                shared += 1
            cache.crop(shared - cache.get_seq_length())  # transformers 5: minus the tokens to drop
            kwargs["past_key_values"] = cache
        first = FirstToken()
        start = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                 max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                 logits_processor=LogitsProcessorList([first]),
                                 return_dict_in_generate=True, use_cache=True,
                                 pad_token_id=tok.pad_token_id or tok.eos_token_id, **kwargs)
        if ids.is_cuda:
            torch.cuda.synchronize()
        end = time.perf_counter()
        ttft = first.at - start
        timings.append((ttft, (new_tokens - 1) / (end - first.at)))
        if reuse:
            cache = out.past_key_values
            cached_ids = out.sequences[:, :cache.get_seq_length()]
        answer = tok.decode(out.sequences[0, ids.shape[1]:], skip_special_tokens=True)
        history.append({"role": "assistant", "content": answer})
    return timings


def best(runs):
    """Per turn, the lowest time to first token and the highest tokens/s over the runs."""
    return [(min(t for t, _ in turn), max(r for _, r in turn)) for turn in zip(*runs)]


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write-script")
    parser.add_argument("--model")
    parser.add_argument("--rlhf", nargs="+")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--conversation", choices=["reencode", "reuse"])
    args = parser.parse_args()
    if args.write_script:
        with open(args.write_script, "w") as f:
            f.writelines(t + "\n" for t in TURNS)
        return
    torch.set_num_threads(args.threads)
    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).to(args.device).eval()
    if args.conversation:
        print(json.dumps(converse(model, tok, args.new_tokens, reuse=args.conversation == "reuse")))
        return
    runs = [[json.loads(line) for line in open(path)] for path in args.rlhf]
    ours = best([[(r["timing"]["first_token_ms"] / 1e3, r["timing"]["tokens_per_second"])
                  for r in rows] for rows in runs])
    cached = [(r["usage"]["cached_tokens"], r["usage"]["prompt_tokens"]) for r in runs[0]]
    reencode = best([converse(model, tok, args.new_tokens, reuse=False) for _ in range(args.repeats)])
    reuse = best([converse(model, tok, args.new_tokens, reuse=True) for _ in range(args.repeats)])
    print(f"\n{args.model}: {args.new_tokens} new tokens a turn, greedy, {args.threads} threads")
    print(f"{'turn':>4} {'prompt':>7} {'cached':>7} | {'rlhf TTFT':>10} {'tok/s':>6} | "
          f"{'HF re-encode TTFT':>17} {'tok/s':>6} | {'HF cache TTFT':>13} {'tok/s':>6}")
    for turn in REPORTED:
        i = turn - 1
        (c, p), (a, b), (x, y), (u, v) = cached[i], ours[i], reencode[i], reuse[i]
        print(f"{turn:>4} {p:>7} {c:>7} | {a * 1e3:>8.1f}ms {b:>6.1f} | {x * 1e3:>15.1f}ms {y:>6.1f} | "
              f"{u * 1e3:>11.1f}ms {v:>6.1f}")


if __name__ == "__main__":
    main()
