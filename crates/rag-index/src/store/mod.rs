//! The durable store: a write-ahead log in front of the index, checkpoints in the
//! snapshot format, recovery, and erasure that reaches every file.

mod checkpoint;
pub mod codec;
mod durable;
mod lock;
pub mod segment;
mod wal;

pub use durable::{CheckpointReport, DurableIndex, RecoveryReport, StoreOptions};
pub use wal::Durability;

use crate::error::StoreError;

/// Fails with [`StoreError::Injected`] when the `failpoints` feature is on and the
/// point is armed; compiles to nothing otherwise.
#[inline]
pub(crate) fn failpoint(point: &'static str) -> Result<(), StoreError> {
    #[cfg(feature = "failpoints")]
    {
        fail::fail_point!(point, |_| Err(StoreError::Injected { point }));
    }
    let _ = point;
    Ok(())
}
