//! A prompt and one answer as token ids, split where the answer begins: what DPO and KTO
//! score (log π(answer | prompt) is the sum over the answer's tokens).
//!
//! The conversation is encoded exactly as SFT encodes it (`SftEncoder`: the chat template,
//! turn by turn), so the answer's tokens are the ones SFT taught — the answer and its
//! end-of-turn — and the prompt ends with the assistant's cue. TRL does the same with
//! `apply_chat_template(prompt, add_generation_prompt=True)` and the rest of the rendered
//! conversation.

use super::chat::{Message, Role};
use super::sft::{FitReport, SftEncoder, SftRow};

/// Prompt ids (through the assistant's cue) and answer ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    pub prompt: Vec<u32>,
    pub answer: Vec<u32>,
}

impl Completion {
    pub fn len(&self) -> usize {
        self.prompt.len() + self.answer.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// As the `(prompt, response)` pair that `ppo::rollout::ResponseBatch` reads.
    pub fn parts(&self) -> (&[u32], &[u32]) {
        (&self.prompt, &self.answer)
    }
}

impl SftEncoder<'_> {
    /// `prompt` followed by the assistant's `answer`; `Ok(None)` when it is too long and the
    /// encoder's truncation drops it (`report` counts it).
    pub fn encode_completion(
        &self,
        prompt: &[Message],
        answer: &str,
        report: &mut FitReport,
    ) -> Result<Option<Completion>, String> {
        let row = SftRow::Completion {
            prompt: prompt.to_vec(),
            completion: vec![Message::new(Role::Assistant, answer)],
        };
        let Some(example) = self.encode(&row, report)? else {
            return Ok(None);
        };
        // Only the last answer is learned, so the targets are the tail of the sequence.
        let start = example.target.iter().position(|&t| t).unwrap_or(example.ids.len()).max(1);
        debug_assert!(example.target[start..].iter().all(|&t| t));
        let mut prompt = example.ids;
        let answer = prompt.split_off(start);
        Ok(Some(Completion { prompt, answer }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::sft::Truncation;
    use crate::data::template::ChatTemplate;
    use crate::data::tokenizer::train_bpe;

    #[test]
    fn the_answer_is_what_sft_learns_and_the_prompt_ends_with_the_cue() {
        let tok =
            train_bpe(["the cat sat on the mat", "hello there, fine thanks"].into_iter(), 300)
                .unwrap();
        let template = ChatTemplate::ChatMl;
        let encoder = SftEncoder {
            tokenizer: &tok,
            template: &template,
            max_len: 512,
            truncation: Truncation::Left,
            eos: None,
            eos_after_answers: false,
        };
        let prompt = [Message::new(Role::User, "hello there")];
        let c = encoder.encode_completion(&prompt, "fine thanks", &mut FitReport::default());
        let c = c.unwrap().unwrap();
        let decode = |ids: &[u32]| tok.decode(ids, false).unwrap();
        assert!(decode(&c.prompt).ends_with("<|im_start|>assistant\n"), "{}", decode(&c.prompt));
        assert_eq!(decode(&c.answer), "fine thanks<|im_end|>\n");
        // An empty answer still has its end of turn to score.
        let empty = encoder.encode_completion(&prompt, "", &mut FitReport::default());
        assert_eq!(decode(&empty.unwrap().unwrap().answer), "<|im_end|>\n");
    }
}
