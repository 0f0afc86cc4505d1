//! Revocation races: once a revocation returns, no resolution that starts later may
//! be served with the old rights, however many resolutions overlap it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use rag_acl::{AclError, Directory, Registration};
use rag_core::{Acl, Principal, TenantId};

fn acme() -> TenantId {
    TenantId::new("acme")
}

/// Readers hammer `compile` while an unrelated directory sync keeps editing other
/// users (so the filter cache is cleared often) and the main thread disables the
/// user; every resolution that starts after `set_disabled` returned must fail.
#[test]
fn a_disabled_user_loses_access_for_every_later_query() {
    for round in 0..300 {
        let dir = Arc::new(Directory::new(Registration::Required));
        dir.add_user(&acme(), &"mallory".into(), ["eng".into()]);
        let p = Principal::new("acme", "mallory");
        assert!(dir.compile(&p).is_ok());
        let revoked_at = Arc::new(AtomicU64::new(u64::MAX));
        let clock = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let readers: Vec<_> = (0..3)
            .map(|_| {
                let (dir, p, revoked_at, clock, stop) = (
                    dir.clone(),
                    p.clone(),
                    revoked_at.clone(),
                    clock.clone(),
                    stop.clone(),
                );
                std::thread::spawn(move || {
                    let mut late_grants = 0u64;
                    while !stop.load(Ordering::SeqCst) {
                        let started = clock.fetch_add(1, Ordering::SeqCst);
                        let after_revocation = started > revoked_at.load(Ordering::SeqCst);
                        if dir.compile(&p).is_ok() && after_revocation {
                            late_grants += 1;
                        }
                    }
                    late_grants
                })
            })
            .collect();
        let sync = {
            let (dir, stop) = (dir.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut i = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    dir.add_user(&acme(), &format!("other{}", i % 16).as_str().into(), []);
                    i += 1;
                }
            })
        };
        while clock.load(Ordering::SeqCst) < 50 {
            std::hint::spin_loop();
        }
        dir.set_disabled(&acme(), &"mallory".into(), true);
        revoked_at.store(clock.fetch_add(1, Ordering::SeqCst), Ordering::SeqCst);
        let target = clock.load(Ordering::SeqCst) + 300;
        while clock.load(Ordering::SeqCst) < target {
            std::hint::spin_loop();
        }
        stop.store(true, Ordering::SeqCst);
        sync.join().unwrap();
        let late: u64 = readers.into_iter().map(|r| r.join().unwrap()).sum();
        assert_eq!(
            late, 0,
            "round {round}: {late} resolutions after the revocation kept access"
        );
        assert!(matches!(dir.compile(&p), Err(AclError::Disabled)));
    }
}

#[test]
fn the_safe_registration_is_the_default() {
    assert_eq!(Registration::default(), Registration::Required);
}

/// The filter cache is keyed by caller-supplied principals; a flood of made-up ones
/// must not grow it without bound.
#[test]
fn the_filter_cache_is_bounded() {
    let dir = Directory::new(Registration::TrustClaims).with_cache_capacity(64);
    for i in 0..10_000 {
        let p = Principal::new("acme", format!("u{i}")).with_group(format!("g{i}"));
        dir.compile(&p).unwrap();
    }
    assert!(dir.cached_filters() <= 64, "{}", dir.cached_filters());
}

#[test]
fn memberships_nesting_and_roles_can_be_revoked() {
    let dir = Directory::new(Registration::Required);
    let t = acme();
    dir.add_user(&t, &"ann".into(), ["backend".into()]);
    dir.nest_group(&t, &"backend".into(), &"eng".into());
    dir.assign_role(&t, &"ann".into(), &"oncall".into());
    dir.grant_role(&t, &"oncall".into(), &"ops".into());
    let p = Principal::new("acme", "ann");
    let sees = |g: &str| {
        dir.compile(&p)
            .unwrap()
            .permits(Some(&Acl::new("acme").allow_group(g)))
    };
    assert!(sees("backend") && sees("eng") && sees("ops"));

    assert!(dir.unnest_group(&t, &"backend".into(), &"eng".into()));
    assert!(sees("backend") && !sees("eng"));
    assert!(dir.revoke_role(&t, &"oncall".into(), &"ops".into()));
    assert!(!sees("ops"));
    assert!(dir.remove_from_group(&t, &"ann".into(), &"backend".into()));
    assert!(!sees("backend"));
    assert!(dir.unassign_role(&t, &"ann".into(), &"oncall".into()));
    assert!(
        !dir.compile(&p)
            .unwrap()
            .permits(Some(&Acl::new("acme").allow_role("oncall")))
    );
    assert!(dir.remove_user(&t, &"ann".into()));
    assert!(matches!(dir.compile(&p), Err(AclError::UnknownPrincipal)));
    // Revoking what is not there says so.
    assert!(!dir.remove_user(&t, &"ann".into()));
}

/// Under `Required`, groups and roles a caller claims are not trusted: only the
/// directory's count.
#[test]
fn required_registration_ignores_claimed_groups_and_roles() {
    let dir = Directory::new(Registration::Required);
    dir.add_user(&acme(), &"eve".into(), []);
    let f = dir
        .compile(
            &Principal::new("acme", "eve")
                .with_group("hr")
                .with_role("admin"),
        )
        .unwrap();
    assert!(!f.permits(Some(&Acl::new("acme").allow_group("hr"))));
    assert!(!f.permits(Some(&Acl::new("acme").allow_role("admin"))));
    let open = Directory::new(Registration::TrustClaims);
    let f = open
        .compile(&Principal::new("acme", "eve").with_group("hr"))
        .unwrap();
    assert!(f.permits(Some(&Acl::new("acme").allow_group("hr"))));
}
