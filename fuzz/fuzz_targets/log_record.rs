#![no_main]
//! Fuzzes `rag_index::fuzzing::decode_record`: untrusted bytes must give an error, never a
//! panic or an allocation the input does not justify.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    rag_index::fuzzing::decode_record(data);
});
