//! `rlhf grpo eval`: a policy measured on held-out prompts by the reward functions it was
//! trained with (or another config's) — each function's mean and their weighted sum — and the
//! KL of its answers to a reference, with the rows for other judges.

use anyhow::Result;
use burn::prelude::*;
use serde_json::{Map, Value, json};

use super::ppo::{Sample, default_reference, eval_reference, held_out_prompts};
use crate::bad_input;
use crate::checkpoint::{Lineage, write_file_atomically};
use crate::cli::GrpoEvalArgs;
use crate::config::grpo::{GrpoConfig, RewardSource};
use crate::data::prompts::Prompt;
use crate::generate::{Finish, Generator};
use crate::grpo::rewards::Rewards;
use crate::model::load_causal_lm;
use crate::model::reward::RewardStats;
use crate::ppo::rollout::{decode_all, sequence_kls};

pub fn eval(args: &GrpoEvalArgs, device: &Device) -> Result<()> {
    let policy = load_causal_lm(&args.policy, device)?;
    let sources = reward_sources(args)?;
    let tokenizer = policy.tokenizer.as_ref().ok_or_else(|| {
        bad_input!("{}: no tokenizer.json, so prompts cannot be encoded", args.policy.display())
    })?;
    let reference_dir = args.reference.clone().unwrap_or_else(|| default_reference(&args.policy));
    let reference = eval_reference(&args.policy, &reference_dir, tokenizer, device)?;
    let sample = Sample {
        max_new_tokens: args.max_new_tokens,
        temperature: args.temperature,
        seed: args.seed,
    };
    let (prompts, sampling) =
        held_out_prompts(&args.policy, &args.data, tokenizer, &policy.config, sample)?;
    let mut rewards = Rewards::open(&sources, device)?;
    let generator = Generator::new(&policy.model, tokenizer, &policy.config, device)
        .with_generation_config(&args.policy);
    let pad = policy.config.pad_id(tokenizer);
    let functions = rewards.functions.len();
    let (mut scores, mut totals, mut kls) = (vec![Vec::new(); functions], Vec::new(), Vec::new());
    let (mut lengths, mut ended, mut rows) = (0usize, 0usize, String::new());
    for chunk in prompts.chunks(args.batch_size.max(1)) {
        let ids: Vec<Vec<u32>> = chunk.iter().map(|p| p.ids.clone()).collect();
        let generations = generator.generate(&ids, &sampling, &mut |_, _| {})?;
        let chunk_kls =
            sequence_kls(&ids, &generations, reference.as_ref(), pad, args.temperature, device);
        let texts = decode_all(tokenizer, generations.iter().map(|g| &g.tokens))?;
        let chunk_prompts: Vec<&Prompt> = chunk.iter().collect();
        let chunk_scores = rewards.score(&chunk_prompts, &texts, device)?;
        let chunk_totals = rewards.combine(&chunk_scores);
        if args.out.is_some() {
            for (i, generation) in generations.iter().enumerate() {
                let mut by_function = Map::new();
                for (f, function) in rewards.functions.iter().enumerate() {
                    by_function.insert(function.name.clone(), number(chunk_scores[f][i]));
                }
                let row = json!({
                    "prompt": chunk[i].source, "response": texts[i], "reward": number(chunk_totals[i]),
                    "rewards": by_function, "kl": number(chunk_kls[i]),
                    "tokens": generation.tokens.len(), "finish_reason": generation.finish,
                });
                rows.push_str(&format!("{row}\n"));
            }
        }
        for (all, these) in scores.iter_mut().zip(chunk_scores) {
            all.extend(these);
        }
        totals.extend(chunk_totals);
        kls.extend(chunk_kls);
        lengths += generations.iter().map(|g| g.tokens.len()).sum::<usize>();
        ended += generations.iter().filter(|g| g.finish == Finish::Eos).count();
    }
    if let Some(out) = &args.out {
        write_file_atomically(out, &rows)?;
    }
    let stats = |xs: &[f64]| {
        let given: Vec<f32> = xs.iter().filter(|x| !x.is_nan()).map(|&x| x as f32).collect();
        RewardStats::of(&given)
    };
    let (reward, kl) = (stats(&totals), stats(&kls));
    let n = prompts.len() as f64;
    let mut by_function = Map::new();
    for (function, scores) in rewards.functions.iter().zip(&scores) {
        let s = stats(scores);
        by_function.insert(function.name.clone(), json!({"mean": s.mean, "std": s.std}));
    }
    if args.json {
        let report = json!({
            "prompts": prompts.len(),
            "reward_mean": reward.mean,
            "reward_std": reward.std,
            "rewards": by_function,
            "kl_mean": kl.mean,
            "response_length": lengths as f64 / n,
            "ended": ended as f64 / n,
            "policy": args.policy.display().to_string(),
            "reference": reference_dir.display().to_string(),
        });
        println!("{report}");
    } else {
        println!("prompts          {}", prompts.len());
        println!("reward           {:.4} ± {:.4} (weighted sum)", reward.mean, reward.std);
        for (name, s) in &by_function {
            println!(
                "  {name:<14} {:.4} ± {:.4}",
                s["mean"].as_f64().unwrap_or(f64::NAN),
                s["std"].as_f64().unwrap_or(f64::NAN)
            );
        }
        println!("KL to reference  {:.4} nats per response ({})", kl.mean, reference_dir.display());
        println!(
            "response length  {:.1} tokens, {:.0}% ended",
            lengths as f64 / n,
            100.0 * ended as f64 / n
        );
    }
    Ok(())
}

/// The `[[rewards]]` of `--config`, else of the run that wrote the policy.
fn reward_sources(args: &GrpoEvalArgs) -> Result<Vec<RewardSource>> {
    if let Some(path) = &args.config {
        let config: GrpoConfig = crate::config::load(path, &[])?;
        if config.rewards.is_empty() {
            return Err(bad_input!("{}: no `[[rewards]]` to score with", path.display()));
        }
        return Ok(config.rewards);
    }
    let from_run = Lineage::read(&args.policy)
        .ok()
        .filter(|lineage| lineage.stage == "grpo")
        .map(|lineage| serde_json::from_value(lineage.config["config"]["rewards"].clone()));
    match from_run {
        Some(Ok(rewards)) => Ok(rewards),
        Some(Err(e)) => {
            Err(bad_input!("{}/rlhf.json: its rewards do not read: {e}", args.policy.display()))
        }
        None => Err(bad_input!(
            "{} was not trained by `rlhf grpo`, so it names no rewards\nhint: pass --config with the `[[rewards]]` to score with",
            args.policy.display()
        )),
    }
}

/// A number for JSON (NaN, "no score", is null).
fn number(x: f64) -> Value {
    if x.is_finite() { json!(x) } else { Value::Null }
}
