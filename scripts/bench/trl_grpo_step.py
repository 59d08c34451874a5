"""The reference side of the GRPO parity test (tests/grpo.rs): one optimizer step of TRL's
GRPOTrainer on completions that `rlhf grpo train` sampled, on CPU, fp32, offline. Writes the
step's logged metrics and TRL's advantages as JSON and the weights after the step as
model.safetensors.

    scripts/bench/trl_venv.sh
    target/bench/ppo/venv/bin/python scripts/bench/trl_grpo_step.py --model runs/sft \
        --completions runs/grpo/completions.jsonl --num-generations 8 --loss-type dapo \
        --max-completion-length 12 --lr 1e-3 --out DIR

GRPO samples, so the two sides are compared on fixed completions: the rows of `--step` in
`rlhf`'s completions.jsonl (written with `grpo.log_completions_every = 1`), G consecutive rows a
group. TRL's own `GRPOTrainer.train()` runs one step on them: its public `rollout_func` hook
hands it our `prompt_ids` and `completion_ids` instead of generating, and one reward function
per name in the rows' `"rewards"` returns our scores (`--reward-weight NAME=W`: TRL's
`reward_weights`). Everything after that is TRL's code: padding (prompts left, completions
right), the reference's log-probabilities, the advantages from the rewards (`scale_rewards`),
the loss of `loss_type`, the clip of the gradient norm, and one step of torch.optim.AdamW
(`optim = "adamw_torch"`, weight decay 0) at a constant learning rate.

TRL feeds left-padded prompts to the model without position ids, so a model with absolute
position embeddings (GPT-2) sees a shorter prompt at shifted positions: keep the prompts of
one step equally long there (the script refuses otherwise). With rotary positions it does not
matter."""

import argparse
import contextlib
import json
import os
import sys
import tempfile

import trl_offline  # noqa: F401  (first: sets the environment torch reads)

import torch  # noqa: E402
from datasets import Dataset  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="the policy's starting point (causal LM dir)")
    parser.add_argument("--reference", help="π_ref when --beta > 0 (causal LM dir); default: --model")
    parser.add_argument("--completions", required=True, help="rlhf's completions.jsonl")
    parser.add_argument("--step", type=int, default=1, help="whose rows to replay")
    parser.add_argument("--num-generations", type=int, required=True)
    parser.add_argument("--reward-weight", action="append", default=[], metavar="NAME=W")
    parser.add_argument("--scale-rewards", default="group", choices=["group", "batch", "none"])
    parser.add_argument("--loss-type", default="dapo", choices=["grpo", "bnpo", "dr_grpo", "dapo"])
    parser.add_argument("--beta", type=float, default=0.0)
    parser.add_argument("--epsilon", type=float, default=0.2)
    parser.add_argument("--epsilon-high", type=float, default=None)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--max-completion-length", type=int, required=True, help="rollout.max_new_tokens")
    parser.add_argument("--mask-truncated-completions", action="store_true")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--max-grad-norm", type=float, default=1.0)
    parser.add_argument("--adam-beta1", type=float, default=0.9)
    parser.add_argument("--adam-beta2", type=float, default=0.999)
    parser.add_argument("--adam-epsilon", type=float, default=1e-8)
    parser.add_argument("--out", required=True, help="directory for metrics.json and model.safetensors")
    return parser.parse_args()


def read_groups(path, step, g):
    """The step's rows in file order, checked to come in groups of G answers to one prompt."""
    rows = [json.loads(line) for line in open(path) if line.strip()]
    rows = [row for row in rows if row["step"] == step]
    if not rows:
        sys.exit(f"{path}: no rows of step {step} (run rlhf with grpo.log_completions_every = 1)")
    if "completion_ids" not in rows[0]:
        sys.exit(f"{path}: rows without prompt_ids/completion_ids (written by an older rlhf)")
    if len(rows) % g:
        sys.exit(f"{path}: {len(rows)} rows of step {step}, not groups of {g}")
    for start in range(0, len(rows), g):
        if any(row["prompt_ids"] != rows[start]["prompt_ids"] for row in rows[start : start + g]):
            sys.exit(f"{path}: rows {start}..{start + g} are not one prompt's group")
    return rows


def reward_function(name, rows):
    """A TRL reward function that returns the score `rlhf` logged for each completion."""

    def score(completions, row, **kwargs):
        return [rows[i]["rewards"][name] for i in row]  # None: no score, as TRL reads it

    score.__name__ = name
    return score


def main():
    args = parse_args()
    from trl import GRPOConfig, GRPOTrainer

    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    g = args.num_generations
    rows = read_groups(args.completions, args.step, g)
    groups = len(rows) // g
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    lengths = {len(row["prompt_ids"]) for row in rows}
    if len(lengths) > 1 and getattr(model.config, "model_type", "") == "gpt2":
        sys.exit(f"prompts of {sorted(lengths)} tokens: TRL's left padding shifts GPT-2's absolute positions")

    names = list(rows[0]["rewards"])
    weights = dict(item.split("=", 1) for item in args.reward_weight)
    unknown = set(weights) - set(names)
    if unknown:
        sys.exit(f"--reward-weight {sorted(unknown)}: the rows have rewards {names}")

    # Each prompt's G answers in file order; TRL asks for a group's answers G times in a row.
    handed = [0] * groups

    def rollout(prompts, trainer):
        index = []
        for prompt in prompts:
            k = int(prompt.removeprefix("group "))
            index.append(k * g + handed[k])
            handed[k] += 1
        rollout.index = index
        return {
            "prompt_ids": [rows[i]["prompt_ids"] for i in index],
            "completion_ids": [rows[i]["completion_ids"] for i in index],
            "logprobs": None,
            "row": index,  # an extra field: TRL passes it on to the reward functions
        }

    config = GRPOConfig(
        output_dir=tempfile.mkdtemp(),
        per_device_train_batch_size=len(rows),
        gradient_accumulation_steps=1,
        num_generations=g,
        max_steps=1,
        learning_rate=args.lr,
        lr_scheduler_type="constant",
        warmup_steps=0,
        optim="adamw_torch",
        weight_decay=0.0,
        adam_beta1=args.adam_beta1,
        adam_beta2=args.adam_beta2,
        adam_epsilon=args.adam_epsilon,
        max_grad_norm=args.max_grad_norm,
        beta=args.beta,
        epsilon=args.epsilon,
        epsilon_high=args.epsilon_high,
        loss_type=args.loss_type,
        scale_rewards=args.scale_rewards,
        temperature=args.temperature,
        max_completion_length=args.max_completion_length,
        mask_truncated_completions=args.mask_truncated_completions,
        num_iterations=1,
        reward_weights=[float(weights.get(name, 1.0)) for name in names],
        use_vllm=False,
        disable_dropout=True,
        bf16=False,
        fp16=False,
        gradient_checkpointing=False,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        log_completions=False,
        use_cpu=True,
        seed=0,
        dataloader_num_workers=0,
    )
    dataset = Dataset.from_list([{"prompt": f"group {k}"} for k in range(groups)])
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=[reward_function(name, rows) for name in names],
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
        rollout_func=rollout,
    )
    if args.beta > 0 and args.reference:
        reference = AutoModelForCausalLM.from_pretrained(args.reference, dtype=torch.float32)
        reference.eval()
        trainer.ref_model = trainer.accelerator.prepare_model(reference, evaluation_mode=True)

    losses = []
    compute_loss = trainer.compute_loss

    def keep_loss(*a, **kw):  # the Trainer logs the loss as it is; kept here all the same
        loss = compute_loss(*a, **kw)
        losses.append(loss.item())
        return loss

    trainer.compute_loss = keep_loss
    with contextlib.redirect_stdout(sys.stderr):  # the Trainer prints its log lines
        trainer.train()
    logged = next(entry for entry in trainer.state.log_history if "loss" in entry)
    if sorted(rollout.index) != list(range(len(rows))):
        sys.exit("TRL did not ask for every completion exactly once")
    # TRL's advantages, in the order it asked for the completions, back in file order.
    advantages = [None] * len(rows)
    for i, advantage in zip(rollout.index, trainer._logs["advantages"], strict=True):
        advantages[i] = advantage
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "metrics.json"), "w") as f:
        json.dump({"metrics": logged, "loss": losses[0], "advantages": advantages}, f)
    trainer.model.save_pretrained(args.out, safe_serialization=True)
    print(json.dumps(logged))


if __name__ == "__main__":
    sys.exit(main())
