//! `POST /v1/webhooks/documents`: document changes from another system, signed
//! with the tenant's secret (`X-Rag-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256
//! of "<t>.<body>">`, tenant in `X-Rag-Tenant`). The signature is checked before
//! the body is parsed; a stale or replayed one is refused. Changes are queued
//! (202).
//!
//! Body: `{"changes": [{"op": "upsert", "id", "text", "groups", "users"},
//! {"op": "delete", "id"}]}`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use rag::acl::{SIGNATURE_HEADER, WebhookError};
use rag::pipeline::queue::{Ack, Change};
use rag::{DocId, DocKey, TenantId};
use serde::Deserialize;

use super::documents::{DocumentBody, document, submit};
use super::query::core;
use crate::error::ApiError;
use crate::service::Service;

/// The header naming the sending tenant.
pub const TENANT_HEADER: &str = "x-rag-tenant";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Hook {
    changes: Vec<HookChange>,
}

#[derive(Deserialize)]
#[serde(tag = "op", rename_all = "lowercase", deny_unknown_fields)]
enum HookChange {
    Upsert {
        id: String,
        #[serde(flatten)]
        body: DocumentBody,
    },
    Delete {
        id: String,
    },
}

pub(crate) async fn receive(
    State(service): State<Arc<Service>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let refused = || ApiError::unauthorized("bad webhook signature");
    let tenant = headers
        .get(TENANT_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(TenantId::new)
        .ok_or_else(refused)?;
    // An unknown tenant looks like a bad signature.
    let verifier = service.webhooks.get(&tenant).ok_or_else(refused)?;
    let signature = headers.get(SIGNATURE_HEADER).and_then(|v| v.to_str().ok());
    if let Err(e) = verifier.verify(signature, &body) {
        metrics::counter!(crate::metrics::WEBHOOKS_REFUSED).increment(1);
        return Err(match e {
            WebhookError::Replayed => ApiError::new(
                StatusCode::CONFLICT,
                "replayed",
                "this webhook was delivered before",
            ),
            WebhookError::Busy => ApiError::unavailable(e.to_string()),
            other => ApiError::unauthorized(other.to_string()),
        });
    }
    let hook: Hook = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("webhook body: {e}")))?;
    if hook.changes.is_empty() {
        return Err(ApiError::bad_request("the webhook carries no changes"));
    }
    let mut changes = Vec::with_capacity(hook.changes.len());
    for c in hook.changes {
        changes.push(match c {
            HookChange::Upsert { id, body } => {
                if body_names_other_tenant(&body, &tenant) {
                    return Err(ApiError::new(
                        StatusCode::FORBIDDEN,
                        "forbidden",
                        "a webhook changes only its own tenant's documents",
                    ));
                }
                Change::Upsert(document(&tenant, &id, body)?)
            }
            HookChange::Delete { id } => {
                Change::Delete(DocKey::new(tenant.clone(), DocId::new(id)))
            }
        });
    }
    let core = core(&service)?;
    submit(&core.queue, changes, Ack::Queued).await
}

fn body_names_other_tenant(body: &DocumentBody, tenant: &TenantId) -> bool {
    body.tenant().is_some_and(|t| t != tenant.as_str())
}
