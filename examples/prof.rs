use std::time::Instant;
use burn::prelude::*;
use burn::optim::GradientsParams;
use rlhf::data::batch::TokenBatch;
use rlhf::data::sft::Example;
use rlhf::model::{load_causal_lm, PaddedBatch};
use rlhf::model::loss::selected_nll_sum;
use rlhf::train::adamw::{AdamW, AdamWConfig};
use rlhf::train::grad_norm::clip_global_norm;

fn main() {
    let dir = std::env::args().nth(1).unwrap();
    tch::set_num_threads(2);
    let device = rlhf::device::DeviceSpec::Cpu.device().unwrap().autodiff();
    let mut model = load_causal_lm(std::path::Path::new(&dir), &device).unwrap().model;
    let examples: Vec<Example> = (0..8).map(|r| Example { ids: (0..128).map(|i| ((i * 7 + r * 13) % 8000) as u32).collect(), target: vec![true; 128] }).collect();
    let refs: Vec<&Example> = examples.iter().collect();
    let mut adam = AdamW::new(AdamWConfig { beta1: 0.9, beta2: 0.999, epsilon: 1e-8, weight_decay: 0.0 });
    for step in 0..4 {
        let t0 = Instant::now();
        let batch = TokenBatch::new(&refs, 0, &device);
        let padded = PaddedBatch::new(batch.attention_mask);
        let hidden = model.hidden(batch.input_ids, &padded, None);
        let loss = match std::env::var("MODE").as_deref() {
            Ok("body") => hidden.sum().div_scalar(1e6),
            Ok("logits") => model.logits(hidden).sum().div_scalar(1e6),
            Ok("lsm") => burn::tensor::activation::log_softmax(model.logits(hidden), 2).sum().div_scalar(1e6),
            _ => selected_nll_sum(&model, hidden, batch.predict_at, batch.targets).div_scalar(batch.target_count as f64),
        };
        let v: f32 = loss.clone().into_scalar();
        let t1 = Instant::now();
        let grads = loss.backward();
        let mut grads = GradientsParams::from_grads(grads, &model);
        let t2 = Instant::now();
        let norm = clip_global_norm(&model, &mut grads, 1.0);
        let t3 = Instant::now();
        model = adam.step(model, grads, 1e-4);
        let _ = model.body.token_embedding().slice(s![0..1, 0..1]).into_scalar::<f32>();
        let t4 = Instant::now();
        println!("step {step}: loss {v:.3} fwd {:.2}s bwd {:.2}s clip {:.2}s adam {:.2}s total {:.2}s norm {norm:.2}", (t1-t0).as_secs_f64(), (t2-t1).as_secs_f64(), (t3-t2).as_secs_f64(), (t4-t3).as_secs_f64(), (t4-t0).as_secs_f64());
    }
}
