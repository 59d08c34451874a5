//! `rlhf model init`, `inspect`, `import`, `export` and `merge`.
use anyhow::Result;
use burn::module::Module;
use burn::prelude::*;
use serde_json::{Value, json};

use crate::bad_input;
use crate::checkpoint::Source;
use crate::checkpoint::{Lineage, save_atomically};
use crate::cli::{
    ModelExportArgs, ModelImportArgs, ModelInitArgs, ModelInspectArgs, ModelMergeArgs,
};
use crate::data::tokenizer;
use crate::model::auto::{Holds, ModelDir};
use crate::model::pretrained::init_causal_lm;
use crate::model::{preset, save_causal_lm, save_scalar_model};

pub fn init(args: &ModelInitArgs, device: &Device) -> Result<()> {
    refuse_existing(&args.out, args.force)?;
    let tok = tokenizer::read(&args.tokenizer)?;
    let tokenizer_dir = tokenizer::files_dir(&args.tokenizer);
    let config = preset::resolve(&args.preset, &args.overrides, &tok, tokenizer_dir)?;
    device.seed(args.seed);
    let model = init_causal_lm(&config, device)?;
    let params = model.num_params();
    let lineage = Lineage::new(
        "init",
        json!({ "preset": args.preset, "overrides": args.overrides, "seed": args.seed, "model": config.json }),
    );
    save_atomically(&args.out, |dir| {
        save_causal_lm(&model, &config, Some(&args.tokenizer), dir)?;
        lineage.write(dir)
    })?;
    eprintln!(
        "created {}: {} with {} parameters, vocabulary {}",
        args.out.display(),
        config.model_type(),
        human_count(params),
        config.vocab_size()
    );
    Ok(())
}

pub fn inspect(args: &ModelInspectArgs, device: &Device) -> Result<()> {
    let dir = ModelDir::open(&args.model)?;
    let loaded = dir.load(device)?;
    let (config, params, tokenizer) = (&dir.config, loaded.model.num_params(), loaded.tokenizer);
    let lineage = Lineage::read(&args.model).ok();
    let (layers, heads, kv_heads) = config.depth_and_heads();
    let head = match dir.holds() {
        Holds::CausalLm => "causal-lm",
        Holds::Scalar | Holds::EncoderClassifier(1) => "scalar",
        Holds::DecoderClassifier(_) | Holds::EncoderClassifier(_) => "classifier",
        Holds::Encoder => "encoder",
    };
    let report = json!({
        "model": args.model.display().to_string(),
        "model_type": config.model_type(),
        "head": head,
        "parameters": params,
        "layers": layers,
        "heads": heads,
        "kv_heads": kv_heads,
        "hidden_size": config.hidden_size(),
        "context_window": config.context_window(),
        "vocab_size": config.vocab_size(),
        "tied_embeddings": config.tied_embeddings(),
        "tokenizer_vocab": tokenizer.as_ref().map(|t| t.get_vocab_size(true)),
        "bos_token_id": config.json.get("bos_token_id"),
        "eos_token_id": config.json.get("eos_token_id"),
        "pad_token_id": config.json.get("pad_token_id"),
        "stage": lineage.as_ref().map(|l| l.stage.clone()),
    });
    if args.json {
        println!("{report}");
        return Ok(());
    }
    let Value::Object(fields) = report else { unreachable!() };
    for (key, value) in fields {
        let shown = match (&key[..], &value) {
            ("parameters", Value::Number(n)) => human_count(n.as_u64().unwrap_or(0) as usize),
            (_, Value::String(s)) => s.clone(),
            (_, Value::Null) => "-".into(),
            _ => value.to_string(),
        };
        println!("{key:<20} {shown}");
    }
    Ok(())
}

pub fn import(args: &ModelImportArgs, device: &Device) -> Result<()> {
    refuse_existing(&args.out, args.force)?;
    let started = std::time::Instant::now();
    let imported = crate::gguf::import(&args.gguf, &args.out, device)?;
    let types: Vec<String> = imported.types.iter().map(|(t, n)| format!("{n} {t}")).collect();
    eprintln!(
        "imported {} -> {}: {} with {} parameters, vocabulary {} (tensors: {}) in {:.1} s",
        args.gguf.display(),
        args.out.display(),
        imported.architecture,
        human_count(imported.parameters),
        imported.vocab_size,
        types.join(", "),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

pub fn export(args: &ModelExportArgs, device: &Device) -> Result<()> {
    refuse_existing(&args.gguf, args.force)?;
    // As `plot --out`: the folder is made; one that cannot be is named.
    if let Some(folder) = args.gguf.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(folder).map_err(|e| {
            bad_input!(
                "--gguf {}: cannot create the folder {}: {e}",
                args.gguf.display(),
                folder.display()
            )
        })?;
    }
    let bytes = crate::gguf::export(&args.model, &args.gguf, args.kind, device)?;
    eprintln!(
        "exported {} -> {} ({}, {:.1} MB)",
        args.model.display(),
        args.gguf.display(),
        args.kind.label(),
        bytes as f64 / 1e6
    );
    Ok(())
}

pub fn merge(args: &ModelMergeArgs, device: &Device) -> Result<()> {
    refuse_existing(&args.out, args.force)?;
    let dir = ModelDir::open(&args.adapter)?;
    let Some(adapter) = dir.adapter() else {
        return Err(bad_input!(
            "{}: not an adapter directory (no adapter_config.json)\nhint: --adapter takes what a stage with [model.lora] or peft's save_pretrained wrote",
            args.adapter.display()
        ));
    };
    let base = adapter.base.clone();
    // The adapter's tokenizer files (a stage may have set its chat template), else the base's.
    let files = match args.adapter.join("tokenizer.json").is_file() {
        true => args.adapter.clone(),
        false => base.clone(),
    };
    let mut lineage = Lineage::new(
        "merge",
        json!({ "adapter": args.adapter.display().to_string(), "base": base.display().to_string() }),
    );
    lineage.parent = Some(Source::model_dir(&args.adapter)?);
    let params = match dir.holds() {
        Holds::CausalLm => {
            let loaded = dir.causal_lm(device)?;
            save_atomically(&args.out, |out| {
                save_causal_lm(&loaded.model, &loaded.config, Some(&files), out)?;
                lineage.write(out)
            })?;
            loaded.model.num_params()
        }
        _ => {
            let loaded = dir.scalar_model(device)?;
            save_atomically(&args.out, |out| {
                save_scalar_model(&loaded.model, &loaded.config, Some(&files), out)?;
                lineage.write(out)
            })?;
            loaded.model.num_params()
        }
    };
    eprintln!(
        "merged {} into {} -> {} ({} parameters)",
        args.adapter.display(),
        base.display(),
        args.out.display(),
        human_count(params)
    );
    Ok(())
}

/// An output that exists is replaced only when the user said so.
fn refuse_existing(path: &std::path::Path, force: bool) -> Result<()> {
    if path.exists() && !force {
        return Err(bad_input!(
            "{} already exists\nhint: pass --force to replace it",
            path.display()
        ));
    }
    Ok(())
}

fn human_count(n: usize) -> String {
    match n {
        n if n >= 1_000_000_000 => format!("{:.2} B", n as f64 / 1e9),
        n if n >= 1_000_000 => format!("{:.2} M", n as f64 / 1e6),
        n if n >= 1_000 => format!("{:.1} k", n as f64 / 1e3),
        n => n.to_string(),
    }
}
