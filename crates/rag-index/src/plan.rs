//! Planning a batch of writes: every write is validated against the stored state
//! *and* the writes planned before it in the same batch (an overlay), its predicate
//! resolved to keys, and its slots allocated, before anything is inserted, logged
//! or published. A write that fails to plan has no effect on the others.

use std::collections::{HashMap, HashSet};

use rag_core::{
    Acl, ChunkId, DeletePredicate, DocKey, DocumentUpdate, InvalidInput, Metadata, TenantId,
    WriteOp,
};
use sha2::{Digest, Sha256};

use crate::error::{IndexError, Result};
use crate::index::HnswIndex;
use crate::state::{DocEntry, State};
use crate::store::codec;

/// A write in the form the planner takes: the public operations, and the resolved
/// removals that the log replays.
#[derive(Debug)]
pub(crate) enum Op {
    /// Insert or replace documents.
    Upsert(Vec<DocumentUpdate>),
    /// Remove these documents, each of which must exist.
    Remove { keys: Vec<DocKey>, erase: bool },
    /// Remove the documents of `tenant` that match.
    RemoveWhere {
        tenant: TenantId,
        predicate: DeletePredicate,
        erase: bool,
    },
}

impl From<WriteOp> for Op {
    fn from(op: WriteOp) -> Self {
        match op {
            WriteOp::Upsert(docs) => Op::Upsert(docs),
            WriteOp::Delete(key) => Op::Remove {
                keys: vec![key],
                erase: false,
            },
            WriteOp::Erase(key) => Op::Remove {
                keys: vec![key],
                erase: true,
            },
            WriteOp::DeleteWhere { tenant, predicate } => Op::RemoveWhere {
                tenant,
                predicate,
                erase: false,
            },
            WriteOp::EraseWhere { tenant, predicate } => Op::RemoveWhere {
                tenant,
                predicate,
                erase: true,
            },
        }
    }
}

/// A document checked and given its slots.
pub(crate) struct PreparedDoc {
    pub update: DocumentUpdate,
    /// Unit vectors, one per chunk.
    pub vectors: Vec<Vec<f32>>,
    /// The slot of its first chunk; the others follow.
    pub first_slot: u32,
}

/// What a planned write will do.
pub(crate) enum Planned {
    Upsert {
        docs: Vec<PreparedDoc>,
        unchanged: usize,
    },
    Remove {
        keys: Vec<DocKey>,
        erase: bool,
    },
}

/// The outcome of planning one write.
pub(crate) enum Outcome {
    /// It changes something and gets a sequence number.
    Write(Planned),
    /// It changes nothing (same versions with the same content, or a predicate
    /// that matched nothing); it is not logged.
    Noop { unchanged: usize },
}

/// What a document looks like after the writes planned so far.
struct View {
    version: u64,
    digest: [u8; 32],
    metadata: Metadata,
}

/// The effects of the writes planned so far in a batch, over the stored state.
pub(crate) struct Overlay {
    /// Documents written (`Some`) or removed (`None`) by earlier writes of the batch.
    docs: HashMap<DocKey, Option<View>>,
    /// Chunk ids taken (`Some`) or freed (`None`) by earlier writes of the batch.
    chunks: HashMap<(TenantId, ChunkId), Option<DocKey>>,
    /// The next free slot.
    pub next_slot: u64,
}

impl Overlay {
    pub fn new(state: &State) -> Self {
        Self {
            docs: HashMap::new(),
            chunks: HashMap::new(),
            next_slot: state.vectors.len() as u64,
        }
    }
}

/// The digest of a document's stored content: everything an upsert sets, in the
/// log's encoding, with the unit vectors, so that an identical replay is
/// recognised as a no-op.
fn digest<'a>(
    acl: Option<&Acl>,
    metadata: &Metadata,
    content_hash: Option<&rag_core::ContentHash>,
    chunks: impl Iterator<Item = (ChunkId, u32, rag_core::Span, &'a str, &'a [f32])>,
) -> [u8; 32] {
    let mut bytes = Vec::new();
    codec::encode_content(&mut bytes, acl, metadata, content_hash);
    for (id, ordinal, span, text, vector) in chunks {
        codec::encode_chunk(&mut bytes, id, ordinal, span, text, vector);
    }
    Sha256::digest(&bytes).into()
}

fn stored_digest(state: &State, entry: &DocEntry) -> [u8; 32] {
    digest(
        entry.acl.as_deref(),
        &entry.metadata,
        entry.content_hash.as_ref(),
        state.records_of(entry).map(|(slot, r)| {
            (
                r.chunk_id,
                r.ordinal,
                r.span,
                &*r.text,
                state.vectors.get(slot),
            )
        }),
    )
}

fn update_digest(u: &DocumentUpdate, vectors: &[Vec<f32>]) -> [u8; 32] {
    digest(
        u.acl.as_ref(),
        &u.metadata,
        u.content_hash.as_ref(),
        u.chunks.iter().zip(vectors).map(|(c, v)| {
            (
                c.chunk.id,
                c.chunk.ordinal,
                c.chunk.span,
                c.chunk.text.as_str(),
                v.as_slice(),
            )
        }),
    )
}

impl HnswIndex {
    /// Checks one document on its own: ids, tenant, chunks, texts, spans, model and
    /// dimensions. Returns its unit vectors.
    fn check_update(&self, update: &DocumentUpdate) -> Result<Vec<Vec<f32>>> {
        let model = self.fingerprint.id();
        let dims = self.fingerprint.dims();
        rag_core::check_key(&update.tenant, &update.doc_id, update.acl.as_ref())?;
        if update.chunks.is_empty() {
            return Err(InvalidInput::NoChunks {
                doc_id: update.doc_id.clone(),
            }
            .into());
        }
        let mut ids = HashSet::with_capacity(update.chunks.len());
        let mut vectors = Vec::with_capacity(update.chunks.len());
        for c in &update.chunks {
            let e = &c.embedding;
            if e.model() != model {
                return Err(InvalidInput::ModelMismatch {
                    expected: model,
                    actual: e.model(),
                }
                .into());
            }
            if e.dims() != dims {
                return Err(InvalidInput::DimensionMismatch {
                    expected: dims,
                    actual: e.dims(),
                }
                .into());
            }
            if c.chunk.text.trim().is_empty() {
                return Err(InvalidInput::EmptyText { what: "chunk text" }.into());
            }
            if c.chunk.text.len() > self.config.max_chunk_bytes {
                return Err(InvalidInput::TooLarge {
                    what: "chunk text",
                    actual: c.chunk.text.len(),
                    max: self.config.max_chunk_bytes,
                }
                .into());
            }
            if c.chunk.span.start > c.chunk.span.end {
                return Err(InvalidInput::InvalidSpan {
                    start: c.chunk.span.start,
                    end: c.chunk.span.end,
                }
                .into());
            }
            if !ids.insert(c.chunk.id) {
                return Err(InvalidInput::DuplicateChunkId {
                    chunk_id: c.chunk.id,
                }
                .into());
            }
            vectors.push(e.normalized());
        }
        Ok(vectors)
    }

    /// Plans one write against `state` plus `overlay`, and records its effects in
    /// the overlay when it succeeds.
    pub(crate) fn plan(&self, state: &State, overlay: &mut Overlay, op: Op) -> Result<Outcome> {
        match op {
            Op::Upsert(updates) => self.plan_upsert(state, overlay, updates),
            Op::Remove { keys, erase } => {
                let mut seen = HashSet::new();
                for k in &keys {
                    if !seen.insert(k) || !exists(state, overlay, k) {
                        return Err(IndexError::UnknownDocument {
                            doc_id: k.doc_id.clone(),
                        });
                    }
                }
                Ok(remove(state, overlay, keys, erase))
            }
            Op::RemoveWhere {
                tenant,
                predicate,
                erase,
            } => {
                let mut keys: Vec<DocKey> = state
                    .docs
                    .iter()
                    .filter(|(k, d)| {
                        k.tenant == tenant
                            && !overlay.docs.contains_key(*k)
                            && predicate.matches(&d.metadata)
                    })
                    .map(|(k, _)| k.clone())
                    .collect();
                keys.extend(overlay.docs.iter().filter_map(|(k, v)| {
                    let v = v.as_ref()?;
                    (k.tenant == tenant && predicate.matches(&v.metadata)).then(|| k.clone())
                }));
                keys.sort();
                if keys.is_empty() {
                    return Ok(Outcome::Noop { unchanged: 0 });
                }
                Ok(remove(state, overlay, keys, erase))
            }
        }
    }

    fn plan_upsert(
        &self,
        state: &State,
        overlay: &mut Overlay,
        updates: Vec<DocumentUpdate>,
    ) -> Result<Outcome> {
        let mut batch = HashSet::with_capacity(updates.len());
        for u in &updates {
            if !batch.insert(u.key()) {
                return Err(InvalidInput::DuplicateDocument {
                    doc_id: u.doc_id.clone(),
                }
                .into());
            }
        }
        let mut docs = Vec::with_capacity(updates.len());
        let mut unchanged = 0;
        let mut chunk_ids = HashSet::new();
        let mut slot = overlay.next_slot;
        for update in updates {
            let vectors = self.check_update(&update)?;
            let key = update.key();
            let new_digest = update_digest(&update, &vectors);
            let stored = match overlay.docs.get(&key) {
                Some(Some(v)) => Some((v.version, v.digest)),
                Some(None) => None,
                None => state
                    .docs
                    .get(&key)
                    .map(|e| (e.header.version, stored_digest(state, e))),
            };
            if let Some((version, old_digest)) = stored {
                if version == update.version && old_digest == new_digest {
                    unchanged += 1;
                    continue;
                }
                if version >= update.version {
                    return Err(InvalidInput::StaleVersion {
                        doc_id: update.doc_id.clone(),
                        stored: version,
                        given: update.version,
                    }
                    .into());
                }
            }
            for c in &update.chunks {
                let scoped = (key.tenant.clone(), c.chunk.id);
                let owner = match overlay.chunks.get(&scoped) {
                    Some(o) => o.clone(),
                    None => state.chunks.get(&scoped).and_then(|&s| {
                        Some(state.records.get(s as usize)?.as_ref()?.doc.key.clone())
                    }),
                };
                let foreign = owner.is_some_and(|o| !batch.contains(&o));
                if foreign || !chunk_ids.insert(c.chunk.id) {
                    return Err(InvalidInput::DuplicateChunkId {
                        chunk_id: c.chunk.id,
                    }
                    .into());
                }
            }
            let first_slot = slot;
            slot += vectors.len() as u64;
            if slot > u64::from(u32::MAX) {
                return Err(InvalidInput::TooLarge {
                    what: "index",
                    actual: slot as usize,
                    max: u32::MAX as usize,
                }
                .into());
            }
            docs.push((update, vectors, first_slot as u32, new_digest));
        }
        if docs.is_empty() {
            return Ok(Outcome::Noop { unchanged });
        }
        overlay.next_slot = slot;
        let mut prepared = Vec::with_capacity(docs.len());
        for (update, vectors, first_slot, digest) in docs {
            let key = update.key();
            free_chunks(state, overlay, &key);
            for c in &update.chunks {
                overlay
                    .chunks
                    .insert((key.tenant.clone(), c.chunk.id), Some(key.clone()));
            }
            overlay.docs.insert(
                key,
                Some(View {
                    version: update.version,
                    digest,
                    metadata: update.metadata.clone(),
                }),
            );
            prepared.push(PreparedDoc {
                update,
                vectors,
                first_slot,
            });
        }
        Ok(Outcome::Write(Planned::Upsert {
            docs: prepared,
            unchanged,
        }))
    }
}

fn exists(state: &State, overlay: &Overlay, key: &DocKey) -> bool {
    match overlay.docs.get(key) {
        Some(v) => v.is_some(),
        None => state.docs.contains_key(key),
    }
}

/// Marks the chunk ids `key` holds now (after the overlay) as free.
fn free_chunks(state: &State, overlay: &mut Overlay, key: &DocKey) {
    let held: Vec<(TenantId, ChunkId)> = match overlay.docs.get(key) {
        Some(_) => overlay
            .chunks
            .iter()
            .filter(|(_, o)| o.as_ref() == Some(key))
            .map(|(c, _)| c.clone())
            .collect(),
        None => state
            .docs
            .get(key)
            .map(|e| {
                state
                    .records_of(e)
                    .map(|(_, r)| (key.tenant.clone(), r.chunk_id))
                    .collect()
            })
            .unwrap_or_default(),
    };
    for c in held {
        overlay.chunks.insert(c, None);
    }
}

fn remove(state: &State, overlay: &mut Overlay, keys: Vec<DocKey>, erase: bool) -> Outcome {
    for k in &keys {
        free_chunks(state, overlay, k);
        overlay.docs.insert(k.clone(), None);
    }
    Outcome::Write(Planned::Remove { keys, erase })
}
