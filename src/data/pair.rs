//! Cross-encoder inputs: `[CLS] prompt [SEP] response [SEP]`, token types 0 then 1, through
//! the tokenizer's own post-processor (as `transformers`' `tokenizer(prompt, response)`).
//! What is too long loses the start of the prompt, so the response is judged whole.

use anyhow::Result;
use tokenizers::utils::truncation::{TruncationDirection, TruncationParams, TruncationStrategy};
use tokenizers::{EncodeInput, Tokenizer};

/// Ids and token types of one pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairIds {
    pub ids: Vec<u32>,
    pub type_ids: Vec<u32>,
    /// Some tokens were cut to fit.
    pub truncated: bool,
}

pub struct PairEncoder {
    /// Cuts the prompt from the left.
    keep_response: Tokenizer,
    /// For a response that alone overflows: both cut from the right, the longer first.
    balanced: Tokenizer,
}

impl PairEncoder {
    pub fn new(tokenizer: &Tokenizer, max_len: usize) -> Result<Self> {
        let with = |strategy, direction| -> Result<Tokenizer> {
            let mut tokenizer = tokenizer.clone();
            let params = TruncationParams { max_length: max_len, strategy, direction, stride: 0 };
            tokenizer.with_truncation(Some(params)).map_err(|e| anyhow::anyhow!("{e}"))?;
            Ok(tokenizer)
        };
        Ok(Self {
            keep_response: with(TruncationStrategy::OnlyFirst, TruncationDirection::Left)?,
            balanced: with(TruncationStrategy::LongestFirst, TruncationDirection::Right)?,
        })
    }

    pub fn encode(&self, prompt: &str, response: &str) -> Result<PairIds> {
        let input = || EncodeInput::Dual(prompt.into(), response.into());
        let encoding = self
            .keep_response
            .encode(input(), true)
            .or_else(|_| self.balanced.encode(input(), true))
            .map_err(|e| anyhow::anyhow!("encoding a prompt/response pair: {e}"))?;
        Ok(PairIds {
            ids: encoding.get_ids().to_vec(),
            type_ids: encoding.get_type_ids().to_vec(),
            truncated: !encoding.get_overflowing().is_empty(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn minilm() -> Tokenizer {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/minilm");
        crate::data::tokenizer::read(&dir).expect("models/minilm: run scripts/setup.sh")
    }

    #[test]
    fn long_prompts_lose_their_start_and_the_response_stays_whole() {
        let tokenizer = minilm();
        let encoder = PairEncoder::new(&tokenizer, 16).unwrap();
        let short = encoder.encode("how are you", "fine thanks").unwrap();
        let text = tokenizer.decode(&short.ids, false).unwrap();
        assert_eq!(text, "[CLS] how are you [SEP] fine thanks [SEP]");
        assert_eq!(short.type_ids, [0, 0, 0, 0, 0, 1, 1, 1]);
        assert!(!short.truncated);

        let long = encoder.encode(&"one two three ".repeat(10), "fine thanks").unwrap();
        assert_eq!(long.ids.len(), 16);
        assert!(long.truncated);
        let text = tokenizer.decode(&long.ids, false).unwrap();
        assert!(
            text.starts_with("[CLS] two three one") && text.ends_with("[SEP] fine thanks [SEP]"),
            "{text}"
        );

        // A response that alone overflows is cut at its end, with some prompt kept.
        let overflow = encoder.encode("how are you", &"very ".repeat(40)).unwrap();
        assert_eq!(overflow.ids.len(), 16);
        assert!(tokenizer.decode(&overflow.ids, false).unwrap().starts_with("[CLS] how"));
    }
}
