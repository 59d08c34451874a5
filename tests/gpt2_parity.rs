//! GPT-2 against Hugging Face `transformers`, on the fixtures of
//! `scripts/fixtures/make_fixtures.py`: random tiny configs, batches with left and right
//! padding, both heads, gradients, sharded loading, and checkpoints read back by
//! `transformers`.

mod common;

use std::path::Path;

use burn::module::Param;
use burn::prelude::*;
use common::*;
use rlhf::model::loss::next_token_loss;
use rlhf::model::naming::named_gradients;
use rlhf::model::{
    CausalLm, Decoder, PaddedBatch, load_causal_lm, load_scalar_model, save_causal_lm,
    save_scalar_model,
};

const TOLERANCE: f32 = 1e-4;

struct Io {
    tensors: rlhf::model::weights::NamedTensors,
    mask: Vec<i64>,
    batch: usize,
    len: usize,
}

impl Io {
    fn read(case: &Path) -> Self {
        let tensors = read(&case.join("io.safetensors"));
        let mask_data = &tensors["attention_mask"];
        let [batch, len] = [mask_data.shape()[0], mask_data.shape()[1]];
        let mask = mask_data.clone().convert::<i64>().try_to_vec().unwrap();
        Self {
            tensors,
            mask,
            batch,
            len,
        }
    }

    fn inputs(&self, device: &Device) -> (Tensor<2, Int>, PaddedBatch) {
        let ids = int_tensor(&self.tensors["input_ids"], device);
        let mask = int_tensor(&self.tensors["attention_mask"], device);
        (ids, PaddedBatch::new(mask))
    }

    /// Whether element `i` of a `[B, T, inner]` tensor sits on a real token.
    fn real(&self, inner: usize) -> impl Fn(usize) -> bool + '_ {
        move |i| self.mask[i / inner] == 1
    }
}

fn logits_of(model: &CausalLm, io: &Io, device: &Device) -> Vec<f32> {
    let (ids, batch) = io.inputs(device);
    model.forward(ids, &batch).into_data().try_to_vec().unwrap()
}

#[test]
fn lm_logits_match_transformers_on_padded_batches() {
    let device = cpu();
    for case in gpt2_cases() {
        let io = Io::read(&case);
        let model = load_causal_lm(&case.join("lm"), &device).unwrap().model;
        let ours = logits_of(&model, &io, &device);
        let vocab = ours.len() / (io.batch * io.len);
        let diff = max_abs_diff(&ours, &floats(&io.tensors["logits"]), io.real(vocab));
        assert!(
            diff < TOLERANCE,
            "{}: max |Δlogit| = {diff}",
            case.display()
        );
    }
}

#[test]
fn scalar_scores_match_transformers_at_the_last_real_token() {
    let device = cpu();
    for case in gpt2_cases() {
        let io = Io::read(&case);
        let model = load_scalar_model(&case.join("scalar"), &device)
            .unwrap()
            .model;
        let (ids, batch) = io.inputs(&device);
        let ours: Vec<f32> = model.forward(ids, &batch).into_data().try_to_vec().unwrap();
        let diff = max_abs_diff(&ours, &floats(&io.tensors["scores"]), |_| true);
        assert!(
            diff < TOLERANCE,
            "{}: max |Δscore| = {diff}",
            case.display()
        );
    }
}

#[test]
fn gradients_of_the_next_token_loss_match_torch() {
    let device = cpu().autodiff();
    for case in gpt2_cases() {
        let io = Io::read(&case);
        let loaded = load_causal_lm(&case.join("lm"), &device).unwrap();
        let (ids, batch) = io.inputs(&device);
        // Targets: real tokens whose predecessor is real too (as the fixture's labels).
        let mask: Tensor<2, Int> = int_tensor(&io.tensors["attention_mask"], &device);
        let predecessor_real = Tensor::cat(
            vec![
                Tensor::zeros([io.batch, 1], &device),
                mask.clone().slice(s![.., 0..io.len - 1]),
            ],
            1,
        );
        let loss = next_token_loss(
            loaded.model.forward(ids.clone(), &batch),
            ids,
            mask * predecessor_real,
        );
        let loss_value: f32 = loss.clone().into_scalar();
        let expected_loss = floats(&io.tensors["loss"])[0];
        assert!(
            (loss_value - expected_loss).abs() < TOLERANCE,
            "loss {loss_value} vs {expected_loss}"
        );

        let grads = named_gradients(&loaded.model, &loss.backward(), loaded.config.layout());
        let mut compared = 0;
        for (key, expected) in io.tensors.iter().filter(|(k, _)| k.starts_with("grad.")) {
            let name = &key["grad.".len()..];
            let ours = grads
                .get(name)
                .unwrap_or_else(|| panic!("no gradient for {name}"));
            let diff = max_abs_diff(&floats(ours), &floats(expected), |_| true);
            assert!(
                diff < TOLERANCE,
                "{}: {name}: max |Δgrad| = {diff}",
                case.display()
            );
            compared += 1;
        }
        assert!(compared >= 6, "compared {compared} gradients");
    }
}

#[test]
fn sharded_checkpoint_loads_the_same_weights() {
    let device = cpu();
    let case = &gpt2_cases()[0];
    assert!(
        case.join("lm-sharded/model.safetensors.index.json")
            .is_file()
    );
    let io = Io::read(case);
    let single = logits_of(
        &load_causal_lm(&case.join("lm"), &device).unwrap().model,
        &io,
        &device,
    );
    let sharded = logits_of(
        &load_causal_lm(&case.join("lm-sharded"), &device)
            .unwrap()
            .model,
        &io,
        &device,
    );
    assert_eq!(single, sharded);
}

#[test]
fn saved_checkpoints_load_in_transformers_with_the_same_outputs() {
    let device = cpu();
    let out = tempfile::tempdir().unwrap();
    let mut jobs = Vec::new();
    let mut expected = Vec::new();
    for (i, case) in gpt2_cases().iter().enumerate() {
        let io = Io::read(case);
        let lm = load_causal_lm(&case.join("lm"), &device).unwrap();
        let lm_dir = out.path().join(format!("lm{i}"));
        std::fs::create_dir(&lm_dir).unwrap();
        save_causal_lm(&lm.model, &lm.config, None, &lm_dir).unwrap();
        jobs.push((
            lm_dir,
            case.join("io.safetensors"),
            out.path().join(format!("lm{i}.out")),
        ));
        expected.push(("logits", logits_of(&lm.model, &io, &device), io));

        let io = Io::read(case);
        let scalar = load_scalar_model(&case.join("scalar"), &device).unwrap();
        let scalar_dir = out.path().join(format!("scalar{i}"));
        std::fs::create_dir(&scalar_dir).unwrap();
        save_scalar_model(&scalar.model, &scalar.config, None, &scalar_dir).unwrap();
        let (ids, batch) = io.inputs(&device);
        let scores = scalar
            .model
            .forward(ids, &batch)
            .into_data()
            .try_to_vec()
            .unwrap();
        jobs.push((
            scalar_dir,
            case.join("io.safetensors"),
            out.path().join(format!("scalar{i}.out")),
        ));
        expected.push(("scores", scores, io));
    }
    hf_forward(&jobs);
    for ((_, _, out_file), (key, ours, io)) in jobs.iter().zip(&expected) {
        let theirs = floats(&read(out_file)[*key]);
        let inner = ours.len()
            / if *key == "logits" {
                io.batch * io.len
            } else {
                io.batch
            };
        let keep: Box<dyn Fn(usize) -> bool> = if *key == "logits" {
            Box::new(io.real(inner))
        } else {
            Box::new(|_| true)
        };
        let diff = max_abs_diff(ours, &theirs, keep);
        assert!(
            diff < TOLERANCE,
            "{}: transformers read back {key} off by {diff}",
            out_file.display()
        );
    }
}

/// The parity checks above must notice a single misplaced weight.
#[test]
fn a_permuted_weight_breaks_parity() {
    let device = cpu();
    let case = &gpt2_cases()[0];
    let io = Io::read(case);
    let mut model = load_causal_lm(&case.join("lm"), &device).unwrap().model;
    let Decoder::Gpt2(gpt2) = &mut model.body;
    let w = gpt2.h[0].attn.c_attn.weight.val(); // [D, 3D]: swap the first two input rows
    let [d, _] = w.dims();
    let order: Vec<i64> = [1, 0].into_iter().chain(2..d as i64).collect();
    let permuted = w.select(0, Tensor::<1, Int>::from_data(order.as_slice(), &device));
    gpt2.h[0].attn.c_attn.weight = Param::from_tensor(permuted);
    let ours = logits_of(&model, &io, &device);
    let vocab = ours.len() / (io.batch * io.len);
    let diff = max_abs_diff(&ours, &floats(&io.tensors["logits"]), io.real(vocab));
    assert!(
        diff > 1e-3,
        "a permuted c_attn weight went unnoticed (max |Δ| = {diff})"
    );
}
