//! How a token's claims become a [`Principal`] and its [`Grants`].
//!
//! | claim (default name) | becomes | if absent |
//! |---|---|---|
//! | `tenant` | the principal's tenant, and the tenant of its grants | refused |
//! | `sub` | the user | refused |
//! | `groups` (array of strings) | direct groups | none |
//! | `roles` (array of strings) | ACL roles (`r:` tags) | none |
//! | `rag_roles` (array of `reader`, `ingester`, `admin`) | service roles | none: the caller may do nothing |
//!
//! Every name is configurable. Unknown service role names grant nothing; a claim of
//! the wrong type, an empty name, a name over [`MAX_TAG_BYTES`] or more than
//! [`MAX_ACL_TAGS`] entries is refused.

use std::collections::BTreeSet;

use rag_core::{Grants, GroupId, MAX_ACL_TAGS, MAX_TAG_BYTES, Principal, RoleId, ServiceRole};
use serde_json::{Map, Value};

use super::error::JwtError;

/// The claim names read from a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimMapping {
    /// The tenant claim.
    pub tenant: String,
    /// The user claim.
    pub user: String,
    /// The direct-groups claim.
    pub groups: String,
    /// The ACL-roles claim.
    pub roles: String,
    /// The service-roles claim.
    pub service_roles: String,
}

impl Default for ClaimMapping {
    fn default() -> Self {
        Self {
            tenant: "tenant".into(),
            user: "sub".into(),
            groups: "groups".into(),
            roles: "roles".into(),
            service_roles: "rag_roles".into(),
        }
    }
}

impl ClaimMapping {
    /// The principal and grants the claims describe.
    pub(crate) fn map(&self, claims: &Map<String, Value>) -> Result<(Principal, Grants), JwtError> {
        let tenant = self.name(claims, &self.tenant)?;
        let user = self.name(claims, &self.user)?;
        let mut principal = Principal::new(tenant.as_str(), user.as_str());
        principal.groups = self
            .names(claims, &self.groups)?
            .into_iter()
            .map(GroupId::new)
            .collect();
        principal.roles = self
            .names(claims, &self.roles)?
            .into_iter()
            .map(RoleId::new)
            .collect();
        let roles: BTreeSet<ServiceRole> = self
            .names(claims, &self.service_roles)?
            .iter()
            .filter_map(|r| r.parse().ok())
            .collect();
        Ok((principal.clone(), Grants::new(principal.tenant, roles)))
    }

    fn name(&self, claims: &Map<String, Value>, claim: &str) -> Result<String, JwtError> {
        match claims.get(claim) {
            None | Some(Value::Null) => Err(JwtError::MissingClaim(claim.to_owned())),
            Some(Value::String(s)) if valid_name(s) => Ok(s.clone()),
            Some(_) => Err(JwtError::BadClaim(claim.to_owned())),
        }
    }

    fn names(&self, claims: &Map<String, Value>, claim: &str) -> Result<Vec<String>, JwtError> {
        let bad = || JwtError::BadClaim(claim.to_owned());
        match claims.get(claim) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(items)) if items.len() <= MAX_ACL_TAGS => items
                .iter()
                .map(|v| match v {
                    Value::String(s) if valid_name(s) => Ok(s.clone()),
                    _ => Err(bad()),
                })
                .collect(),
            Some(_) => Err(bad()),
        }
    }
}

fn valid_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_TAG_BYTES && !s.chars().any(char::is_control)
}
