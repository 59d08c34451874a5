//! The tokenizer that travels with a model directory (`tokenizer.json` + `tokenizer_config.json`).

use std::path::Path;

use anyhow::{Context, Result};
use serde_json::json;
use tokenizers::Tokenizer;

use crate::{bad_input, json_file};

/// Files a model directory's tokenizer may consist of; each present one is copied on save.
pub const TOKENIZER_FILES: [&str; 4] =
    ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja"];

/// Reads `tokenizer.json` from a model directory (or the file itself).
pub fn read(path: &Path) -> Result<Tokenizer> {
    let file = if path.is_dir() { path.join("tokenizer.json") } else { path.to_path_buf() };
    if !file.is_file() {
        return Err(bad_input!(
            "{}: no tokenizer.json\nhint: rlhf needs the fast-tokenizer file; `AutoTokenizer.from_pretrained(...).save_pretrained(dir)` writes it",
            path.display()
        ));
    }
    let mut tokenizer = Tokenizer::from_file(&file)
        .map_err(|e| bad_input!("{}: cannot load tokenizer: {e}", file.display()))?;
    // As `transformers` does: padding and truncation saved in tokenizer.json (MiniLM's pads
    // every text to 128) are the caller's choice, not the file's.
    tokenizer.with_padding(None);
    tokenizer
        .with_truncation(None)
        .map_err(|e| bad_input!("{}: cannot load tokenizer: {e}", file.display()))?;
    Ok(tokenizer)
}

/// The directory holding a tokenizer's files (`tokenizer_config.json`, a chat template), given
/// that directory or its `tokenizer.json`.
pub fn files_dir(path: &Path) -> &Path {
    if path.is_dir() { path } else { path.parent().unwrap_or(Path::new(".")) }
}

/// Every id the tokenizer can produce must index a row of the embedding.
pub fn check_fits(tokenizer: &Tokenizer, vocab_size: usize, dir: &Path) -> Result<()> {
    let needed = tokenizer.get_vocab_size(true);
    if needed > vocab_size {
        return Err(bad_input!(
            "{}: the tokenizer has {needed} tokens but the model's embedding has only {vocab_size} rows (vocab_size in config.json)\nhint: use the tokenizer the model was trained with",
            dir.display()
        ));
    }
    Ok(())
}

/// Copies the tokenizer files of `from` (a model directory or a `tokenizer.json`) into `to`,
/// writing a minimal `tokenizer_config.json` when there is none, so `AutoTokenizer` loads it.
pub fn copy_files(from: &Path, to: &Path, model_max_length: usize) -> Result<()> {
    if from.is_file() {
        std::fs::copy(from, to.join("tokenizer.json"))
            .with_context(|| format!("copying {}", from.display()))?;
    } else {
        for name in TOKENIZER_FILES {
            let source = from.join(name);
            if source.is_file() {
                std::fs::copy(&source, to.join(name))
                    .with_context(|| format!("copying {}", source.display()))?;
            }
        }
    }
    let config = to.join("tokenizer_config.json");
    if !config.exists() {
        let minimal = json!({
            "tokenizer_class": "PreTrainedTokenizerFast",
            "model_max_length": model_max_length,
        });
        json_file::write(&config, &minimal)?;
    }
    Ok(())
}

/// End of text; also the padding token of tokenizers trained here.
pub const END_OF_TEXT: &str = "<|endoftext|>";
/// ChatML turn delimiters.
pub const IM_START: &str = "<|im_start|>";
pub const IM_END: &str = "<|im_end|>";

/// The ChatML chat template (`transformers` renders it with `apply_chat_template`).
pub const CHATML_TEMPLATE: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/// Anthropic's HH transcript format as a chat template; answers end with the eos token, as
/// `rlhf sft` trains them to.
pub const HH_TEMPLATE: &str = "{% for message in messages %}{% if message['role'] == 'user' %}{{ '\\n\\nHuman: ' + message['content'] }}{% elif message['role'] == 'assistant' %}{{ '\\n\\nAssistant: ' + message['content'] + eos_token }}{% else %}{{ message['content'] }}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '\\n\\nAssistant:' }}{% endif %}";

/// Makes `source` the chat template of the tokenizer in `dir`: `chat_template.jinja` for
/// `transformers` 5.x and the `chat_template` key of `tokenizer_config.json` for 4.x.
pub fn set_chat_template(dir: &Path, source: &str) -> Result<()> {
    let path = dir.join("chat_template.jinja");
    std::fs::write(&path, source).with_context(|| format!("writing {}", path.display()))?;
    let config_path = dir.join("tokenizer_config.json");
    let mut config = json_file::read_optional(&config_path);
    config.insert("chat_template".into(), source.into());
    json_file::write(&config_path, &config)
}

/// Trains a byte-level BPE (GPT-2's scheme: any byte sequence encodes, no unknown token)
/// with the chat special tokens at ids 0, 1, 2.
pub fn train_bpe<'a>(
    texts: impl Iterator<Item = &'a str> + Send,
    vocab_size: usize,
) -> Result<Tokenizer> {
    use tokenizers::models::bpe::{BPE, BpeTrainerBuilder};
    use tokenizers::normalizers::NormalizerWrapper;
    use tokenizers::pre_tokenizers::byte_level::ByteLevel;
    use tokenizers::{AddedToken, TokenizerBuilder};

    let specials = [END_OF_TEXT, IM_START, IM_END];
    let minimum = ByteLevel::alphabet().len() + specials.len();
    if vocab_size < minimum {
        return Err(bad_input!(
            "--vocab-size {vocab_size} is too small: a byte-level BPE needs at least {minimum} (256 bytes + 3 special tokens)"
        ));
    }
    let mut trainer = BpeTrainerBuilder::new()
        .vocab_size(vocab_size)
        .min_frequency(2)
        .show_progress(false)
        .special_tokens(specials.iter().map(|t| AddedToken::from(*t, true)).collect())
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build();
    let byte_level = ByteLevel::default().add_prefix_space(false).trim_offsets(false);
    let mut tokenizer =
        TokenizerBuilder::<BPE, NormalizerWrapper, ByteLevel, ByteLevel, ByteLevel>::new()
            .with_model(BPE::default())
            .with_normalizer(None)
            .with_pre_tokenizer(Some(byte_level))
            .with_post_processor(Some(byte_level))
            .with_decoder(Some(byte_level))
            .build()
            .map_err(|e| anyhow::anyhow!("building the tokenizer: {e}"))?;
    tokenizer
        .train(&mut trainer, texts)
        .map_err(|e| anyhow::anyhow!("training the tokenizer: {e}"))?;
    Ok(Tokenizer::from(tokenizer))
}

/// Writes `tokenizer.json`, `tokenizer_config.json` and `chat_template.jinja` into `dir`:
/// the ChatML template is in both places, since `transformers` 5.x reads the `.jinja` file
/// and 4.x only the config.
pub fn write_trained(tokenizer: &Tokenizer, dir: &Path) -> Result<()> {
    tokenizer
        .save(dir.join("tokenizer.json"), true)
        .map_err(|e| anyhow::anyhow!("writing tokenizer.json: {e}"))?;
    let config = json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": END_OF_TEXT,
        "eos_token": END_OF_TEXT,
        "pad_token": END_OF_TEXT,
        "additional_special_tokens": [IM_START, IM_END],
        "clean_up_tokenization_spaces": false,
        "model_max_length": 1_000_000_000_000_000_000u64,
        "chat_template": CHATML_TEMPLATE,
    });
    json_file::write(&dir.join("tokenizer_config.json"), &config)?;
    let path = dir.join("chat_template.jinja");
    std::fs::write(&path, CHATML_TEMPLATE).with_context(|| format!("writing {}", path.display()))
}

/// A special token as `tokenizer_config.json` names it: a string, or an `AddedToken` object
/// with a `content` field.
pub fn configured_token<'a>(
    config: &'a serde_json::Map<String, serde_json::Value>,
    key: &str,
) -> Option<&'a str> {
    let value = config.get(key)?;
    value.as_str().or_else(|| value.get("content")?.as_str())
}
