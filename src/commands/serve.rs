//! `rlhf serve`: checks the options, loads the model and the moderation classifier, and runs
//! the server (src/serve/).

use anyhow::Result;
use burn::prelude::*;

use crate::bad_input;
use crate::cli::ServeArgs;
use crate::data::template::ChatTemplate;
use crate::generate::SamplingConfig;
use crate::model::load_causal_lm;
use crate::moderation::Moderator;
use crate::serve::{Server, run};

pub fn serve(args: &ServeArgs, device: &Device) -> Result<()> {
    // Everything the user handed over is checked before any model is loaded.
    super::chat::check_policy(&args.model)?;
    for (flag, value) in [("--max-batch", args.max_batch), ("--max-tokens", args.max_tokens)] {
        if value == 0 {
            return Err(bad_input!("{flag} must be at least 1"));
        }
    }
    let template = match args.template.as_deref() {
        Some("raw") => {
            return Err(bad_input!(
                "the raw template has no turns, so it cannot hold a conversation\nhint: use --template chatml or hh (/v1/completions takes raw text anyway)"
            ));
        }
        name => ChatTemplate::resolve(name, &args.model)?,
    };
    let loaded = load_causal_lm(&args.model, device)?;
    let tokenizer = loaded.tokenizer.ok_or_else(|| {
        bad_input!("{}: no tokenizer.json, so requests cannot be encoded", args.model.display())
    })?;
    let moderator =
        args.moderation.as_deref().map(|dir| Moderator::load(dir, device)).transpose()?;
    let name = |dir: &std::path::Path| {
        let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
        dir.file_name().map_or_else(|| "model".into(), |n| n.to_string_lossy().into_owned())
    };
    run(Server {
        model: loaded.model,
        config: loaded.config,
        model_dir: args.model.clone(),
        tokenizer,
        template,
        moderation_id: args.moderation.as_deref().map(name),
        moderator,
        defaults: SamplingConfig::from_model_dir(&args.model),
        model_id: name(&args.model),
        api_key: args.api_key.clone().or_else(|| std::env::var("RLHF_API_KEY").ok()),
        address: (args.host.clone(), args.port),
        max_batch: args.max_batch,
        max_queue: args.max_queue,
        max_tokens: args.max_tokens,
        prompt_cache: args.prompt_cache,
        device: device.clone(),
    })
}
