"""What every TRL reference script here imports first, before torch or transformers: no GPU
unless `cuda` is on the command line (TRL's accelerator takes any it sees), nothing may reach
for the Hub or a tracker, no progress bars or experimental-API warnings on stderr; and `log`,
which writes to stderr so stdout stays the one JSON line a script reports."""

import os
import sys

if "cuda" not in sys.argv:
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["WANDB_DISABLED"] = "true"
os.environ["TQDM_DISABLE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

from transformers.utils import logging  # noqa: E402

logging.set_verbosity_error()
logging.disable_progress_bar()


def log(*parts):
    print(*parts, file=sys.stderr, flush=True)
