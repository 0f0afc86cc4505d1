//! `PUT /v1/documents/{id}`, `DELETE /v1/documents/{id}` and `POST /v1/documents`
//! (a batch): changes go through the durable ingest queue, acknowledged once
//! queued (202, the default) or with `?ack=applied` once in the index (200, with
//! the store's sequence). A full queue is 429 with `Retry-After`.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use rag::pipeline::queue::{Ack, Change, IngestQueue, Receipt};
use rag::{DocId, DocKey, Document, Operation, TenantId};
use serde::Deserialize;
use serde_json::json;

use super::query::core;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::service::Service;

/// A document as a request gives it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DocumentBody {
    text: String,
    /// Only the caller's own tenant is allowed.
    #[serde(default)]
    tenant: Option<String>,
    /// Groups that may read it.
    #[serde(default)]
    groups: Vec<String>,
    /// Users that may read it.
    #[serde(default)]
    users: Vec<String>,
    #[serde(default)]
    title: Option<String>,
    /// Defaults to the time of the request in nanoseconds, so later writes win.
    #[serde(default)]
    version: Option<u64>,
}

impl DocumentBody {
    /// The tenant the body names, if any.
    pub(crate) fn tenant(&self) -> Option<&str> {
        self.tenant.as_deref()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BatchItem {
    id: String,
    #[serde(flatten)]
    body: DocumentBody,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Batch {
    documents: Vec<BatchItem>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AckParam {
    #[serde(default)]
    ack: Option<String>,
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// A document of `tenant` from a request body, or 400.
pub(crate) fn document(
    tenant: &TenantId,
    id: &str,
    body: DocumentBody,
) -> Result<Document, ApiError> {
    if id.trim().is_empty() {
        return Err(ApiError::bad_request("the document id is empty"));
    }
    if body.text.trim().is_empty() {
        return Err(ApiError::bad_request(format!(
            "document {id:?} has no text"
        )));
    }
    if body.groups.is_empty() && body.users.is_empty() {
        return Err(ApiError::bad_request(format!(
            "document {id:?} names no groups or users who may read it"
        )));
    }
    let mut doc = Document::new(tenant.clone(), id, body.text)
        .with_version(body.version.unwrap_or_else(now_ns));
    for g in body.groups {
        doc = doc.readable_by_group(g);
    }
    for u in body.users {
        doc = doc.readable_by_user(u);
    }
    if let Some(t) = body.title {
        doc.metadata = doc.metadata.with_title(t);
    }
    Ok(doc)
}

fn ack(param: &AckParam) -> Result<Ack, ApiError> {
    match param.ack.as_deref() {
        None | Some("queued") => Ok(Ack::Queued),
        Some("applied") => Ok(Ack::Applied),
        Some(other) => Err(ApiError::bad_request(format!(
            "ack={other:?}: use `queued` or `applied`"
        ))),
    }
}

/// Submits off the runtime (the journal syncs) and answers.
pub(crate) async fn submit(
    queue: &Arc<IngestQueue>,
    changes: Vec<Change>,
    ack: Ack,
) -> Result<Response, ApiError> {
    let q = Arc::clone(queue);
    let receipts: Vec<Receipt> = tokio::task::spawn_blocking(move || q.submit(changes, ack))
        .await
        .map_err(|_| ApiError::unavailable("the ingest queue is unavailable"))??;
    metrics::gauge!(crate::metrics::QUEUE_DEPTH).set(queue.depth() as f64);
    let ids: Vec<u64> = receipts.iter().map(|r| r.id).collect();
    Ok(match ack {
        Ack::Queued => (
            StatusCode::ACCEPTED,
            Json(json!({"status": "queued", "changes": ids})),
        )
            .into_response(),
        Ack::Applied => Json(json!({
            "status": "applied",
            "changes": ids,
            "sequence": receipts.iter().filter_map(|r| r.sequence).max(),
        }))
        .into_response(),
    })
}

pub(crate) async fn put(
    State(service): State<Arc<Service>>,
    caller: Caller,
    Path(id): Path<String>,
    Query(param): Query<AckParam>,
    body: Result<Json<DocumentBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(body) = body.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let tenant = caller.allow(body.tenant.as_deref(), Operation::Ingest)?;
    let ack = ack(&param)?;
    let doc = document(&tenant, &id, body)?;
    let core = core(&service)?;
    submit(&core.queue, vec![Change::Upsert(doc)], ack).await
}

pub(crate) async fn batch(
    State(service): State<Arc<Service>>,
    caller: Caller,
    Query(param): Query<AckParam>,
    body: Result<Json<Batch>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(batch) = body.map_err(|e| ApiError::bad_request(e.body_text()))?;
    if batch.documents.is_empty() {
        return Err(ApiError::bad_request("the batch is empty"));
    }
    let ack = ack(&param)?;
    let mut changes = Vec::with_capacity(batch.documents.len());
    for item in batch.documents {
        let tenant = caller.allow(item.body.tenant.as_deref(), Operation::Ingest)?;
        changes.push(Change::Upsert(document(&tenant, &item.id, item.body)?));
    }
    let core = core(&service)?;
    submit(&core.queue, changes, ack).await
}

pub(crate) async fn delete(
    State(service): State<Arc<Service>>,
    caller: Caller,
    Path(id): Path<String>,
    Query(param): Query<AckParam>,
) -> Result<Response, ApiError> {
    let tenant = caller.allow(None, Operation::Delete)?;
    let ack = ack(&param)?;
    let core = core(&service)?;
    let key = DocKey::new(tenant, DocId::new(id.as_str()));
    let stored = core.rag.pipeline().admin_index().document(&key)?.is_some();
    let queued = core.queue.pending().iter().any(|(_, k)| *k == key);
    if !stored && !queued {
        // Keys are per tenant: another tenant's document of this id is not seen.
        return Err(ApiError::not_found(format!("no document {id:?}")));
    }
    submit(&core.queue, vec![Change::Delete(key)], ack).await
}

/// `GET /v1/documents/{id}`: the document's version and chunk count, if the caller
/// may read it (otherwise 404, as for a document that does not exist).
pub(crate) async fn get(
    State(service): State<Arc<Service>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    caller.allow(None, Operation::ReadDocument)?;
    let core = core(&service)?;
    match core
        .rag
        .document(&caller.0.principal, DocId::new(id.as_str()))
        .await?
    {
        Some(info) => Ok(Json(json!({
            "document": id,
            "version": info.version,
            "chunks": info.chunk_ids.len(),
        }))
        .into_response()),
        None => Err(ApiError::not_found(format!("no document {id:?}"))),
    }
}
