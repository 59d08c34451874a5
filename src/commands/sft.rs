//! `rlhf sft eval`: a language model's loss and perplexity on a data file.

use anyhow::Result;
use burn::prelude::*;
use serde_json::json;

use crate::bad_input;
use crate::cli::EvalArgs;
use crate::data::sft::{Example, SftEncoder, Truncation};
use crate::data::template::ChatTemplate;
use crate::model::load_causal_lm;
use crate::sft::{encode_file, mean_loss};

/// `rlhf sft eval`: loss and perplexity of a model on a data file.
pub fn eval(args: &EvalArgs, device: &Device) -> Result<()> {
    let loaded = load_causal_lm(&args.model, device)?;
    let tokenizer = loaded.tokenizer.as_ref().ok_or_else(|| {
        bad_input!("{}: no tokenizer.json, so the data cannot be encoded", args.model.display())
    })?;
    let template = ChatTemplate::resolve(None, &args.model)?;
    let encoder = SftEncoder {
        tokenizer,
        template: &template,
        max_len: loaded.config.context_window(),
        truncation: Truncation::Left,
        eos: loaded.config.eos_id(tokenizer),
        eos_after_answers: false,
    };
    let (examples, report) = encode_file(&args.data, &encoder)?;
    let examples: Vec<Example> = examples.into_iter().map(|(e, _)| e).collect();
    let pad = loaded.config.pad_id(tokenizer);
    let (loss, targets) = mean_loss(&loaded.model, &examples, pad, device);
    let report = json!({
        "loss": loss,
        "perplexity": loss.exp(),
        "rows": examples.len(),
        "target_tokens": targets,
        "truncated": report.truncated,
        "dropped": report.dropped,
    });
    if args.json {
        println!("{report}");
    } else {
        println!("loss        {loss:.4}");
        println!("perplexity  {:.3}", loss.exp());
        println!("rows        {} ({targets} target tokens)", examples.len());
    }
    Ok(())
}
