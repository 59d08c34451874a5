//! `rlhf tokenizer train`.

use anyhow::Result;

use crate::bad_input;
use crate::checkpoint::save_atomically;
use crate::cli::TokenizerTrainArgs;
use crate::data::jsonl::read_rows;
use crate::data::text::row_texts;
use crate::data::tokenizer::{train_bpe, write_trained};

pub fn train(args: &TokenizerTrainArgs) -> Result<()> {
    if args.out.exists() && !args.force {
        return Err(bad_input!(
            "{} already exists\nhint: pass --force to replace it",
            args.out.display()
        ));
    }
    // Read and check every file before training: a bad row stops the run with FILE:LINE.
    let mut rows = Vec::new();
    for path in &args.data {
        for row in read_rows(path)? {
            row_texts(&row.fields).map_err(row.error_at(path))?;
            rows.push(row);
        }
    }
    let texts = rows.iter().flat_map(|row| row_texts(&row.fields).unwrap_or_default());
    let tokenizer = train_bpe(texts, args.vocab_size)?;
    save_atomically(&args.out, |dir| write_trained(&tokenizer, dir))?;
    eprintln!(
        "trained a {}-token byte-level BPE on {} rows from {} file(s) → {}",
        tokenizer.get_vocab_size(true),
        rows.len(),
        args.data.len(),
        args.out.display()
    );
    Ok(())
}
