//! A safetensors file: header checks, then every tensor read.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let _ = rlhf::model::weights::read_bytes(bytes);
});
