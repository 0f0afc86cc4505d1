//! Entry points for the coverage-guided fuzzers in `fuzz/` (not part of the API:
//! they take untrusted bytes and must return an error, never panic or allocate
//! beyond what the input justifies).

use std::path::Path;

use bytes::Bytes;
use rag_core::ModelFingerprint;

use crate::store::{codec, segment};

/// The fingerprint the fuzzers' inputs are written for (8 dimensions).
pub fn fingerprint() -> ModelFingerprint {
    ModelFingerprint::new("fuzz-model", 8, "fuzz").unwrap_or_else(|_| unreachable!())
}

/// Reads `bytes` as a log segment (as the last one and as an earlier one), then
/// decodes every record found.
pub fn read_log_segment(bytes: &[u8]) {
    let model = fingerprint();
    for last in [true, false] {
        if let Ok(scan) = segment::scan_bytes(Path::new("fuzz.wal"), bytes, &model, last, 1 << 20) {
            for r in scan.records {
                let _ = codec::decode(&r.payload, model.id(), model.dims());
            }
        }
    }
}

/// Decodes `bytes` as one record payload.
pub fn decode_record(bytes: &[u8]) {
    let model = fingerprint();
    let _ = codec::decode(bytes, model.id(), model.dims());
}

/// Parses `bytes` as a snapshot manifest.
pub fn read_manifest(bytes: &[u8]) {
    if let Ok(text) = std::str::from_utf8(bytes) {
        let _ = crate::Manifest::parse(text, Path::new("MANIFEST.json"));
    }
}

/// Decodes `bytes` as a documents table and as a chunks table of 8 dimensions, in
/// every format this build reads.
pub fn read_tables(bytes: &[u8]) {
    let b = Bytes::copy_from_slice(bytes);
    for format in 1..=crate::SNAPSHOT_FORMAT_VERSION {
        let _ = crate::snapshot::read_documents_table(b.clone(), format);
        let _ = crate::snapshot::read_chunks_table(b.clone(), 8, format);
    }
}
