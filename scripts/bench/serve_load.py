"""Load on an OpenAI-compatible server (scripts/bench/serve): C clients at once, each sending
requests one after another (streamed chat completions with usage), REQUESTS in all. Prints one
JSON line: completion tokens/s over the wall time, requests/s, time to first token (median and
p90) and each request's decoding speed (median)."""

import argparse
import concurrent.futures
import json
import statistics
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
    started = time.perf_counter()
    first = None
    usage = None
    for chunk in client.chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}],
        max_tokens=max_tokens,
        temperature=0.7,
        seed=i,
        stream=True,
        stream_options={"include_usage": True},
    ):
        if first is None and chunk.choices and chunk.choices[0].delta.content:
            first = time.perf_counter()
        usage = chunk.usage or usage
    done = time.perf_counter()
    tokens = usage.completion_tokens
    decode = (tokens - 1) / (done - first) if first and tokens > 1 and done > first else None
    return first - started if first else None, tokens, decode


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--clients", type=int, required=True)
    p.add_argument("--requests", type=int, required=True)
    p.add_argument("--max-tokens", type=int, default=64)
    a = p.parse_args()
    client = openai.OpenAI(base_url=a.url, api_key="none", max_retries=0, timeout=600)
    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(a.clients) as pool:
        results = list(pool.map(lambda i: one(client, i, a.max_tokens), range(a.requests)))
    wall = time.perf_counter() - started
    ttft = sorted(r[0] for r in results if r[0] is not None)
    tokens = sum(r[1] for r in results)
    decode = [r[2] for r in results if r[2]]
    print(json.dumps({
        "clients": a.clients,
        "requests": a.requests,
        "completion_tokens": tokens,
        "wall_s": round(wall, 2),
        "tokens_per_s": round(tokens / wall, 1),
        "requests_per_s": round(a.requests / wall, 2),
        "ttft_median_s": round(statistics.median(ttft), 3),
        "ttft_p90_s": round(ttft[int(0.9 * (len(ttft) - 1))], 3),
        "decode_tokens_per_s_median": round(statistics.median(decode), 1) if decode else None,
    }))


if __name__ == "__main__":
    main()
