"""The reference side of the GRPO speed benchmark: a few iterations of TRL's GRPOTrainer
(TRL 1.12, transformers generation, no vLLM) on model directories written by `rlhf`, on CPU,
fp32 and fully offline. Prints one JSON line on stdout; everything else goes to stderr.

    scripts/bench/trl_venv.sh
    target/bench/ppo/venv/bin/python scripts/bench/trl_grpo.py --policy P --reward R \
        --prompts prompts.jsonl --prompts-per-step 4 --generations 8 --max-new-tokens 48 \
        --steps 5 --threads 2

An iteration is what `rlhf grpo train` does in one step with the same settings: G completions
of each of P prompts (rendered with the policy's chat template), the reward model's score of
each (a sequence-classification directory, passed to TRL as a reward_funcs entry), group
advantages, then one forward/backward over all P·G completions and one AdamW step: β = 0 (no
reference model, TRL's default), μ = 1 (so no separate pass for π_old), loss "dapo". TRL's
configs default to bf16 and gradient checkpointing; both are turned off, as is dropout (the
models' config.json may leave it at transformers' default 0.1; rlhf trains without it).

Completions stop at the policy's end-of-turn token on both sides, so a model that ends its
answers early does less work on both; the JSON line carries TRL's mean completion length to
compare with rlhf's `completions/mean_length`. The first iteration is reported apart: it pays
for allocator growth and lazy initialisation."""

import argparse
import contextlib
import json
import sys
import tempfile
import time

from trl_offline import log  # first: sets the environment torch reads

import torch  # noqa: E402



def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policy", required=True, help="causal LM dir")
    parser.add_argument("--reward", required=True, help="sequence-classification dir, num_labels=1")
    parser.add_argument("--prompts", required=True, help='JSONL rows with "prompt" (or chat "messages")')
    parser.add_argument("--prompts-per-step", type=int, default=4, help="P: prompts per iteration")
    parser.add_argument("--generations", type=int, default=8, help="G: completions per prompt")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--lr", type=float, default=1e-5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lora-rank", type=int, default=0,
                        help="train peft LoRA adapters of this rank (alpha 2r, all-linear) instead of every weight")
    args = parser.parse_args()
    if args.steps < 2:
        parser.error("--steps must be at least 2: the first one is warm-up")
    return args


def load_prompts(path):
    """TRL's conversational rows: the prompt as a user message (or the row's messages up to the
    last user turn), which TRL renders with the policy's chat template and the assistant's cue,
    as rlhf does."""
    rows = []
    for line in open(path):
        if not line.strip():
            continue
        row = json.loads(line)
        if "prompt" in row:
            messages = [{"role": "user", "content": row["prompt"]}]
        else:
            messages = list(row["messages"])
            while messages and messages[-1]["role"] == "assistant":
                messages.pop()
        rows.append({"prompt": messages})
    return rows


class Timer:
    """Wall-clock stamps at the start of training and at the end of every optimizer step, and
    the metrics TRL logs at each step (logging_steps = 1)."""

    def __init__(self):
        from transformers import TrainerCallback

        timer = self

        class Callback(TrainerCallback):
            def on_train_begin(self, *a, **kw):
                timer.stamps = [time.perf_counter()]

            def on_step_end(self, *a, **kw):
                timer.stamps.append(time.perf_counter())

            def on_log(self, _args, _state, _control, logs=None, **kw):
                if logs and "completions/mean_length" in logs:
                    timer.logs.append(logs)

        self.stamps, self.logs, self.rollouts, self.callback = [], [], [], Callback()



def lora_config(rank):
    """peft's LoRA on every linear layer of the body, as rlhf's [model.lora] with rank r, α 2r."""
    if not rank:
        return None
    from peft import LoraConfig

    return LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, target_modules="all-linear",
                      task_type="CAUSAL_LM")

def main():
    args = parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    import trl
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    prompts = load_prompts(args.prompts)
    if len(prompts) < args.prompts_per_step:
        sys.exit(f"{args.prompts}: {len(prompts)} prompts, fewer than --prompts-per-step {args.prompts_per_step}")
    completions = args.prompts_per_step * args.generations
    timer = Timer()
    with tempfile.TemporaryDirectory() as output_dir:
        config = GRPOConfig(
            output_dir=output_dir,
            report_to="none",
            seed=args.seed,
            use_cpu=args.device == "cpu",
            bf16=False,  # TRL's default: autocast to bf16
            fp16=False,
            gradient_checkpointing=False,  # TRL's default: recompute activations in the backward
            disable_dropout=True,
            model_init_kwargs={"dtype": "float32"},
            learning_rate=args.lr,
            lr_scheduler_type="constant",
            warmup_steps=0,
            weight_decay=0.0,
            max_grad_norm=1.0,
            max_steps=args.steps,
            # One generation batch of P·G completions per optimizer step, and the whole batch in
            # one forward/backward (rlhf: grpo.micro_batch_size = P·G).
            per_device_train_batch_size=completions,
            gradient_accumulation_steps=1,
            steps_per_generation=1,
            num_generations=args.generations,
            max_completion_length=args.max_new_tokens,
            temperature=args.temperature,
            top_k=0,
            top_p=1.0,
            beta=0.0,
            num_iterations=1,
            loss_type="dapo",
            scale_rewards="group",
            epsilon=0.2,
            mask_truncated_completions=False,
            log_completions=False,
            logging_steps=1,
            eval_strategy="no",
            save_strategy="no",
            disable_tqdm=True,
            dataloader_num_workers=0,
        )
        trainer = GRPOTrainer(
            model=args.policy,
            reward_funcs=[args.reward],
            args=config,
            train_dataset=Dataset.from_list(prompts),
            callbacks=[timer.callback],
            peft_config=lora_config(args.lora_rank),
        )
        # The rollout's share of an iteration (sampling, reward model, advantages), as rlhf's
        # rollout_s: the rest is the forward/backward and the optimizer step.
        rollout = trainer._generate_and_score_completions

        def timed_rollout(*a, **kw):
            started = time.perf_counter()
            out = rollout(*a, **kw)
            timer.rollouts.append(time.perf_counter() - started)
            return out

        trainer._generate_and_score_completions = timed_rollout
        log(f"trl {trl.__version__}: mixed precision {trainer.accelerator.mixed_precision!r}, "
            f"device {trainer.accelerator.device}, {len(prompts)} prompts, "
            f"{args.prompts_per_step} × {args.generations} completions a step")
        torch.set_num_threads(args.threads)  # again: nothing above may have changed it
        with contextlib.redirect_stdout(sys.stderr):  # the Trainer prints its log lines
            trainer.train()

    times = [b - a for a, b in zip(timer.stamps, timer.stamps[1:])]
    if len(times) != args.steps:
        sys.exit(f"timed {len(times)} iterations, expected {args.steps}")
    lengths = [entry["completions/mean_length"] for entry in timer.logs]
    timed = times[1:]
    result = {
        "trl_version": trl.__version__,
        "seconds_per_iteration": sum(timed) / len(timed),
        "first_iteration_seconds": times[0],
        "iterations": len(times),
        "rollout_seconds": sum(timer.rollouts[1:]) / len(timed),
        "mean_length": sum(lengths) / len(lengths),
        "lengths": lengths,
    }
    log("iteration seconds: " + " ".join(f"{t:.3f}" for t in times))
    log("rollout seconds: " + " ".join(f"{t:.3f}" for t in timer.rollouts))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
