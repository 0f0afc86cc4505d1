//! # rag-acl
//!
//! Access control for the RAG SDK: a [`Directory`] of users, nested groups and role
//! grants that resolves a [`Principal`](rag_core::Principal) to the
//! [`AccessFilter`](rag_core::AccessFilter) indexes and caches evaluate during search,
//! and a hash-chained, append-only [`AuditLog`].
//!
//! Row-level security is fail-closed: the rule is
//! [`AccessFilter::permits`](rag_core::AccessFilter::permits), and a document without an
//! ACL is visible to nobody.
//!
//! ```
//! use rag_acl::{Directory, Registration};
//! use rag_core::{Acl, Principal, TenantId};
//!
//! let dir = Directory::new(Registration::TrustClaims);
//! let acme = TenantId::new("acme");
//! dir.nest_group(&acme, &"backend".into(), &"eng".into());
//! let filter = dir.compile(&Principal::new("acme", "alice").with_group("backend"))?;
//! assert!(filter.permits(Some(&Acl::new("acme").allow_group("eng"))));
//! # Ok::<(), rag_acl::AclError>(())
//! ```
#![deny(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]
#![doc(test(attr(deny(warnings))))]

mod audit;
mod directory;
mod error;
#[cfg(feature = "jwt")]
pub mod jwt;
mod webhook;

pub use audit::{
    AuditAction, AuditEvent, AuditKey, AuditLog, AuditRecord, AuditRecovery, Outcome, Verified,
    verify, verify_with,
};
pub use directory::{DEFAULT_CACHE_CAPACITY, Directory, Registration};
pub use error::{AclError, Result};
pub use webhook::{
    MAX_REMEMBERED, MIN_WEBHOOK_SECRET, SIGNATURE_HEADER, WebhookError, WebhookVerifier,
    sign_webhook,
};
