//! Checkpoints: snapshots of the index at a sequence number under
//! `checkpoints/checkpoint-<seq>`, and the `CURRENT` pointer that names the one
//! recovery starts from.
//!
//! Writing one: the snapshot goes to a temporary directory (each file synced, the
//! manifest last), which is synced and renamed into place; then `CURRENT` is written
//! to a temporary file, synced, renamed over the old pointer, and the directory is
//! synced; only then are the log segments and older checkpoints it covers deleted.
//! A crash at any point leaves either the old pointer with everything it needs, or
//! the new one.

use std::io::Write;
use std::path::{Path, PathBuf};

use fs_err as fs;

use crate::error::StoreError;
use crate::store::segment::sync_dir;

/// The pointer file's name.
pub const CURRENT: &str = "CURRENT";
const PREFIX: &str = "checkpoint-";

/// The directory name of the checkpoint at `seq`.
pub fn name(seq: u64) -> String {
    format!("{PREFIX}{seq:020}")
}

/// The sequence number a checkpoint directory name stands for.
pub fn parse_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix(PREFIX)?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// The checkpoint `CURRENT` names, if there is a pointer.
pub fn read_current(root: &Path) -> Result<Option<(String, u64)>, StoreError> {
    let path = root.join(CURRENT);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StoreError::io(&path, e)),
    };
    let name = text.trim_end_matches('\n');
    let seq = parse_name(name).ok_or_else(|| StoreError::CorruptPointer {
        path: path.clone(),
        reason: format!(
            "{:?} is not a checkpoint name",
            text.chars().take(64).collect::<String>()
        ),
    })?;
    Ok(Some((name.to_owned(), seq)))
}

/// Points `CURRENT` at checkpoint `name`, atomically and durably.
pub fn write_current(root: &Path, name: &str) -> Result<(), StoreError> {
    let tmp = root.join(format!(".{CURRENT}.tmp"));
    let mut f = fs::File::create(&tmp).map_err(|e| StoreError::io(&tmp, e))?;
    f.write_all(format!("{name}\n").as_bytes())
        .map_err(|e| StoreError::io(&tmp, e))?;
    f.sync_all().map_err(|e| StoreError::io(&tmp, e))?;
    drop(f);
    let path = root.join(CURRENT);
    fs::rename(&tmp, &path).map_err(|e| StoreError::io(&path, e))?;
    sync_dir(root)
}

/// Removes every entry of `checkpoints/` but `keep` (older checkpoints, and
/// temporary directories a crash left behind).
pub fn remove_others(dir: &Path, keep: Option<&str>) -> Result<(), StoreError> {
    let entries = fs::read_dir(dir).map_err(|e| StoreError::io(dir, e))?;
    for e in entries {
        let e = e.map_err(|e| StoreError::io(dir, e))?;
        let path: PathBuf = e.path();
        if Some(e.file_name().to_string_lossy().as_ref()) == keep {
            continue;
        }
        let removed = if path.is_dir() {
            fs::remove_dir_all(&path)
        } else {
            fs::remove_file(&path)
        };
        removed.map_err(|e| StoreError::io(&path, e))?;
    }
    sync_dir(dir)
}
