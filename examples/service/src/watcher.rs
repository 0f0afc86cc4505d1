//! Change detection: watched directories become queue items.
//!
//! Each configured directory is watched recursively through `notify` with a
//! debouncer, so an editor's burst (write a temporary file, rename it over the
//! original) settles into one change. Events are not trusted for what happened,
//! only for *where*: each path they name is looked at when the event arrives: a
//! file with a watched extension is queued as [`Change::UpsertFile`] (read when
//! applied, so the latest content wins and an undecodable file becomes a
//! re-drivable dead letter); a path that is gone deletes what was indexed from it
//! (a file, or every file under a directory). Renames are thus a delete and an
//! upsert. An error, an event overflow (`need_rescan`) or a watch that cannot start
//! (the OS watch limit) is logged, counted in `rag_watcher_errors_total`, and
//! answered by a full rescan of the directory, never hidden. A full queue makes
//! the watcher wait and retry (back-pressure); nothing is dropped.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::time::Duration;

use notify_debouncer_full::notify::event::ModifyKind;
use notify_debouncer_full::notify::{EventKind, RecursiveMode};
use notify_debouncer_full::{DebounceEventResult, Debouncer, RecommendedCache, new_debouncer};
use rag::pipeline::queue::{Ack, Change, IngestQueue, QueueError};
use rag::{DocId, DocKey, Document, TenantId};

use crate::config::WatchConfig;

/// Rescan period of a directory whose watch could not start.
const POLL_EVERY: Duration = Duration::from_secs(5);

enum Signal {
    /// Paths an event named, and whether the event can change a directory's
    /// contents (create, remove, rename) rather than only a file's.
    Paths(usize, Vec<(PathBuf, bool)>),
    Rescan(usize, &'static str),
}

/// The running watchers; dropping it stops them.
pub struct Watcher {
    _debouncers:
        Vec<Debouncer<notify_debouncer_full::notify::RecommendedWatcher, RecommendedCache>>,
    stop: Option<Sender<Signal>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watcher")
            .field("directories", &self._debouncers.len())
            .finish()
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self._debouncers.clear();
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Watched {
    config: WatchConfig,
    /// Canonical root, for matching event paths.
    root: PathBuf,
    /// Files indexed from it (relative paths).
    known: BTreeSet<PathBuf>,
    /// Whether the OS watch runs; if not, the directory is polled.
    live: bool,
}

/// Starts watching `watches`, feeding `queue`; each directory is scanned once at
/// start.
pub fn spawn(watches: &[WatchConfig], queue: Arc<IngestQueue>) -> std::io::Result<Watcher> {
    let (tx, rx) = channel();
    let mut debouncers = Vec::new();
    let mut dirs = Vec::new();
    for (i, w) in watches.iter().enumerate() {
        let root = std::fs::canonicalize(&w.dir)?;
        let events = tx.clone();
        let handler = move |result: DebounceEventResult| match result {
            Ok(events_in) => {
                let mut paths = Vec::new();
                for e in events_in {
                    if e.event.need_rescan() {
                        metrics::counter!(crate::metrics::WATCHER_ERRORS, "reason" => "overflow")
                            .increment(1);
                        tracing::warn!("file events overflowed; rescanning");
                        let _ = events.send(Signal::Rescan(i, "overflow"));
                    }
                    let kind = e.event.kind;
                    // Reads (our own scans among them) change nothing.
                    if kind.is_access() || kind.is_other() {
                        continue;
                    }
                    let structural = kind.is_create()
                        || kind.is_remove()
                        || matches!(kind, EventKind::Modify(ModifyKind::Name(_)));
                    paths.extend(e.event.paths.iter().map(|p| (p.clone(), structural)));
                }
                if !paths.is_empty() {
                    let _ = events.send(Signal::Paths(i, paths));
                }
            }
            Err(errors) => {
                for e in errors {
                    metrics::counter!(crate::metrics::WATCHER_ERRORS, "reason" => "error")
                        .increment(1);
                    tracing::error!(error = %e, "file watcher error; rescanning");
                }
                let _ = events.send(Signal::Rescan(i, "error"));
            }
        };
        let mut live = false;
        match new_debouncer(Duration::from_millis(w.debounce_ms), None, handler) {
            Ok(mut d) => match d.watch(&root, RecursiveMode::Recursive) {
                Ok(()) => {
                    live = true;
                    debouncers.push(d);
                }
                Err(e) => {
                    metrics::counter!(crate::metrics::WATCHER_ERRORS, "reason" => "watch")
                        .increment(1);
                    tracing::error!(dir = %root.display(), error = %e,
                        "cannot watch (the OS watch limit?); polling every {POLL_EVERY:?} instead");
                }
            },
            Err(e) => {
                metrics::counter!(crate::metrics::WATCHER_ERRORS, "reason" => "watch").increment(1);
                tracing::error!(error = %e, "cannot start a file watcher; polling instead");
            }
        }
        dirs.push(Watched {
            config: w.clone(),
            root,
            known: BTreeSet::new(),
            live,
        });
    }
    let thread = std::thread::Builder::new()
        .name("rag-watcher".into())
        .spawn(move || run(dirs, &rx, &queue))?;
    Ok(Watcher {
        _debouncers: debouncers,
        stop: Some(tx),
        thread: Some(thread),
    })
}

fn run(mut dirs: Vec<Watched>, rx: &Receiver<Signal>, queue: &IngestQueue) {
    for d in &mut dirs {
        rescan(d, queue, "start");
    }
    let polled = dirs.iter().any(|d| !d.live);
    loop {
        let signal = if polled {
            match rx.recv_timeout(POLL_EVERY) {
                Ok(s) => Some(s),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => return,
            }
        } else {
            match rx.recv() {
                Ok(s) => Some(s),
                Err(_) => return,
            }
        };
        match signal {
            None => {
                for d in dirs.iter_mut().filter(|d| !d.live) {
                    rescan(d, queue, "poll");
                }
            }
            Some(Signal::Rescan(i, why)) => {
                if let Some(d) = dirs.get_mut(i) {
                    rescan(d, queue, why);
                }
            }
            Some(Signal::Paths(i, paths)) => {
                let Some(d) = dirs.get_mut(i) else { continue };
                let mut changes = Vec::new();
                let mut full = false;
                for (p, structural) in paths {
                    full |= look_at(d, &p, structural, &mut changes);
                }
                if full {
                    rescan(d, queue, "directory");
                } else {
                    send(queue, changes);
                }
            }
        }
    }
}

/// Queues what `path` now is; `true` when a directory was created or moved in
/// and needs a rescan.
fn look_at(d: &mut Watched, path: &Path, structural: bool, changes: &mut Vec<Change>) -> bool {
    let Ok(rel) = path.strip_prefix(&d.root) else {
        return false;
    };
    let rel = rel.to_owned();
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => structural && !rel.as_os_str().is_empty(),
        Ok(m) if m.is_file() => {
            if let Some(c) = upsert(d, &rel, path) {
                d.known.insert(rel);
                changes.push(c);
            }
            false
        }
        Ok(_) => false,
        Err(_) => {
            // Gone: the file, or everything under a directory of that name.
            let gone: Vec<PathBuf> = d
                .known
                .iter()
                .filter(|k| **k == rel || k.starts_with(&rel))
                .cloned()
                .collect();
            for k in gone {
                d.known.remove(&k);
                if let Some(key) = key(&d.config.tenant, &k) {
                    changes.push(Change::Delete(key));
                }
            }
            false
        }
    }
}

fn doc_id(rel: &Path) -> Option<String> {
    let parts: Option<Vec<&str>> = rel.components().map(|c| c.as_os_str().to_str()).collect();
    parts.map(|p| p.join("/"))
}

fn key(tenant: &str, rel: &Path) -> Option<DocKey> {
    doc_id(rel).map(|id| DocKey::new(TenantId::new(tenant), DocId::new(id)))
}

fn upsert(d: &Watched, rel: &Path, path: &Path) -> Option<Change> {
    let ext = path.extension().and_then(|e| e.to_str())?;
    if !d.config.extensions.iter().any(|x| x == ext) {
        return None;
    }
    // Editors' temporary and hidden files.
    let name = path.file_name()?.to_str()?;
    if name.starts_with('.') || name.ends_with('~') {
        return None;
    }
    let Some(id) = doc_id(rel) else {
        tracing::warn!(path = %path.display(), "file name is not UTF-8; not indexed");
        return None;
    };
    let mut doc = Document::new(d.config.tenant.as_str(), id, "");
    for g in &d.config.groups {
        doc = doc.readable_by_group(g.as_str());
    }
    for u in &d.config.users {
        doc = doc.readable_by_user(u.as_str());
    }
    doc.metadata = doc
        .metadata
        .with_title(name)
        .with_source(rel.to_string_lossy());
    Some(Change::UpsertFile {
        doc,
        path: path.to_owned(),
    })
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        match e.file_type() {
            Ok(t) if t.is_dir() => walk(&p, out),
            Ok(t) if t.is_file() => out.push(p),
            _ => {}
        }
    }
}

/// Queues every file under the directory, and deletes what is indexed from files
/// that are gone.
fn rescan(d: &mut Watched, queue: &IngestQueue, why: &str) {
    metrics::counter!(crate::metrics::WATCHER_RESCANS).increment(1);
    tracing::info!(dir = %d.root.display(), why, "scanning");
    let mut files = Vec::new();
    walk(&d.root, &mut files);
    let mut now = BTreeSet::new();
    let mut changes = Vec::new();
    for path in files {
        let Ok(rel) = path.strip_prefix(&d.root).map(Path::to_owned) else {
            continue;
        };
        if let Some(c) = upsert(d, &rel, &path) {
            now.insert(rel);
            changes.push(c);
        }
    }
    for gone in d.known.difference(&now) {
        if let Some(k) = key(&d.config.tenant, gone) {
            changes.push(Change::Delete(k));
        }
    }
    d.known = now;
    send(queue, changes);
}

/// Queues `changes`, waiting while the queue is full.
fn send(queue: &IngestQueue, changes: Vec<Change>) {
    if changes.is_empty() {
        return;
    }
    metrics::counter!(crate::metrics::WATCHER_CHANGES).increment(changes.len() as u64);
    for part in changes.chunks(queue.capacity().clamp(1, 64)) {
        loop {
            match queue.submit(part.to_vec(), Ack::Queued) {
                Ok(_) => break,
                Err(QueueError::Full { retry_after }) => std::thread::sleep(retry_after),
                Err(QueueError::Closed) => return,
                Err(e) => {
                    metrics::counter!(crate::metrics::WATCHER_ERRORS, "reason" => "queue")
                        .increment(1);
                    tracing::error!(error = %e, "cannot queue file changes; retrying");
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
        }
    }
}
