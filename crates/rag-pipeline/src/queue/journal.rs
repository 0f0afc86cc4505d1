//! The queue's append-only journal: frames of `u32` length, `u32` CRC32C of the
//! payload, payload ([`codec`](super::codec)). Appends are synced before they are
//! acknowledged. On open, a torn last frame (cut short, or complete but failing its
//! checksum as the file's last bytes) is cut off and reported; a bad frame with
//! good data after it is corruption, and the queue does not open.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use super::QueueError;
use super::codec::{self, Record};

/// The most bytes one record may hold.
pub(crate) const MAX_RECORD: usize = 64 << 20;

pub(crate) struct Journal {
    path: PathBuf,
    file: File,
    bytes: u64,
}

fn io(path: &Path, e: std::io::Error) -> QueueError {
    QueueError::Io {
        path: path.to_owned(),
        source: e,
    }
}

fn frame(out: &mut Vec<u8>, record: &Record) -> Result<(), QueueError> {
    let payload = codec::encode(record);
    if payload.len() > MAX_RECORD {
        return Err(QueueError::TooLarge {
            bytes: payload.len(),
            max: MAX_RECORD,
        });
    }
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    Ok(())
}

impl Journal {
    /// Opens (or creates) the journal at `path`; returns it, its records, and how
    /// many torn bytes were cut from its end.
    pub(crate) fn open(path: &Path) -> Result<(Self, Vec<Record>, u64), QueueError> {
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(|e| io(path, e))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(|e| io(path, e))?;
        let mut records = Vec::new();
        let mut at = 0usize;
        while at < bytes.len() {
            let head = bytes.get(at..at + 8);
            let Some(head) = head else { break };
            let mut len = [0u8; 4];
            len.copy_from_slice(&head[..4]);
            let len = u32::from_le_bytes(len) as usize;
            let mut crc = [0u8; 4];
            crc.copy_from_slice(&head[4..]);
            let end = at + 8 + len;
            if len > MAX_RECORD || end > bytes.len() {
                break; // cut short: torn
            }
            let payload = &bytes[at + 8..end];
            if crc32c::crc32c(payload) != u32::from_le_bytes(crc) {
                if end == bytes.len() {
                    break; // the last frame, half written: torn
                }
                return Err(QueueError::Corrupt {
                    path: path.to_owned(),
                    offset: at as u64,
                    reason: "a record fails its checksum and records follow it".into(),
                });
            }
            let record = codec::decode(payload).map_err(|reason| QueueError::Corrupt {
                path: path.to_owned(),
                offset: at as u64,
                reason: reason.into(),
            })?;
            records.push(record);
            at = end;
        }
        let cut = (bytes.len() - at) as u64;
        if cut > 0 {
            file.set_len(at as u64).map_err(|e| io(path, e))?;
            file.sync_all().map_err(|e| io(path, e))?;
        }
        Ok((
            Self {
                path: path.to_owned(),
                file,
                bytes: at as u64,
            },
            records,
            cut,
        ))
    }

    /// Appends `records` and syncs them: once this returns they survive a crash.
    pub(crate) fn append(&mut self, records: &[Record]) -> Result<(), QueueError> {
        let mut out = Vec::new();
        for r in records {
            frame(&mut out, r)?;
        }
        self.file.write_all(&out).map_err(|e| io(&self.path, e))?;
        self.file.sync_data().map_err(|e| io(&self.path, e))?;
        self.bytes += out.len() as u64;
        Ok(())
    }

    /// The journal's size.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Replaces the journal with `records` (written to a temporary file, synced,
    /// renamed over it, the directory synced).
    pub(crate) fn rewrite(&mut self, records: &[Record]) -> Result<(), QueueError> {
        let tmp = self.path.with_extension("tmp");
        let mut out = Vec::new();
        for r in records {
            frame(&mut out, r)?;
        }
        {
            let mut f = File::create(&tmp).map_err(|e| io(&tmp, e))?;
            f.write_all(&out).map_err(|e| io(&tmp, e))?;
            f.sync_all().map_err(|e| io(&tmp, e))?;
        }
        std::fs::rename(&tmp, &self.path).map_err(|e| io(&self.path, e))?;
        if let Some(dir) = self.path.parent() {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| io(dir, e))?;
        }
        self.file = OpenOptions::new()
            .append(true)
            .open(&self.path)
            .map_err(|e| io(&self.path, e))?;
        self.bytes = out.len() as u64;
        Ok(())
    }
}
