//! `GET /v1/dead-letters` (the caller's tenant's only) and
//! `POST /v1/dead-letters/{id}/redrive` (queue it again, as it was: a file is
//! read again). Both need the ingester role.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use rag::Operation;
use rag::pipeline::queue::Change;
use serde_json::json;

use super::query::core;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::service::Service;

pub(crate) async fn list(
    State(service): State<Arc<Service>>,
    caller: Caller,
) -> Result<Response, ApiError> {
    let tenant = caller.allow(None, Operation::Ingest)?;
    let core = core(&service)?;
    let letters: Vec<_> = core
        .queue
        .dead_letters()
        .into_iter()
        .filter(|d| d.change.key().tenant == tenant)
        .map(|d| {
            let op = match &d.change {
                Change::Delete(_) => "delete",
                Change::UpsertFile { .. } => "upsert_file",
                _ => "upsert",
            };
            json!({
                "id": d.id,
                "document": d.change.key().doc_id.as_str(),
                "op": op,
                "reason": d.reason,
                "attempts": d.attempts,
            })
        })
        .collect();
    Ok(Json(json!({"dead_letters": letters})).into_response())
}

pub(crate) async fn redrive(
    State(service): State<Arc<Service>>,
    caller: Caller,
    Path(id): Path<u64>,
) -> Result<Response, ApiError> {
    let tenant = caller.allow(None, Operation::Ingest)?;
    let core = core(&service)?;
    let owned = core
        .queue
        .dead_letters()
        .iter()
        .any(|d| d.id == id && d.change.key().tenant == tenant);
    if !owned {
        // Another tenant's dead letter is indistinguishable from none.
        return Err(ApiError::not_found(format!("no dead letter {id}")));
    }
    let q = Arc::clone(&core.queue);
    tokio::task::spawn_blocking(move || q.redrive(id, None))
        .await
        .map_err(|_| ApiError::unavailable("the ingest queue is unavailable"))??;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"status": "queued", "id": id})),
    )
        .into_response())
}
