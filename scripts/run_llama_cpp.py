"""llama.cpp itself, for tests/llama_cpp.rs: run with the venv scripts/llama_cpp_venv.sh builds.

    target/llama-cpp/venv/bin/python scripts/run_llama_cpp.py run REQUEST.json OUT.json
        REQUEST {"model": GGUF, "texts": [...], "prompts": [...], "max_new_tokens": N,
                 "threads": N, "n_ctx": N}
        OUT     {"pre": tokenizer.ggml.pre as the file has it,
                 "texts": [token ids of each text, as llama.cpp tokenizes it],
                 "prompts": [{"ids": prompt ids, "completion": generated ids,
                              "top": the two best (id, logit) at each step, "seconds": s}],
                 "load_seconds": s}
        Greedy decoding token by token (argmax of the logits; stops at end-of-sequence or after
        max_new_tokens), special tokens parsed in the text, bos added where the file says so.
        The KV cache is kept in f32 (llama.cpp's default is f16), so that an f32 file is
        computed in f32 throughout, as `rlhf generate` computes it.
    target/llama-cpp/venv/bin/python scripts/run_llama_cpp.py quantize IN.gguf OUT.gguf TYPE
        llama.cpp's own quantization of IN (llama_model_quantize, no importance matrix) to TYPE,
        q8_0 or q4_k (its Q4_K_M), to compare with `rlhf model export --type TYPE`.
A file llama.cpp refuses makes this exit 3 with llama.cpp's log on stderr.
"""

import ctypes
import json
import sys
import time

import llama_cpp
import numpy as np


def run(request_path, out_path):
    request = json.load(open(request_path))
    started = time.perf_counter()
    try:
        llm = llama_cpp.Llama(model_path=request["model"], n_ctx=request.get("n_ctx", 512),
                              n_batch=512, n_threads=request.get("threads", 1), logits_all=True,
                              type_k=llama_cpp.GGML_TYPE_F32, type_v=llama_cpp.GGML_TYPE_F32,
                              verbose=request.get("verbose", False))
    except ValueError as error:  # llama.cpp's own message went to stderr
        print(f"llama.cpp cannot load {request['model']}: {error}", file=sys.stderr)
        sys.exit(3)
    load_seconds = time.perf_counter() - started
    tokenize = lambda text: llm.tokenize(text.encode(), add_bos=True, special=True)
    out = {"pre": llm.metadata.get("tokenizer.ggml.pre"), "load_seconds": load_seconds,
           "texts": [tokenize(text) for text in request.get("texts", [])], "prompts": []}
    eos = llm.token_eos()
    for prompt in request.get("prompts", []):
        ids = tokenize(prompt)
        llm.reset()
        started = time.perf_counter()
        llm.eval(ids)
        completion, top = [], []
        for _ in range(request["max_new_tokens"]):
            logits = np.asarray(llm.scores[llm.n_tokens - 1])
            best = np.argsort(-logits, kind="stable")[:2]
            top.append([[int(i), float(logits[i])] for i in best])
            token = int(best[0])
            completion.append(token)
            if token == eos:
                break
            llm.eval([token])
        out["prompts"].append({"ids": ids, "completion": completion, "top": top,
                               "seconds": time.perf_counter() - started})
    json.dump(out, open(out_path, "w"))


def quantize(source, target, kind):
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = {"q8_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0,
                    "q4_k": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M}[kind]
    params.nthread = 1
    if llama_cpp.llama_model_quantize(source.encode(), target.encode(), ctypes.byref(params)) != 0:
        print(f"llama.cpp could not quantize {source}", file=sys.stderr)
        sys.exit(3)


if __name__ == "__main__":
    commands = {"run": (run, 2), "quantize": (quantize, 3)}
    command, arity = commands.get(sys.argv[1] if len(sys.argv) > 1 else "", (None, 0))
    if command is None or len(sys.argv) != 2 + arity:
        sys.exit(__doc__)
    command(*sys.argv[2:])
