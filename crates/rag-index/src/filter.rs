//! Access postings and compiled filters.
//!
//! For each tenant and permission tag the index keeps the slots whose document allows
//! the tag and those whose document denies it. A filter compiles to
//! `∪ allow[tenant][tag] − ∪ deny[tenant][tag]` over the tags it holds: exactly the
//! slots [`AccessFilter::permits`] accepts, since a slot is only ever in the postings of
//! its own document's ACL. Documents without an ACL have no postings and so are
//! visible to nobody.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;
use rag_core::{AccessFilter, AccessFingerprint, Acl, PermissionTag, TenantId};
use roaring::RoaringBitmap;

/// Allow and deny postings per tenant and tag.
#[derive(Debug, Default, Clone)]
pub struct Postings {
    allow: HashMap<TenantId, HashMap<PermissionTag, RoaringBitmap>>,
    deny: HashMap<TenantId, HashMap<PermissionTag, RoaringBitmap>>,
}

impl Postings {
    /// Records that `slots` carry `acl`.
    pub fn insert(&mut self, acl: Option<&Acl>, slots: &[u32]) {
        let Some(acl) = acl else { return };
        for (map, tags) in [(&mut self.allow, &acl.allow), (&mut self.deny, &acl.deny)] {
            let by_tag = map.entry(acl.tenant.clone()).or_default();
            for tag in tags {
                by_tag
                    .entry(tag.clone())
                    .or_default()
                    .extend(slots.iter().copied());
            }
        }
    }

    /// Forgets that `slots` carry `acl`.
    pub fn remove(&mut self, acl: Option<&Acl>, slots: &[u32]) {
        let Some(acl) = acl else { return };
        for (map, tags) in [(&mut self.allow, &acl.allow), (&mut self.deny, &acl.deny)] {
            let Some(by_tag) = map.get_mut(&acl.tenant) else {
                continue;
            };
            for tag in tags {
                if let Some(bits) = by_tag.get_mut(tag) {
                    for s in slots {
                        bits.remove(*s);
                    }
                    if bits.is_empty() {
                        by_tag.remove(tag);
                    }
                }
            }
            if by_tag.is_empty() {
                map.remove(&acl.tenant);
            }
        }
    }

    /// The slots `filter` may see.
    pub fn compile(&self, filter: &AccessFilter) -> RoaringBitmap {
        let mut allowed = RoaringBitmap::new();
        let Some(allow) = self.allow.get(filter.tenant()) else {
            return allowed;
        };
        for tag in filter.tags() {
            if let Some(bits) = allow.get(tag) {
                allowed |= bits;
            }
        }
        if let Some(deny) = self.deny.get(filter.tenant()) {
            for tag in filter.tags() {
                if let Some(bits) = deny.get(tag) {
                    allowed -= bits;
                }
            }
        }
        allowed
    }
}

/// A filter compiled against one generation of the index.
#[derive(Debug)]
pub struct CompiledFilter {
    /// The visible slots.
    pub allowed: RoaringBitmap,
    dense: OnceLock<Vec<u64>>,
}

impl CompiledFilter {
    /// Wraps the visible slots.
    pub fn new(allowed: RoaringBitmap) -> Self {
        Self {
            allowed,
            dense: OnceLock::new(),
        }
    }

    /// A membership test in O(1), for checks at every node of a graph walk.
    pub fn contains_fn(&self) -> impl Fn(u32) -> bool + '_ {
        move |slot: u32| self.contains(slot)
    }

    /// Whether `slot` is visible, in O(1).
    pub fn contains(&self, slot: u32) -> bool {
        self.words()
            .get(slot as usize / 64)
            .is_some_and(|w| w & (1u64 << (slot % 64)) != 0)
    }

    fn words(&self) -> &[u64] {
        self.dense.get_or_init(|| {
            let len = self.allowed.max().map_or(0, |m| m as usize / 64 + 1);
            let mut words = vec![0u64; len];
            for s in &self.allowed {
                words[s as usize / 64] |= 1u64 << (s % 64);
            }
            words
        })
    }
}

struct CacheEntry {
    filter: AccessFilter,
    generation: u64,
    compiled: Arc<CompiledFilter>,
    last_used: u64,
}

/// Compiled filters by fingerprint, valid for one index generation each.
pub struct FilterCache {
    capacity: usize,
    inner: Mutex<(HashMap<AccessFingerprint, CacheEntry>, u64)>,
}

impl std::fmt::Debug for FilterCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FilterCache")
            .field("capacity", &self.capacity)
            .finish()
    }
}

impl FilterCache {
    /// A cache of `capacity` filters.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            inner: Mutex::new((HashMap::new(), 0)),
        }
    }

    /// The compiled filter for `filter` at `generation`, compiling it on a miss.
    pub fn get_or_compile(
        &self,
        filter: &AccessFilter,
        generation: u64,
        compile: impl FnOnce() -> RoaringBitmap,
    ) -> Arc<CompiledFilter> {
        {
            let mut guard = self.inner.lock();
            let (map, clock) = &mut *guard;
            *clock += 1;
            if let Some(e) = map.get_mut(&filter.fingerprint())
                && e.generation == generation
                && e.filter == *filter
            {
                e.last_used = *clock;
                return e.compiled.clone();
            }
        }
        let compiled = Arc::new(CompiledFilter::new(compile()));
        let mut guard = self.inner.lock();
        let (map, clock) = &mut *guard;
        if map.len() >= self.capacity && !map.contains_key(&filter.fingerprint()) {
            let oldest = map.iter().min_by_key(|(_, e)| e.last_used).map(|(k, _)| *k);
            if let Some(k) = oldest {
                map.remove(&k);
            }
        }
        map.insert(
            filter.fingerprint(),
            CacheEntry {
                filter: filter.clone(),
                generation,
                compiled: compiled.clone(),
                last_used: *clock,
            },
        );
        compiled
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rag_core::Principal;

    #[test]
    fn postings_follow_inserts_and_removals() {
        let mut p = Postings::default();
        let acl = Acl::new("t").allow_group("g").deny_user("bob");
        p.insert(Some(&acl), &[1, 2, 3]);
        p.insert(None, &[4]);
        let alice = AccessFilter::for_principal(&Principal::new("t", "alice").with_group("g"));
        let bob = AccessFilter::for_principal(&Principal::new("t", "bob").with_group("g"));
        assert_eq!(p.compile(&alice).iter().collect::<Vec<_>>(), vec![1, 2, 3]);
        assert!(p.compile(&bob).is_empty());
        p.remove(Some(&acl), &[2]);
        assert_eq!(p.compile(&alice).iter().collect::<Vec<_>>(), vec![1, 3]);
        p.remove(Some(&acl), &[1, 3]);
        assert!(p.allow.is_empty() && p.deny.is_empty());
    }

    #[test]
    fn dense_membership_matches_the_bitmap() {
        let c = CompiledFilter::new([3u32, 64, 65, 1000].into_iter().collect());
        let f = c.contains_fn();
        for s in 0..1100 {
            assert_eq!(f(s), c.allowed.contains(s), "{s}");
        }
        assert!(!f(u32::MAX));
    }

    #[test]
    fn cache_is_per_generation() {
        let cache = FilterCache::new(2);
        let f = AccessFilter::for_principal(&Principal::new("t", "a"));
        let mut calls = 0;
        for generation in [1, 1, 2] {
            cache.get_or_compile(&f, generation, || {
                calls += 1;
                RoaringBitmap::new()
            });
        }
        assert_eq!(calls, 2);
    }
}
