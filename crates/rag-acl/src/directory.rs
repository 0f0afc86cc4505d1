//! A tenant directory: users, nested groups and role grants, resolved to
//! [`AccessFilter`]s.

use std::collections::{BTreeSet, HashMap, HashSet};

use parking_lot::RwLock;
use rag_core::{
    AccessFilter, AccessResolver, GroupId, PermissionTag, Principal, RoleId, TenantId, UserId,
};

use crate::error::{AclError, Result};

/// Whether principals must be registered in the directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Registration {
    /// Principals as authenticated by the host are accepted; the directory adds
    /// memberships and can disable users.
    #[default]
    Open,
    /// Only users added with [`Directory::add_user`] resolve; others are denied.
    Required,
}

#[derive(Debug, Default)]
struct TenantDir {
    users: HashMap<UserId, UserEntry>,
    /// Group → groups it is a member of (its parents).
    parents: HashMap<GroupId, BTreeSet<GroupId>>,
    /// Role → groups it grants membership of.
    role_groups: HashMap<RoleId, BTreeSet<GroupId>>,
}

#[derive(Debug, Default)]
struct UserEntry {
    groups: BTreeSet<GroupId>,
    disabled: bool,
}

/// Users, nested groups and role grants per tenant. Resolution is cached per
/// principal until the directory changes.
#[derive(Debug, Default)]
pub struct Directory {
    registration: Registration,
    tenants: RwLock<HashMap<TenantId, TenantDir>>,
    cache: RwLock<HashMap<Principal, AccessFilter>>,
}

impl Directory {
    /// An empty directory.
    pub fn new(registration: Registration) -> Self {
        Self {
            registration,
            ..Self::default()
        }
    }

    fn edit<R>(&self, tenant: &TenantId, f: impl FnOnce(&mut TenantDir) -> R) -> R {
        let r = f(self.tenants.write().entry(tenant.clone()).or_default());
        self.cache.write().clear();
        r
    }

    /// Registers a user with direct groups (added to any the principal claims).
    pub fn add_user(
        &self,
        tenant: &TenantId,
        user: &UserId,
        groups: impl IntoIterator<Item = GroupId>,
    ) {
        self.edit(tenant, |t| {
            t.users
                .entry(user.clone())
                .or_default()
                .groups
                .extend(groups)
        });
    }

    /// Disables or re-enables a user: a disabled user resolves to an error.
    pub fn set_disabled(&self, tenant: &TenantId, user: &UserId, disabled: bool) {
        self.edit(tenant, |t| {
            t.users.entry(user.clone()).or_default().disabled = disabled
        });
    }

    /// Makes `child` a member of `parent`: members of `child` hold `parent` too.
    pub fn nest_group(&self, tenant: &TenantId, child: &GroupId, parent: &GroupId) {
        self.edit(tenant, |t| {
            t.parents
                .entry(child.clone())
                .or_default()
                .insert(parent.clone())
        });
    }

    /// Holders of `role` become members of `group`.
    pub fn grant_role(&self, tenant: &TenantId, role: &RoleId, group: &GroupId) {
        self.edit(tenant, |t| {
            t.role_groups
                .entry(role.clone())
                .or_default()
                .insert(group.clone())
        });
    }

    /// Compiles a principal's filter: its user, its roles, and the transitive closure
    /// of its groups (claimed, registered and role-granted) under nesting.
    pub fn compile(&self, principal: &Principal) -> Result<AccessFilter> {
        if principal.tenant.is_empty() {
            return Err(AclError::EmptyPrincipal { what: "tenant" });
        }
        if principal.user.is_empty() {
            return Err(AclError::EmptyPrincipal { what: "user" });
        }
        if let Some(f) = self.cache.read().get(principal) {
            return Ok(f.clone());
        }
        let tenants = self.tenants.read();
        let dir = tenants.get(&principal.tenant);
        let entry = dir.and_then(|d| d.users.get(&principal.user));
        match (entry, self.registration) {
            (Some(e), _) if e.disabled => return Err(AclError::Disabled),
            (None, Registration::Required) => return Err(AclError::UnknownPrincipal),
            _ => {}
        }
        let mut frontier: Vec<GroupId> = principal.groups.iter().cloned().collect();
        if let Some(e) = entry {
            frontier.extend(e.groups.iter().cloned());
        }
        if let Some(d) = dir {
            for role in &principal.roles {
                frontier.extend(d.role_groups.get(role).into_iter().flatten().cloned());
            }
        }
        let mut groups: HashSet<GroupId> = HashSet::new();
        while let Some(g) = frontier.pop() {
            if groups.insert(g.clone())
                && let Some(parents) = dir.and_then(|d| d.parents.get(&g))
            {
                frontier.extend(parents.iter().cloned());
            }
        }
        let tags = std::iter::once(PermissionTag::User(principal.user.clone()))
            .chain(groups.into_iter().map(PermissionTag::Group))
            .chain(principal.roles.iter().cloned().map(PermissionTag::Role));
        let filter = AccessFilter::new(principal.tenant.clone(), tags);
        drop(tenants);
        self.cache.write().insert(principal.clone(), filter.clone());
        Ok(filter)
    }
}

impl AccessResolver for Directory {
    fn resolve(&self, principal: &Principal) -> rag_core::Result<AccessFilter> {
        Ok(self.compile(principal)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rag_core::Acl;

    fn t() -> TenantId {
        TenantId::new("acme")
    }

    #[test]
    fn nested_groups_are_transitive_and_cycles_terminate() {
        let d = Directory::new(Registration::Open);
        d.nest_group(&t(), &"a".into(), &"b".into());
        d.nest_group(&t(), &"b".into(), &"c".into());
        d.nest_group(&t(), &"c".into(), &"a".into());
        let f = d
            .compile(&Principal::new("acme", "u").with_group("a"))
            .unwrap();
        for g in ["a", "b", "c"] {
            assert!(f.permits(Some(&Acl::new("acme").allow_group(g))), "{g}");
        }
        assert!(!f.permits(Some(&Acl::new("acme").allow_group("d"))));
    }

    #[test]
    fn roles_grant_groups() {
        let d = Directory::new(Registration::Open);
        d.grant_role(&t(), &"admin".into(), &"ops".into());
        let f = d
            .compile(&Principal::new("acme", "u").with_role("admin"))
            .unwrap();
        assert!(f.permits(Some(&Acl::new("acme").allow_group("ops"))));
        assert!(f.permits(Some(&Acl::new("acme").allow_role("admin"))));
    }

    #[test]
    fn disabled_and_unregistered_users_are_denied() {
        let d = Directory::new(Registration::Required);
        let p = Principal::new("acme", "u");
        assert!(matches!(d.compile(&p), Err(AclError::UnknownPrincipal)));
        d.add_user(&t(), &"u".into(), []);
        assert!(d.compile(&p).is_ok());
        d.set_disabled(&t(), &"u".into(), true);
        assert!(matches!(d.compile(&p), Err(AclError::Disabled)));
        let err: rag_core::Error = d.compile(&p).unwrap_err().into();
        assert!(matches!(err, rag_core::Error::Denied { .. }));
    }

    #[test]
    fn directory_changes_invalidate_the_cache() {
        let d = Directory::new(Registration::Open);
        let p = Principal::new("acme", "u").with_group("a");
        let acl = Acl::new("acme").allow_group("b");
        assert!(!d.compile(&p).unwrap().permits(Some(&acl)));
        d.nest_group(&t(), &"a".into(), &"b".into());
        assert!(d.compile(&p).unwrap().permits(Some(&acl)));
    }

    #[test]
    fn empty_principal_is_rejected() {
        let d = Directory::new(Registration::Open);
        assert!(matches!(
            d.compile(&Principal::new("", "u")),
            Err(AclError::EmptyPrincipal { what: "tenant" })
        ));
        assert!(matches!(
            d.compile(&Principal::new("acme", "")),
            Err(AclError::EmptyPrincipal { what: "user" })
        ));
    }
}
