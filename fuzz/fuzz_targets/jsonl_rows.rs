//! A JSONL file as every stage reads it: rows, then each stage's row parser.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rlhf::data::chat::prompt_messages;
use rlhf::data::jsonl::parse_rows;
use rlhf::data::moderation::LabeledText;
use rlhf::data::preference::Comparison;
use rlhf::data::sft::SftRow;
use rlhf::data::text::row_texts;

fuzz_target!(|bytes: &[u8]| {
    let Ok(rows) = parse_rows(bytes) else { return };
    for row in rows {
        let fields = &row.fields;
        let _ = SftRow::parse(fields);
        if let Ok(comparison) = Comparison::parse(fields) {
            let _ = comparison.pairs();
        }
        let _ = LabeledText::parse(fields);
        let _ = prompt_messages(fields);
        let _ = row_texts(fields);
    }
});
