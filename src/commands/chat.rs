//! `rlhf chat`: loads the policy and the services around it, then runs the REPL on a terminal
//! or answers piped lines.

use std::io::IsTerminal;

use anyhow::Result;
use burn::prelude::*;

use crate::bad_input;
use crate::chat::log::ChatLog;
use crate::chat::{Services, Session, interrupt, piped, repl, saved};
use crate::cli::ChatArgs;
use crate::data::template::ChatTemplate;
use crate::generate::Generator;
use crate::model::config::HeadKind;
use crate::model::reward::RewardModel;
use crate::model::{ModelDir, load_causal_lm};
use crate::moderation::Moderator;

pub fn chat(args: &ChatArgs, device: &Device) -> Result<()> {
    // Everything the user handed over is checked before any model is loaded.
    check_policy(&args.model)?;
    let template = match args.template.as_deref() {
        Some("raw") => {
            return Err(bad_input!(
                "the raw template has no turns, so it cannot hold a conversation\nhint: use --template chatml or hh"
            ));
        }
        name => ChatTemplate::resolve(Some(name.unwrap_or("model")), &args.model)?,
    };
    let sampling = args.sampling.config(&args.model)?;
    let resumed = args.load.as_deref().map(saved::load).transpose()?;

    let loaded = load_causal_lm(&args.model, device)?;
    let tokenizer = loaded.tokenizer.as_ref().ok_or_else(|| {
        bad_input!("{}: no tokenizer.json, so messages cannot be encoded", args.model.display())
    })?;
    let window = loaded.config.context_window();
    if sampling.max_new_tokens >= window {
        return Err(bad_input!(
            "--max-new-tokens {} leaves no room for the conversation in the {window}-token context window",
            sampling.max_new_tokens
        ));
    }
    let services = Services {
        moderator: args
            .moderation
            .as_deref()
            .map(|dir| Moderator::load(dir, device))
            .transpose()?,
        reward: args.reward.as_deref().map(|dir| RewardModel::load(dir, device)).transpose()?,
        log: args.log.as_deref().map(|dir| ChatLog::open(dir, &args.model)).transpose()?,
        prefs: args.prefs.clone(),
    };
    let generator = Generator::new(&loaded.model, tokenizer, &loaded.config, device)
        .with_generation_config(&args.model)
        .prepared();
    let mut session =
        Session::new(generator, tokenizer, template, window, sampling, services, device);
    if let Some(messages) = resumed {
        session.load(messages);
    }
    if args.system.is_some() {
        session.set_system(args.system.clone());
    }

    interrupt::install();
    if args.prompt.is_some() || args.json || !std::io::stdin().is_terminal() {
        piped::run(&mut session, args.prompt.as_deref(), args.json)
    } else {
        repl::run(&mut session)
    }
}

/// The policy must be a causal LM; reward and moderation checkpoints have flags of their own.
pub(super) fn check_policy(dir: &std::path::Path) -> Result<()> {
    // Through the one loader: an adapter directory has its base's config.
    let config = ModelDir::open(dir)?.config;
    let kind = match config.head_kind() {
        HeadKind::CausalLm if !dir.join(crate::moderation::SETTINGS_FILE).is_file() => {
            return Ok(());
        }
        HeadKind::Scalar => "a reward (or value) model",
        HeadKind::Classifier | HeadKind::CausalLm => "a moderation classifier",
        HeadKind::Encoder => "a BERT encoder",
    };
    Err(bad_input!(
        "{}: this is {kind}, not a language model to chat with\nhint: pass an SFT or PPO policy as --model; reward models go to --reward, moderation classifiers to --moderation",
        dir.display()
    ))
}
