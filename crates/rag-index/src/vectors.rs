//! Normalized vectors by slot, in fixed-size segments so that growth never moves
//! what is stored.

const SEGMENT_SLOTS: usize = 4096;

/// Vectors addressed by slot number.
#[derive(Debug, Clone)]
pub struct VectorStore {
    dims: usize,
    len: usize,
    segments: Vec<Box<[f32]>>,
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
                .push(vec![0f32; SEGMENT_SLOTS * self.dims].into_boxed_slice());
        }
        if let Some(seg) = self.segments.last_mut() {
            seg[offset..offset + self.dims].copy_from_slice(v);
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
}
