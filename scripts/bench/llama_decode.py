"""llama.cpp's side of scripts/bench/decode: greedy decoding of one prompt repeated over
`--batch` sequences decoded together (one llama_decode call per step, as llama.cpp's own
batched examples do), through llama-cpp-python's low-level API. Prints the best tokens/s of
`--repeats` runs (all rows' new tokens over the time from the prefill's start to the last
token, as `rlhf generate` counts) and the prefill time, one line: `tokens/s prefill_ms`.
With `--chat TEXT`: the lowest time to first token, in ms, of a chat completion answering TEXT
(the GGUF's own chat template, the cache reset before each run)."""

import argparse
import json
import time

import numpy as np
import llama_cpp
from llama_cpp import Llama


def main():
    p = argparse.ArgumentParser()
    p.add_argument("gguf")
    p.add_argument("prompts", help="JSONL with a `prompt` field; the first line is used")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--chat", metavar="TEXT")
    args = p.parse_args()
    if args.chat is not None:
        return chat_first_token(args)
    with open(args.prompts) as f:
        prompt = json.loads(f.readline())["prompt"]
    rows = args.batch
    llm = Llama(model_path=args.gguf, n_threads=args.threads, n_ctx=256, verbose=False)
    tokens = llm.tokenize(prompt.encode(), add_bos=False, special=True)
    # A context of our own: Llama() leaves n_seq_max at 1.
    params = llama_cpp.llama_context_default_params()
    params.n_ctx, params.n_batch, params.n_seq_max = rows * 1024, 2048, rows
    params.n_threads = params.n_threads_batch = args.threads
    ctx = llama_cpp.llama_init_from_model(llm._model.model, params)
    n_vocab = llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(llm._model.model))
    batch = llama_cpp.llama_batch_init(max(len(tokens), 1) * rows, 0, rows)

    def add(i, token, pos, seq, logits):
        batch.token[i] = token
        batch.pos[i] = pos
        batch.n_seq_id[i] = 1
        batch.seq_id[i][0] = seq
        batch.logits[i] = logits

    def greedy(i):
        return int(np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(ctx, i), (n_vocab,)).argmax())

    best, prefill_ms = 0.0, 0.0
    for _ in range(args.repeats):
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(ctx), True)
        start = time.perf_counter()
        for seq in range(rows):
            for j, token in enumerate(tokens):
                add(seq * len(tokens) + j, token, j, seq, j == len(tokens) - 1)
        batch.n_tokens = rows * len(tokens)
        assert llama_cpp.llama_decode(ctx, batch) == 0
        chosen = [greedy((seq + 1) * len(tokens) - 1) for seq in range(rows)]
        first = time.perf_counter()
        for step in range(1, args.new_tokens):
            for seq in range(rows):
                add(seq, chosen[seq], len(tokens) + step - 1, seq, True)
            batch.n_tokens = rows
            assert llama_cpp.llama_decode(ctx, batch) == 0
            chosen = [greedy(seq) for seq in range(rows)]
        rate = rows * args.new_tokens / (time.perf_counter() - start)
        if rate > best:
            best, prefill_ms = rate, (first - start) * 1e3
    llama_cpp.llama_batch_free(batch)
    llama_cpp.llama_free(ctx)
    print(f"{best:.1f} {prefill_ms:.0f}")


def chat_first_token(args):
    llm = Llama(model_path=args.gguf, n_threads=args.threads, n_ctx=1024, verbose=False)
    best = float("inf")
    for _ in range(args.repeats):
        llm.reset()
        start = time.perf_counter()
        llm.create_chat_completion([{"role": "user", "content": args.chat}], max_tokens=1, temperature=0)
        best = min(best, time.perf_counter() - start)
    print(f"{best * 1e3:.0f}")


if __name__ == "__main__":
    main()
