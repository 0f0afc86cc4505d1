#![no_main]
//! Fuzzes `rag_index::fuzzing::read_tables`: untrusted bytes must give an error, never a
//! panic of our own code or an allocation the input does not justify.
//!
//! The Parquet reader (parquet 60.1) still panics on some malformed files, for example a
//! dictionary page that declares no values but carries bytes (a division by zero in its
//! byte-array decoder). The snapshot reader contains those panics with `catch_unwind`
//! and reports the table as corrupt (`tests/it/snapshot.rs` pins that for each input
//! found). libFuzzer's panic hook aborts before any unwinding, so this target lets a
//! panic raised inside the `parquet` or `arrow-*` sources unwind to that guard, and
//! every other panic still aborts and is reported as a crash.

use libfuzzer_sys::fuzz_target;
use std::sync::Once;

static CONTAIN_READER_PANICS: Once = Once::new();

fn raised_in_parquet_reader(info: &std::panic::PanicHookInfo<'_>) -> bool {
    info.location().is_some_and(|l| {
        std::path::Path::new(l.file()).components().any(|c| {
            let c = c.as_os_str().to_string_lossy();
            c.starts_with("parquet-") || c.starts_with("arrow-")
        })
    })
}

fuzz_target!(|data: &[u8]| {
    CONTAIN_READER_PANICS.call_once(|| {
        let abort_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !raised_in_parquet_reader(info) {
                abort_hook(info);
            }
        }));
    });
    rag_index::fuzzing::read_tables(data);
});
