"""A plain PyTorch + transformers training loop with the same shapes and settings as the rlhf
side of scripts/bench/sft: fp32 (or bf16 autocast), batch × length token blocks with every token a target,
AdamW, global-norm clipping at 1.0. Prints training tokens/s after the first (warm-up) step,
and peak RSS (MiB)."""

import argparse
import resource
import time

import torch
from transformers import AutoModelForCausalLM
from transformers.utils import logging

logging.set_verbosity_error()
logging.disable_progress_bar()


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--lora-rank", type=int, default=0,
                        help="train peft LoRA adapters of this rank (alpha 2r, all-linear), as TRL's "
                             "SFTTrainer does with a peft_config")
    parser.add_argument("--precision", default="f32", choices=["f32", "bf16"],
                        help="bf16: the forward pass under torch.autocast(dtype=torch.bfloat16)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).to(args.device).train()
    # Dropout off on both sides: rlhf trains without it, as RLHF trainers do.
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    if args.lora_rank:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=args.lora_rank, lora_alpha=2 * args.lora_rank,
                                                 lora_dropout=0.0, target_modules="all-linear",
                                                 task_type="CAUSAL_LM"))
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4, weight_decay=0.0)
    vocab = model.config.vocab_size
    for step in range(args.steps):
        if step == 1:
            start = time.perf_counter()
        ids = torch.randint(0, vocab, (args.batch, args.length), device=args.device)
        with torch.autocast(args.device.split(":")[0], dtype=torch.bfloat16, enabled=args.precision == "bf16"):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    if args.device != "cpu":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    tokens = (args.steps - 1) * args.batch * args.length
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{tokens / seconds:.1f} {peak_mib:.0f}")


if __name__ == "__main__":
    main()
