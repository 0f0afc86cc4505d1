//! Shared fixtures for the benchmarks and report binaries: clustered vectors, tag
//! ACLs of known selectivity, and a plain brute-force scan used as ground truth.
#![allow(missing_docs)]

pub mod args;
pub mod beir;
pub mod corpus;
pub mod crash;
pub mod eval;
pub mod metrics;
pub mod recording;
pub mod squad;
pub mod timing;
