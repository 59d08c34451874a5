//! The tokenizer a GGUF file carries in its `tokenizer.ggml.*` metadata ↔ `tokenizer.json`.
//!
//! Import reads byte-level BPE vocabularies (`tokenizer.ggml.model = "gpt2"`: GPT-2, SmolLM,
//! Qwen2, Llama 3) and SentencePiece BPE ones (`"llama"`: Llama 2, TinyLlama, Mistral), and
//! writes the `tokenizer.json` that `transformers` builds from the same file
//! (`AutoTokenizer.from_pretrained(dir, gguf_file=…)`): for byte-level files GPT-2's
//! pre-tokenizer, or the split regex that `tokenizer.ggml.pre` names for the families that
//! differ; control tokens as special added tokens, user-defined ones as plain added tokens.
//! Export writes byte-level BPE tokenizers.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use serde_json::{Map, Value as Json, json};

use super::file::{GgufFile, Value};
use crate::data::tokenizer::set_chat_template;
use crate::{bad_input, json_file};

/// llama.cpp's token types.
const NORMAL: i32 = 1;
const CONTROL: i32 = 3;
const USER_DEFINED: i32 = 4;
const UNUSED: i32 = 5;

const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Every `tokenizer.ggml.pre` that llama.cpp accepts (`src/llama-vocab.cpp` of the llama.cpp
/// that `scripts/llama_cpp_venv.sh` pins); it refuses to load a file with any other name.
pub const LLAMA_CPP_PRE_NAMES: [&str; 91] = [
    "default",
    "minicpm5",
    "llama3",
    "llama-v3",
    "llama-bpe",
    "falcon3",
    "falcon-h1",
    "pixtral",
    "midm-2.0",
    "lfm2",
    "jina-v5-nano",
    "deepseek-llm",
    "deepseek-coder",
    "deepseek-v3",
    "spark2_5",
    "youtu",
    "falcon",
    "mpt",
    "starcoder",
    "gpt-2",
    "phi-2",
    "jina-es",
    "jina-de",
    "gigachat",
    "jina-v2-es",
    "jina-v2-de",
    "a.x-4.0",
    "mellum",
    "modern-bert",
    "jina-v1-en",
    "jina-v2-code",
    "roberta-bpe",
    "exaone4",
    "jais-2",
    "gemma4",
    "granite-embed-multi-311m",
    "sarvam-moe",
    "whitespace",
    "refact",
    "command-r",
    "qwen2",
    "deepseek-r1-qwen",
    "kormo",
    "f2llmv2",
    "megrez",
    "qwen35",
    "stablelm2",
    "olmo",
    "dbrx",
    "smaug-bpe",
    "poro-chat",
    "chatglm-bpe",
    "glm4",
    "glm5",
    "viking",
    "jais",
    "tekken",
    "smollm",
    "codeshell",
    "bloom",
    "gpt3-finnish",
    "exaone",
    "exaone-moe",
    "chameleon",
    "minerva-7b",
    "gpt-4o",
    "llama4",
    "kanana2",
    "talkie",
    "granite-embed-multi-97m",
    "tiny_aya",
    "cohere2moe",
    "superbpe",
    "trillion",
    "granite-docling",
    "bailingmoe",
    "bailingmoe2",
    "llada-moe",
    "seed-coder",
    "hunyuan",
    "hunyuan-dense",
    "hy_v4",
    "joyai-llm",
    "kimi-k2",
    "ufakzeka",
    "grok-2",
    "afmoe",
    "laguna",
    "minimax-m2",
    "solar-open",
    "mellum2",
];

/// `tokenizer_config.json`'s record of the `tokenizer.ggml.pre` a model was imported with, so
/// that export writes it back (several llama.cpp names share one split).
pub const PRE_NAME_KEY: &str = "gguf_pre_tokenizer";

/// How a byte-level BPE cuts text into words before merging, for the word splits that both
/// `tokenizer.json` and llama.cpp can express.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Split {
    /// GPT-2's regex (`ByteLevel` with `use_regex`).
    Gpt2,
    /// Every digit alone, then GPT-2's regex (SmolLM, StarCoder).
    Digits,
    /// Llama 3's regex (digits in groups of up to three), a word found whole in the vocabulary
    /// taken as it is (`ignore_merges`, as in Meta's `tokenizer.json` and llama.cpp's `llama3`).
    Llama3,
    /// Llama 3's regex, every word merged pair by pair (llama.cpp's `smaug-bpe`, `dbrx`).
    Llama3Merging,
    /// Qwen2's regex: Llama 3's, with every digit alone.
    Qwen2,
}

/// llama.cpp's names, by the split each stands for (its `LLAMA_VOCAB_PRE_TYPE_*` that share
/// these regexes).
const SPLIT_NAMES: [(Split, &[&str]); 5] = [
    (
        Split::Gpt2,
        &[
            "gpt-2",
            "phi-2",
            "jina-es",
            "jina-de",
            "gigachat",
            "jina-v2-es",
            "jina-v2-de",
            "a.x-4.0",
            "mellum",
            "modern-bert",
            "jina-v1-en",
            "jina-v2-code",
            "roberta-bpe",
            "exaone4",
            "mpt",
            "olmo",
            "jais",
            "trillion",
            "granite-docling",
        ],
    ),
    (
        Split::Digits,
        &[
            "smollm",
            "starcoder",
            "refact",
            "command-r",
            "codeshell",
            "exaone",
            "minerva-7b",
            "mellum2",
        ],
    ),
    (
        Split::Llama3,
        &[
            "llama-bpe",
            "llama3",
            "llama-v3",
            "falcon3",
            "falcon-h1",
            "pixtral",
            "midm-2.0",
            "lfm2",
            "jina-v5-nano",
        ],
    ),
    (Split::Llama3Merging, &["smaug-bpe", "dbrx"]),
    (
        Split::Qwen2,
        &[
            "qwen2",
            "deepseek-r1-qwen",
            "kormo",
            "f2llmv2",
            "megrez",
            "stablelm2",
            "hunyuan",
            "solar-open",
        ],
    ),
];

impl Split {
    /// The split a `tokenizer.ggml.pre` name stands for. Names of splits `tokenizer.json`
    /// cannot express (and `default`) are read as GPT-2's, as `transformers` reads them.
    fn of_name(name: &str) -> Split {
        SPLIT_NAMES
            .iter()
            .find(|(_, names)| names.contains(&name))
            .map_or(Split::Gpt2, |(split, _)| *split)
    }

    /// The name export writes for this split when the model was not imported with one.
    fn llama_cpp_name(self) -> &'static str {
        SPLIT_NAMES.iter().find(|(split, _)| *split == self).expect("every split is named").1[0]
    }

    /// The `pre_tokenizer` of `tokenizer.json` that splits this way.
    fn pre_tokenizer(self) -> Json {
        let byte_level = |use_regex: bool| json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": use_regex});
        let regex = |regex: &str| {
            json!({"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": false},
                byte_level(false),
            ]})
        };
        match self {
            Split::Gpt2 => byte_level(true),
            Split::Digits => json!({"type": "Sequence", "pretokenizers": [
                {"type": "Digits", "individual_digits": true},
                byte_level(true),
            ]}),
            Split::Llama3 | Split::Llama3Merging => regex(LLAMA3_SPLIT),
            Split::Qwen2 => regex(QWEN2_SPLIT),
        }
    }

    /// Whether the BPE model takes a word found whole in the vocabulary without merging it.
    fn ignores_merges(self) -> bool {
        self == Split::Llama3
    }

    /// The split of a `tokenizer.json`: its `pre_tokenizer`, and for Llama 3's regex whether the
    /// model ignores merges (llama.cpp ignores them for no other split).
    fn of_tokenizer(tokenizer: &Json) -> Option<Split> {
        let ignore_merges = tokenizer["model"]["ignore_merges"].as_bool().unwrap_or(false);
        match (Split::of(&tokenizer["pre_tokenizer"])?, ignore_merges) {
            (Split::Llama3, false) => Some(Split::Llama3Merging),
            (split, ignore) => (split.ignores_merges() == ignore).then_some(split),
        }
    }

    /// The split of a `tokenizer.json` `pre_tokenizer`, if it is one of these.
    fn of(pre: &Json) -> Option<Split> {
        // A byte-level step: no prefix space (llama.cpp adds none), GPT-2's regex or none.
        let byte_level = |step: &Json, use_regex: bool| {
            step["type"] == "ByteLevel"
                && !step["add_prefix_space"].as_bool().unwrap_or(false)
                && step["use_regex"].as_bool().unwrap_or(true) == use_regex
        };
        fn isolated_regex(step: &Json) -> Option<&str> {
            let isolated = step["type"] == "Split"
                && step["behavior"] == "Isolated"
                && !step["invert"].as_bool().unwrap_or(false);
            step["pattern"]["Regex"].as_str().filter(|_| isolated)
        }
        if byte_level(pre, true) {
            return Some(Split::Gpt2);
        }
        let steps = pre["pretokenizers"].as_array().filter(|_| pre["type"] == "Sequence")?;
        match steps.as_slice() {
            [one] => Split::of(one),
            [digits, last] if digits["type"] == "Digits" => (digits["individual_digits"] == true
                && byte_level(last, true))
            .then_some(Split::Digits),
            [split, last] if byte_level(last, false) => match isolated_regex(split)? {
                r if r == LLAMA3_SPLIT => Some(Split::Llama3),
                r if r == QWEN2_SPLIT => Some(Split::Qwen2),
                _ => None,
            },
            _ => None,
        }
    }
}

/// What import writes: `tokenizer.json`, the special tokens for `tokenizer_config.json`, and
/// the chat template.
pub struct ImportedTokenizer {
    pub json: Json,
    pub config: Map<String, Json>,
    pub chat_template: Option<String>,
    pub vocab_size: usize,
}

impl ImportedTokenizer {
    /// `tokenizer.json`, `tokenizer_config.json` (for a context of `model_max_length` tokens)
    /// and the chat template, into a model directory.
    pub fn write(&self, dir: &Path, model_max_length: usize) -> Result<()> {
        let path = dir.join("tokenizer.json");
        json_file::write(&path, &self.json)?;
        // What `tokenizers` cannot load is our bug, not the user's: fail loudly.
        crate::data::tokenizer::read(&path).context("the converted tokenizer does not load")?;
        let mut config = self.config.clone();
        config.insert("model_max_length".into(), model_max_length.into());
        json_file::write(&dir.join("tokenizer_config.json"), &config)?;
        match &self.chat_template {
            Some(template) => set_chat_template(dir, template),
            None => Ok(()),
        }
    }
}

/// Reads the tokenizer of `file` (named `source` in errors).
pub fn import(file: &GgufFile, source: &str) -> Result<ImportedTokenizer> {
    let kind = string(file, "tokenizer.ggml.model", source)?;
    let tokens = strings(file, "tokenizer.ggml.tokens", source)?;
    let types: Vec<i32> = match file.get("tokenizer.ggml.token_type") {
        None => vec![NORMAL; tokens.len()],
        Some(v) => v
            .as_array()
            .map(|items| items.iter().map(|t| t.as_f64().unwrap_or(1.0) as i32).collect())
            .filter(|t: &Vec<i32>| t.len() == tokens.len())
            .ok_or_else(|| {
                bad_input!(
                    "{source}: metadata `tokenizer.ggml.token_type` must be {} integers, one per token",
                    tokens.len()
                )
            })?,
    };
    let model = match kind.as_str() {
        "gpt2" => byte_level_bpe(file, &tokens, source)?,
        "llama" => sentencepiece_bpe(file, &tokens, source)?,
        other => {
            return Err(bad_input!(
                "{source}: metadata `tokenizer.ggml.model` = \"{other}\" is not supported (gpt2: byte-level BPE as in GPT-2, SmolLM, Qwen2 and Llama 3; llama: SentencePiece BPE as in Llama 2, TinyLlama and Mistral)"
            ));
        }
    };
    // Control tokens become special added tokens and user-defined ones plain added tokens, as
    // `transformers` adds them; a byte-level "control" token not spelled in the byte alphabet
    // is a llama.cpp mislabel and stays out.
    let added: Vec<Json> = tokens
        .iter()
        .zip(&types)
        .enumerate()
        .filter(|(_, (token, kind))| {
            matches!(**kind, CONTROL | USER_DEFINED) && model.vocab.contains_key(token.as_str())
        })
        .map(|(id, (token, kind))| {
            json!({"id": id, "content": token, "single_word": false, "lstrip": false,
                   "rstrip": false, "normalized": false, "special": *kind == CONTROL})
        })
        .collect();

    let special_id = |key: &str| -> Result<Option<usize>> {
        match file.get(key) {
            None => Ok(None),
            Some(v) => match v.as_u64().map(|id| id as usize).filter(|&id| id < tokens.len()) {
                Some(id) => Ok(Some(id)),
                None => Err(bad_input!(
                    "{source}: metadata `{key}` = {v:?} is not a token id (the vocabulary has {})",
                    tokens.len()
                )),
            },
        }
    };
    let flag = |key: &str, default: bool| file.get(key).and_then(Value::as_bool).unwrap_or(default);
    // llama.cpp adds bos to a SentencePiece vocabulary that does not say otherwise.
    let add_bos = flag("tokenizer.ggml.add_bos_token", kind == "llama");
    let add_eos = flag("tokenizer.ggml.add_eos_token", false);
    let bos = special_id("tokenizer.ggml.bos_token_id")?.filter(|_| add_bos);
    let eos = special_id("tokenizer.ggml.eos_token_id")?.filter(|_| add_eos);
    let post_processor = post_processor(&tokens, bos, eos);
    let tokenizer = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": model.pre_tokenizer,
        "post_processor": post_processor,
        "decoder": model.decoder,
        "model": model.json,
    });

    let mut config = Map::new();
    config.insert("tokenizer_class".into(), "PreTrainedTokenizerFast".into());
    for (name, key) in [
        ("bos_token", "tokenizer.ggml.bos_token_id"),
        ("eos_token", "tokenizer.ggml.eos_token_id"),
        ("unk_token", "tokenizer.ggml.unknown_token_id"),
        ("pad_token", "tokenizer.ggml.padding_token_id"),
    ] {
        if let Some(id) = special_id(key)? {
            config.insert(name.into(), tokens[id].clone().into());
        }
    }
    if kind == "gpt2"
        && let Some(pre) = file.get("tokenizer.ggml.pre").and_then(Value::as_str)
    {
        config.insert(PRE_NAME_KEY.into(), pre.into());
    }
    config.insert("add_bos_token".into(), add_bos.into());
    config.insert("add_eos_token".into(), add_eos.into());
    config.insert("clean_up_tokenization_spaces".into(), false.into());
    let chat_template =
        file.get("tokenizer.chat_template").and_then(Value::as_str).map(String::from);
    Ok(ImportedTokenizer { json: tokenizer, config, chat_template, vocab_size: tokens.len() })
}

/// A vocabulary family's part of `tokenizer.json`.
struct TokenizerModel {
    /// Token → id, as the `BPE` model spells the tokens.
    vocab: Map<String, Json>,
    json: Json,
    pre_tokenizer: Json,
    decoder: Json,
}

/// GPT-2-style byte-level BPE: tokens spelled in the byte alphabet, merges from the file, the
/// word split that `tokenizer.ggml.pre` names.
fn byte_level_bpe(file: &GgufFile, tokens: &[String], source: &str) -> Result<TokenizerModel> {
    let alphabet = byte_alphabet();
    let mut vocab = Map::new();
    for (id, token) in tokens.iter().enumerate() {
        // Byte-level vocabularies spell every token in GPT-2's byte alphabet; a token that is
        // not (llama.cpp writes some added tokens as plain text) is respelled byte by byte.
        let spelled = if token.chars().all(|c| alphabet.contains(&c)) {
            token.clone()
        } else {
            token.bytes().map(|b| alphabet[b as usize]).collect()
        };
        vocab.insert(spelled, id.into());
    }
    let merges = strings(file, "tokenizer.ggml.merges", source)?;
    let mut pairs = Vec::with_capacity(merges.len());
    for (i, merge) in merges.iter().enumerate() {
        let Some((a, b)) = merge.split_once(' ') else {
            return Err(bad_input!(
                "{source}: metadata `tokenizer.ggml.merges`[{i}] = {merge:?} is not two tokens separated by a space"
            ));
        };
        pairs.push(json!([a, b]));
    }
    let pre = file.get("tokenizer.ggml.pre").and_then(Value::as_str).unwrap_or("default");
    let split = Split::of_name(pre);
    let pre_tokenizer = split.pre_tokenizer();
    let json = json!({"type": "BPE", "dropout": null, "unk_token": null,
        "continuing_subword_prefix": "", "end_of_word_suffix": "", "fuse_unk": false,
        "byte_fallback": false, "ignore_merges": split.ignores_merges(), "vocab": vocab.clone(),
        "merges": pairs});
    let decoder = json!({"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true});
    Ok(TokenizerModel { vocab, json, pre_tokenizer, decoder })
}

/// SentencePiece BPE (Llama 2, TinyLlama, Mistral): `▁` for a space, prepended to the first
/// word; bytes outside the vocabulary fall back to the `<0xNN>` tokens. llama.cpp keeps the
/// pieces' scores, not merges, so the merges are rebuilt from the scores as `transformers` does
/// (`generate_merges`): every split of a piece into two pieces of the vocabulary, best score
/// first, then the longer left and right parts.
fn sentencepiece_bpe(file: &GgufFile, tokens: &[String], source: &str) -> Result<TokenizerModel> {
    let vocab: Map<String, Json> =
        tokens.iter().enumerate().map(|(id, t)| (t.clone(), id.into())).collect();
    let pairs: Vec<Json> = match file.get("tokenizer.ggml.merges") {
        Some(_) => strings(file, "tokenizer.ggml.merges", source)?
            .iter()
            .filter_map(|m| m.split_once(' ').map(|(a, b)| json!([a, b])))
            .collect(),
        None => {
            let scores = file
                .get("tokenizer.ggml.scores")
                .and_then(Value::as_array)
                .filter(|s| s.len() == tokens.len())
                .ok_or_else(|| {
                    bad_input!(
                        "{source}: metadata `tokenizer.ggml.scores` must give one score per token when there are no merges"
                    )
                })?;
            let scores: Vec<f64> = scores.iter().map(|s| s.as_f64().unwrap_or(0.0)).collect();
            merges_from_scores(tokens, &scores).into_iter().map(|(a, b)| json!([a, b])).collect()
        }
    };
    let json = json!({"type": "BPE", "dropout": null, "unk_token": null,
        "continuing_subword_prefix": null, "end_of_word_suffix": null, "fuse_unk": true,
        "byte_fallback": true, "ignore_merges": false, "vocab": vocab.clone(), "merges": pairs});
    let pre_tokenizer =
        json!({"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": false});
    let decoder = json!({"type": "Sequence", "decoders": [
        {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
        {"type": "ByteFallback"},
        {"type": "Fuse"},
        {"type": "Strip", "content": " ", "start": 1, "stop": 0},
    ]});
    Ok(TokenizerModel { vocab, json, pre_tokenizer, decoder })
}

/// BPE merges implied by a vocabulary with scores (`transformers`' `generate_merges`).
fn merges_from_scores<'a>(tokens: &'a [String], scores: &[f64]) -> Vec<(&'a str, &'a str)> {
    let ids: std::collections::HashMap<&str, usize> =
        tokens.iter().enumerate().map(|(id, t)| (t.as_str(), id)).collect();
    let mut merges: Vec<(&str, &str, f64)> = Vec::new();
    for (token, &score) in tokens.iter().zip(scores) {
        let mut local: Vec<(&str, &str, f64)> = token
            .char_indices()
            .skip(1)
            .map(|(at, _)| token.split_at(at))
            .filter(|(l, r)| ids.contains_key(l) && ids.contains_key(r))
            .map(|(l, r)| (l, r, score))
            .collect();
        local.sort_by_key(|(l, r, _)| (ids[l], ids[r]));
        merges.extend(local);
    }
    // Stable, so equal keys keep the order above.
    let chars = |s: &str| s.chars().count();
    merges.sort_by(|a, b| {
        (b.2, chars(b.0), chars(b.1))
            .partial_cmp(&(a.2, chars(a.0), chars(a.1)))
            .expect("finite scores")
    });
    merges.into_iter().map(|(l, r, _)| (l, r)).collect()
}

/// `transformers`' template: bos before each sequence and eos after it, where the file asks.
fn post_processor(tokens: &[String], bos: Option<usize>, eos: Option<usize>) -> Json {
    let special =
        |id: usize, type_id: u32| json!({"SpecialToken": {"id": tokens[id], "type_id": type_id}});
    let sequence = |name: &str, type_id: u32| json!({"Sequence": {"id": name, "type_id": type_id}});
    let mut single = Vec::new();
    let mut pair = Vec::new();
    for (name, type_id, out) in [("A", 0, &mut single), ("B", 1, &mut pair)] {
        out.extend(bos.map(|id| special(id, type_id)));
        out.push(sequence(name, type_id));
        out.extend(eos.map(|id| special(id, type_id)));
    }
    let pair: Vec<Json> = single.iter().cloned().chain(pair).collect();
    let special_tokens: Map<String, Json> = bos
        .into_iter()
        .chain(eos)
        .map(|id| {
            (tokens[id].clone(), json!({"id": tokens[id], "ids": [id], "tokens": [tokens[id]]}))
        })
        .collect();
    json!({"type": "TemplateProcessing", "single": single, "pair": pair, "special_tokens": special_tokens})
}

/// The `tokenizer.ggml.*` metadata for a `tokenizer.json` (a byte-level BPE), padded with
/// unused `[PADn]` tokens up to the embedding's `vocab_size` rows, as llama.cpp's converter does.
/// `imported_pre` is the `tokenizer.ggml.pre` the model was imported with, if any.
pub fn export(
    tokenizer: &Json,
    vocab_size: usize,
    imported_pre: Option<&str>,
    source: &str,
) -> Result<Vec<(String, Value)>> {
    let model = &tokenizer["model"];
    if model["type"] != "BPE" || !is_byte_level(&tokenizer["pre_tokenizer"]) {
        return Err(bad_input!(
            "{source}: only byte-level BPE tokenizers (GPT-2, SmolLM, Qwen2, Llama 3 and the ones `rlhf tokenizer train` writes) can be exported to GGUF"
        ));
    }
    let pre = pre_name(tokenizer, imported_pre, source)?;
    let mut by_id: BTreeMap<usize, (String, i32)> = BTreeMap::new();
    for (token, id) in model["vocab"].as_object().into_iter().flatten() {
        if let Some(id) = id.as_u64() {
            by_id.insert(id as usize, (token.clone(), NORMAL));
        }
    }
    for added in tokenizer["added_tokens"].as_array().into_iter().flatten() {
        let (Some(id), Some(content)) = (added["id"].as_u64(), added["content"].as_str()) else {
            continue;
        };
        let kind = if added["special"].as_bool() == Some(true) { CONTROL } else { USER_DEFINED };
        by_id.insert(id as usize, (content.to_string(), kind));
    }
    let count = by_id.keys().next_back().map_or(0, |last| last + 1).max(vocab_size);
    if count > vocab_size {
        return Err(bad_input!(
            "{source}: the tokenizer has {count} tokens but the embedding only {vocab_size} rows"
        ));
    }
    let (mut tokens, mut types) = (Vec::with_capacity(count), Vec::with_capacity(count));
    for id in 0..count {
        let (token, kind) = by_id.remove(&id).unwrap_or_else(|| (format!("[PAD{id}]"), UNUSED));
        tokens.push(Value::String(token));
        types.push(Value::I32(kind));
    }
    let merges: Vec<Value> = model["merges"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| match m {
            Json::String(s) => Some(s.clone()),
            Json::Array(pair) => {
                Some(format!("{} {}", pair.first()?.as_str()?, pair.get(1)?.as_str()?))
            }
            _ => None,
        })
        .map(Value::String)
        .collect();
    Ok(vec![
        ("tokenizer.ggml.model".into(), Value::String("gpt2".into())),
        ("tokenizer.ggml.pre".into(), Value::String(pre.into())),
        ("tokenizer.ggml.tokens".into(), Value::Array(tokens)),
        ("tokenizer.ggml.token_type".into(), Value::Array(types)),
        ("tokenizer.ggml.merges".into(), Value::Array(merges)),
    ])
}

/// A byte-level pre-tokenizer, alone or after a split.
fn is_byte_level(pre: &Json) -> bool {
    match pre["type"].as_str() {
        Some("ByteLevel") => true,
        Some("Sequence") => pre["pretokenizers"]
            .as_array()
            .is_some_and(|steps| steps.iter().any(|s| s["type"] == "ByteLevel")),
        _ => false,
    }
}

/// The `tokenizer.ggml.pre` that tells llama.cpp how this tokenizer splits words: the name the
/// model was imported with while it still describes the split (it is one llama.cpp knows, and
/// `tokenizer.json` still splits that way), else llama.cpp's usual name for the split. A split
/// llama.cpp has no name for is refused: llama.cpp would refuse the file, or cut words where
/// the merges were not learned.
fn pre_name<'a>(tokenizer: &Json, imported: Option<&'a str>, source: &str) -> Result<&'a str> {
    let Some(split) = Split::of_tokenizer(tokenizer) else {
        let pre = &tokenizer["pre_tokenizer"];
        let merges = match Split::of(pre) {
            Some(_) => ", with ignore_merges",
            None => "",
        };
        return Err(bad_input!(
            "{source}: llama.cpp has no pre-tokenizer for this tokenizer's word split ({}{merges}): it knows GPT-2's byte-level regex, SmolLM's digits-first split, and Llama 3's and Qwen2's regexes, and refuses or mis-splits anything else\nhint: tokenizers from `rlhf tokenizer train` and from GPT-2, SmolLM, Llama 3 and Qwen2 checkpoints export",
            describe(pre)
        ));
    };
    Ok(match imported {
        Some(name) if LLAMA_CPP_PRE_NAMES.contains(&name) && Split::of_name(name) == split => name,
        _ => split.llama_cpp_name(),
    })
}

/// A pre-tokenizer in a few words, for errors: its steps' types, and a split's regex.
fn describe(pre: &Json) -> String {
    let step = |s: &Json| match s["pattern"]["Regex"].as_str() {
        Some(regex) => format!("{} /{regex}/", s["type"].as_str().unwrap_or("?")),
        None => {
            let mut text = s["type"].as_str().unwrap_or("none").to_string();
            if s["add_prefix_space"] == true {
                text.push_str(" with add_prefix_space");
            }
            text
        }
    };
    match pre["pretokenizers"].as_array() {
        Some(steps) => steps.iter().map(step).collect::<Vec<_>>().join(" then "),
        None => step(pre),
    }
}

/// GPT-2's printable spelling of the 256 bytes (`bytes_to_unicode`).
fn byte_alphabet() -> Vec<char> {
    let printable =
        |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
    let mut shifted = 0;
    (0u32..256)
        .map(|b| {
            if printable(b) {
                char::from_u32(b).expect("a Latin-1 code point")
            } else {
                shifted += 1;
                char::from_u32(255 + shifted).expect("a code point")
            }
        })
        .collect()
}

fn string(file: &GgufFile, key: &str, source: &str) -> Result<String> {
    file.get(key)
        .and_then(Value::as_str)
        .map(String::from)
        .ok_or_else(|| bad_input!("{source}: metadata `{key}` is missing or not a string"))
}

fn strings(file: &GgufFile, key: &str, source: &str) -> Result<Vec<String>> {
    let items = file
        .get(key)
        .and_then(Value::as_array)
        .ok_or_else(|| bad_input!("{source}: metadata `{key}` is missing or not an array"))?;
    items
        .iter()
        .map(|v| v.as_str().map(String::from))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| bad_input!("{source}: metadata `{key}` must be an array of strings"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPLITS: [Split; 5] =
        [Split::Gpt2, Split::Digits, Split::Llama3, Split::Llama3Merging, Split::Qwen2];

    /// A `tokenizer.json` with this `pre_tokenizer` (and `ignore_merges`).
    fn with(pre: Json, ignore_merges: bool) -> Json {
        json!({"pre_tokenizer": pre, "model": {"type": "BPE", "ignore_merges": ignore_merges}})
    }

    /// The `tokenizer.json` import writes for `split`.
    fn imported(split: Split) -> Json {
        with(split.pre_tokenizer(), split.ignores_merges())
    }

    #[test]
    fn every_name_export_writes_is_one_llama_cpp_knows() {
        for (split, names) in SPLIT_NAMES {
            for name in names {
                assert!(LLAMA_CPP_PRE_NAMES.contains(name), "{name} is not in llama.cpp's list");
                assert_eq!(Split::of_name(name), split, "{name}");
            }
        }
        for split in SPLITS {
            let tokenizer = imported(split);
            assert_eq!(Split::of_tokenizer(&tokenizer), Some(split), "{tokenizer}");
            assert_eq!(pre_name(&tokenizer, None, "t").unwrap(), split.llama_cpp_name());
        }
        let canonical: Vec<&str> = SPLITS.iter().map(|s| s.llama_cpp_name()).collect();
        assert_eq!(canonical, ["gpt-2", "smollm", "llama-bpe", "smaug-bpe", "qwen2"]);
        let unique: std::collections::HashSet<_> = LLAMA_CPP_PRE_NAMES.iter().collect();
        assert_eq!(unique.len(), LLAMA_CPP_PRE_NAMES.len());
    }

    /// The `pre_tokenizer`s of the `tokenizer.json` files Hugging Face ships for these models.
    #[test]
    fn hugging_face_tokenizers_get_their_llama_cpp_names() {
        let byte_level = |regex: bool| json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": regex});
        let split = |regex: &str| {
            json!({"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": false},
            byte_level(false)]})
        };
        let cases = [
            ("GPT-2", byte_level(true), "gpt-2"),
            (
                "rlhf tokenizer train",
                json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": true}),
                "gpt-2",
            ),
            (
                "SmolLM2",
                json!({"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": true}, byte_level(true)]}),
                "smollm",
            ),
            ("Llama 3", split(LLAMA3_SPLIT), "llama-bpe"),
            ("Qwen2", split(QWEN2_SPLIT), "qwen2"),
        ];
        for (model, pre, name) in cases {
            // Meta's Llama 3 tokenizer.json ignores merges; the others do not.
            let tokenizer = with(pre, name == "llama-bpe");
            assert_eq!(pre_name(&tokenizer, None, "t").unwrap(), name, "{model}");
        }
    }

    #[test]
    fn the_imported_name_is_kept_while_it_still_describes_the_split() {
        let digits = imported(Split::Digits);
        assert_eq!(pre_name(&digits, Some("smollm"), "t").unwrap(), "smollm");
        assert_eq!(pre_name(&digits, Some("starcoder"), "t").unwrap(), "starcoder");
        let llama3 = imported(Split::Llama3);
        assert_eq!(pre_name(&llama3, Some("llama3"), "t").unwrap(), "llama3");
        assert_eq!(pre_name(&llama3, Some("dbrx"), "t").unwrap(), "llama-bpe", "dbrx merges");
        let merging = imported(Split::Llama3Merging);
        assert_eq!(pre_name(&merging, Some("dbrx"), "t").unwrap(), "dbrx");
        // A name llama.cpp refuses (what rlhf itself used to write) is replaced.
        let gpt2 = imported(Split::Gpt2);
        assert_eq!(pre_name(&gpt2, Some("gpt2"), "t").unwrap(), "gpt-2");
        // The tokenizer was replaced since the import: the name no longer fits.
        assert_eq!(pre_name(&gpt2, Some("smollm"), "t").unwrap(), "gpt-2");
        assert_eq!(pre_name(&digits, Some("qwen2"), "t").unwrap(), "smollm");
    }

    #[test]
    fn a_split_llama_cpp_has_no_name_for_is_refused_naming_it() {
        let refused = [
            (
                json!({"type": "ByteLevel", "add_prefix_space": true, "use_regex": true}),
                "ByteLevel with add_prefix_space",
            ),
            (
                json!({"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": "\\w+|\\s+"}, "behavior": "Isolated", "invert": false},
                {"type": "ByteLevel", "add_prefix_space": false, "use_regex": false}]}),
                "Split /\\w+|\\s+/ then ByteLevel",
            ),
            (
                json!({"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": false},
                {"type": "ByteLevel", "add_prefix_space": false, "use_regex": true}]}),
                "Digits then ByteLevel",
            ),
            (
                json!({"type": "Sequence", "pretokenizers": [{"type": "Whitespace"},
                {"type": "ByteLevel", "add_prefix_space": false, "use_regex": true}]}),
                "Whitespace then ByteLevel",
            ),
        ];
        let mut refused: Vec<(Json, &str)> =
            refused.into_iter().map(|(pre, described)| (with(pre, false), described)).collect();
        // llama.cpp ignores merges for Llama 3's split only.
        refused.push((with(Split::Gpt2.pre_tokenizer(), true), "ByteLevel, with ignore_merges"));
        for (tokenizer, described) in refused {
            let message =
                format!("{:#}", pre_name(&tokenizer, Some("gpt-2"), "tok.json").unwrap_err());
            assert!(message.starts_with("tok.json: llama.cpp has no pre-tokenizer"), "{message}");
            assert!(message.contains(described), "{described:?} in {message}");
        }
    }

    #[test]
    fn byte_alphabet_is_gpt2s() {
        let alphabet = byte_alphabet();
        assert_eq!(alphabet[b' ' as usize], 'Ġ');
        assert_eq!(alphabet[b'\n' as usize], 'Ċ');
        assert_eq!(alphabet[b'A' as usize], 'A');
        let unique: std::collections::HashSet<_> = alphabet.iter().collect();
        assert_eq!(unique.len(), 256);
    }
}
