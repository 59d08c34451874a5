//! `rlhf dpo eval`: how well a policy's implicit reward β·(log π − log π_ref) orders
//! held-out comparisons — the accuracy and margins TRL logs as `eval_rewards/*`.

use std::path::{Path, PathBuf};

use anyhow::Result;
use burn::prelude::*;
use serde_json::{Value, json};

use crate::bad_input;
use crate::checkpoint::Lineage;
use crate::cli::DpoEvalArgs;
use crate::config::dpo::{DpoLoss, DpoLossType};
use crate::data::sft::SftEncoder;
use crate::data::template::ChatTemplate;
use crate::dpo::logps::all_log_probs;
use crate::dpo::pairs::{encode_file, flat_completions, pair_stats};
use crate::dpo::policy::load_reference;
use crate::model::load_causal_lm;
use crate::reward::length::ReadLength;

pub fn eval(args: &DpoEvalArgs, device: &Device) -> Result<()> {
    let loss = DpoLoss {
        loss_type: match args.loss_type.as_str() {
            "ipo" => DpoLossType::Ipo,
            "hinge" => DpoLossType::Hinge,
            "robust" => DpoLossType::Robust,
            _ => DpoLossType::Sigmoid,
        },
        beta: args.beta,
        label_smoothing: args.label_smoothing,
    };
    if !(args.beta > 0.0 && args.beta.is_finite()) {
        return Err(bad_input!("--beta must be a positive number, not {}", args.beta));
    }
    if !(0.0..0.5).contains(&args.label_smoothing) {
        return Err(bad_input!(
            "--label-smoothing must be in [0, 0.5), not {}",
            args.label_smoothing
        ));
    }
    let reference_dir = match &args.reference {
        Some(dir) => dir.clone(),
        None => recorded_reference(&args.model)?,
    };
    let policy = load_causal_lm(&args.model, device)?;
    let tokenizer = policy.tokenizer.ok_or_else(|| {
        bad_input!("{}: no tokenizer.json, so text cannot be scored", args.model.display())
    })?;
    let template = ChatTemplate::resolve(args.template.as_deref(), &args.model)?;
    let window = policy.config.context_window();
    let length = ReadLength::resolve(&args.model, args.length.max_len, window)?;
    let encoder = SftEncoder {
        tokenizer: &tokenizer,
        template: &template,
        max_len: length.max_len,
        truncation: length.truncation,
        eos: policy.config.eos_id(&tokenizer),
        eos_after_answers: matches!(template, ChatTemplate::Hh),
    };
    let (encoded, report) = encode_file(&args.data, &encoder)?;
    if encoded.is_empty() {
        return Err(bad_input!(
            "{}: no comparison fits in {}",
            args.data.display(),
            length.describe()
        ));
    }
    let pad = policy.config.pad_id(&tokenizer);
    let flat = flat_completions(&encoded);
    let logps = all_log_probs(&policy.model, &flat, None, pad, device, &|| Ok(()))?;
    drop(policy.model); // one model in memory at a time
    let reference = load_reference(&reference_dir, &tokenizer, device)?;
    let reference_logps = all_log_probs(&reference, &flat, None, pad, device, &|| Ok(()))?;
    let stats = pair_stats(&encoded, &logps, &reference_logps, &loss, device);
    if args.json {
        let mut out = stats.json("");
        let extra = json!({
            "loss_type": loss.loss_type.name(),
            "beta": loss.beta,
            "comparisons": encoded.len(),
            "pairs": stats.pairs,
            "truncated": report.truncated,
            "dropped": report.dropped,
            "max_len": length.max_len,
            "max_len_from": length.source(),
            "reference": reference_dir.display().to_string(),
        });
        if let Value::Object(extra) = extra {
            out.extend(extra);
        }
        println!("{}", Value::Object(out));
    } else {
        println!("reward accuracy   {:.4}", stats.accuracy);
        println!("reward margin     {:.4}", stats.margin());
        println!("rewards chosen    {:.4}", stats.rewards_chosen);
        println!("rewards rejected  {:.4}", stats.rewards_rejected);
        println!("logps chosen      {:.4}", stats.logps_chosen);
        println!("logps rejected    {:.4}", stats.logps_rejected);
        println!("loss ({}, β {})  {:.4}", loss.loss_type.name(), loss.beta, stats.loss);
        println!("count             {} comparisons, {} pairs", encoded.len(), stats.pairs);
        println!("read at           {}", length.describe());
        println!("reference         {}", reference_dir.display());
    }
    Ok(())
}

/// The reference a `rlhf dpo` / `rlhf kto` checkpoint was trained against, from its
/// `rlhf.json`: `model.reference`, else the model it started from.
fn recorded_reference(model: &Path) -> Result<PathBuf> {
    let hint = "hint: pass --reference DIR (the model the policy was trained from)";
    let lineage = Lineage::read(model)
        .map_err(|_| bad_input!("{}: no rlhf.json names a reference\n{hint}", model.display()))?;
    let named = lineage.config["reference"]["path"].as_str().map(PathBuf::from);
    let dir = match (lineage.stage.as_str(), named, lineage.parent) {
        ("dpo" | "kto", Some(dir), _) => dir,
        ("dpo" | "kto", None, Some(parent)) => PathBuf::from(parent.path),
        (stage, _, _) => {
            return Err(bad_input!(
                "{}: a `{stage}` checkpoint names no reference\n{hint}",
                model.display()
            ));
        }
    };
    if !dir.is_dir() {
        return Err(bad_input!(
            "{}: its reference {} (from rlhf.json) is not a directory here\n{hint}",
            model.display(),
            dir.display()
        ));
    }
    Ok(dir)
}
