//! A GGUF file: header, metadata and tensor table, every tensor dequantized, the tokenizer
//! rebuilt from the metadata.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use rlhf::gguf::file::GgufFile;

fuzz_target!(|bytes: &[u8]| {
    let Ok(file) = GgufFile::parse(bytes, Path::new("fuzz.gguf")) else { return };
    for tensor in &file.tensors {
        let _ = file.tensor_f32(tensor);
    }
    let _ = rlhf::gguf::tokenizer::import(&file, "fuzz.gguf");
});
