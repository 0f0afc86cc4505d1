//! Integration tests of rag-index.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod bad_input;
mod common;
mod concurrency;
mod oracle;
mod planner;
mod snapshot;
mod store;
