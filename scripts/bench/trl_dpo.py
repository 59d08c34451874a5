"""The reference side of the DPO speed benchmark: a few steps of TRL's DPOTrainer (TRL 1.12) on
a model directory written by `rlhf`, on CPU, fp32 and fully offline. Prints one JSON line on
stdout; everything else goes to stderr.

    scripts/bench/trl_venv.sh
    target/bench/ppo/venv/bin/python scripts/bench/trl_dpo.py --model M \
        --data comparisons.jsonl --batch 8 --steps 6 --threads 2

A step is what `rlhf dpo train` does in one step with the same settings: one forward/backward
of the policy over the chosen and rejected answers of `--batch` comparisons (TRL's conversational
rows, rendered with the model's chat template), the sigmoid loss with β = 0.1, one AdamW step.
The reference is the starting model and its log-probabilities are computed once, in the
trainer's constructor, before training (`precompute_ref_log_probs`, as rlhf does), so no
reference model is kept and the timed steps leave that pass out. TRL's configs default to
bf16 and gradient checkpointing; both are turned off, as is dropout (the model's config.json
may leave it at transformers' default 0.1; rlhf trains without it). The first step is reported
apart: it pays for allocator growth and lazy initialisation."""

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
    parser.add_argument("--model", required=True, help="causal LM dir: the policy's start and the reference")
    parser.add_argument("--data", required=True, help="JSONL comparisons in TRL's conversational form")
    parser.add_argument("--batch", type=int, default=8, help="comparisons per step")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--lr", type=float, default=1e-5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.steps < 2:
        parser.error("--steps must be at least 2: the first one is warm-up")
    return args


def main():
    args = parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    import trl
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    stamps = []

    class Timer(TrainerCallback):
        def on_train_begin(self, *a, **kw):
            stamps[:] = [time.perf_counter()]

        def on_step_end(self, *a, **kw):
            stamps.append(time.perf_counter())

    rows = [json.loads(line) for line in open(args.data) if line.strip()]
    if len(rows) < args.batch * args.steps:
        sys.exit(f"{args.data}: {len(rows)} comparisons, fewer than --batch × --steps ({args.batch * args.steps})")
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    with tempfile.TemporaryDirectory() as output_dir:
        config = DPOConfig(
            output_dir=output_dir,
            report_to=[],
            seed=args.seed,
            use_cpu=args.device == "cpu",
            bf16=False,  # TRL's default: autocast to bf16
            fp16=False,
            gradient_checkpointing=False,  # TRL's default: recompute activations in the backward
            disable_dropout=True,
            per_device_train_batch_size=args.batch,
            gradient_accumulation_steps=1,
            max_steps=args.steps,
            learning_rate=args.lr,
            lr_scheduler_type="constant",
            warmup_steps=0,
            weight_decay=0.0,
            max_grad_norm=1.0,
            loss_type=["sigmoid"],
            beta=args.beta,
            max_length=None,  # the rows are short: nothing is cut on either side
            precompute_ref_log_probs=True,
            precompute_ref_batch_size=args.batch,
            logging_steps=1,
            eval_strategy="no",
            save_strategy="no",
            disable_tqdm=True,
            dataloader_num_workers=0,
        )
        started = time.perf_counter()
        trainer = DPOTrainer(model=model, ref_model=None, args=config, train_dataset=Dataset.from_list(rows),
                             processing_class=tokenizer, callbacks=[Timer()])
        setup = time.perf_counter() - started  # tokenizing and the reference pass
        log(f"trl {trl.__version__}: mixed precision {trainer.accelerator.mixed_precision!r}, "
            f"device {trainer.accelerator.device}, {len(rows)} comparisons, set-up {setup:.2f} s")
        torch.set_num_threads(args.threads)
        with contextlib.redirect_stdout(sys.stderr):
            trainer.train()
        dataset = trainer.train_dataset
        lengths = [len(p) + (len(c) + len(r)) / 2
                   for p, c, r in zip(dataset["prompt_ids"], dataset["chosen_ids"], dataset["rejected_ids"])]

    times = [b - a for a, b in zip(stamps, stamps[1:])]
    if len(times) != args.steps:
        sys.exit(f"timed {len(times)} steps, expected {args.steps}")
    timed = times[1:]
    result = {
        "trl_version": trl.__version__,
        "seconds_per_step": sum(timed) / len(timed),
        "first_step_seconds": times[0],
        "steps": len(times),
        "setup_seconds": setup,
        "mean_sequence_tokens": sum(lengths) / len(lengths),
    }
    log("step seconds: " + " ".join(f"{t:.3f}" for t in times))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
