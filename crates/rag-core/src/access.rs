//! Who asks ([`Principal`]), who may read ([`Acl`]), and the compiled
//! [`AccessFilter`] that indexes and caches evaluate during search.
//!
//! The rule, fail-closed: a chunk is visible to a filter only if its document has an
//! ACL, the ACL's tenant equals the filter's tenant, at least one of the ACL's allow
//! tags is held by the filter, and none of its deny tags is. A document without an
//! ACL, or with an empty allow list, is visible to nobody.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};

use crate::ids::{GroupId, RoleId, TenantId, UserId};

/// A permission tag: what an ACL grants or denies, and what a principal holds.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PermissionTag {
    /// One user.
    User(UserId),
    /// Members of a group.
    Group(GroupId),
    /// Holders of a role.
    Role(RoleId),
}

impl fmt::Display for PermissionTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PermissionTag::User(u) => write!(f, "u:{u}"),
            PermissionTag::Group(g) => write!(f, "g:{g}"),
            PermissionTag::Role(r) => write!(f, "r:{r}"),
        }
    }
}

/// A text that is not a `u:`, `g:` or `r:` permission tag.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid permission tag {0:?}: expected u:NAME, g:NAME or r:NAME")]
pub struct ParseTagError(pub String);

impl FromStr for PermissionTag {
    type Err = ParseTagError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ParseTagError(s.to_owned());
        let (kind, name) = s.split_once(':').ok_or_else(bad)?;
        if name.is_empty() {
            return Err(bad());
        }
        match kind {
            "u" => Ok(PermissionTag::User(UserId::new(name))),
            "g" => Ok(PermissionTag::Group(GroupId::new(name))),
            "r" => Ok(PermissionTag::Role(RoleId::new(name))),
            _ => Err(bad()),
        }
    }
}

/// Someone asking: a user of a tenant with direct groups and roles. Group nesting and
/// role grants are resolved by an [`AccessResolver`](crate::AccessResolver).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Principal {
    /// The tenant the user belongs to.
    pub tenant: TenantId,
    /// The user.
    pub user: UserId,
    /// Groups the user is a direct member of.
    pub groups: BTreeSet<GroupId>,
    /// Roles the user holds.
    pub roles: BTreeSet<RoleId>,
}

impl Principal {
    /// A principal with no groups or roles.
    pub fn new(tenant: impl Into<TenantId>, user: impl Into<UserId>) -> Self {
        Self {
            tenant: tenant.into(),
            user: user.into(),
            groups: BTreeSet::new(),
            roles: BTreeSet::new(),
        }
    }

    /// Adds a direct group.
    pub fn with_group(mut self, group: impl Into<GroupId>) -> Self {
        self.groups.insert(group.into());
        self
    }

    /// Adds a role.
    pub fn with_role(mut self, role: impl Into<RoleId>) -> Self {
        self.roles.insert(role.into());
        self
    }
}

/// A document's access control list.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Acl {
    /// The tenant that owns the document.
    pub tenant: TenantId,
    /// Tags of which at least one must be held.
    pub allow: BTreeSet<PermissionTag>,
    /// Tags of which none may be held.
    pub deny: BTreeSet<PermissionTag>,
}

impl Acl {
    /// An ACL of `tenant` that allows nobody yet.
    pub fn new(tenant: impl Into<TenantId>) -> Self {
        Self {
            tenant: tenant.into(),
            allow: BTreeSet::new(),
            deny: BTreeSet::new(),
        }
    }

    /// Allows a user.
    pub fn allow_user(mut self, user: impl Into<UserId>) -> Self {
        self.allow.insert(PermissionTag::User(user.into()));
        self
    }

    /// Allows a group.
    pub fn allow_group(mut self, group: impl Into<GroupId>) -> Self {
        self.allow.insert(PermissionTag::Group(group.into()));
        self
    }

    /// Allows a role.
    pub fn allow_role(mut self, role: impl Into<RoleId>) -> Self {
        self.allow.insert(PermissionTag::Role(role.into()));
        self
    }

    /// Denies a user, whatever else allows them.
    pub fn deny_user(mut self, user: impl Into<UserId>) -> Self {
        self.deny.insert(PermissionTag::User(user.into()));
        self
    }

    /// Denies a group, whatever else allows its members.
    pub fn deny_group(mut self, group: impl Into<GroupId>) -> Self {
        self.deny.insert(PermissionTag::Group(group.into()));
        self
    }
}

/// A stable 128-bit fingerprint of an [`AccessFilter`], for cache keys and logs.
/// Equal filters have equal fingerprints; caches still compare the filters themselves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AccessFingerprint(pub u128);

impl fmt::Display for AccessFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// A principal's access compiled to a tenant and the full set of tags it holds
/// (its user, and its groups and roles after nesting and grants are resolved).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AccessFilter {
    tenant: TenantId,
    tags: BTreeSet<PermissionTag>,
    fingerprint: AccessFingerprint,
}

impl AccessFilter {
    /// A filter for `tenant` holding `tags`.
    pub fn new(tenant: TenantId, tags: impl IntoIterator<Item = PermissionTag>) -> Self {
        let tags: BTreeSet<PermissionTag> = tags.into_iter().collect();
        let fingerprint = fingerprint(&tenant, &tags);
        Self {
            tenant,
            tags,
            fingerprint,
        }
    }

    /// The filter of a principal taken as it is: its user, direct groups and roles.
    pub fn for_principal(principal: &Principal) -> Self {
        let tags = std::iter::once(PermissionTag::User(principal.user.clone()))
            .chain(principal.groups.iter().cloned().map(PermissionTag::Group))
            .chain(principal.roles.iter().cloned().map(PermissionTag::Role));
        Self::new(principal.tenant.clone(), tags)
    }

    /// The tenant.
    pub fn tenant(&self) -> &TenantId {
        &self.tenant
    }

    /// The tags held.
    pub fn tags(&self) -> &BTreeSet<PermissionTag> {
        &self.tags
    }

    /// The filter's fingerprint.
    pub fn fingerprint(&self) -> AccessFingerprint {
        self.fingerprint
    }

    /// The reference visibility rule. Indexes may evaluate it another way (posting
    /// lists, bitmaps) but must agree with this function on every input.
    pub fn permits(&self, acl: Option<&Acl>) -> bool {
        let Some(acl) = acl else { return false };
        acl.tenant == self.tenant
            && acl.allow.iter().any(|t| self.tags.contains(t))
            && !acl.deny.iter().any(|t| self.tags.contains(t))
    }
}

fn fingerprint(tenant: &TenantId, tags: &BTreeSet<PermissionTag>) -> AccessFingerprint {
    let mut h = Sha256::new();
    let mut put = |s: &str| {
        h.update((s.len() as u64).to_le_bytes());
        h.update(s.as_bytes());
    };
    put(tenant.as_str());
    for tag in tags {
        put(&tag.to_string());
    }
    let d = h.finalize();
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    AccessFingerprint(u128::from_le_bytes(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> Principal {
        Principal::new("acme", "alice").with_group("eng")
    }

    #[test]
    fn no_acl_is_visible_to_nobody() {
        assert!(!AccessFilter::for_principal(&alice()).permits(None));
    }

    #[test]
    fn empty_allow_list_is_visible_to_nobody() {
        let acl = Acl::new("acme");
        assert!(!AccessFilter::for_principal(&alice()).permits(Some(&acl)));
    }

    #[test]
    fn tenant_must_match() {
        let acl = Acl::new("other").allow_group("eng");
        assert!(!AccessFilter::for_principal(&alice()).permits(Some(&acl)));
    }

    #[test]
    fn allow_and_deny() {
        let f = AccessFilter::for_principal(&alice());
        assert!(f.permits(Some(&Acl::new("acme").allow_group("eng"))));
        assert!(f.permits(Some(&Acl::new("acme").allow_user("alice"))));
        assert!(!f.permits(Some(&Acl::new("acme").allow_user("bob"))));
        let denied = Acl::new("acme").allow_group("eng").deny_user("alice");
        assert!(!f.permits(Some(&denied)));
    }

    #[test]
    fn tags_roundtrip_through_text() {
        for t in ["u:alice", "g:eng", "r:admin", "g:a:b"] {
            let tag: PermissionTag = t.parse().unwrap();
            assert_eq!(tag.to_string(), t);
        }
        for bad in ["alice", "x:alice", "u:", ""] {
            assert!(bad.parse::<PermissionTag>().is_err());
        }
    }

    #[test]
    fn fingerprint_separates_tenants_and_tags() {
        let a = AccessFilter::for_principal(&alice());
        let b = AccessFilter::for_principal(&Principal::new("acme", "alice"));
        let c = AccessFilter::for_principal(&Principal::new("acme2", "alice").with_group("eng"));
        assert_ne!(a.fingerprint(), b.fingerprint());
        assert_ne!(a.fingerprint(), c.fingerprint());
        assert_eq!(
            a.fingerprint(),
            AccessFilter::for_principal(&alice()).fingerprint()
        );
    }
}
