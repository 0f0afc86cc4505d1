//! Metrics (through the `metrics` facade; the host installs a recorder such as a
//! Prometheus exporter) and the names of the tracing spans.

use std::time::Duration;

/// `rag_requests_total{stage,status}`: operations by stage and outcome.
pub const REQUESTS_TOTAL: &str = "rag_requests_total";
/// `rag_request_duration_seconds{stage}`: a histogram of stage durations.
pub const REQUEST_DURATION: &str = "rag_request_duration_seconds";
/// `rag_cache_lookups_total{result}`: cache lookups by `hit` or `miss`.
pub const CACHE_LOOKUPS: &str = "rag_cache_lookups_total";
/// `rag_cache_hit_ratio`: hits over lookups since the pipeline was built.
pub const CACHE_HIT_RATIO: &str = "rag_cache_hit_ratio";
/// `rag_index_chunks`: chunks in the index after the last write.
pub const INDEX_CHUNKS: &str = "rag_index_chunks";
/// `rag_index_documents`: documents in the index after the last write.
pub const INDEX_DOCUMENTS: &str = "rag_index_documents";
/// `rag_degradations_total{step}`: degradation steps taken.
pub const DEGRADATIONS: &str = "rag_degradations_total";

/// `rag_audit_failures_total`: answers returned although their audit record
/// could not be written (only with [`AuditFailure::Answer`](crate::AuditFailure)).
pub const AUDIT_FAILURES: &str = "rag_audit_failures_total";

/// Registers the help text (and units) of the pipeline's metrics with the
/// installed recorder, so exporters print `# HELP` lines (`promtool check
/// metrics` requires them). Call once after installing the recorder.
pub fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(REQUESTS_TOTAL, "Pipeline operations by stage and outcome");
    describe_histogram!(REQUEST_DURATION, Unit::Seconds, "Pipeline stage durations");
    describe_counter!(CACHE_LOOKUPS, "Answer-cache lookups by result");
    describe_gauge!(CACHE_HIT_RATIO, "Answer-cache hits over lookups");
    describe_gauge!(INDEX_CHUNKS, "Chunks in the index after the last write");
    describe_gauge!(
        INDEX_DOCUMENTS,
        "Documents in the index after the last write"
    );
    describe_counter!(DEGRADATIONS, "Degradation steps taken, by step");
    describe_counter!(
        AUDIT_FAILURES,
        "Answers returned without their audit record"
    );
}

/// Records one stage's outcome and duration.
pub(crate) fn stage(stage: &'static str, ok: bool, took: Duration) {
    let status = if ok { "ok" } else { "error" };
    metrics::counter!(REQUESTS_TOTAL, "stage" => stage, "status" => status).increment(1);
    metrics::histogram!(REQUEST_DURATION, "stage" => stage).record(took.as_secs_f64());
}
