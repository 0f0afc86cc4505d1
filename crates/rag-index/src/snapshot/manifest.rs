//! The snapshot manifest: what a snapshot holds and the checksum of each file.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::SnapshotError;

/// The snapshot format this build writes. It reads this one and every earlier one
/// (format 1 had document ids without tenants; see the tables module).
pub const SNAPSHOT_FORMAT_VERSION: u32 = 2;

/// The usearch release whose graph files this build writes.
pub const USEARCH_VERSION: &str = "2.26.6";

/// The manifest's file name inside a snapshot directory.
pub const MANIFEST_FILE: &str = "MANIFEST.json";

/// One file of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// `documents`, `chunks` or `graph`.
    pub role: String,
    /// File name inside the snapshot directory.
    pub name: String,
    /// Size in bytes.
    pub bytes: u64,
    /// Hex sha256 of the content.
    pub sha256: String,
    /// Rows, for tables.
    pub rows: Option<u64>,
}

/// The embedding model a snapshot was built with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelEntry {
    /// Model name.
    pub name: String,
    /// Dimensions.
    pub dims: usize,
    /// Model checksum.
    pub checksum: String,
}

/// The HNSW settings the graph was built with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GraphEntry {
    /// Graph degree.
    pub connectivity: usize,
    /// Beam width while inserting.
    pub expansion_add: usize,
    /// Base beam width while searching.
    pub expansion_search: usize,
}

/// What a snapshot holds. Written last, by atomic rename: a snapshot exists once its
/// manifest does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`SNAPSHOT_FORMAT_VERSION`] of the writer.
    pub format_version: u32,
    /// The embedding model.
    pub model: ModelEntry,
    /// Graph settings.
    pub graph: GraphEntry,
    /// The index generation snapshotted.
    pub generation: u64,
    /// The sequence number of the last write the snapshot holds (0 in format 1).
    #[serde(default)]
    pub sequence: u64,
    /// The usearch release that wrote the graph (absent in format 1).
    #[serde(default)]
    pub usearch_version: Option<String>,
    /// One past the highest slot ever allocated.
    pub next_slot: u64,
    /// Removed vectors still in the graph.
    pub tombstones: u64,
    /// Documents.
    pub documents: u64,
    /// Chunks.
    pub chunks: u64,
    /// The files.
    pub files: Vec<FileEntry>,
}

impl Manifest {
    /// Reads the manifest of the snapshot in `dir`.
    pub fn read(dir: &Path) -> Result<Self, SnapshotError> {
        let path = dir.join(MANIFEST_FILE);
        let text = match fs_err::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(SnapshotError::MissingManifest { path });
            }
            Err(e) => {
                return Err(SnapshotError::CorruptManifest {
                    path,
                    reason: e.to_string(),
                });
            }
        };
        Self::parse(&text, &path)
    }

    /// Parses a manifest's text (`path` names it in errors).
    pub fn parse(text: &str, path: &Path) -> Result<Self, SnapshotError> {
        let manifest: Manifest =
            serde_json::from_str(text).map_err(|e| SnapshotError::CorruptManifest {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?;
        if manifest.format_version == 0 || manifest.format_version > SNAPSHOT_FORMAT_VERSION {
            return Err(SnapshotError::UnsupportedVersion {
                found: manifest.format_version,
                supported: SNAPSHOT_FORMAT_VERSION,
            });
        }
        Ok(manifest)
    }

    /// The entry of the file with `role`.
    pub fn file(&self, role: &str) -> Result<&FileEntry, SnapshotError> {
        self.files
            .iter()
            .find(|f| f.role == role)
            .ok_or_else(|| SnapshotError::MissingFile {
                file: role.to_owned(),
            })
    }
}
