//! Normalized vectors by slot, in fixed-size segments so that growth never moves
//! what is stored. Segments are shared (`Arc`), so a clone is cheap: a checkpoint
//! takes one in a moment and encodes it while writers go on; the one segment a
//! writer then appends to is copied first (copy on write), the others never change.

use std::sync::Arc;

const SEGMENT_SLOTS: usize = 4096;

/// Vectors addressed by slot number.
#[derive(Debug, Clone)]
pub struct VectorStore {
    dims: usize,
    len: usize,
    segments: Vec<Arc<[f32]>>,
}

impl VectorStore {
    /// An empty store of `dims`-dimensional vectors.
    pub fn new(dims: usize) -> Self {
        Self {
            dims,
            len: 0,
            segments: Vec::new(),
        }
    }

    /// Slots stored (dead ones included).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Appends a vector at slot `len()`; the slice must have `dims` values.
    pub fn push(&mut self, v: &[f32]) {
        let offset = (self.len % SEGMENT_SLOTS) * self.dims;
        if offset == 0 {
            self.segments
                .push(Arc::from(vec![0f32; SEGMENT_SLOTS * self.dims]));
        }
        if let Some(seg) = self.segments.last_mut() {
            if Arc::get_mut(seg).is_none() {
                // Shared with a checkpoint being written: copy before writing.
                *seg = Arc::from(seg.to_vec());
            }
            if let Some(seg) = Arc::get_mut(seg) {
                seg[offset..offset + self.dims].copy_from_slice(v);
            }
        }
        self.len += 1;
    }

    /// The vector at `slot` (zeros for a slot never written).
    #[inline]
    pub fn get(&self, slot: u32) -> &[f32] {
        let slot = slot as usize;
        let offset = (slot % SEGMENT_SLOTS) * self.dims;
        match self.segments.get(slot / SEGMENT_SLOTS) {
            Some(seg) => &seg[offset..offset + self.dims],
            None => &[],
        }
    }

    /// Bytes held.
    pub fn allocated_bytes(&self) -> usize {
        self.segments.len() * SEGMENT_SLOTS * self.dims * 4
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_across_segments() {
        let mut s = VectorStore::new(3);
        for i in 0..(SEGMENT_SLOTS + 5) {
            s.push(&[i as f32, 1.0, 2.0]);
        }
        assert_eq!(s.len(), SEGMENT_SLOTS + 5);
        assert_eq!(
            s.get(SEGMENT_SLOTS as u32 + 2)[0],
            (SEGMENT_SLOTS + 2) as f32
        );
        assert_eq!(s.get(7), &[7.0, 1.0, 2.0]);
        assert!(s.get(10 * SEGMENT_SLOTS as u32).is_empty());
    }

    #[test]
    fn a_clone_does_not_see_later_writes() {
        let mut s = VectorStore::new(2);
        s.push(&[1.0, 2.0]);
        let frozen = s.clone();
        s.push(&[3.0, 4.0]);
        assert_eq!(frozen.len(), 1);
        assert_eq!(frozen.get(1), &[0.0, 0.0]);
        assert_eq!(s.get(1), &[3.0, 4.0]);
        assert_eq!(frozen.get(0), s.get(0));
    }
}
