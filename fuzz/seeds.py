"""Writes the seed corpus of every fuzz target into fuzz/corpus/ (committed; run again only to
change the seeds): `.venv/bin/python fuzz/seeds.py`."""

import json
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType as Q, GGUFWriter, quants
from safetensors.numpy import save_file

ROOT = Path(__file__).parent / "corpus"


def write(target, name, data):
    path = ROOT / target / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode())


def jsonl(*rows):
    return "".join(json.dumps(r) + "\n" for r in rows)


messages = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi?"},
    {"role": "assistant", "content": "Hello."},
]
write("jsonl_rows", "sft", jsonl({"prompt": "Q?", "completion": "A."}, {"messages": messages}))
write("jsonl_rows", "text", jsonl({"text": "Some text."}))
write("jsonl_rows", "pairs", jsonl(
    {"prompt": "Q?", "chosen": "Good.", "rejected": "Bad."},
    {"chosen": "\n\nHuman: Q?\n\nAssistant: Good.", "rejected": "\n\nHuman: Q?\n\nAssistant: Bad."},
    {"prompt": "Q?", "responses": ["a", "b", "c"], "ranking": [2, 0, 1]},
    {"chosen": messages, "rejected": messages[:2] + [{"role": "assistant", "content": "No."}]},
))
write("jsonl_rows", "moderation", jsonl(
    {"text": "t", "S": 0, "H": 1, "V": 0, "HR": 0, "SH": 0, "S3": 0, "H2": 1, "V2": 0},
    {"prompt": "t", "labels": {"self-harm": 1, "violence/graphic": 0}},
))
write("jsonl_rows", "prompts", jsonl({"prompt": "Q?"}, {"messages": messages[:2]}))

chatml = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
          "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
checked = ("{{ bos_token }}{% for m in messages %}{% if m.role == 'system' and not loop.first %}"
           "{{ raise_exception('system first') }}{% endif %}{{ m.role|upper }}: {{ m.content|trim }}"
           "{{ eos_token }}{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}")
for name, source in [("chatml", chatml), ("checked", checked)]:
    write("chat_template", name, source + "\0Be brief.\0Hi?\0Hello.\0Again?")

configs = Path(__file__).parent.parent / "configs"
for stage in ["sft", "reward", "ppo", "moderate"]:
    text = (configs / f"{stage}.toml").read_text()
    write("config_overrides", stage, text + "\0train.lr=1e-4\0train.epochs=2\0output.dir=runs/x")

rng = np.random.default_rng(0)
tensors = {"a.weight": rng.normal(size=(3, 2)).astype(np.float32),
           "b.bias": rng.normal(size=(2,)).astype(np.float16),
           "c.ids": np.arange(3, dtype=np.int64)}
path = ROOT / "safetensors" / "small"
path.parent.mkdir(parents=True, exist_ok=True)
save_file(tensors, str(path), metadata={"format": "pt"})

# A two-block llama of hidden size 32 in f32, f16 and q8_0, with a five-token BPE vocabulary.
path = ROOT / "gguf" / "llama"
path.parent.mkdir(parents=True, exist_ok=True)
writer = GGUFWriter(str(path), "llama")
writer.add_context_length(64)
writer.add_embedding_length(32)
writer.add_block_count(1)
writer.add_feed_forward_length(32)
writer.add_head_count(2)
writer.add_head_count_kv(1)
writer.add_layer_norm_rms_eps(1e-5)
writer.add_tokenizer_model("gpt2")
writer.add_tokenizer_pre("gpt2")
writer.add_token_list(["a", "b", "ab", "<s>", "</s>"])
writer.add_token_types([1, 1, 1, 3, 3])
writer.add_token_merges(["a b"])
writer.add_bos_token_id(3)
writer.add_eos_token_id(4)
writer.add_chat_template(chatml)
writer.add_tensor("token_embd.weight", rng.normal(size=(5, 32)).astype(np.float32))
writer.add_tensor("output_norm.weight", np.ones(32, dtype=np.float32))
writer.add_tensor("blk.0.attn_q.weight", rng.normal(size=(32, 32)).astype(np.float16))
up = quants.quantize(rng.normal(size=(32, 32)).astype(np.float32), Q.Q8_0)
writer.add_tensor("blk.0.ffn_up.weight", up, raw_dtype=Q.Q8_0)
writer.write_header_to_file()
writer.write_kv_data_to_file()
writer.write_tensors_to_file()
writer.close()
