//! Integration tests of rag-infer with the real models. They need the asset cache
//! (`python3 tools/assets.py fetch`); without it they skip with a message, unless
//! `RAG_SDK_REQUIRE_ASSETS=1` (set by CI) makes a missing asset a failure.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod embedder;
mod generator;
mod qwen;

use std::sync::OnceLock;

/// Loads the pinned runtime once; `None` (after saying why) if assets are absent.
pub fn runtime() -> Option<()> {
    static OK: OnceLock<bool> = OnceLock::new();
    let ok = *OK.get_or_init(|| {
        let lib = rag_infer::assets::runtime_library();
        let present = lib.exists() && rag_infer::assets::minilm_dir().join("model.onnx").exists();
        if !present {
            if std::env::var("RAG_SDK_REQUIRE_ASSETS").as_deref() == Ok("1") {
                panic!(
                    "assets missing under {}",
                    rag_infer::assets::cache_dir().display()
                );
            }
            eprintln!("SKIP: assets missing; run `python3 tools/assets.py fetch`");
            return false;
        }
        rag_infer::load_runtime(&lib).unwrap();
        true
    });
    ok.then_some(())
}
