"""The reference side of the DPO / KTO parity test (tests/dpo.rs): one optimizer step of TRL's
DPOTrainer or KTOTrainer on model directories written by `rlhf`, on CPU, fp32, offline. Writes
the step's logged metrics as JSON and the weights after the step as model.safetensors.

    scripts/bench/trl_venv.sh
    target/bench/ppo/venv/bin/python scripts/bench/trl_dpo_step.py --trainer dpo \
        --model BASE --reference REF --data prefs.jsonl --loss-type sigmoid --beta 0.1 \
        --lr 1e-3 --out DIR

TRL tokenizes the rows itself (conversational rows through the model's chat template, the
prompt with the assistant's cue and the answer as the rest of the rendered conversation), so
equal log-probabilities on both sides also say that `rlhf` encodes the rows as TRL does. The
reference log-probabilities are precomputed (`precompute_ref_log_probs`), as `rlhf` does; the
whole data set is one batch, so the order a sampler draws the rows in does not matter. KTO's
mismatched pairs are TRL's own rotation of the rows in file order."""

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


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trainer", choices=["dpo", "kto"], required=True)
    parser.add_argument("--model", required=True, help="the policy's starting point (causal LM dir)")
    parser.add_argument("--reference", required=True, help="the frozen reference (causal LM dir)")
    parser.add_argument("--data", required=True, help="JSONL rows in TRL's conversational form")
    parser.add_argument("--loss-type", default="sigmoid")
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--label-smoothing", type=float, default=0.0)
    parser.add_argument("--desirable-weight", type=float, default=1.0)
    parser.add_argument("--undesirable-weight", type=float, default=1.0)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--max-grad-norm", type=float, default=1.0)
    parser.add_argument("--out", required=True, help="directory for metrics.json and model.safetensors")
    args = parser.parse_args()

    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    rows = [json.loads(line) for line in open(args.data) if line.strip()]
    dataset = Dataset.from_list(rows)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    reference = AutoModelForCausalLM.from_pretrained(args.reference, dtype=torch.float32)

    common = dict(
        output_dir=tempfile.mkdtemp(),
        per_device_train_batch_size=len(rows),
        gradient_accumulation_steps=1,
        max_steps=1,
        learning_rate=args.lr,
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=0.0,
        adam_beta1=0.9,
        adam_beta2=0.999,
        adam_epsilon=1e-8,
        max_grad_norm=args.max_grad_norm,
        beta=args.beta,
        max_length=None,
        precompute_ref_log_probs=True,
        bf16=False,
        fp16=False,
        gradient_checkpointing=False,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        seed=0,
        dataloader_num_workers=0,
    )
    if args.trainer == "dpo":
        from trl import DPOConfig, DPOTrainer

        config = DPOConfig(loss_type=[args.loss_type], label_smoothing=args.label_smoothing, **common)
        trainer = DPOTrainer(model=model, ref_model=reference, args=config, train_dataset=dataset, processing_class=tokenizer)
    else:
        from trl import KTOConfig, KTOTrainer

        config = KTOConfig(
            desirable_weight=args.desirable_weight,
            undesirable_weight=args.undesirable_weight,
            train_sampling_strategy="sequential",
            **common,
        )
        trainer = KTOTrainer(model=model, ref_model=reference, args=config, train_dataset=dataset, processing_class=tokenizer)

    with contextlib.redirect_stdout(sys.stderr):  # the Trainer prints its log lines
        trainer.train()
    logged = next(entry for entry in trainer.state.log_history if "loss" in entry)
    tokens = {
        key: [list(map(int, ids)) for ids in trainer.train_dataset[key]]
        for key in ["prompt_ids", "chosen_ids", "rejected_ids", "completion_ids", "KL_completion_ids"]
        if key in trainer.train_dataset.column_names
    }
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "metrics.json"), "w") as f:
        json.dump({"metrics": logged, "tokens": tokens}, f)
    trainer.model.save_pretrained(args.out, safe_serialization=True)
    print(json.dumps(logged))


if __name__ == "__main__":
    sys.exit(main())
