//! Parquet snapshots: write a consistent copy of an index, restore it exactly.
//!
//! A snapshot directory holds `documents-*.parquet`, `chunks-*.parquet`, the HNSW
//! graph `graph-*.usearch` and `MANIFEST.json`. Each file is written to a temporary
//! name, synced and renamed; the manifest goes last the same way, so a crash leaves
//! the previous snapshot intact. Restoring checks every file's size and sha256 before
//! decoding and builds a new index; on any error nothing is loaded.

mod manifest;
mod tables;

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use fs_err as fs;
use rag_core::{Acl, ContentHash, DocKey, Metadata, ModelFingerprint, TenantId};
use sha2::{Digest, Sha256};

pub use manifest::{FileEntry, Manifest, SNAPSHOT_FORMAT_VERSION, USEARCH_VERSION};
use manifest::{GraphEntry, MANIFEST_FILE, ModelEntry};

/// The signature of a signed snapshot's manifest: HMAC-SHA256, hex.
pub const SIGNATURE_FILE: &str = "MANIFEST.sig";
use tables::{ChunkRow, DocRow};

use crate::config::IndexConfig;
use crate::error::{Result, SnapshotError};
use crate::freeze::Frozen;
use crate::hnsw::Hnsw;
use crate::index::HnswIndex;
use crate::state::{DocEntry, DocHeader, SlotRecord, State};

/// What a snapshot write produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotReport {
    /// The manifest written.
    pub manifest: Manifest,
    /// Bytes written, all files together.
    pub bytes: u64,
}

/// Bytes a snapshot file may have unsynced: past this it is synced as it goes.
/// Without it a checkpoint left hundreds of megabytes dirty, and the log's
/// `fdatasync` (which on ext4 waits for other files' dirty data too) waited for
/// them: 70-90 ms writer stalls while the tables were written.
const SYNC_EVERY: u64 = 4 << 20;

/// A file that syncs its data every [`SYNC_EVERY`] bytes written.
struct Paced {
    file: fs::File,
    unsynced: u64,
}

impl Paced {
    fn create(path: &Path) -> std::io::Result<Self> {
        Ok(Self {
            file: fs::File::create(path)?,
            unsynced: 0,
        })
    }

    /// Syncs the rest, metadata included.
    fn finish(self) -> std::io::Result<()> {
        self.file.sync_all()
    }
}

impl Write for Paced {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.unsynced += n as u64;
        if self.unsynced >= SYNC_EVERY {
            self.file.sync_data()?;
            self.unsynced = 0;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

fn write_atomically(dir: &Path, name: &str, content: &[u8]) -> Result<(), SnapshotError> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut f = Paced::create(&tmp)?;
    for piece in content.chunks(SYNC_EVERY as usize) {
        f.write_all(piece)?;
    }
    f.finish()?;
    fs::rename(&tmp, dir.join(name))?;
    Ok(())
}

/// Checks the manifest's signature under `key`.
fn check_signature(dir: &Path, key: &crate::config::SnapshotKey) -> Result<(), SnapshotError> {
    let path = dir.to_path_buf();
    let signature = match fs::read_to_string(dir.join(SIGNATURE_FILE)) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(SnapshotError::Unsigned { path });
        }
        Err(e) => return Err(e.into()),
    };
    let manifest = match fs::read(dir.join(MANIFEST_FILE)) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(SnapshotError::MissingManifest {
                path: dir.join(MANIFEST_FILE),
            });
        }
        Err(e) => return Err(e.into()),
    };
    if key.verifies(&manifest, &signature) {
        Ok(())
    } else {
        Err(SnapshotError::BadSignature { path })
    }
}

fn entry(role: &str, name: String, content: &[u8], rows: Option<u64>) -> FileEntry {
    FileEntry {
        role: role.to_owned(),
        name,
        bytes: content.len() as u64,
        sha256: hex::encode(Sha256::digest(content)),
        rows,
    }
}

/// A writer that hashes and counts what passes through it.
struct Hashing<W> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Streams a file into `dir` under a temporary name through `encode`, syncs it and
/// renames it into place; returns its manifest entry.
fn write_streamed(
    dir: &Path,
    role: &str,
    name: String,
    rows: Option<u64>,
    encode: impl FnOnce(
        Hashing<std::io::BufWriter<Paced>>,
    ) -> Result<Hashing<std::io::BufWriter<Paced>>, SnapshotError>,
) -> Result<FileEntry, SnapshotError> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let out = Hashing {
        inner: std::io::BufWriter::with_capacity(1 << 20, Paced::create(&tmp)?),
        hasher: Sha256::new(),
        bytes: 0,
    };
    let mut out = encode(out)?;
    out.flush()?;
    let (file, hasher, bytes) = (out.inner, out.hasher, out.bytes);
    let file = file
        .into_inner()
        .map_err(|e| SnapshotError::Io(e.into_error()))?;
    file.finish()?;
    fs::rename(&tmp, dir.join(&name))?;
    Ok(FileEntry {
        role: role.to_owned(),
        name,
        bytes,
        sha256: hex::encode(hasher.finalize()),
        rows,
    })
}

/// A consistent copy of what a snapshot holds, taken in a moment: rows share the
/// index's texts, the vectors share its segments, and the graph is serialised.
pub(crate) struct Captured {
    docs: Vec<DocRow>,
    chunks: Vec<ChunkRow>,
    vectors: crate::vectors::VectorStore,
    graph: Vec<u8>,
    generation: u64,
    sequence: u64,
    next_slot: u64,
    tombstones: u64,
}

/// A document as a snapshot copies it under the writer lock: pointers only.
type DocPointers = (
    Arc<DocHeader>,
    Option<Arc<Acl>>,
    Arc<Metadata>,
    Option<ContentHash>,
);

/// What a snapshot copies under the writer lock: shared pointers to the rows.
struct Rows {
    docs: Vec<DocPointers>,
    chunks: Vec<(u32, SlotRecord)>,
}

/// A copy whose graph is still frozen, waiting to be serialised.
pub(crate) struct Capturing<'a> {
    frozen: Frozen<'a>,
    rows: Rows,
    captured: Captured,
}

impl Capturing<'_> {
    /// The sequence number of the last write it holds.
    pub(crate) fn sequence(&self) -> u64 {
        self.captured.sequence
    }

    /// Serialises the frozen graph (searches and writes go on), lets writers
    /// change the graph again, and puts the rows in key order.
    pub(crate) fn finish(self) -> Result<Captured> {
        let graph = self.frozen.graph().to_bytes();
        let thawed = self.frozen.thaw();
        let mut docs: Vec<DocRow> = self
            .rows
            .docs
            .into_iter()
            .map(|(header, acl, metadata, content_hash)| DocRow {
                key: header.key.clone(),
                version: header.version,
                acl: acl.as_deref().cloned(),
                metadata: (*metadata).clone(),
                content_hash,
            })
            .collect();
        let chunks = self
            .rows
            .chunks
            .into_iter()
            .map(|(slot, r)| ChunkRow {
                slot,
                chunk_id: r.chunk_id,
                tenant: Some(r.doc.key.tenant.clone()),
                doc_id: r.doc.key.doc_id.clone(),
                doc_version: r.doc.version,
                ordinal: r.ordinal,
                span: r.span,
                text: r.text,
            })
            .collect();
        docs.sort_unstable_by(|a, b| a.key.cmp(&b.key));
        let mut c = Captured {
            docs,
            chunks,
            graph: graph?,
            ..self.captured
        };
        thawed?;
        // Stable: a document's chunks keep their order.
        c.chunks
            .sort_by(|a, b| (&a.tenant, &a.doc_id).cmp(&(&b.tenant, &b.doc_id)));
        Ok(c)
    }
}

impl HnswIndex {
    /// Writes a snapshot of the index into `dir` (created if missing), replacing any
    /// snapshot there. Searches go on meanwhile; writes wait only while the rows
    /// are copied, not while the graph is serialised nor the tables encoded.
    pub fn snapshot(&self, dir: impl AsRef<Path>) -> Result<SnapshotReport> {
        let captured = self.capture()?.finish()?;
        self.write_captured(dir.as_ref(), captured)
    }

    /// Copies the rows under the writer lock and freezes the graph at the same
    /// moment; [`Capturing::finish`] serialises it while writers go on.
    pub(crate) fn capture(&self) -> Result<Capturing<'_>> {
        let (frozen, (rows, captured)) = self.freeze(|state| {
            // Pointers only (no string or list is copied while writers wait), in
            // the map's order: rows are built and sorted once the lock is gone.
            // Each document's chunks stay together, in chunk order.
            let mut rows = Rows {
                docs: Vec::with_capacity(state.docs.len()),
                chunks: Vec::with_capacity(state.live.len() as usize),
            };
            for d in state.docs.values() {
                rows.docs.push((
                    d.header.clone(),
                    d.acl.clone(),
                    d.metadata.clone(),
                    d.content_hash,
                ));
                rows.chunks
                    .extend(state.records_of(d).map(|(slot, r)| (slot, r.clone())));
            }
            let captured = Captured {
                docs: Vec::new(),
                chunks: Vec::new(),
                vectors: state.vectors.clone(),
                graph: Vec::new(),
                generation: state.generation,
                sequence: state.sequence,
                next_slot: state.vectors.len() as u64,
                tombstones: state.tombstones as u64,
            };
            Ok((rows, captured))
        })?;
        Ok(Capturing {
            frozen,
            rows,
            captured,
        })
    }

    /// Encodes and writes a captured copy into `dir` (no lock held): the tables are
    /// streamed to disk, each file synced and renamed, the manifest last.
    pub(crate) fn write_captured(&self, dir: &Path, c: Captured) -> Result<SnapshotReport> {
        fs::create_dir_all(dir).map_err(SnapshotError::from)?;
        let dims = self.fingerprint.dims();
        let nonce = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let tag = format!("{}-{nonce:x}", c.generation);
        let (documents, graph, chunks) = in_parallel(
            || {
                Ok(write_streamed(
                    dir,
                    "documents",
                    format!("documents-{tag}.parquet"),
                    Some(c.docs.len() as u64),
                    |out| tables::write_documents(out, "documents", &c.docs),
                )?)
            },
            || {
                let name = format!("graph-{tag}.usearch");
                write_atomically(dir, &name, &c.graph)?;
                Ok(entry("graph", name, &c.graph, None))
            },
            || {
                Ok(write_streamed(
                    dir,
                    "chunks",
                    format!("chunks-{tag}.parquet"),
                    Some(c.chunks.len() as u64),
                    |out| {
                        tables::write_chunks(out, "chunks", dims, &c.chunks, |s| c.vectors.get(s))
                    },
                )?)
            },
        )?;
        let files = vec![documents, chunks, graph];
        let manifest = Manifest {
            format_version: SNAPSHOT_FORMAT_VERSION,
            model: ModelEntry {
                name: self.fingerprint.name().to_owned(),
                dims,
                checksum: self.fingerprint.checksum().to_owned(),
            },
            graph: GraphEntry {
                connectivity: self.config.connectivity,
                expansion_add: self.config.expansion_add,
                expansion_search: self.config.expansion_search,
            },
            generation: c.generation,
            sequence: c.sequence,
            usearch_version: Some(USEARCH_VERSION.to_owned()),
            next_slot: c.next_slot,
            tombstones: c.tombstones,
            documents: c.docs.len() as u64,
            chunks: c.chunks.len() as u64,
            files,
        };
        let json = serde_json::to_vec_pretty(&manifest).map_err(|e| SnapshotError::Encode {
            file: MANIFEST_FILE.to_owned(),
            reason: e.to_string(),
        })?;
        // The signature goes first: a manifest never exists without its own.
        match &self.config.snapshot_key {
            Some(key) => write_atomically(dir, SIGNATURE_FILE, key.sign(&json).as_bytes())?,
            None => match fs::remove_file(dir.join(SIGNATURE_FILE)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(SnapshotError::from(e).into());
                }
                _ => {}
            },
        }
        write_atomically(dir, MANIFEST_FILE, &json)?;
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
        remove_stale(dir, &manifest);
        let bytes = manifest.files.iter().map(|f| f.bytes).sum::<u64>() + json.len() as u64;
        Ok(SnapshotReport { manifest, bytes })
    }

    /// Restores the snapshot in `dir`. With `expected` set, a snapshot of another
    /// model is refused. The graph's settings come from the snapshot; the rest of
    /// `config` applies.
    pub fn restore(
        dir: impl AsRef<Path>,
        expected: Option<&ModelFingerprint>,
        config: IndexConfig,
    ) -> Result<Self> {
        let dir = dir.as_ref();
        if let Some(key) = &config.snapshot_key {
            check_signature(dir, key)?;
        }
        let m = Manifest::read(dir)?;
        let fingerprint = ModelFingerprint::new(&m.model.name, m.model.dims, &m.model.checksum)?;
        if let Some(e) = expected
            && e != &fingerprint
        {
            return Err(SnapshotError::ModelMismatch {
                expected: format!("{}/{}/{}", e.name(), e.dims(), e.checksum()),
                found: format!("{}/{}/{}", m.model.name, m.model.dims, m.model.checksum),
            }
            .into());
        }
        let config = IndexConfig {
            connectivity: m.graph.connectivity,
            expansion_add: m.graph.expansion_add,
            expansion_search: m.graph.expansion_search,
            ..config
        };
        config.validate()?;
        let dims = m.model.dims;
        let corrupt = |file: &str, reason: String| SnapshotError::Corrupt {
            file: file.to_owned(),
            reason,
        };
        let (documents, hnsw, (chunks, vectors)) = in_parallel(
            || {
                let bytes = read_verified(dir, m.file("documents")?)?;
                Ok(tables::read_documents(
                    "documents",
                    bytes,
                    m.format_version,
                )?)
            },
            || {
                let bytes = read_verified(dir, m.file("graph")?)?;
                Hnsw::from_bytes(&bytes, dims, &config)
                    .map_err(|e| corrupt("graph", e.to_string()).into())
            },
            || {
                let bytes = read_verified(dir, m.file("chunks")?)?;
                Ok(tables::read_chunks(
                    "chunks",
                    bytes,
                    dims,
                    m.format_version,
                )?)
            },
        )?;
        if documents.len() as u64 != m.documents || chunks.len() as u64 != m.chunks {
            return Err(corrupt("manifest", "row counts differ from the tables".into()).into());
        }
        if hnsw.size() != chunks.len() {
            return Err(corrupt(
                "graph",
                format!(
                    "graph holds {} vectors, chunks table {}",
                    hnsw.size(),
                    chunks.len()
                ),
            )
            .into());
        }
        let mut state = rebuild_state(&m, hnsw, documents, chunks, &vectors)?;
        if config.lexical {
            // The lexical index is not part of the snapshot: it is rebuilt from the
            // chunks table, whose text is the only input it has.
            state.lexical = Some(Arc::new(state.index_text()?));
        }
        Ok(HnswIndex::from_state(fingerprint, config, state))
    }
}

/// Decodes a documents table (for the fuzzers).
pub(crate) fn read_documents_table(bytes: Bytes, format: u32) -> Result<usize, SnapshotError> {
    Ok(tables::read_documents("documents", bytes, format)?.len())
}

/// Decodes a chunks table (for the fuzzers).
pub(crate) fn read_chunks_table(
    bytes: Bytes,
    dims: usize,
    format: u32,
) -> Result<usize, SnapshotError> {
    Ok(tables::read_chunks("chunks", bytes, dims, format)?.0.len())
}

/// Runs `a` and `b` on threads of their own and `c` on this one.
fn in_parallel<A: Send, B: Send, C>(
    a: impl FnOnce() -> Result<A> + Send,
    b: impl FnOnce() -> Result<B> + Send,
    c: impl FnOnce() -> Result<C>,
) -> Result<(A, B, C)> {
    std::thread::scope(|s| {
        let ha = s.spawn(a);
        let hb = s.spawn(b);
        let rc = c();
        let panicked = || {
            crate::error::IndexError::from(SnapshotError::Encode {
                file: "snapshot".into(),
                reason: "worker thread panicked".into(),
            })
        };
        let ra = ha.join().map_err(|_| panicked())?;
        let rb = hb.join().map_err(|_| panicked())?;
        Ok((ra?, rb?, rc?))
    })
}

fn read_verified(dir: &Path, f: &FileEntry) -> Result<Bytes, SnapshotError> {
    if f.name.contains('/') || f.name.contains('\\') || f.name.starts_with('.') {
        return Err(SnapshotError::Corrupt {
            file: f.name.clone(),
            reason: "file name escapes the snapshot directory".into(),
        });
    }
    let content = match fs::read(dir.join(&f.name)) {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(SnapshotError::MissingFile {
                file: f.name.clone(),
            });
        }
        Err(e) => return Err(e.into()),
    };
    if content.len() as u64 != f.bytes {
        return Err(SnapshotError::ChecksumMismatch {
            file: f.name.clone(),
            reason: format!("{} bytes, manifest says {}", content.len(), f.bytes),
        });
    }
    if hex::encode(Sha256::digest(&content)) != f.sha256 {
        return Err(SnapshotError::ChecksumMismatch {
            file: f.name.clone(),
            reason: "sha256 differs".into(),
        });
    }
    Ok(Bytes::from(content))
}

/// A document being reassembled from its row and its chunk rows.
struct Reassembly {
    row: DocRow,
    header: Arc<DocHeader>,
    records: Vec<(u32, SlotRecord)>,
}

/// Builds the index state from decoded, checksum-verified tables, checking that they
/// agree with each other and with the manifest.
fn rebuild_state(
    m: &Manifest,
    hnsw: Hnsw,
    documents: Vec<DocRow>,
    mut chunks: Vec<ChunkRow>,
    vectors: &[f32],
) -> Result<State, SnapshotError> {
    let dims = m.model.dims;
    let corrupt = |reason: String| SnapshotError::Corrupt {
        file: "chunks".to_owned(),
        reason,
    };
    let next_slot =
        u32::try_from(m.next_slot).map_err(|_| corrupt("slot count overflows".into()))?;
    let mut state = State::new(dims, Arc::new(hnsw));
    state.generation = m.generation;
    state.sequence = m.sequence;
    state.tombstones = m.tombstones as usize;
    let mut by_slot: Vec<Option<usize>> = vec![None; next_slot as usize];
    let mut chunk_ids = HashSet::new();
    for (i, c) in chunks.iter().enumerate() {
        let cell = by_slot
            .get_mut(c.slot as usize)
            .ok_or_else(|| corrupt(format!("slot {} beyond {next_slot}", c.slot)))?;
        // Chunk ids are unique within a tenant (format 1: within the snapshot).
        if cell.replace(i).is_some() || !chunk_ids.insert((c.tenant.clone(), c.chunk_id)) {
            return Err(corrupt(format!(
                "slot {} or chunk {} repeats",
                c.slot, c.chunk_id
            )));
        }
    }
    let zeros = vec![0f32; dims];
    for slot in &by_slot {
        match slot {
            Some(i) => state.vectors.push(&vectors[i * dims..(i + 1) * dims]),
            None => state.vectors.push(&zeros),
        }
    }
    let mut docs: HashMap<DocKey, Reassembly> = HashMap::with_capacity(documents.len());
    // Format 1 keyed documents by id alone: its chunks join on the id.
    let mut tenant_of: HashMap<rag_core::DocId, TenantId> = HashMap::new();
    for row in documents {
        let header = Arc::new(DocHeader {
            key: row.key.clone(),
            version: row.version,
        });
        let id = row.key.clone();
        if m.format_version < 2 {
            tenant_of.insert(id.doc_id.clone(), id.tenant.clone());
        }
        let doc = Reassembly {
            row,
            header,
            records: Vec::new(),
        };
        if docs.insert(id, doc).is_some() {
            return Err(SnapshotError::Corrupt {
                file: "documents".into(),
                reason: "document repeats".into(),
            });
        }
    }
    chunks.sort_by_key(|c| (c.ordinal, c.slot));
    for c in chunks {
        let tenant = match &c.tenant {
            Some(t) => t.clone(),
            None => tenant_of
                .get(&c.doc_id)
                .cloned()
                .unwrap_or_else(|| TenantId::new("")),
        };
        let key = DocKey {
            tenant,
            doc_id: c.doc_id.clone(),
        };
        let doc = docs
            .get_mut(&key)
            .ok_or_else(|| corrupt(format!("chunk of unknown document {}", c.doc_id)))?;
        if doc.row.version != c.doc_version {
            return Err(corrupt(format!(
                "chunk version differs from document {}",
                c.doc_id
            )));
        }
        if c.span.start > c.span.end {
            return Err(corrupt("invalid span".into()));
        }
        doc.records.push((
            c.slot,
            SlotRecord {
                chunk_id: c.chunk_id,
                doc: doc.header.clone(),
                ordinal: c.ordinal,
                span: c.span,
                text: c.text,
            },
        ));
    }
    for (_, doc) in docs {
        let (slots, records): (Vec<u32>, Vec<SlotRecord>) = doc.records.into_iter().unzip();
        state.publish(
            DocEntry {
                header: doc.header,
                acl: doc.row.acl.map(Arc::new),
                metadata: Arc::new(doc.row.metadata),
                content_hash: doc.row.content_hash,
                slots,
            },
            records,
        );
    }
    Ok(state)
}

/// Removes files of earlier snapshots (best effort: a failure leaves garbage only).
fn remove_stale(dir: &Path, manifest: &Manifest) {
    let keep: HashSet<&str> = manifest.files.iter().map(|f| f.name.as_str()).collect();
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        let ours = ["documents-", "chunks-", "graph-"]
            .iter()
            .any(|p| name.starts_with(p));
        if ours && !keep.contains(name) {
            let _ = fs::remove_file(e.path());
        }
    }
}
