//! Buffers whose address is aligned for direct I/O (O_DIRECT wants the buffer, the file offset
//! and the length on the device's logical block size), handed to the disk as `Bytes` without a
//! copy.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

/// The block size direct writes are laid out on: 4 KiB covers 512-byte and 4 KiB devices.
pub const DIRECT_BLOCK: u64 = 4096;

/// `value` rounded down to a multiple of `align` (a power of two).
pub fn align_down(value: u64, align: u64) -> u64 {
    assert!(align.is_power_of_two());
    value & !(align - 1)
}

/// `value` rounded up to a multiple of `align` (a power of two).
pub fn align_up(value: u64, align: u64) -> u64 {
    assert!(align.is_power_of_two());
    value.checked_add(align - 1).expect("no overflow") & !(align - 1)
}

/// A zeroed heap buffer of a fixed length whose first byte sits on `DIRECT_BLOCK`.
pub struct AlignedBuffer {
    pointer: *mut u8,
    len: usize,
}

impl AlignedBuffer {
    /// A zeroed buffer of `len` bytes (`len` may be 0).
    pub fn zeroed(len: usize) -> AlignedBuffer {
        let layout = Self::layout(len);
        // SAFETY: the layout has a non-zero size (at least one block) and a valid alignment.
        let pointer = unsafe { alloc_zeroed(layout) };
        if pointer.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        AlignedBuffer { pointer, len }
    }

    fn layout(len: usize) -> Layout {
        Layout::from_size_align(len.max(DIRECT_BLOCK as usize), DIRECT_BLOCK as usize)
            .expect("a valid layout")
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: `pointer` holds `len` initialised (zeroed) bytes owned by `self`.
        unsafe { std::slice::from_raw_parts_mut(self.pointer, self.len) }
    }

    /// The buffer as `Bytes` that keep the allocation (and its alignment) alive.
    pub fn freeze(self) -> Bytes {
        let bytes = Bytes::from_owner(self);
        assert!((bytes.as_ptr() as u64).is_multiple_of(DIRECT_BLOCK) || bytes.is_empty());
        bytes
    }
}

impl AsRef<[u8]> for AlignedBuffer {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: `pointer` holds `len` initialised (zeroed) bytes owned by `self`.
        unsafe { std::slice::from_raw_parts(self.pointer, self.len) }
    }
}

impl Drop for AlignedBuffer {
    fn drop(&mut self) {
        // SAFETY: allocated in `zeroed` with this same layout.
        unsafe { dealloc(self.pointer, Self::layout(self.len)) }
    }
}

// SAFETY: the buffer owns its allocation exclusively; nothing else points into it.
unsafe impl Send for AlignedBuffer {}
// SAFETY: shared access only reads.
unsafe impl Sync for AlignedBuffer {}

/// Buffers kept for reuse: a fresh large buffer costs a page fault per 4 KiB on first touch,
/// several times the copy into it. A buffer comes back when the last `Bytes` of it is dropped
/// (the write completed); at most `BUFFERS_KEPT` are kept, none over `BUFFER_KEPT_BYTES_MAX`.
#[derive(Clone, Default)]
pub struct BufferPool {
    kept: Arc<Mutex<Vec<AlignedBuffer>>>,
}

const BUFFERS_KEPT: usize = 2;
const BUFFER_KEPT_BYTES_MAX: usize = 16 << 20;

impl BufferPool {
    /// A buffer of `len` bytes, reused when a kept one is large enough. Its contents are
    /// whatever was there: the caller writes every byte it hands on.
    pub fn take(&self, len: usize) -> PooledBuffer {
        let reused = {
            let mut kept = self.kept.lock().expect("not poisoned");
            let fitting = kept.iter().position(|b| b.len() >= len);
            fitting.map(|i| kept.swap_remove(i))
        };
        let buffer = reused.unwrap_or_else(|| AlignedBuffer::zeroed(len));
        PooledBuffer {
            buffer: Some(buffer),
            len,
            pool: self.clone(),
        }
    }
}

/// A buffer of a `BufferPool`, `len` bytes long (its allocation may be larger).
pub struct PooledBuffer {
    buffer: Option<AlignedBuffer>,
    len: usize,
    pool: BufferPool,
}

impl PooledBuffer {
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        let len = self.len;
        &mut self
            .buffer
            .as_mut()
            .expect("held until dropped")
            .as_mut_slice()[..len]
    }

    /// The buffer as `Bytes`; it returns to its pool when the last of them is dropped.
    pub fn freeze(self) -> Bytes {
        let len = self.len;
        let bytes = Bytes::from_owner(self);
        assert_eq!(bytes.len(), len);
        assert!((bytes.as_ptr() as u64).is_multiple_of(DIRECT_BLOCK) || bytes.is_empty());
        bytes
    }
}

impl AsRef<[u8]> for PooledBuffer {
    fn as_ref(&self) -> &[u8] {
        &self.buffer.as_ref().expect("held until dropped").as_ref()[..self.len]
    }
}

impl Drop for PooledBuffer {
    fn drop(&mut self) {
        let buffer = self.buffer.take().expect("dropped once");
        let mut kept = self.pool.kept.lock().expect("not poisoned");
        if kept.len() < BUFFERS_KEPT && buffer.len() <= BUFFER_KEPT_BYTES_MAX {
            kept.push(buffer);
        }
    }
}

/// Whether `bytes` written at `offset` can go to the device directly.
pub fn is_direct_aligned(offset: u64, bytes: &[u8]) -> bool {
    !bytes.is_empty()
        && offset.is_multiple_of(DIRECT_BLOCK)
        && (bytes.len() as u64).is_multiple_of(DIRECT_BLOCK)
        && (bytes.as_ptr() as u64).is_multiple_of(DIRECT_BLOCK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_and_aligns() {
        assert_eq!(align_down(5000, 4096), 4096);
        assert_eq!(align_up(5000, 4096), 8192);
        assert_eq!(align_up(8192, 4096), 8192);
        assert_eq!(align_up(0, 4096), 0);
        assert_eq!(align_up(7, 1), 7);
        let mut buffer = AlignedBuffer::zeroed(8192);
        buffer.as_mut_slice()[100] = 7;
        let bytes = buffer.freeze();
        assert!(is_direct_aligned(4096, &bytes));
        assert!(!is_direct_aligned(100, &bytes));
        assert!(!is_direct_aligned(0, &bytes[..100]));
        assert_eq!(bytes[100], 7);
        assert_eq!(AlignedBuffer::zeroed(0).freeze().len(), 0);
    }

    #[test]
    fn a_pool_hands_back_a_buffer_once_its_bytes_are_dropped() {
        let pool = BufferPool::default();
        let mut first = pool.take(8192);
        first.as_mut_slice()[0] = 9;
        let bytes = first.freeze();
        let address = bytes.as_ptr();
        // Still in use: a second take allocates.
        let second = pool.take(4096);
        assert_ne!(second.as_ref().as_ptr(), address);
        drop(second);
        drop(bytes);
        // Both came back; the larger one fits a request the smaller cannot.
        let mut again = pool.take(8000);
        assert_eq!(again.as_mut_slice().len(), 8000);
        assert_eq!(again.as_ref().as_ptr(), address);
        assert_eq!(again.as_ref()[0], 9, "contents are not cleared");
    }
}
