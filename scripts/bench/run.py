"""The benchmark suite: every speed benchmark, rlhf against its PyTorch reference, in one run on
one machine. Run through scripts/bench/run.sh (it builds rlhf and picks .venv's Python).

Each benchmark is a pair of commands on the same checkpoints, shapes, batch sizes, precision
(fp32; a bf16 row runs train.precision = "bf16" against torch.autocast) and thread count;
the pair runs interleaved (rlhf, reference, rlhf, reference, ...) --runs times and each
figure is the median with its spread (lowest-highest). Peak memory is
each process's peak RSS (from wait4). The machine's own limits come first: the peak fp32 and
bf16 matrix-multiply FLOP/s through LibTorch and the memory bandwidth, against which training
rows get their model-FLOP utilisation (6·N FLOPs a trained token) and generation rows the
fraction of the bandwidth bound (weights and KV cache read once a decoding step).

Writes bench/results.md (the tables) and bench/results.json (every run's raw figures).
"""

import argparse
import json
import os
import re
import shlex
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared/data"
RLHF = str(ROOT / "target/release/rlhf")
PY = sys.executable
BENCH = ROOT / "scripts/bench"
TRL_PYTHON = str(ROOT / "target/bench/ppo/venv/bin/python")


def log(*parts):
    print(*parts, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Running a command and reading what it reports


class Failed(RuntimeError):
    pass


def run(cmd, work, name):
    """Runs `cmd`; returns (stdout, stderr, peak RSS in MiB, seconds). Output is kept in `work`."""
    out_path, err_path = work / f"{name}.out", work / f"{name}.err"
    with open(out_path, "w") as out, open(err_path, "w") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        tail = err_path.read_text()[-2000:]
        raise Failed(f"{shlex.join(cmd)} exited {code}:\n{tail}")
    return out_path.read_text(), err_path.read_text(), usage.ru_maxrss / 1024, seconds


def rate_in(text, unit):
    """The last "(N unit/s)" rlhf printed."""
    found = re.findall(r"\(([0-9.]+) " + unit + r"/s\)", text)
    if not found:
        raise Failed(f"no '(N {unit}/s)' in the output:\n{text[-1000:]}")
    return float(found[-1])


def metrics(run_dir):
    return [json.loads(line) for line in open(run_dir / "metrics.jsonl")]


# ---------------------------------------------------------------------------------------------
# The machine's limits


def machine_limits(threads, device):
    """Measured in a process of its own: this one stays small, because a child's peak RSS
    starts from its parent's (Linux carries the forked copy's high-water mark across exec)."""
    code = f"import json, sys; sys.path.insert(0, {str(BENCH)!r}); import run; " \
        f"print(json.dumps(run.measure_limits({threads}, {device!r})))"
    return json.loads(subprocess.run([PY, "-c", code], check=True, capture_output=True, text=True).stdout)


def bf16_emulated(fp32_gflops, bf16_gflops):
    """A CPU without bf16 kernels (no AVX-512) emulates them, tens of times slower than fp32."""
    return bf16_gflops < fp32_gflops / 10


def measure_limits(threads, device):
    import torch

    torch.set_num_threads(threads)
    dev = torch.device("cuda" if device == "cuda" else "cpu")

    def timed(fn, repeats):
        """The fastest of `repeats` calls after a warm-up: a peak, not an average."""
        fn()
        best = float("inf")
        for _ in range(repeats):
            if dev.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            fn()
            if dev.type == "cuda":
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - start)
        return best

    def peak(dtype, n, repeats):
        a, b = (torch.randn(n, n, device=dev).to(dtype) for _ in range(2))
        return 2 * n**3 / timed(lambda: a @ b, repeats) / 1e9

    n = 8192 if dev.type == "cuda" else 2048
    peaks = {"fp32": peak(torch.float32, n, 5)}
    # Emulated bf16 shows in a small product within a second, where a full-size one would take
    # a minute.
    small = peak(torch.bfloat16, 512, 1) if dev.type == "cpu" else None
    if small is not None and bf16_emulated(peaks["fp32"], small):
        peaks["bf16"] = small
    else:
        peaks["bf16"] = peak(torch.bfloat16, n, 1 if dev.type == "cpu" else 5)
    src = torch.empty(64 * 2**20, device=dev)  # 256 MiB: far past the caches
    dst = torch.empty_like(src)
    copy = timed(lambda: dst.copy_(src), 5)
    bandwidth = 2 * src.numel() * 4 / copy / 1e9  # read + write
    return {"fp32_gflops": peaks["fp32"], "bf16_gflops": peaks["bf16"], "bandwidth_gbs": bandwidth,
            "torch": torch.__version__}


def model_shape(model_dir):
    """Parameter count, bytes of weights, and KV bytes per cached token, from the checkpoint."""
    raw = (model_dir / "model.safetensors").read_bytes()[:8]
    header_len = struct.unpack("<Q", raw)[0]
    with open(model_dir / "model.safetensors", "rb") as f:
        f.seek(8)
        header = json.loads(f.read(header_len))
    params = 0
    for name, entry in header.items():
        if name != "__metadata__":
            count = 1
            for d in entry["shape"]:
                count *= d
            params += count
    config = json.loads((model_dir / "config.json").read_text())
    layers = config.get("n_layer") or config["num_hidden_layers"]
    hidden = config.get("n_embd") or config["hidden_size"]
    heads = config.get("n_head") or config["num_attention_heads"]
    kv_heads = config.get("num_key_value_heads", heads)
    kv_per_token = 2 * layers * kv_heads * (hidden // heads) * 4
    return {"params": params, "weight_bytes": 4 * params, "kv_bytes_per_token": kv_per_token}


# ---------------------------------------------------------------------------------------------
# Inputs shared by the benchmarks


class Inputs:
    """Tokenizer, random-weight presets, prompts and trained heads, made once in target/bench/suite."""

    def __init__(self, work, threads, device):
        self.work, self.threads, self.device = work, threads, device
        self.tokenizer = work / "tokenizer"
        if not (self.tokenizer / "tokenizer.json").exists():
            self.rlhf("tokenizer", "train", "--data", DATA / "hh-harmless.train.jsonl",
                      "--vocab-size", "8192", "--out", self.tokenizer, "--force")

    def rlhf(self, *args):
        cmd = [RLHF, "--threads", str(self.threads), "--device", self.device, *map(str, args)]
        subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def model(self, name):
        """A model directory: `models/...` as it is, a preset initialised with random weights."""
        if (ROOT / name).is_dir():
            return ROOT / name
        out = self.work / name
        if not (out / "model.safetensors").exists():
            extra = ["--set", "vocab_size=50257"] if name == "gpt2-124m" else []  # GPT-2's embedding
            self.rlhf("model", "init", "--preset", name, "--tokenizer", self.tokenizer, "--out", out,
                      "--force", *extra)
        return out

    def prompts(self, model, count, tokens):
        """`count` prompts of `tokens` tokens in `model`'s tokenizer (or the presets' one)."""
        tokenizer = model if (model / "tokenizer.json").exists() else self.tokenizer
        out = self.work / f"{model.name}.{count}x{tokens}.prompts.jsonl"
        if not out.exists():
            subprocess.run([PY, BENCH / "make_prompts.py", tokenizer, out, "--count", str(count),
                            "--tokens", str(tokens)], check=True)
        return out

    def comparisons(self, model, count, prompt_tokens, answer_tokens):
        """`count` comparisons of a `prompt_tokens` prompt and two `answer_tokens` answers in
        `model`'s tokenizer (or the presets' one), in TRL's conversational form."""
        tokenizer = model if (model / "tokenizer.json").exists() else self.tokenizer
        out = self.work / f"{model.name}.{count}x{prompt_tokens}+{answer_tokens}.comparisons.jsonl"
        if not out.exists():
            subprocess.run([PY, BENCH / "make_comparisons.py", tokenizer, out, "--count", str(count),
                            "--prompt-tokens", str(prompt_tokens), "--answer-tokens", str(answer_tokens)],
                           check=True)
        return out

    def text(self):
        out = self.work / "text.jsonl"
        if not out.exists():
            rows = [json.loads(line)["chosen"] for line in open(DATA / "hh-harmless.train.jsonl")][:4000]
            out.write_text("".join(json.dumps({"text": t}) + "\n" for t in rows))
        return out

    def reward_model(self, policy):
        """A reward model from `policy` (two steps: speed does not depend on the weights)."""
        out = self.work / f"{policy.name}.reward"
        if not (out / "model.safetensors").exists():
            self.rlhf("reward", "train", "--config", ROOT / "configs/reward.toml", "--set",
                      f"model.base={policy}", "--set", "train.max_steps=2", "--set",
                      f"output.dir={out}", "--set", "output.overwrite=true")
        return out

    def encoders(self, rows):
        """MiniLM reward model and moderation classifier (one training step) and `rows` of input each."""
        pairs, texts = self.work / f"pairs.{rows}.jsonl", self.work / f"texts.{rows}.jsonl"
        if not pairs.exists():
            subprocess.run([PY, BENCH / "make_pairs.py", DATA / "hh-harmless.train.jsonl", pairs,
                            "--count", str(rows)], check=True)
            labelled = [json.loads(line) for line in open(DATA / "moderation-1680.train.jsonl")][:rows]
            texts.write_text("".join(json.dumps({"text": r["prompt"]}) + "\n" for r in labelled))
        rm, moderation = self.work / "minilm.reward", self.work / "minilm.moderation"
        if not (rm / "model.safetensors").exists():
            head = self.work / "prefs.jsonl"
            head.write_text("".join(open(DATA / "hh-harmless.train.jsonl").readlines()[:64]))
            self.rlhf("reward", "train", "--config", ROOT / "configs/reward-hh.toml", "--set",
                      f"data.train={head}", "--set", "model.base=models/minilm", "--set",
                      "model.train_layers=0", "--set", "data.max_len=256", "--set",
                      "train.max_steps=1", "--set",
                      f"output.dir={rm}", "--set", "output.overwrite=true")
        if not (moderation / "model.safetensors").exists():
            head = self.work / "labelled.jsonl"
            head.write_text("".join(open(DATA / "moderation-1680.train.jsonl").readlines()[:64]))
            self.rlhf("moderate", "train", "--config", ROOT / "configs/moderate.toml", "--set",
                      f"data.train={head}", "--set", "data.max_len=512", "--set", "train.max_steps=1",
                      "--set", f"output.dir={moderation}", "--set", "output.overwrite=true")
        return rm, pairs, moderation, texts


# ---------------------------------------------------------------------------------------------
# The benchmarks: each a pair of commands and how to read a figure from each


class Bench:
    """One row (or, for chat, several rows) of the results: `ours` and `theirs` are
    (command, reader) where reader(stdout, stderr) -> {metric: value}. Metrics named in
    `details` (either side may leave them out) go to the log and results.json, not the table."""

    def __init__(self, group, name, unit, ours, theirs, higher_is_better=True, reference="PyTorch",
                 flops_per_unit=None, bound=None, params=None, peak="fp32_gflops", details=()):
        self.group, self.name, self.unit = group, name, unit
        self.details = details
        self.ours, self.theirs = ours, theirs
        self.higher_is_better = higher_is_better
        self.reference = reference
        self.flops_per_unit = flops_per_unit  # for MFU
        self.bound = bound  # units/s at the memory-bandwidth bound
        self.params = params
        self.peak = peak  # the matrix-multiply peak MFU is taken against


def sft_bench(inputs, name, batch, length, steps, group="SFT training", precision="f32", lora=0):
    """`precision` "bf16": rlhf's train.precision against torch.autocast(dtype=bfloat16);
    `lora` r > 0: LoRA adapters of rank r (α 2r, all-linear) on both sides, peft's on theirs."""
    model = inputs.model(name)
    shape = model_shape(model)
    tag = f"{model.name}.b{batch}.t{length}" + ("" if precision == "f32" else f".{precision}")
    tag += f".lora{lora}" if lora else ""
    run_dir = inputs.work / f"sft.{tag}"
    config = inputs.work / f"sft.{tag}.toml"
    lora_section = f"[model.lora]\nrank = {lora}\nalpha = {2 * lora}\n" if lora else ""
    config.write_text(f"""[model]
base = "{model}"
{lora_section}[data]
train = "{inputs.text()}"
max_len = {length}
packing = true
[train]
max_steps = {steps}
batch_size = {batch}
lr = 1e-4
warmup_steps = 0
precision = "{precision}"
eval_every = 0
save_every = 0
log_every = 1
[output]
dir = "{run_dir}"
overwrite = true
""")

    def ours_rate(_out, _err):
        m = metrics(run_dir)  # tokens/s from step 1 on: the first step warms up
        return {"tokens/s": (m[-1]["tokens"] - m[0]["tokens"]) / (m[-1]["seconds"] - m[0]["seconds"])}

    return Bench(
        group, f"{model.name}, batch {batch} × {length}" + ("" if precision == "f32" else f", {precision}")
        + (f", LoRA r{lora}" if lora else ""),
        "tokens/s",
        ([RLHF, "--threads", str(inputs.threads), "--device", inputs.device, "sft", "train",
          "--config", str(config)], ours_rate),
        ([PY, str(BENCH / "hf_train.py"), str(model), "--steps", str(steps), "--batch", str(batch),
          "--length", str(length), "--threads", str(inputs.threads), "--device", inputs.device,
          "--precision", precision, "--lora-rank", str(lora)],
         lambda out, _: {"tokens/s": float(out.split()[0])}),
        reference="transformers" + (" + autocast" if precision != "f32" else "") + (" + peft" if lora else ""),
        flops_per_unit=6 * shape["params"], params=shape["params"],
        peak="bf16_gflops" if precision == "bf16" else "fp32_gflops")


def generate_bench(inputs, name, batch, prompt_tokens, new_tokens, limits, group="Generation"):
    model = inputs.model(name)
    shape = model_shape(model)
    prompts = inputs.prompts(model, batch, prompt_tokens)
    # One decoding step reads every weight once and, per sequence, the KV cache so far.
    mean_context = prompt_tokens + new_tokens / 2
    step_bytes = shape["weight_bytes"] + batch * mean_context * shape["kv_bytes_per_token"]
    bound = batch * limits["bandwidth_gbs"] * 1e9 / step_bytes
    out_path = inputs.work / f"generate.{model.name}.{batch}.jsonl"
    return Bench(
        group, f"{model.name}, batch {batch}, {prompt_tokens}+{new_tokens} tokens", "tokens/s",
        ([RLHF, "--threads", str(inputs.threads), "--device", inputs.device, "generate", "--model",
          str(model), "--data", str(prompts), "--template", "raw", "--greedy", "--max-new-tokens",
          str(new_tokens), "--ignore-eos", "--batch-size", str(batch), "--out", str(out_path)],
         lambda _, err: {"tokens/s": rate_in(err, "tokens")}),
        ([PY, str(BENCH / "hf_generate.py"), str(model), str(prompts), "--new-tokens", str(new_tokens),
          "--threads", str(inputs.threads), "--repeats", "1", "--device", inputs.device],
         lambda out, _: {"tokens/s": float(out)}),
        reference="transformers", bound=bound, params=shape["params"])


def encode_benches(inputs, rows):
    rm, pairs, moderation, texts = inputs.encoders(rows)
    common = ["--threads", str(inputs.threads), "--device", inputs.device]
    reference = ["--threads", str(inputs.threads), "--repeats", "1", "--device", inputs.device]
    return [
        Bench("Scoring (MiniLM)", f"reward score, {rows} (prompt, response) pairs", "pairs/s",
              ([RLHF, *common, "reward", "score", "--model", str(rm), "--data", str(pairs)],
               lambda _, err: {"pairs/s": rate_in(err, "responses")}),
              ([PY, str(BENCH / "hf_encode.py"), str(rm), str(pairs), *reference],
               lambda out, _: {"pairs/s": float(out)}), reference="transformers"),
        Bench("Scoring (MiniLM)", f"moderate score, {rows} texts, 8 labels", "texts/s",
              ([RLHF, *common, "moderate", "score", "--model", str(moderation), "--data", str(texts)],
               lambda _, err: {"texts/s": rate_in(err, "texts")}),
              ([PY, str(BENCH / "hf_encode.py"), str(moderation), str(texts), *reference],
               lambda out, _: {"texts/s": float(out)}), reference="transformers"),
    ]


def ppo_bench(inputs, name, rollouts, iterations, group="PPO"):
    """Iterations of `rollouts` prompts as scripts/bench/trl_ppo.py describes (48 sampled tokens,
    4 epochs × 2 minibatches); seconds per iteration after the first."""
    policy = inputs.model(name)
    reward = inputs.reward_model(policy)
    prompts = inputs.prompts(policy, 64, 32)
    run_dir = inputs.work / f"ppo.{policy.name}.{rollouts}"
    config = inputs.work / f"ppo.{policy.name}.{rollouts}.toml"
    config.write_text(f"""[model]
policy = "{policy}"
reward = "{reward}"
[data]
prompts = "{prompts}"
max_prompt_len = 64
[rollout]
max_new_tokens = 48
[ppo]
ppo_epochs = 4
mini_batch_size = {rollouts // 2}
[train]
max_steps = {iterations}
batch_size = {rollouts}
lr = 1e-5
warmup_steps = 0
save_every = 0
log_every = 1
[output]
dir = "{run_dir}"
overwrite = true
""")

    def ours_rate(_out, _err):
        m = metrics(run_dir)
        return {"s/iteration": (m[-1]["seconds"] - m[0]["seconds"]) / (len(m) - 1)}

    return Bench(
        group, f"{policy.name}, {rollouts} rollouts × 48 tokens", "s/iteration",
        ([RLHF, "--threads", str(inputs.threads), "--device", inputs.device, "ppo", "train",
          "--config", str(config)], ours_rate),
        ([TRL_PYTHON, str(BENCH / "trl_ppo.py"), "--policy", str(policy), "--reward", str(reward),
          "--prompts", str(prompts), "--batch", str(rollouts), "--mini-batches", "2",
          "--ppo-epochs", "4", "--max-new-tokens", "48", "--iterations", str(iterations),
          "--threads", str(inputs.threads), "--device", inputs.device],
         lambda out, _: {"s/iteration": json.loads(out.strip().splitlines()[-1])["seconds_per_iteration"]}),
        higher_is_better=False, reference="TRL 1.12 PPOTrainer")


def grpo_bench(inputs, name, prompts, generations, iterations, new_tokens=48, group="GRPO", lora=0):
    """Iterations of `prompts` prompts × `generations` completions of up to `new_tokens` tokens
    as scripts/bench/trl_grpo.py describes (β = 0, μ = 1, loss dapo, all completions in one
    forward/backward); seconds per iteration after the first. `lora` r > 0: LoRA adapters of
    rank r (α 2r, all-linear), TRL's through its peft_config."""
    policy = inputs.model(name)
    reward = inputs.reward_model(policy)
    prompt_file = inputs.prompts(policy, 64, 32)
    tag = f"{policy.name}.{prompts}x{generations}" + (f".lora{lora}" if lora else "")
    run_dir = inputs.work / f"grpo.{tag}"
    config = inputs.work / f"grpo.{tag}.toml"
    lora_section = f"[model.lora]\nrank = {lora}\nalpha = {2 * lora}\n" if lora else ""
    config.write_text(f"""[model]
base = "{policy}"
{lora_section}[data]
prompts = "{prompt_file}"
max_prompt_len = 64
[rollout]
max_new_tokens = {new_tokens}
[[rewards]]
model = "{reward}"
[grpo]
num_generations = {generations}
beta = 0.0
num_iterations = 1
loss_type = "dapo"
micro_batch_size = {prompts * generations}
log_completions_every = 0
[train]
max_steps = {iterations}
batch_size = {prompts}
lr = 1e-5
warmup_steps = 0
schedule = "constant"
save_every = 0
log_every = 1
[output]
dir = "{run_dir}"
overwrite = true
""")

    def ours_rate(_out, _err):
        m = metrics(run_dir)
        timed = m[1:]
        return {"s/iteration": (m[-1]["seconds"] - m[0]["seconds"]) / len(timed),
                "completion length": statistics.mean(r["completions/mean_length"] for r in m),
                "rollout_s": statistics.mean(r["rollout_s"] for r in timed),
                "update_s": statistics.mean(r["update_s"] for r in timed)}

    def theirs_rate(out, _err):
        result = json.loads(out.strip().splitlines()[-1])
        return {"s/iteration": result["seconds_per_iteration"], "completion length": result["mean_length"],
                "rollout_s": result["rollout_seconds"],
                "update_s": result["seconds_per_iteration"] - result["rollout_seconds"]}

    return Bench(
        group, f"{policy.name}, {prompts} prompts × {generations} completions × {new_tokens} tokens"
        + (f", LoRA r{lora}" if lora else ""), "s/iteration",
        ([RLHF, "--threads", str(inputs.threads), "--device", inputs.device, "grpo", "train",
          "--config", str(config)], ours_rate),
        ([TRL_PYTHON, str(BENCH / "trl_grpo.py"), "--policy", str(policy), "--reward", str(reward),
          "--prompts", str(prompt_file), "--prompts-per-step", str(prompts), "--generations", str(generations),
          "--max-new-tokens", str(new_tokens), "--steps", str(iterations),
          "--threads", str(inputs.threads), "--device", inputs.device, "--lora-rank", str(lora)], theirs_rate),
        higher_is_better=False, reference="TRL 1.12 GRPOTrainer",
        details=("completion length", "rollout_s", "update_s"))


def dpo_bench(inputs, name, batch, steps, prompt_tokens=32, answer_tokens=64, group="DPO"):
    """Steps of `batch` comparisons (a prompt of `prompt_tokens` tokens, two answers of
    `answer_tokens`) as scripts/bench/trl_dpo.py describes (sigmoid loss, β = 0.1, reference
    log-probs computed once before the first step); seconds per step after the first, so the
    reference pass is left out on both sides."""
    model = inputs.model(name)
    data = inputs.comparisons(model, batch * steps, prompt_tokens, answer_tokens)
    tag = f"{model.name}.b{batch}"
    run_dir = inputs.work / f"dpo.{tag}"
    config = inputs.work / f"dpo.{tag}.toml"
    config.write_text(f"""[model]
base = "{model}"
[data]
train = "{data}"
valid_fraction = 0.0
max_len = {2 * (prompt_tokens + answer_tokens)}
[dpo]
loss_type = "sigmoid"
beta = 0.1
[train]
max_steps = {steps}
batch_size = {batch}
grad_accum = 1
lr = 1e-5
warmup_steps = 0
schedule = "constant"
eval_every = 0
save_every = 0
log_every = 1
[output]
dir = "{run_dir}"
overwrite = true
""")

    def ours_rate(_out, _err):
        m = metrics(run_dir)
        return {"s/step": (m[-1]["seconds"] - m[0]["seconds"]) / (len(m) - 1)}

    return Bench(
        group, f"{model.name}, batch {batch} × ({prompt_tokens} + 2 × {answer_tokens} tokens)", "s/step",
        ([RLHF, "--threads", str(inputs.threads), "--device", inputs.device, "dpo", "train",
          "--config", str(config)], ours_rate),
        ([TRL_PYTHON, str(BENCH / "trl_dpo.py"), "--model", str(model), "--data", str(data),
          "--batch", str(batch), "--steps", str(steps), "--threads", str(inputs.threads),
          "--device", inputs.device],
         lambda out, _: {"s/step": json.loads(out.strip().splitlines()[-1])["seconds_per_step"]}),
        higher_is_better=False, reference="TRL 1.12 DPOTrainer")


CHAT_TURNS = [1, 10, 20]


def chat_bench(inputs, name, new_tokens, conversation="reuse"):
    """rlhf keeps its KV cache across turns; transformers either reuses its cache (cropped to
    the prefix it shares with the new prompt) or re-encodes the history, as `transformers chat`."""
    model = inputs.model(name)
    turns = inputs.work / "chat-turns.txt"
    subprocess.run([PY, BENCH / "hf_chat.py", "--write-script", turns], check=True)

    def ours_ttft(out, _err):
        rows = [json.loads(line) for line in out.splitlines() if line.strip()]
        return {f"turn {t}": rows[t - 1]["timing"]["first_token_ms"] for t in CHAT_TURNS}

    def theirs_ttft(out, _err):
        rows = json.loads(out)
        return {f"turn {t}": rows[t - 1][0] * 1e3 for t in CHAT_TURNS}

    ours_cmd = ["bash", "-c", f"exec {shlex.quote(RLHF)} --threads {inputs.threads} --device {inputs.device} "
                f"chat --model {shlex.quote(str(model))} --json --greedy --ignore-eos "
                f"--max-new-tokens {new_tokens} < {shlex.quote(str(turns))}"]
    return Bench(
        "Chat: time to first token", f"{model.name}, {new_tokens} new tokens a turn", "ms",
        (ours_cmd, ours_ttft),
        ([PY, str(BENCH / "hf_chat.py"), "--model", str(model), "--new-tokens", str(new_tokens),
          "--threads", str(inputs.threads), "--device", inputs.device, "--conversation", conversation],
         theirs_ttft),
        higher_is_better=False,
        reference="transformers, cache reused" if conversation == "reuse" else "transformers, re-encoding")


# ---------------------------------------------------------------------------------------------
# The suite


def suite(inputs, quick, limits):
    """(benchmarks, scaling benchmarks) for this mode; the scaling rows run rlhf alone."""
    if quick:
        main = [
            sft_bench(inputs, "small", 8, 128, 5),
            sft_bench(inputs, "small", 8, 128, 5, precision="bf16"),
            generate_bench(inputs, "small", 1, 32, 64, limits),
            generate_bench(inputs, "small", 8, 32, 64, limits),
            *encode_benches(inputs, 100),
            ppo_bench(inputs, "small", 8, 4),
            chat_bench(inputs, "models/smollm2", 4),
        ]
        scaling = [
            *[sft_bench(inputs, "small", 4, t, 4, "SFT scaling") for t in [64, 128, 256]],
            *[sft_bench(inputs, "small", b, 64, 4, "SFT scaling") for b in [8, 16]],
            *[generate_bench(inputs, "small", b, 32, 64, limits, "Generation scaling") for b in [2, 4]],
            *[generate_bench(inputs, "small", 8, p, 64, limits, "Generation scaling") for p in [64, 128]],
        ]
    else:
        main = [
            sft_bench(inputs, "small", 8, 128, 20),
            sft_bench(inputs, "small", 8, 128, 10, precision="bf16"),
            sft_bench(inputs, "gpt2-124m", 8, 128, 4),
            sft_bench(inputs, "models/smollm2", 8, 128, 4),
            sft_bench(inputs, "models/smollm2", 8, 128, 4, group="LoRA", lora=16),
            *[generate_bench(inputs, m, b, 32, 128, limits) for m in ["small", "gpt2-124m", "models/smollm2"]
              for b in [1, 8]],
            *encode_benches(inputs, 1000),
            ppo_bench(inputs, "small", 16, 4),
            ppo_bench(inputs, "models/smollm2", 4, 2),
            grpo_bench(inputs, "small", 4, 8, 5),
            grpo_bench(inputs, "models/smollm2", 2, 4, 3),
            grpo_bench(inputs, "models/smollm2", 2, 4, 3, group="LoRA", lora=16),
            dpo_bench(inputs, "small", 8, 8),
            dpo_bench(inputs, "models/smollm2", 4, 4),
            chat_bench(inputs, "models/smollm2", 16),
            chat_bench(inputs, "models/smollm2", 16, "reencode"),
        ]
        scaling = [
            *[sft_bench(inputs, "small", 8, t, 10, "SFT scaling") for t in [64, 128, 256, 512]],
            *[sft_bench(inputs, "small", b, 128, 10, "SFT scaling") for b in [4, 16, 32]],
            *[generate_bench(inputs, "small", b, 32, 128, limits, "Generation scaling") for b in [2, 4, 16]],
            *[generate_bench(inputs, "small", 8, p, 128, limits, "Generation scaling") for p in [64, 128, 256]],
            *[ppo_bench(inputs, "small", r, 2, "PPO scaling") for r in [8, 32]],
        ]
    for bench in scaling:
        bench.theirs = None
    return main, scaling


def measure(bench, runs, work, index):
    """Interleaved runs; {side: {"runs": [{metric: value}], "rss_mib": [..]}}."""
    result = {"ours": {"runs": [], "rss_mib": []}, "theirs": {"runs": [], "rss_mib": []}}
    for r in range(runs):
        for side in ["ours", "theirs"] if bench.theirs else ["ours"]:
            cmd, read = getattr(bench, side)
            out, err, rss, seconds = run(cmd, work, f"{index:02d}.{side}.{r}")
            figures = read(out, err)
            result[side]["runs"].append(figures)
            result[side]["rss_mib"].append(rss)
            log(f"  {side:6} run {r + 1}: " + ", ".join(f"{k} {v:.4g}" for k, v in figures.items())
                + f" ({seconds:.0f} s, {rss:.0f} MiB)")
    return result


def summary(values):
    return statistics.median(values), min(values), max(values)


def fmt(value):
    return f"{value:,.3g}" if value < 100 else f"{value:,.0f}"


def table(rows, benches, results, limits):
    """Markdown rows of the benches in `rows` (indices)."""
    lines = ["| benchmark | metric | rlhf (median, range) | peak RSS | reference (median, range) | peak RSS | ratio | limit |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for i in rows:
        bench, result = benches[i], results[i]
        if "failed" in result:
            lines.append(f"| {bench.name} | {bench.unit} | failed: `{result['failed']}` | | | | | |")
            continue
        if "skipped" in result:
            lines.append(f"| {bench.name} | {bench.unit} | skipped: {result['skipped']} | | | | | |")
            continue
        for metric in [m for m in result["ours"]["runs"][0] if m not in bench.details]:
            ours = summary([r[metric] for r in result["ours"]["runs"]])
            rss = f"{max(result['ours']['rss_mib']) / 1024:.2f} GB"
            reference, reference_rss, ratio = "not run", "", ""
            if result["theirs"]["runs"]:
                theirs = summary([r[metric] for r in result["theirs"]["runs"]])
                reference = f"{bench.reference}: {fmt(theirs[0])} ({fmt(theirs[1])}–{fmt(theirs[2])})"
                reference_rss = f"{max(result['theirs']['rss_mib']) / 1024:.2f} GB"
                ratio = f"{ours[0] / theirs[0] if bench.higher_is_better else theirs[0] / ours[0]:.2f}×"
            limit = ""
            if bench.flops_per_unit:
                peak = limits[bench.peak] * 1e9
                limit = f"MFU {bench.flops_per_unit * ours[0] / peak:.0%}"
                if result["theirs"]["runs"]:
                    limit += f" (reference {bench.flops_per_unit * theirs[0] / peak:.0%})"
            if bench.bound:
                limit = f"{ours[0] / bench.bound:.0%} of bandwidth bound ({fmt(bench.bound)} {bench.unit})"
            unit = bench.unit if metric == bench.unit else f"{metric}, {bench.unit}"
            lines.append(f"| {bench.name} | {unit} | {fmt(ours[0])} ({fmt(ours[1])}–{fmt(ours[2])}) | {rss} | "
                         f"{reference} | {reference_rss} | {ratio} | {limit} |")
    return lines


def relative(cmd):
    """`cmd` with this checkout's paths relative to it (results get committed)."""
    return [str(arg).replace(f"{ROOT}/", "") for arg in cmd]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the reduced set (at most 10 minutes on 2 cores)")
    parser.add_argument("--runs", type=int, default=3, help="interleaved runs of each side (median, range)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--only", help="run the benchmarks whose group or name contains this text")
    parser.add_argument("--out", type=Path, default=ROOT / "bench")
    args = parser.parse_args()
    started = time.time()
    work = ROOT / "target/bench/suite"
    work.mkdir(parents=True, exist_ok=True)
    logs = work / "logs"
    logs.mkdir(exist_ok=True)

    limits = machine_limits(args.threads, args.device)
    log(f"machine: fp32 {limits['fp32_gflops']:.0f} GFLOP/s, bf16 {limits['bf16_gflops']:.1f} GFLOP/s, "
        f"{limits['bandwidth_gbs']:.1f} GB/s ({args.threads} threads, {args.device})")
    inputs = Inputs(work, args.threads, args.device)
    main_benches, scaling = suite(inputs, args.quick, limits)
    benches = main_benches + scaling
    chosen = [i for i, b in enumerate(benches)
              if not args.only or args.only in b.group or args.only in b.name]
    results = {}
    for i in chosen:
        log(f"{benches[i].group}: {benches[i].name}")
        if benches[i].peak == "bf16_gflops" and bf16_emulated(limits["fp32_gflops"], limits["bf16_gflops"]):
            # The row would take most of an hour and measure only the emulation.
            results[i] = {"skipped": f"bf16 is emulated on this CPU ({limits['bf16_gflops']:.1f} "
                                     f"GFLOP/s against {limits['fp32_gflops']:.0f} in fp32)"}
            log(f"  {results[i]['skipped']}: skipped")
            continue
        try:
            results[i] = measure(benches[i], args.runs, logs, i)
        except Failed as e:  # the rest of the suite still runs; the table says which failed
            log(f"  failed: {e}")
            results[i] = {"failed": str(e).splitlines()[0]}

    args.out.mkdir(parents=True, exist_ok=True)
    minutes = (time.time() - started) / 60
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    command = "scripts/bench/run.sh" + (" --quick" if args.quick else "") + (
        f" --device {args.device}" if args.device != "cpu" else "") + (f" --only '{args.only}'" if args.only else "")
    md = [f"# Benchmarks: rlhf against the PyTorch stack", "",
          f"`{command}` — {time.strftime('%Y-%m-%d')}, {minutes:.0f} min, {args.device}, "
          f"{args.threads} threads ({cpu}, {os.cpu_count()} cores), fp32 unless a row says bf16, torch {limits['torch']}; "
          f"each figure the median of {args.runs} interleaved runs (range in brackets). "
          "Ratio: how many times faster rlhf is.", "",
          f"Machine limits through LibTorch: matrix multiply {limits['fp32_gflops']:.0f} GFLOP/s fp32, "
          f"{limits['bf16_gflops']:.1f} GFLOP/s bf16; memory bandwidth {limits['bandwidth_gbs']:.1f} GB/s "
          "(copy, read + write). MFU: 6·N FLOPs a trained token against the fp32 peak (bf16 rows: the bf16 peak); bandwidth "
          "bound: every weight and the KV cache read once a decoding step."]
    groups = []
    for i in chosen:
        if benches[i].group not in groups:
            groups.append(benches[i].group)
    for group in groups:
        md += ["", f"## {group}", ""]
        md += table([i for i in chosen if benches[i].group == group], benches, results, limits)
    (args.out / "results.md").write_text("\n".join(md) + "\n")
    raw = {"command": command, "date": time.strftime("%Y-%m-%dT%H:%M:%S"), "device": args.device,
           "threads": args.threads, "runs": args.runs, "limits": limits, "minutes": minutes,
           "benchmarks": [{"group": benches[i].group, "name": benches[i].name, "unit": benches[i].unit,
                           "reference": benches[i].reference, "params": benches[i].params,
                           "cmd_ours": relative(benches[i].ours[0]),
                           "cmd_theirs": relative(benches[i].theirs[0]) if benches[i].theirs else None,
                           **results[i]} for i in chosen]}
    (args.out / "results.json").write_text(json.dumps(raw, indent=1, default=str) + "\n")
    print("\n".join(md))
    log(f"\nwrote {args.out / 'results.md'} and results.json ({minutes:.1f} min)")
    if any("failed" in r for r in results.values()):
        sys.exit("some benchmarks failed: see their rows and target/bench/suite/logs")


if __name__ == "__main__":
    try:
        main()
    except Failed as e:
        log(f"error: {e}")
        sys.exit(1)
