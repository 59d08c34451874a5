"""The official `openai` client against `rlhf serve` (driven by tests/serve.rs).

usage: serve_client.py MODE BASE_URL API_KEY
  all         completions and chat, streamed and not, the prompt cache, each error class,
              16 concurrent streams; prints one JSON object of what it saw (the Rust test
              compares it with the command line)
  moderation  /v1/moderations and flagged chat messages, against a server with --moderation
  busy        8 requests at once against a server with a queue of 1: counts 200s and 429s
  long        one long greedy request (the test stops the server while it runs)
  hangup      a long stream, closed after its first text
"""

import concurrent.futures
import json
import sys

import openai

QUESTION = "What is the capital of France?"


def chat_text(client, prompt, **kw):
    r = client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": prompt}], **kw
    )
    return r.choices[0].message.content, r.choices[0].finish_reason, r.usage


def streamed(client, prompt, **kw):
    chunks = list(
        client.chat.completions.create(
            model="m",
            messages=[{"role": "user", "content": prompt}],
            stream=True,
            stream_options={"include_usage": True},
            **kw,
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    usage = chunks[-1].usage
    return text, finish, usage


def error_of(call):
    try:
        call()
    except openai.APIStatusError as e:
        body = e.body or {}
        return {"class": type(e).__name__, "status": e.status_code, "param": body.get("param"), "code": body.get("code")}
    return None


def run_all(base_url, key):
    client = openai.OpenAI(base_url=base_url, api_key=key, max_retries=0)
    out = {"models": [m.id for m in client.models.list().data]}

    text, finish, usage = chat_text(client, QUESTION, temperature=0, max_tokens=16)
    out["greedy"] = {"text": text, "finish": finish, "completion_tokens": usage.completion_tokens}
    text, finish, usage = streamed(client, QUESTION, temperature=0, max_tokens=16)
    out["greedy_streamed"] = {
        "text": text,
        "finish": finish,
        "usage": usage.model_dump() if usage else None,
    }
    # A follow-up turn starts from the first turn's cached keys and values.
    follow = client.chat.completions.create(
        model="m",
        messages=[
            {"role": "user", "content": QUESTION},
            {"role": "assistant", "content": out["greedy"]["text"]},
            {"role": "user", "content": "And the sky?"},
        ],
        temperature=0,
        max_tokens=8,
    )
    out["follow_up_cached"] = follow.usage.prompt_tokens_details.cached_tokens
    out["follow_up_prompt"] = follow.usage.prompt_tokens

    c = client.completions.create(model="m", prompt=["a b c", "d e"], max_tokens=6, temperature=0, n=2)
    out["completions"] = [(ch.index, ch.text, ch.finish_reason) for ch in c.choices]
    out["errors"] = {
        "no_key": error_of(lambda: openai.OpenAI(base_url=base_url, api_key="wrong", max_retries=0).models.list()),
        "max_tokens": error_of(lambda: chat_text(client, QUESTION, max_tokens=10**6)),
        "temperature": error_of(lambda: chat_text(client, QUESTION, temperature=5)),
        "context": error_of(lambda: chat_text(client, "a b " * 400, max_tokens=16)),
        "n": error_of(lambda: chat_text(client, QUESTION, n=1000)),
        "role": error_of(
            lambda: client.chat.completions.create(model="m", messages=[{"role": "tool", "content": "x", "tool_call_id": "1"}])
        ),
        "route": error_of(lambda: client.models.retrieve("m")),
    }

    # 16 clients at once, each its own prompt and seed: each gets what it gets alone.
    prompts = [f"{QUESTION} {'a b c d e f g'[: i % 13]} {i}" for i in range(16)]
    kw = dict(temperature=1.0, max_tokens=24)
    alone = [streamed(client, p, seed=i, **kw)[0] for i, p in enumerate(prompts)]
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        together = list(pool.map(lambda ip: streamed(client, ip[1], seed=ip[0], **kw)[0], enumerate(prompts)))
    out["concurrent_equal"] = sum(a == b for a, b in zip(alone, together))
    out["concurrent_distinct"] = len(set(alone))
    print(json.dumps(out))


def run_moderation(base_url, key):
    client = openai.OpenAI(base_url=base_url, api_key=key, max_retries=0)
    out = {}
    m = client.moderations.create(
        model="mod", input=["You are a worthless idiot.", "What a lovely morning for a walk."]
    )
    out["moderations"] = [r.model_dump() for r in m.results]
    text, finish, _ = chat_text(client, "You are a worthless idiot.", temperature=0, max_tokens=8)
    out["flagged"] = {"text": text, "finish": finish}
    text, finish, _ = streamed(client, "Shut up, you stupid idiot.", temperature=0, max_tokens=8)
    out["flagged_streamed"] = {"text": text, "finish": finish}

    print(json.dumps(out))


def run_busy(base_url, key):
    client = openai.OpenAI(base_url=base_url, api_key=key, max_retries=0)

    def one(i):
        try:
            chat_text(client, f"{QUESTION} {i}", temperature=0, max_tokens=200)
            return "ok"
        except openai.RateLimitError as e:
            return "429" if e.response.headers.get("retry-after") else "429 without Retry-After"

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        print(json.dumps(list(pool.map(one, range(8)))))


def long_stream(base_url, key, **kw):
    client = openai.OpenAI(base_url=base_url, api_key=key, max_retries=0)
    return client.chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": QUESTION}],
        temperature=0,
        max_tokens=200,
        stream=True,
        **kw,
    )


def run_long(base_url, key):
    stream = long_stream(base_url, key, stream_options={"include_usage": True})
    chunks = [next(stream)]
    print("streaming", flush=True)  # the test stops the server now
    chunks.extend(stream)
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    print(json.dumps({"finish": finish, "completion_tokens": chunks[-1].usage.completion_tokens}))


def run_hangup(base_url, key):
    stream = long_stream(base_url, key)
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            break
    stream.close()  # hang up after the first text
    print(json.dumps({"closed": True}))


if __name__ == "__main__":
    mode, base_url, key = sys.argv[1:4]
    modes = {
        "all": run_all,
        "moderation": run_moderation,
        "busy": run_busy,
        "long": run_long,
        "hangup": run_hangup,
    }
    modes[mode](base_url, key)
