"""Load on an OpenAI-compatible server (scripts/bench/serve): C clients at once, each sending
streamed chat completions one after another — REQUESTS in all, or for DURATION seconds (the
soak). Prints one JSON line: completion tokens/s over the wall time, time to first token and
time per output token after it (p50 and p99), errors, and answers without a finish reason."""

import argparse
import concurrent.futures
import json
import time

import openai

PROMPTS = [
    "What is the capital of France?",
    "Give me three tips for a good night's sleep.",
    "Explain what a neural network is in two sentences.",
    "Write a haiku about the sea.",
    "How do I boil an egg?",
    "What causes the seasons on Earth?",
    "Name three famous painters and one work by each.",
    "Why is the sky blue?",
]


def one(client, i, max_tokens):
    """(time to first token, completion tokens, seconds per token after the first, complete)"""
    started = time.perf_counter()
    first, usage, finish, pieces = None, None, None, 0
    for chunk in client.chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}],
        max_tokens=max_tokens,
        temperature=0.7,
        seed=i,
        stream=True,
        stream_options={"include_usage": True},
    ):
        if chunk.choices:
            if chunk.choices[0].delta.content:
                first = first or time.perf_counter()
                pieces += 1
            finish = chunk.choices[0].finish_reason or finish
        usage = chunk.usage or usage
    done = time.perf_counter()
    # A server that sends no usage streams a token a chunk (llama.cpp's does).
    tokens = usage.completion_tokens if usage else pieces
    tpot = (done - first) / (tokens - 1) if first and tokens > 1 else None
    return first - started if first else None, tokens, tpot, finish is not None


def percentile(values, q):
    values = sorted(v for v in values if v is not None)
    return values[min(len(values) - 1, int(q * len(values)))] if values else None


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--clients", type=int, required=True)
    p.add_argument("--requests", type=int, default=0)
    p.add_argument("--duration", type=float, default=0, help="seconds to keep every client busy")
    p.add_argument("--max-tokens", type=int, default=64)
    a = p.parse_args()
    client = openai.OpenAI(base_url=a.url, api_key="none", max_retries=0, timeout=600)
    results, errors = [], []
    started = time.perf_counter()
    counter = iter(range(10**9))

    def worker(_):
        while True:
            i = next(counter)
            if a.duration:
                if time.perf_counter() - started > a.duration:
                    return
            elif i >= a.requests:
                return
            try:
                results.append(one(client, i, a.max_tokens))
            except Exception as e:  # noqa: BLE001 — every failure counts, whatever its class
                errors.append(f"{type(e).__name__}: {e}")

    with concurrent.futures.ThreadPoolExecutor(a.clients) as pool:
        list(pool.map(worker, range(a.clients)))
    wall = time.perf_counter() - started
    tokens = sum(r[1] for r in results)
    ms = lambda v: None if v is None else round(1e3 * v, 1)  # noqa: E731
    print(json.dumps({
        "clients": a.clients,
        "requests": len(results),
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "incomplete": sum(not r[3] for r in results),
        "completion_tokens": tokens,
        "wall_s": round(wall, 1),
        "tokens_per_s": round(tokens / wall, 1),
        "ttft_p50_ms": ms(percentile([r[0] for r in results], 0.5)),
        "ttft_p99_ms": ms(percentile([r[0] for r in results], 0.99)),
        "tpot_p50_ms": ms(percentile([r[2] for r in results], 0.5)),
        "tpot_p99_ms": ms(percentile([r[2] for r in results], 0.99)),
    }))


if __name__ == "__main__":
    main()
