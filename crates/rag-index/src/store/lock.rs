//! One process per store directory: an exclusive advisory lock on `LOCK`, held for
//! the store's lifetime and released by the kernel when the process dies.

use std::path::Path;

use fs_err as fs;

use crate::error::StoreError;

/// The held lock; dropping it releases the directory.
#[derive(Debug)]
pub struct DirLock {
    _file: std::fs::File,
}

impl DirLock {
    /// Takes the lock of `dir`, or fails at once with [`StoreError::Locked`].
    pub fn acquire(dir: &Path) -> Result<Self, StoreError> {
        let path = dir.join("LOCK");
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| StoreError::io(&path, e))?
            .into_parts()
            .0;
        match file.try_lock() {
            Ok(()) => Ok(Self { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::Locked { path }),
            Err(std::fs::TryLockError::Error(e)) => Err(StoreError::io(&path, e)),
        }
    }
}
