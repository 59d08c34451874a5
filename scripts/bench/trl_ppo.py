"""The reference side of the PPO speed benchmark: a few PPO iterations (batch rollouts, then
ppo_epochs x mini_batches updates of policy and value model) on model directories written by
`rlhf`, on CPU and fully offline. Prints one JSON line on stdout; everything else goes to stderr.

    scripts/bench/trl_venv.sh
    target/bench/ppo/venv/bin/python scripts/bench/trl_ppo.py --policy P --reward R \
        --prompts prompts.jsonl --batch 16 --mini-batches 2 --ppo-epochs 4 \
        --max-new-tokens 48 --iterations 3 --threads 2

--impl trl (default) runs TRL's PPOTrainer (trl.experimental.ppo, TRL 1.12.0: the last release
that has it). --impl torch runs the same algorithm as a plain PyTorch + transformers loop, as a
cross-check of TRL's overhead and a fallback for when TRL's PPO no longer runs.

Responses are always exactly --max-new-tokens long (no stop token), so both sides do the same
amount of work whatever the policy samples. The first iteration is reported apart: it pays for
allocator growth and lazy initialisation."""

import argparse
import contextlib
import json
import sys
import tempfile
import time

from trl_offline import log  # first: sets the environment torch reads

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from transformers import (  # noqa: E402
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
)



def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policy", required=True, help="causal LM dir (also the frozen reference)")
    parser.add_argument("--reward", required=True, help="sequence-classification dir, num_labels=1 (also the value model's start)")
    parser.add_argument("--prompts", required=True, help='JSONL rows with "prompt" (or chat "messages")')
    parser.add_argument("--batch", type=int, default=16, help="rollouts per iteration")
    parser.add_argument("--mini-batches", type=int, default=2)
    parser.add_argument("--ppo-epochs", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="cuda: --impl trl only")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--lr", type=float, default=1e-5)
    parser.add_argument("--kl-coef", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--impl", choices=["trl", "torch"], default="trl")
    args = parser.parse_args()
    if args.iterations < 2:
        parser.error("--iterations must be at least 2: the first one is warm-up")
    if args.batch % args.mini_batches:
        parser.error("--batch must be a multiple of --mini-batches")
    return args


def load_prompts(path, tokenizer):
    """Token ids of each prompt, rendered with the policy's own chat template and ending in the
    assistant header, as the rlhf side renders them."""
    prompts = []
    with open(path) as f:
        for line in f:
            if not line.strip():
                continue
            row = json.loads(line)
            if "prompt" in row:
                messages = [{"role": "user", "content": row["prompt"]}]
            else:
                messages = list(row["messages"])
                while messages and messages[-1]["role"] == "assistant":  # keep the context only
                    messages.pop()
            text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            # The template already holds every special token: add none of the tokenizer's own.
            prompts.append(tokenizer(text, add_special_tokens=False)["input_ids"])
    return prompts


def load_models(args):
    tokenizer = AutoTokenizer.from_pretrained(args.policy)
    # Queries are left-padded so that all responses start at the same column.
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    fp32 = dict(dtype=torch.float32)
    policy = AutoModelForCausalLM.from_pretrained(args.policy, **fp32)
    ref_policy = AutoModelForCausalLM.from_pretrained(args.policy, **fp32)
    reward_model = AutoModelForSequenceClassification.from_pretrained(args.reward, num_labels=1, **fp32)
    value_model = AutoModelForSequenceClassification.from_pretrained(args.reward, num_labels=1, **fp32)
    for frozen in (ref_policy, reward_model):
        frozen.eval().requires_grad_(False)
    # Our config.json leaves out *_pdrop, so transformers would train GPT-2 with its 0.1
    # defaults; RLHF trainers (TRL, rlhf) run without dropout, else policy and reference differ
    # even before the first update.
    for model in (policy, value_model):
        for module in model.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
    return tokenizer, policy, ref_policy, reward_model, value_model


def count_generated_tokens(policy, counter):
    """Wraps policy.generate to count the tokens it really produced, so tokens/s is measured,
    not assumed."""
    generate = policy.generate

    def counting_generate(*a, **kw):
        out = generate(*a, **kw)
        sequences = out.sequences if hasattr(out, "sequences") else out
        prompt = kw["input_ids"] if "input_ids" in kw else a[0]
        counter["tokens"] += sequences.numel() - prompt.numel()
        counter["lengths"].add(sequences.shape[1] - prompt.shape[1])
        return out

    policy.generate = counting_generate


# ---------------------------------------------------------------------------------------------
# TRL


def run_trl(args, tokenizer, prompts, policy, ref_policy, reward_model, value_model):
    """Returns the wall-clock seconds of each PPO iteration, from on_step_end timestamps."""
    import trl
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl.experimental.ppo import PPOConfig, PPOTrainer

    class IterationTimer(TrainerCallback):
        # PPOTrainer fires on_step_end once per iteration, after the rollout, the updates and
        # the (cheap) metric logging: the gaps between them are whole iterations.
        def __init__(self):
            self.stamps = []

        def on_train_begin(self, *a, **kw):
            self.stamps = [time.perf_counter()]

        def on_step_end(self, *a, **kw):
            self.stamps.append(time.perf_counter())

    timer = IterationTimer()
    with tempfile.TemporaryDirectory() as output_dir:
        config = PPOConfig(
            output_dir=output_dir,  # created even when nothing is saved
            report_to="none",
            seed=args.seed,
            use_cpu=args.device == "cpu",
            bf16=False,  # TRL's configs default bf16 to True: would autocast on CPU
            fp16=False,
            learning_rate=args.lr,
            # TRL: batch = per_device_train_batch_size x gradient_accumulation_steps, split into
            # num_mini_batches optimiser steps; with accumulation 1 each minibatch is a single
            # forward/backward, as on the rlhf side.
            per_device_train_batch_size=args.batch,
            gradient_accumulation_steps=1,
            num_mini_batches=args.mini_batches,
            num_ppo_epochs=args.ppo_epochs,
            total_episodes=args.iterations * args.batch,
            local_rollout_forward_batch_size=args.batch,  # one generate call per iteration
            response_length=args.max_new_tokens,
            temperature=args.temperature,
            # No stop token: TRL then clears the policy's generation eos, so every response is
            # exactly response_length tokens.
            stop_token=None,
            stop_token_id=None,
            missing_eos_penalty=None,
            kl_coef=args.kl_coef,
            num_sample_generations=0,  # no completion tables
            eval_strategy="no",
            save_strategy="no",
            disable_tqdm=True,
            dataloader_num_workers=0,
        )
        trainer = PPOTrainer(
            args=config,
            processing_class=tokenizer,
            model=policy,
            ref_model=ref_policy,
            reward_model=reward_model,
            value_model=value_model,
            train_dataset=Dataset.from_dict({"input_ids": prompts}),
            callbacks=[timer],
        )
        log(f"trl {trl.__version__}: mixed precision {trainer.accelerator.mixed_precision!r}, device {trainer.accelerator.device}")
        torch.set_num_threads(args.threads)  # again: nothing above may have changed it
        # PPOTrainer prints its banner and per-iteration metrics on stdout: keep stdout for the
        # JSON line.
        with contextlib.redirect_stdout(sys.stderr):
            trainer.train()
    stamps = timer.stamps
    return [b - a for a, b in zip(stamps, stamps[1:])]


# ---------------------------------------------------------------------------------------------
# Plain PyTorch: the same algorithm and defaults as TRL's PPOTrainer (k1 KL penalty per token,
# score at the last token, GAE with gamma 1 / lambda 0.95, whitened advantages, clipped policy
# and value losses with vf_coef 0.1), plus gradient clipping at 1.0 (which TRL's PPO omits).

CLIP = 0.2
CLIP_VALUE = 0.2
VF_COEF = 0.1
GAMMA = 1.0
LAM = 0.95


def positions(mask):
    return (mask.cumsum(1) - 1).clamp(min=0)


def token_logprobs(logits, tokens, temperature):
    return torch.gather(F.log_softmax(logits / temperature, dim=-1), 2, tokens.unsqueeze(-1)).squeeze(-1)


def whiten(x):
    return (x - x.mean()) * torch.rsqrt(x.var() + 1e-8)


def values_of(value_model, ids, mask):
    """Value (or reward) of every position: the sequence-classification head on each hidden
    state, not only the last one."""
    backbone = getattr(value_model, value_model.base_model_prefix)
    hidden = backbone(input_ids=ids, attention_mask=mask, position_ids=positions(mask), use_cache=False).last_hidden_state
    return value_model.score(hidden).squeeze(-1)


def run_torch(args, tokenizer, prompts, policy, ref_policy, reward_model, value_model):
    torch.manual_seed(args.seed)
    # Responses never stop early: no eos for generate. (Not min_new_tokens: it masks eos out of
    # the sampling distribution, which then differs from the policy's.)
    policy.generation_config.eos_token_id = None
    pad = tokenizer.pad_token_id
    params = list(policy.parameters()) + list(value_model.parameters())
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    policy.train()
    value_model.train()
    mini = args.batch // args.mini_batches
    order = []
    times = []
    for _ in range(args.iterations):
        start = time.perf_counter()
        # A fresh shuffle of the prompts whenever they run out, as TRL's dataloader does.
        if len(order) < args.batch:
            order += torch.randperm(len(prompts)).tolist()
        batch, order = [prompts[i] for i in order[: args.batch]], order[args.batch :]
        queries = tokenizer.pad({"input_ids": batch}, return_tensors="pt")
        q_ids, q_mask = queries["input_ids"], queries["attention_mask"]
        context = q_ids.shape[1]

        with torch.no_grad():
            out = policy.generate(
                input_ids=q_ids,
                attention_mask=q_mask,
                do_sample=True,
                temperature=args.temperature,
                top_k=0,
                top_p=1.0,
                max_new_tokens=args.max_new_tokens,
                eos_token_id=None,
                pad_token_id=pad,
                use_cache=True,
                return_dict_in_generate=True,
                output_scores=True,
            )
            ids = out.sequences
            responses = ids[:, context:]
            # Unlike TRL, the mask does not come from `ids != pad`: pad is eos here, and a sampled
            # eos in the middle of a response is a real token.
            mask = torch.cat([q_mask, torch.ones_like(responses)], 1)
            # The sampling distribution's own log-probs (scores are already temperature-scaled).
            logprobs = torch.gather(F.log_softmax(torch.stack(out.scores, 1), -1), 2, responses.unsqueeze(-1)).squeeze(-1)
            ref_logits = ref_policy(input_ids=ids, attention_mask=mask, position_ids=positions(mask)).logits
            ref_logprobs = token_logprobs(ref_logits[:, context - 1 : -1], responses, args.temperature)
            values = values_of(value_model, ids, mask)[:, context - 1 : -1]
            scores = values_of(reward_model, ids, mask)[:, -1]

            kl = logprobs - ref_logprobs
            rewards = -args.kl_coef * kl
            rewards[:, -1] += scores
            advantages = torch.zeros_like(rewards)
            last = torch.zeros(args.batch)
            for t in reversed(range(rewards.shape[1])):
                next_value = values[:, t + 1] if t + 1 < rewards.shape[1] else 0.0
                last = rewards[:, t] + GAMMA * next_value - values[:, t] + GAMMA * LAM * last
                advantages[:, t] = last
            returns = advantages + values
            advantages = whiten(advantages)

        for _ in range(args.ppo_epochs):
            perm = torch.randperm(args.batch)
            for lo in range(0, args.batch, mini):
                i = perm[lo : lo + mini]
                logits = policy(input_ids=ids[i], attention_mask=mask[i], position_ids=positions(mask[i])).logits
                new_logprobs = token_logprobs(logits[:, context - 1 : -1], responses[i], args.temperature)
                ratio = torch.exp(new_logprobs - logprobs[i])
                pg_loss = torch.max(-advantages[i] * ratio, -advantages[i] * ratio.clamp(1 - CLIP, 1 + CLIP)).mean()
                v = values_of(value_model, ids[i], mask[i])[:, context - 1 : -1]
                v_clipped = values[i] + (v - values[i]).clamp(-CLIP_VALUE, CLIP_VALUE)
                vf_loss = 0.5 * torch.max((v - returns[i]) ** 2, (v_clipped - returns[i]) ** 2).mean()
                loss = pg_loss + VF_COEF * vf_loss
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
        log(f"iteration {len(times)}: {times[-1]:.3f}s  score {scores.mean():.4f}  kl {kl.sum(1).mean():.4f}  loss {loss.item():.4f}")
    return times


def main():
    args = parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    tokenizer, policy, ref_policy, reward_model, value_model = load_models(args)
    prompts = load_prompts(args.prompts, tokenizer)
    if len(prompts) < args.batch:
        sys.exit(f"{args.prompts}: {len(prompts)} prompts, fewer than --batch {args.batch}")
    counter = {"tokens": 0, "lengths": set()}
    count_generated_tokens(policy, counter)
    log(f"{args.impl}: {len(prompts)} prompts, policy {sum(p.numel() for p in policy.parameters()) / 1e6:.2f} M params, {torch.get_num_threads()} threads")

    run = run_trl if args.impl == "trl" else run_torch
    times = run(args, tokenizer, prompts, policy, ref_policy, reward_model, value_model)
    if len(times) != args.iterations:
        sys.exit(f"timed {len(times)} iterations, expected {args.iterations}")
    if counter["lengths"] != {args.max_new_tokens}:
        sys.exit(f"response lengths {sorted(counter['lengths'])}, expected exactly {args.max_new_tokens}")

    timed = times[1:]
    tokens_per_iteration = counter["tokens"] / len(times)
    result = {
        "impl": args.impl,
        "trl_version": __import__("trl").__version__ if args.impl == "trl" else None,
        "seconds_per_iteration": sum(timed) / len(timed),
        "first_iteration_seconds": times[0],
        "iterations": len(times),
        "tokens_per_second": tokens_per_iteration * len(timed) / sum(timed),
    }
    log("iteration seconds: " + " ".join(f"{t:.3f}" for t in times))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
