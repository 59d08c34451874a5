//! Decoder families against Hugging Face `transformers`, on the fixtures of
//! `scripts/fixtures/make_fixtures.py`: random tiny GPT-2, Llama (GQA, untied), Qwen2 (q/k/v
//! bias, tied), Mistral (sliding window), SmolLM-shaped and RoPE-scaled configs; batches with
//! left and right padding; both heads; gradients; sharded, 4.x-style and bf16 checkpoints; and
//! checkpoints read back by `transformers`.

mod common;

use std::path::Path;

use burn::module::Param;
use burn::nn::Linear;
use burn::prelude::*;
use common::*;
use rlhf::model::loss::{next_token_loss, selected_nll_sum};
use rlhf::model::naming::named_gradients;
use rlhf::model::{
    CausalLm, Decoder, load_causal_lm, load_scalar_model, save_causal_lm, save_scalar_model,
};

const TOLERANCE: f32 = 1e-4;

fn name(case: &Path) -> String {
    case.file_name().unwrap().to_string_lossy().into_owned()
}

/// Runs `check` on every case and reports every failure together.
fn for_each_case(check: impl Fn(&Path) -> Result<(), String>) {
    let failures: Vec<String> = cases()
        .iter()
        .filter_map(|c| check(c).err().map(|e| format!("{}: {e}", name(c))))
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn lm_logits_match_transformers_on_padded_batches() {
    let device = cpu();
    for_each_case(|case| {
        let io = Io::read(&case.join("io.safetensors"));
        let model = load_causal_lm(&case.join("lm"), &device).map_err(|e| format!("{e:#}"))?.model;
        let diff = io.logit_error(&logits_of(&model, &io, &device));
        if diff < TOLERANCE { Ok(()) } else { Err(format!("max |Δlogit| = {diff}")) }
    });
}

#[test]
fn hidden_states_from_a_position_are_the_tail_of_the_whole_pass() {
    let device = cpu();
    for_each_case(|case| {
        let io = Io::read(&case.join("io.safetensors"));
        let model = load_causal_lm(&case.join("lm"), &device).map_err(|e| format!("{e:#}"))?.model;
        let (ids, batch) = io.inputs(&device);
        let from = io.len / 2;
        let whole = model.hidden(ids.clone(), &batch, None).slice(s![.., from..]);
        let tail = model.hidden_from(ids, &batch, from);
        let diff: f32 = (whole - tail).abs().max().into_scalar();
        if diff < 1e-5 { Ok(()) } else { Err(format!("max |Δhidden| = {diff}")) }
    });
}

#[test]
fn scalar_scores_match_transformers_at_the_last_real_token() {
    let device = cpu();
    for_each_case(|case| {
        let io = Io::read(&case.join("io.safetensors"));
        let model =
            load_scalar_model(&case.join("scalar"), &device).map_err(|e| format!("{e:#}"))?.model;
        let (ids, batch) = io.inputs(&device);
        let ours: Vec<f32> = model.forward(ids, &batch).into_data().try_to_vec().unwrap();
        let diff = max_abs_diff(&ours, &floats(&io.tensors["scores"]), |_| true);
        if diff < TOLERANCE { Ok(()) } else { Err(format!("max |Δscore| = {diff}")) }
    });
}

#[test]
fn gradients_of_the_next_token_loss_match_torch() {
    let device = cpu().autodiff();
    for_each_case(|case| {
        let io = Io::read(&case.join("io.safetensors"));
        let loaded = load_causal_lm(&case.join("lm"), &device).map_err(|e| format!("{e:#}"))?;
        let (ids, batch) = io.inputs(&device);
        // Targets: real tokens whose predecessor is real too (as the fixture's labels).
        let mask: Tensor<2, Int> = int_tensor(&io.tensors["attention_mask"], &device);
        let predecessor = Tensor::cat(
            vec![Tensor::zeros([io.batch, 1], &device), mask.clone().slice(s![.., 0..io.len - 1])],
            1,
        );
        let targets = mask * predecessor;
        let expected = floats(&io.tensors["loss"])[0];
        let logits = loaded.model.forward(ids.clone(), &batch);
        let value: f32 = next_token_loss(logits, ids.clone(), targets.clone()).into_scalar();
        if (value - expected).abs() > TOLERANCE {
            return Err(format!("loss {value} vs {expected}"));
        }
        // SFT's path, whose gradients are compared: only the target positions go through the LM
        // head, and the cross-entropy is LibTorch's fused kernel.
        let (at, next) = target_positions(&ids, &targets);
        let count = at.dims()[0];
        let hidden = loaded.model.hidden(ids, &batch, None);
        let loss = selected_nll_sum(&loaded.model, hidden, at, next) / count as f64;
        let selected: f32 = loss.clone().into_scalar();
        if (selected - expected).abs() > TOLERANCE {
            return Err(format!("selected-position loss {selected} vs {expected}"));
        }
        let grads = named_gradients(&loaded.model, &loss.backward(), loaded.config.layout());
        let mut compared = 0;
        for (key, expected) in io.tensors.iter().filter(|(k, _)| k.starts_with("grad.")) {
            let param = &key["grad.".len()..];
            let ours = grads.get(param).ok_or(format!("no gradient for {param}"))?;
            let diff = max_abs_diff(&floats(ours), &floats(expected), |_| true);
            if diff > TOLERANCE {
                return Err(format!("{param}: max |Δgrad| = {diff}"));
            }
            compared += 1;
        }
        if compared >= 6 { Ok(()) } else { Err(format!("only {compared} gradients compared")) }
    });
}

/// Flat positions (into `B·T`) whose next token is a target, and those tokens.
fn target_positions(
    ids: &Tensor<2, Int>,
    targets: &Tensor<2, Int>,
) -> (Tensor<1, Int>, Tensor<1, Int>) {
    let [b, t] = ids.dims();
    let ids: Vec<i64> = ids.to_data().convert::<i64>().try_to_vec().unwrap();
    let targets: Vec<i64> = targets.to_data().convert::<i64>().try_to_vec().unwrap();
    let (mut at, mut next) = (Vec::new(), Vec::new());
    for i in (0..b * t).filter(|i| i % t > 0 && targets[*i] == 1) {
        at.push(i as i64 - 1);
        next.push(ids[i]);
    }
    let device = cpu().autodiff();
    let n = at.len();
    (
        Tensor::from_data(TensorData::new(at, [n]), &device),
        Tensor::from_data(TensorData::new(next, [n]), &device),
    )
}

#[test]
fn sharded_checkpoints_load_the_same_weights() {
    let device = cpu();
    for name in ["gpt2-0", "llama"] {
        let case = case(name);
        assert!(case.join("lm-sharded/model.safetensors.index.json").is_file());
        let io = Io::read(&case.join("io.safetensors"));
        let single = load_causal_lm(&case.join("lm"), &device).unwrap().model;
        let sharded = load_causal_lm(&case.join("lm-sharded"), &device).unwrap().model;
        assert_eq!(logits_of(&single, &io, &device), logits_of(&sharded, &io, &device), "{name}");
    }
}

/// `transformers` 4.x wrote `rope_theta`, `rope_scaling` and `torch_dtype` at the top level;
/// these fixtures also hold bf16 weights, widened to f32 on load.
#[test]
fn transformers_4_configs_and_bf16_weights_load_and_match() {
    let device = cpu();
    for name in ["llama", "llama3"] {
        let case = case(name);
        let io = Io::read(&case.join("io-v4.safetensors"));
        let loaded = load_causal_lm(&case.join("lm-v4"), &device).unwrap();
        let v5 = rlhf::model::ModelConfig::read(&case.join("lm")).unwrap();
        assert_eq!(rope(&loaded.config), rope(&v5), "{name}: same rotary settings");
        let diff = io.logit_error(&logits_of(&loaded.model, &io, &device));
        assert!(diff < TOLERANCE, "{name}: max |Δlogit| = {diff}");
    }
}

#[test]
fn saved_checkpoints_load_in_transformers_with_the_same_outputs() {
    let device = cpu();
    let out = tempfile::tempdir().unwrap();
    let mut jobs = Vec::new();
    let mut ours = Vec::new();
    for case in cases() {
        let io = Io::read(&case.join("io.safetensors"));
        let lm = load_causal_lm(&case.join("lm"), &device).unwrap();
        let dir = out.path().join(format!("{}-lm", name(&case)));
        std::fs::create_dir(&dir).unwrap();
        save_causal_lm(&lm.model, &lm.config, None, &dir).unwrap();
        jobs.push((dir.clone(), case.join("io.safetensors"), dir.with_extension("out")));
        ours.push(logits_of(&lm.model, &io, &device));

        let scalar = load_scalar_model(&case.join("scalar"), &device).unwrap();
        let dir = out.path().join(format!("{}-scalar", name(&case)));
        std::fs::create_dir(&dir).unwrap();
        save_scalar_model(&scalar.model, &scalar.config, None, &dir).unwrap();
        jobs.push((dir.clone(), case.join("io.safetensors"), dir.with_extension("out")));
        let (ids, batch) = io.inputs(&device);
        ours.push(scalar.model.forward(ids, &batch).into_data().try_to_vec().unwrap());
    }
    hf_forward(&jobs);
    for ((dir, io_path, out_file), ours) in jobs.iter().zip(&ours) {
        let theirs = read(out_file);
        let diff = match theirs.get("scores") {
            Some(scores) => max_abs_diff(ours, &floats(scores), |_| true),
            None => {
                let io = Io::read(io_path);
                let vocab = ours.len() / (io.batch * io.len);
                max_abs_diff(ours, &floats(&theirs["logits"]), |i| io.mask[i / vocab] == 1)
            }
        };
        assert!(
            diff < TOLERANCE,
            "{}: transformers read back outputs off by {diff}",
            dir.display()
        );
    }
}

/// Reorders the output rows of a `Linear` (Burn stores `[in, out]`: columns here).
fn permute_outputs(linear: &mut Linear, order: &[usize], device: &Device) {
    let order: Vec<i64> = order.iter().map(|&i| i as i64).collect();
    let w = linear.weight.val().select(1, Tensor::<1, Int>::from_data(order.as_slice(), device));
    linear.weight = Param::from_tensor(w);
    if let Some(bias) = &linear.bias {
        let b = bias.val().select(0, Tensor::<1, Int>::from_data(order.as_slice(), device));
        linear.bias = Some(Param::from_tensor(b));
    }
}

/// The checks above must notice one misplaced weight; each mutation here must break parity.
fn assert_breaks_parity(case_name: &str, mutate: impl FnOnce(&mut CausalLm, &Device)) {
    let device = cpu();
    let case = case(case_name);
    let io = Io::read(&case.join("io.safetensors"));
    let mut model = load_causal_lm(&case.join("lm"), &device).unwrap().model;
    mutate(&mut model, &device);
    let diff = io.logit_error(&logits_of(&model, &io, &device));
    assert!(diff > 1e-3, "{case_name}: the mutation went unnoticed (max |Δ| = {diff})");
}

#[test]
fn a_permuted_gpt2_weight_breaks_parity() {
    assert_breaks_parity("gpt2-0", |model, device| {
        let Decoder::Gpt2(gpt2) = &mut model.body else { panic!("gpt2 expected") };
        let linear = &mut gpt2.h[0].attn.c_attn; // [D, 3D]: q | k | v
        let width = linear.weight.dims()[1];
        let v = 2 * width / 3; // swap the first two value features
        let order: Vec<usize> = (0..v).chain([v + 1, v]).chain(v + 2..width).collect();
        permute_outputs(linear, &order, device);
    });
}

/// Interleaved RoPE pairing (dimension 2i with 2i+1, as Meta's original code) instead of
/// `transformers`' rotate-half (i with i + hd/2) is the same model with q and k rows reordered
/// per head; applying that reorder must break parity.
#[test]
fn interleaved_rope_pairing_breaks_parity() {
    assert_breaks_parity("llama", |model, device| {
        let Decoder::Llama(llama) = &mut model.body else { panic!("llama expected") };
        let attn = &mut llama.layers[0].self_attn;
        for linear in [&mut attn.q_proj, &mut attn.k_proj] {
            let width = linear.weight.dims()[1];
            let hd = llama_head_dim(&case("llama"));
            let order: Vec<usize> = (0..width)
                .map(|j| {
                    let (head, i) = (j / hd, j % hd);
                    head * hd + if i % 2 == 0 { i / 2 } else { hd / 2 + i / 2 }
                })
                .collect();
            permute_outputs(linear, &order, device);
        }
    });
}

/// Query heads 0–1 must read kv head 0 and heads 2–3 kv head 1; swapping the two kv heads'
/// keys must break parity.
#[test]
fn swapped_kv_heads_break_parity() {
    assert_breaks_parity("llama", |model, device| {
        let Decoder::Llama(llama) = &mut model.body else { panic!("llama expected") };
        let hd = llama_head_dim(&case("llama"));
        let k_proj = &mut llama.layers[0].self_attn.k_proj;
        assert_eq!(k_proj.weight.dims()[1], 2 * hd, "fixture `llama` has 2 kv heads");
        let order: Vec<usize> = (hd..2 * hd).chain(0..hd).collect();
        permute_outputs(k_proj, &order, device);
    });
}

fn rope(config: &rlhf::model::ModelConfig) -> rlhf::model::rope::RopeConfig {
    match &config.arch {
        rlhf::model::Arch::Llama(c) => c.rope().unwrap(),
        _ => panic!("llama expected"),
    }
}

fn llama_head_dim(case: &Path) -> usize {
    let config = rlhf::model::ModelConfig::read(&case.join("lm")).unwrap();
    match config.arch {
        rlhf::model::Arch::Llama(c) => c.head_dim(),
        _ => panic!("llama expected"),
    }
}
