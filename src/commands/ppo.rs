//! `rlhf ppo eval`: a policy measured on held-out prompts — the reward model's mean score of
//! its sampled answers and their KL to a reference policy, with the rows for other judges.

use std::path::{Path, PathBuf};

use anyhow::Result;
use burn::prelude::*;
use serde_json::json;
use tokenizers::Tokenizer;

use crate::bad_input;
use crate::checkpoint::{Lineage, write_file_atomically};
use crate::cli::PpoEvalArgs;
use crate::data::chat::Message;
use crate::data::prompts::{Prompt, read_prompts};
use crate::data::template::ChatTemplate;
use crate::dpo::policy::load_reference;
use crate::generate::{Finish, Generation, Generator, SamplingConfig};
use crate::model::reward::{RewardModel, RewardStats};
use crate::model::{CausalLm, ModelConfig, load_causal_lm};
use crate::ppo::rollout::{decode_all, sequence_kls};

/// How an eval samples its answers (`--max-new-tokens`, `--temperature`, `--seed`).
pub(crate) struct Sample {
    pub max_new_tokens: usize,
    pub temperature: f64,
    pub seed: u64,
}

/// The prompts of an eval's `data`, rendered with the policy's chat template and cut from the
/// left to leave room for the answer, and the sampling that answers them.
pub(crate) fn held_out_prompts(
    policy_dir: &Path,
    data: &Path,
    tokenizer: &Tokenizer,
    config: &ModelConfig,
    sample: Sample,
) -> Result<(Vec<Prompt>, SamplingConfig)> {
    let template = ChatTemplate::resolve(None, policy_dir)?;
    let window = config.context_window();
    if sample.max_new_tokens == 0 || sample.max_new_tokens >= window {
        return Err(bad_input!(
            "--max-new-tokens must be between 1 and {} (the context window less one)",
            window - 1
        ));
    }
    let (prompts, _) = read_prompts(data, tokenizer, &template, window - sample.max_new_tokens)?;
    let sampling = SamplingConfig {
        max_new_tokens: sample.max_new_tokens,
        do_sample: true,
        temperature: sample.temperature,
        seed: sample.seed,
        ..SamplingConfig::default()
    };
    sampling.validate().map_err(|e| bad_input!("{e}"))?;
    Ok((prompts, sampling))
}

/// `rlhf ppo eval`: samples a response to every prompt from the policy and reports the
/// reward model's mean score and the KL to a reference policy.
pub fn eval(args: &PpoEvalArgs, device: &Device) -> Result<()> {
    let policy = load_causal_lm(&args.policy, device)?;
    let tokenizer = policy.tokenizer.as_ref().ok_or_else(|| {
        bad_input!("{}: no tokenizer.json, so prompts cannot be encoded", args.policy.display())
    })?;
    let reference_dir = args.reference.clone().unwrap_or_else(|| default_reference(&args.policy));
    let reference = eval_reference(&args.policy, &reference_dir, tokenizer, device)?;
    let reward = RewardModel::load(&args.reward, device)?;
    let sample = Sample {
        max_new_tokens: args.max_new_tokens,
        temperature: args.temperature,
        seed: args.seed,
    };
    let (prompts, sampling) =
        held_out_prompts(&args.policy, &args.data, tokenizer, &policy.config, sample)?;
    let generator = Generator::new(&policy.model, tokenizer, &policy.config, device)
        .with_generation_config(&args.policy);
    let pad = policy.config.pad_id(tokenizer);
    let (mut scores, mut kls, mut lengths, mut ended) = (Vec::new(), Vec::new(), 0usize, 0usize);
    let mut rows = String::new();
    for chunk in prompts.chunks(args.batch_size.max(1)) {
        let ids: Vec<Vec<u32>> = chunk.iter().map(|p| p.ids.clone()).collect();
        let generations: Vec<Generation> = generator.generate(&ids, &sampling, &mut |_, _| {})?;
        let chunk_kls: Vec<f32> =
            sequence_kls(&ids, &generations, reference.as_ref(), pad, args.temperature, device)
                .into_iter()
                .map(|kl| kl as f32)
                .collect();
        let texts = decode_all(tokenizer, generations.iter().map(|g| &g.tokens))?;
        let messages: Vec<&[Message]> = chunk.iter().map(|p| p.messages.as_slice()).collect();
        let text_refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let chunk_scores = reward.score(&messages, &text_refs, device)?;
        if args.out.is_some() {
            for (i, generation) in generations.iter().enumerate() {
                let prompt = messages[i].last().map_or("", |m| m.content.as_str());
                let row = json!({
                    "prompt": prompt, "response": texts[i], "reward": chunk_scores[i], "kl": chunk_kls[i],
                    "tokens": generation.tokens.len(), "finish_reason": generation.finish,
                });
                rows.push_str(&format!("{row}\n"));
            }
        }
        kls.extend(chunk_kls);
        scores.extend(chunk_scores);
        lengths += generations.iter().map(|g| g.tokens.len()).sum::<usize>();
        ended += generations.iter().filter(|g| g.finish == Finish::Eos).count();
    }
    if let Some(out) = &args.out {
        write_file_atomically(out, &rows)?;
    }
    let (reward_stats, kl) = (RewardStats::of(&scores), RewardStats::of(&kls));
    let n = prompts.len() as f64;
    let report = json!({
        "prompts": prompts.len(),
        "reward_mean": reward_stats.mean,
        "reward_std": reward_stats.std,
        "kl_mean": kl.mean,
        "response_length": lengths as f64 / n,
        "ended": ended as f64 / n,
        "policy": args.policy.display().to_string(),
        "reference": reference_dir.display().to_string(),
    });
    if args.json {
        println!("{report}");
    } else {
        println!("prompts          {}", prompts.len());
        println!("reward           {:.4} ± {:.4}", reward_stats.mean, reward_stats.std);
        println!("KL to reference  {:.4} nats per response ({})", kl.mean, reference_dir.display());
        println!(
            "response length  {:.1} tokens, {:.0}% ended",
            lengths as f64 / n,
            100.0 * ended as f64 / n
        );
    }
    Ok(())
}

/// The model an eval's KL is measured against; none when it is the policy itself, whose KL is
/// zero without a second model or its forward pass.
pub(super) fn eval_reference(
    policy: &Path,
    reference: &Path,
    tokenizer: &Tokenizer,
    device: &Device,
) -> Result<Option<CausalLm>> {
    let same = |dir: &Path| std::fs::canonicalize(dir).ok();
    if same(policy).is_some() && same(policy) == same(reference) {
        return Ok(None);
    }
    load_reference(reference, tokenizer, device).map(Some)
}

/// A PPO or GRPO checkpoint's reference is the policy it started from (its lineage parent);
/// any other policy is compared with itself.
pub(super) fn default_reference(policy: &Path) -> PathBuf {
    Lineage::read(policy)
        .ok()
        .filter(|lineage| matches!(lineage.stage.as_str(), "ppo" | "grpo"))
        .and_then(|lineage| lineage.parent)
        .map(|parent| PathBuf::from(parent.path))
        .filter(|dir| dir.is_dir())
        .unwrap_or_else(|| policy.to_path_buf())
}
