//! Log segments: a header naming the model and the first sequence number, then
//! framed records.
//!
//! ```text
//! segment := "RAGWAL01" header_len:u32 header crc32c(header):u32 frame*
//! header  := model_name:str dims:u64 model_checksum:str first_seq:u64
//! frame   := len:u32 crc:u32 seq:u64 payload[len]
//!            crc = crc32c(len ++ seq ++ payload)
//! ```
//!
//! A segment is named by its first sequence number (`00000000000000000001.wal`), so
//! sorting the names sorts the log.

use std::io::{Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use fs_err as fs;
use rag_core::ModelFingerprint;

use crate::error::StoreError;

const MAGIC: &[u8; 8] = b"RAGWAL01";
/// Bytes of a frame before its payload.
pub const FRAME_HEADER: usize = 16;
const SUFFIX: &str = ".wal";

/// The file name of the segment whose first record is `first_seq`.
pub fn segment_name(first_seq: u64) -> String {
    format!("{first_seq:020}{SUFFIX}")
}

/// The first sequence number a segment file name stands for.
pub fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// The header bytes of a new segment.
pub fn header(model: &ModelFingerprint, first_seq: u64) -> Vec<u8> {
    let mut h = Vec::new();
    put_str(&mut h, model.name());
    h.extend_from_slice(&(model.dims() as u64).to_le_bytes());
    put_str(&mut h, model.checksum());
    h.extend_from_slice(&first_seq.to_le_bytes());
    let mut out = Vec::with_capacity(h.len() + 16);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(h.len() as u32).to_le_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(&crc32c::crc32c(&h).to_le_bytes());
    out
}

/// Appends the frame of one record.
pub fn frame(out: &mut Vec<u8>, seq: u64, payload: &[u8]) {
    let len = (payload.len() as u32).to_le_bytes();
    let seq_bytes = seq.to_le_bytes();
    let crc = crc32c::crc32c_append(
        crc32c::crc32c_append(crc32c::crc32c(&len), &seq_bytes),
        payload,
    );
    out.extend_from_slice(&len);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&seq_bytes);
    out.extend_from_slice(payload);
}

/// One record read back.
#[derive(Debug)]
pub struct ScannedRecord {
    /// Its sequence number.
    pub seq: u64,
    /// Where its frame starts in the segment file.
    pub offset: u64,
    /// Its payload.
    pub payload: Vec<u8>,
}

/// What reading one segment found.
#[derive(Debug)]
pub struct Scan {
    /// The first sequence number the header names.
    pub first_seq: u64,
    /// The valid records, in order.
    pub records: Vec<ScannedRecord>,
    /// Bytes of the file that hold the header and valid records.
    pub valid_len: u64,
    /// Bytes after `valid_len`: a torn tail (only the last segment may have one).
    pub torn_bytes: u64,
}

fn le_u32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

/// Reads the header of a segment's bytes; returns the first sequence and where the
/// frames begin.
fn read_header(
    path: &Path,
    bytes: &[u8],
    model: &ModelFingerprint,
) -> Result<(u64, usize), StoreError> {
    let corrupt = |offset: u64, reason: &str| StoreError::CorruptLog {
        segment: path.to_path_buf(),
        offset,
        reason: reason.to_owned(),
    };
    if bytes.len() < 12 || &bytes[..8] != MAGIC {
        return Err(corrupt(0, "not a log segment (bad magic)"));
    }
    let n = le_u32(&bytes[8..12]) as usize;
    let end = 12usize.saturating_add(n);
    if n > 64 * 1024 || bytes.len() < end + 4 {
        return Err(corrupt(8, "segment header length out of range"));
    }
    let h = &bytes[12..end];
    if crc32c::crc32c(h) != le_u32(&bytes[end..end + 4]) {
        return Err(corrupt(12, "segment header checksum mismatch"));
    }
    let mut pos = 0usize;
    let mut take = |k: usize| -> Result<&[u8], StoreError> {
        let s = h
            .get(pos..pos + k)
            .ok_or_else(|| corrupt(12 + pos as u64, "segment header truncated"))?;
        pos += k;
        Ok(s)
    };
    let name_len = le_u32(take(4)?) as usize;
    let name = String::from_utf8_lossy(take(name_len)?).into_owned();
    let dims = le_u64(take(8)?);
    let sum_len = le_u32(take(4)?) as usize;
    let checksum = String::from_utf8_lossy(take(sum_len)?).into_owned();
    let first_seq = le_u64(take(8)?);
    if name != model.name() || dims != model.dims() as u64 || checksum != model.checksum() {
        return Err(StoreError::ForeignLog {
            segment: path.to_path_buf(),
            expected: format!("{}/{}/{}", model.name(), model.dims(), model.checksum()),
            found: format!("{name}/{dims}/{checksum}"),
        });
    }
    Ok((first_seq, end + 4))
}

/// Reads a segment. In the last segment (`last`), a short frame or a bad checksum on
/// the final frame (or a zero-filled remainder) is a torn tail, reported in
/// [`Scan::torn_bytes`]; anywhere else a bad frame is [`StoreError::CorruptLog`]
/// naming the offset. Records must carry consecutive sequence numbers from the
/// header's first one.
pub fn scan(
    path: &Path,
    model: &ModelFingerprint,
    last: bool,
    max_record_bytes: usize,
) -> Result<Scan, StoreError> {
    let bytes = fs::read(path).map_err(|e| StoreError::io(path, e))?;
    scan_bytes(path, &bytes, model, last, max_record_bytes)
}

/// [`scan`] over bytes already read.
pub fn scan_bytes(
    path: &Path,
    bytes: &[u8],
    model: &ModelFingerprint,
    last: bool,
    max_record_bytes: usize,
) -> Result<Scan, StoreError> {
    let (first_seq, mut pos) = match read_header(path, bytes, model) {
        // A last segment whose header never fully reached the disk (a crash while
        // it was created) holds no record: a torn tail as a whole.
        Err(StoreError::CorruptLog { .. }) if last && header_is_torn(bytes) => {
            return Ok(Scan {
                first_seq: 0,
                records: Vec::new(),
                valid_len: 0,
                torn_bytes: bytes.len() as u64,
            });
        }
        other => other?,
    };
    let mut records = Vec::new();
    let mut next = first_seq;
    let corrupt = |offset: usize, reason: String| StoreError::CorruptLog {
        segment: path.to_path_buf(),
        offset: offset as u64,
        reason,
    };
    let torn = |pos: usize, records: Vec<ScannedRecord>| Scan {
        first_seq,
        records,
        valid_len: pos as u64,
        torn_bytes: (bytes.len() - pos) as u64,
    };
    while pos < bytes.len() {
        let rest = &bytes[pos..];
        if last && rest.iter().all(|&b| b == 0) {
            return Ok(torn(pos, records));
        }
        if rest.len() < FRAME_HEADER {
            if last {
                return Ok(torn(pos, records));
            }
            return Err(corrupt(pos, "short frame header".into()));
        }
        let len = le_u32(&rest[..4]) as usize;
        if len > max_record_bytes {
            return Err(corrupt(
                pos,
                format!("record length {len} over the limit {max_record_bytes}"),
            ));
        }
        let end = FRAME_HEADER + len;
        if rest.len() < end {
            if last {
                return Ok(torn(pos, records));
            }
            return Err(corrupt(
                pos,
                "record runs past the end of its segment".into(),
            ));
        }
        let crc = le_u32(&rest[4..8]);
        let seq = le_u64(&rest[8..16]);
        let payload = &rest[FRAME_HEADER..end];
        let want = crc32c::crc32c_append(
            crc32c::crc32c_append(crc32c::crc32c(&rest[..4]), &rest[8..16]),
            payload,
        );
        if want != crc {
            if last && rest.len() == end {
                return Ok(torn(pos, records));
            }
            return Err(corrupt(pos, "record checksum mismatch".into()));
        }
        if seq != next {
            return Err(corrupt(pos, format!("sequence {seq} where {next} was due")));
        }
        records.push(ScannedRecord {
            seq,
            offset: pos as u64,
            payload: payload.to_vec(),
        });
        next += 1;
        pos += end;
    }
    Ok(Scan {
        first_seq,
        records,
        valid_len: pos as u64,
        torn_bytes: 0,
    })
}

/// Whether `bytes` are a prefix of a segment header cut short (or zeros).
fn header_is_torn(bytes: &[u8]) -> bool {
    if bytes.iter().all(|&b| b == 0) {
        return true;
    }
    if bytes.len() < MAGIC.len() {
        return MAGIC.starts_with(bytes);
    }
    if &bytes[..MAGIC.len()] != MAGIC {
        return false;
    }
    bytes.len() < 12 || bytes.len() < 16 + le_u32(&bytes[8..12]) as usize
}

/// The open segment being appended to.
#[derive(Debug)]
pub struct SegmentWriter {
    /// Shared with the log's sync thread.
    file: Arc<std::fs::File>,
    /// Its path.
    pub path: PathBuf,
    /// Its first sequence number.
    pub first_seq: u64,
    /// Its length in bytes.
    pub len: u64,
}

impl SegmentWriter {
    /// Creates a new segment in `dir` (synced, with the directory entry synced).
    pub fn create(
        dir: &Path,
        model: &ModelFingerprint,
        first_seq: u64,
    ) -> Result<Self, StoreError> {
        let path = dir.join(segment_name(first_seq));
        let head = header(model, first_seq);
        let mut file = fs::OpenOptions::new()
            .create_new(true)
            .write(true)
            .open(&path)
            .map_err(|e| StoreError::io(&path, e))?;
        file.write_all(&head)
            .map_err(|e| StoreError::io(&path, e))?;
        file.sync_all().map_err(|e| StoreError::io(&path, e))?;
        sync_dir(dir)?;
        Ok(Self {
            file: Arc::new(file.into_parts().0),
            path,
            first_seq,
            len: head.len() as u64,
        })
    }

    /// Reopens an existing segment for appending after its first `valid_len` bytes,
    /// cutting off anything beyond (a torn tail), synced.
    pub fn reopen(path: &Path, first_seq: u64, valid_len: u64) -> Result<Self, StoreError> {
        let file = fs::OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|e| StoreError::io(path, e))?;
        let actual = file.metadata().map_err(|e| StoreError::io(path, e))?.len();
        if actual != valid_len {
            file.set_len(valid_len)
                .map_err(|e| StoreError::io(path, e))?;
            file.sync_all().map_err(|e| StoreError::io(path, e))?;
        }
        let file = file.into_parts().0;
        (&file)
            .seek(std::io::SeekFrom::Start(valid_len))
            .map_err(|e| StoreError::io(path, e))?;
        Ok(Self {
            file: Arc::new(file),
            path: path.to_path_buf(),
            first_seq,
            len: valid_len,
        })
    }

    /// Writes bytes at the end (no sync).
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        crate::store::failpoint("wal::append")?;
        (&*self.file)
            .write_all(bytes)
            .map_err(|e| StoreError::io(&self.path, e))?;
        self.len += bytes.len() as u64;
        Ok(())
    }

    /// The file, for a sync on another thread.
    pub fn handle(&self) -> Arc<std::fs::File> {
        self.file.clone()
    }

    /// `fdatasync`.
    pub fn sync(&mut self) -> Result<(), StoreError> {
        crate::store::failpoint("wal::sync")?;
        self.file
            .sync_data()
            .map_err(|e| StoreError::io(&self.path, e))
    }
}

/// Syncs a directory so that entries created or renamed in it are durable.
pub fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    let d = fs::File::open(dir).map_err(|e| StoreError::io(dir, e))?;
    d.sync_all().map_err(|e| StoreError::io(dir, e))
}
