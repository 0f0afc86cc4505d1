//! A tenant directory: users, nested groups and role grants, resolved to
//! [`AccessFilter`]s, with revocation that takes effect for the next resolution.
//!
//! Resolved filters are cached per principal in a bounded LRU. Every edit bumps a
//! generation and clears the cache while it still holds the directory's write lock;
//! a resolution stores its filter only if no edit happened since it read the
//! directory. So once an edit (a revocation) returns, no resolution that starts
//! later is served with the rights it removed, from the cache or otherwise.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::num::NonZeroUsize;

use lru::LruCache;
use parking_lot::{Mutex, RwLock};
use rag_core::{
    AccessFilter, AccessResolver, GroupId, PermissionTag, Principal, RoleId, TenantId, UserId,
};

use crate::error::{AclError, Result};

/// Resolved filters kept by default.
pub const DEFAULT_CACHE_CAPACITY: usize = 10_000;

/// Whose word counts for a principal's memberships.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Registration {
    /// The safe default: only users added with [`Directory::add_user`] resolve
    /// (others are [`AclError::UnknownPrincipal`]), and their groups and roles are
    /// the directory's alone; groups and roles the caller claims are ignored.
    #[default]
    Required,
    /// Principals as the host authenticated them are accepted with the groups and
    /// roles they claim, plus the directory's memberships; the directory can still
    /// disable users. Choose it only when the host verifies those claims (a signed
    /// token from the identity provider).
    TrustClaims,
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
    roles: BTreeSet<RoleId>,
    disabled: bool,
}

#[derive(Debug, Default)]
struct State {
    tenants: HashMap<TenantId, TenantDir>,
    /// Bumped by every edit.
    generation: u64,
}

#[derive(Debug)]
struct FilterCache {
    /// The directory generation the cached filters were computed at.
    generation: u64,
    filters: LruCache<Principal, AccessFilter>,
}

/// Users, nested groups and role grants per tenant; see the [module](self) docs.
#[derive(Debug)]
pub struct Directory {
    registration: Registration,
    state: RwLock<State>,
    cache: Mutex<FilterCache>,
}

impl Default for Directory {
    fn default() -> Self {
        Self::new(Registration::default())
    }
}

#[cfg(test)]
thread_local! {
    /// Runs between reading the directory and caching the filter (tests of races).
    static BEFORE_CACHE_INSERT: std::cell::RefCell<Option<Box<dyn FnMut()>>> =
        std::cell::RefCell::new(None);
}

impl Directory {
    /// An empty directory caching up to [`DEFAULT_CACHE_CAPACITY`] filters.
    pub fn new(registration: Registration) -> Self {
        Self {
            registration,
            state: RwLock::new(State::default()),
            cache: Mutex::new(FilterCache {
                generation: 0,
                filters: LruCache::new(
                    NonZeroUsize::new(DEFAULT_CACHE_CAPACITY).unwrap_or(NonZeroUsize::MIN),
                ),
            }),
        }
    }

    /// Caches at most `capacity` resolved filters (at least one).
    pub fn with_cache_capacity(self, capacity: usize) -> Self {
        self.cache
            .lock()
            .filters
            .resize(NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN));
        self
    }

    /// How many resolved filters are cached now.
    pub fn cached_filters(&self) -> usize {
        self.cache.lock().filters.len()
    }

    /// The registration mode.
    pub fn registration(&self) -> Registration {
        self.registration
    }

    /// Applies an edit; it is visible to every resolution that starts after this
    /// returns.
    fn edit<R>(&self, tenant: &TenantId, f: impl FnOnce(&mut TenantDir) -> R) -> R {
        let mut state = self.state.write();
        let r = f(state.tenants.entry(tenant.clone()).or_default());
        state.generation += 1;
        let mut cache = self.cache.lock();
        cache.filters.clear();
        cache.generation = state.generation;
        r
    }

    /// Registers a user with direct groups (added to any it already has).
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

    /// Removes a user and all its direct memberships; returns whether it was there.
    /// Under [`Registration::Required`] it no longer resolves.
    pub fn remove_user(&self, tenant: &TenantId, user: &UserId) -> bool {
        self.edit(tenant, |t| t.users.remove(user).is_some())
    }

    /// Removes `user`'s direct membership of `group`; returns whether it was there.
    pub fn remove_from_group(&self, tenant: &TenantId, user: &UserId, group: &GroupId) -> bool {
        self.edit(tenant, |t| {
            t.users
                .get_mut(user)
                .is_some_and(|u| u.groups.remove(group))
        })
    }

    /// Gives a registered (or, if absent, newly registered) user a role.
    pub fn assign_role(&self, tenant: &TenantId, user: &UserId, role: &RoleId) {
        self.edit(tenant, |t| {
            t.users
                .entry(user.clone())
                .or_default()
                .roles
                .insert(role.clone())
        });
    }

    /// Takes a role from a user; returns whether it held it.
    pub fn unassign_role(&self, tenant: &TenantId, user: &UserId, role: &RoleId) -> bool {
        self.edit(tenant, |t| {
            t.users.get_mut(user).is_some_and(|u| u.roles.remove(role))
        })
    }

    /// Disables or re-enables a user: a disabled user resolves to
    /// [`AclError::Disabled`].
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

    /// Undoes [`nest_group`](Self::nest_group); returns whether the nesting existed.
    pub fn unnest_group(&self, tenant: &TenantId, child: &GroupId, parent: &GroupId) -> bool {
        self.edit(tenant, |t| {
            t.parents.get_mut(child).is_some_and(|p| p.remove(parent))
        })
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

    /// Undoes [`grant_role`](Self::grant_role); returns whether the grant existed.
    pub fn revoke_role(&self, tenant: &TenantId, role: &RoleId, group: &GroupId) -> bool {
        self.edit(tenant, |t| {
            t.role_groups.get_mut(role).is_some_and(|g| g.remove(group))
        })
    }

    /// Compiles a principal's filter: its user, its roles, and the transitive closure
    /// of its groups (registered, role-granted, and claimed where claims are
    /// trusted) under nesting.
    pub fn compile(&self, principal: &Principal) -> Result<AccessFilter> {
        if principal.tenant.is_empty() {
            return Err(AclError::EmptyPrincipal { what: "tenant" });
        }
        if principal.user.is_empty() {
            return Err(AclError::EmptyPrincipal { what: "user" });
        }
        let state = self.state.read();
        let generation = state.generation;
        let dir = state.tenants.get(&principal.tenant);
        let entry = dir.and_then(|d| d.users.get(&principal.user));
        match (entry, self.registration) {
            (Some(e), _) if e.disabled => return Err(AclError::Disabled),
            (None, Registration::Required) => return Err(AclError::UnknownPrincipal),
            _ => {}
        }
        {
            let mut cache = self.cache.lock();
            if cache.generation == generation
                && let Some(f) = cache.filters.get(principal)
            {
                return Ok(f.clone());
            }
        }
        let trusted = self.registration == Registration::TrustClaims;
        let mut roles: BTreeSet<RoleId> = entry.map(|e| e.roles.clone()).unwrap_or_default();
        if trusted {
            roles.extend(principal.roles.iter().cloned());
        }
        let mut frontier: Vec<GroupId> = Vec::new();
        if trusted {
            frontier.extend(principal.groups.iter().cloned());
        }
        if let Some(e) = entry {
            frontier.extend(e.groups.iter().cloned());
        }
        if let Some(d) = dir {
            for role in &roles {
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
            .chain(roles.into_iter().map(PermissionTag::Role));
        let filter = AccessFilter::new(principal.tenant.clone(), tags);
        drop(state);
        #[cfg(test)]
        BEFORE_CACHE_INSERT.with(|h| {
            if let Some(f) = h.borrow_mut().as_mut() {
                f()
            }
        });
        let mut cache = self.cache.lock();
        // An edit since the directory was read makes this filter possibly stale:
        // serve it to this caller (it started before the edit returned), cache it not.
        if cache.generation == generation {
            cache.filters.put(principal.clone(), filter.clone());
        }
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
        let d = Directory::new(Registration::TrustClaims);
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
        let d = Directory::new(Registration::TrustClaims);
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
        let d = Directory::new(Registration::TrustClaims);
        let p = Principal::new("acme", "u").with_group("a");
        let acl = Acl::new("acme").allow_group("b");
        assert!(!d.compile(&p).unwrap().permits(Some(&acl)));
        d.nest_group(&t(), &"a".into(), &"b".into());
        assert!(d.compile(&p).unwrap().permits(Some(&acl)));
    }

    /// A revocation that lands while a resolution is between reading the directory
    /// and caching its filter must not leave the old filter in the cache. Before
    /// the generation check, the stale filter was cached after the clear and every
    /// later resolution of the disabled user succeeded.
    #[test]
    fn a_revocation_overlapping_a_resolution_is_not_undone_by_the_cache() {
        let d = std::sync::Arc::new(Directory::new(Registration::Required));
        d.add_user(&t(), &"u".into(), ["a".into()]);
        let p = Principal::new("acme", "u");
        let revoker = d.clone();
        BEFORE_CACHE_INSERT.with(|h| {
            *h.borrow_mut() = Some(Box::new(move || {
                revoker.set_disabled(&t(), &"u".into(), true);
            }))
        });
        // This resolution started before the revocation: it may still succeed.
        assert!(d.compile(&p).is_ok());
        BEFORE_CACHE_INSERT.with(|h| *h.borrow_mut() = None);
        assert!(matches!(d.compile(&p), Err(AclError::Disabled)));
    }

    #[test]
    fn empty_principal_is_rejected() {
        let d = Directory::new(Registration::TrustClaims);
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
