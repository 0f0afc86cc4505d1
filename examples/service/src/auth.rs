//! The caller: a verified bearer token, as an axum extractor. A missing,
//! malformed, expired or refused token is 401; what the caller may do is checked
//! per route with [`rag::authorize`] (403).

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use rag::acl::jwt::Authenticated;
use rag::{Operation, TenantId, authorize};

use crate::error::ApiError;
use crate::service::Service;

/// A caller whose token verified.
#[derive(Debug, Clone)]
pub struct Caller(pub Authenticated);

impl Caller {
    /// Allows `op` in `tenant` (the caller's own when `None`), or 403.
    pub fn allow(&self, tenant: Option<&str>, op: Operation) -> Result<TenantId, ApiError> {
        let tenant = tenant.map_or_else(|| self.0.grants.tenant.clone(), TenantId::new);
        authorize(&self.0.grants, &tenant, op)?;
        Ok(tenant)
    }
}

impl FromRequestParts<Arc<Service>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        service: &Arc<Service>,
    ) -> Result<Self, Self::Rejection> {
        let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
            return Err(ApiError::unauthorized("a bearer token is required"));
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| {
                ApiError::unauthorized("the Authorization header is not `Bearer <token>`")
            })?;
        match service.verifier.verify(token.trim()) {
            Ok(auth) => Ok(Caller(auth)),
            Err(e) => {
                metrics::counter!(crate::metrics::AUTH_REFUSED).increment(1);
                Err(ApiError::unauthorized(format!("token refused: {e}")))
            }
        }
    }
}
