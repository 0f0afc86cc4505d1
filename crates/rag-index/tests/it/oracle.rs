//! Property tests against the brute-force oracle: random documents, ACLs, writes,
//! principals and queries.

use proptest::prelude::*;
use rag_core::{
    AccessFilter, Acl, DeletePredicate, DocKey, Principal, SearchRequest, SearchStrategy,
    VectorIndex, VectorIndexRead,
};
use rag_index::SearchMode;

use crate::common::*;

const TENANTS: [&str; 2] = ["acme", "globex"];
const USERS: [&str; 4] = ["ann", "bob", "cy", "dee"];
const GROUPS: [&str; 4] = ["eng", "ops", "hr", "all"];

fn acl_strategy() -> impl Strategy<Value = Option<Acl>> {
    let tag = (0usize..3, 0usize..4);
    (
        0usize..10,
        0usize..2,
        proptest::collection::vec(tag.clone(), 0..4),
        proptest::collection::vec(tag, 0..2),
    )
        .prop_map(|(none, t, allow, deny)| {
            if none == 0 {
                return None;
            }
            let mut acl = Acl::new(TENANTS[t]);
            for (kind, n) in allow {
                acl = match kind {
                    0 => acl.allow_user(USERS[n]),
                    1 => acl.allow_group(GROUPS[n]),
                    _ => acl.allow_role(GROUPS[n]),
                };
            }
            for (kind, n) in deny {
                acl = if kind == 0 {
                    acl.deny_user(USERS[n])
                } else {
                    acl.deny_group(GROUPS[n])
                };
            }
            Some(acl)
        })
}

fn vector() -> impl Strategy<Value = Vec<f32>> {
    // Few distinct values so ties between chunks happen.
    proptest::collection::vec(-2i8..=2, DIMS)
        .prop_map(|v| v.into_iter().map(f32::from).collect::<Vec<f32>>())
        .prop_filter("non-zero", |v| v.iter().any(|x| *x != 0.0))
}

#[derive(Debug, Clone)]
enum Op {
    /// Upsert of document `d` in its ACL's tenant (tenant `t` without an ACL).
    Upsert(usize, usize, Option<Acl>, Vec<Vec<f32>>),
    /// Delete of document `d` of tenant `t`.
    Delete(usize, usize),
    DeleteTenant(usize),
    Compact,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0usize..2, 0usize..24, acl_strategy(), proptest::collection::vec(vector(), 1..4))
            .prop_map(|(t, d, a, v)| Op::Upsert(t, d, a, v)),
        2 => (0usize..2, 0usize..24).prop_map(|(t, d)| Op::Delete(t, d)),
        1 => (0usize..2).prop_map(Op::DeleteTenant),
        1 => Just(Op::Compact),
    ]
}

fn principal() -> impl Strategy<Value = Principal> {
    (
        0usize..2,
        0usize..4,
        proptest::collection::vec(0usize..4, 0..3),
        proptest::collection::vec(0usize..4, 0..2),
    )
        .prop_map(|(t, u, groups, roles)| {
            let mut p = Principal::new(TENANTS[t], USERS[u]);
            for g in groups {
                p = p.with_group(GROUPS[g]);
            }
            for r in roles {
                p = p.with_role(GROUPS[r]);
            }
            p
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn no_leak_and_exact_equals_oracle(
        ops in proptest::collection::vec(op(), 1..40),
        queries in proptest::collection::vec((principal(), vector(), 1usize..12), 1..6),
    ) {
        let (index, oracle) = pair();
        for (version, op) in ops.into_iter().enumerate() {
            let version = version as u64;
            match op {
                Op::Upsert(t, d, acl, vs) => {
                    let tenant = acl.as_ref().map_or(TENANTS[t], |a| a.tenant.as_str()).to_owned();
                    let u = doc_in(&tenant, &format!("d{d}"), version, acl, &vs);
                    let a = index.upsert(vec![u.clone()]).unwrap();
                    let b = oracle.upsert(vec![u]).unwrap();
                    prop_assert_eq!(a.documents_upserted, b.documents_upserted);
                }
                Op::Delete(t, d) => {
                    let key = DocKey::new(TENANTS[t], format!("d{d}"));
                    prop_assert_eq!(index.delete(&key).is_ok(), oracle.delete(&key).is_ok());
                }
                Op::DeleteTenant(t) => {
                    let tenant = TENANTS[t].into();
                    let a = index.delete_where(&tenant, DeletePredicate::Everything).unwrap();
                    let b = oracle.delete_where(&tenant, DeletePredicate::Everything).unwrap();
                    prop_assert_eq!(a.documents_deleted, b.documents_deleted);
                }
                Op::Compact => index.compact().unwrap(),
            }
        }
        prop_assert_eq!(index.stats().chunks, oracle.stats().chunks);
        for (p, q, k) in queries {
            let filter = AccessFilter::for_principal(&p);
            let q = emb(&q);
            let want = oracle.search(&q, k, &filter).unwrap();
            let exact = index.search_with(&q, k, &filter, SearchMode::Exact).unwrap();
            assert_all_visible(&exact, &filter, &oracle);
            assert_same_ranking(&exact, &want);
            prop_assert!(exact.exhaustive);
            for mode in [SearchMode::Auto, SearchMode::Hnsw] {
                let r = index.search_with(&q, k, &filter, mode).unwrap();
                assert_all_visible(&r, &filter, &oracle);
                prop_assert_eq!(r.hits.len(), want.hits.len());
                prop_assert_eq!(r.visible, want.visible);
                let mut ids: Vec<_> = r.hits.iter().map(|h| h.chunk_id).collect();
                ids.sort();
                ids.dedup();
                prop_assert_eq!(ids.len(), r.hits.len(), "a chunk returned twice");
            }

            // Lexical: exactly the visible chunks holding a query word are candidates.
            let words = words(q.values());
            if words.is_empty() {
                continue;
            }
            let text = words.join(" ");
            let everything = oracle.search(&q, 1000, &filter).unwrap();
            let matching = everything
                .hits
                .iter()
                .filter(|h| h.text.split(' ').any(|t| words.iter().any(|w| w == t)))
                .count();
            let lex = index.retrieve(&SearchRequest::lexical(&text, k), &filter).unwrap();
            assert_all_visible(&lex, &filter, &oracle);
            prop_assert_eq!(lex.hits.len(), k.min(matching));
            prop_assert_eq!(lex.visible, want.visible);
            for h in &lex.hits {
                prop_assert!(h.text.split(' ').any(|t| words.iter().any(|w| w == t)));
            }
            if !lex.hits.is_empty() {
                prop_assert_eq!(lex.strategy, SearchStrategy::Lexical);
            }
            // Hybrid: each leg sees at most 72 chunks here, under its 100 candidates,
            // so the fused list holds every visible chunk.
            let hy = index.retrieve(&SearchRequest::hybrid(&q, &text, k), &filter).unwrap();
            assert_all_visible(&hy, &filter, &oracle);
            prop_assert_eq!(hy.hits.len(), k.min(want.visible));
            let mut ids: Vec<_> = hy.hits.iter().map(|h| h.chunk_id).collect();
            ids.sort();
            ids.dedup();
            prop_assert_eq!(ids.len(), hy.hits.len());
        }
    }
}
