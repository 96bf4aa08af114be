//! `rte_ring`s carrying mbufs between threads or processes.

use std::{ffi::CString, ptr::NonNull};

use crate::{mbuf::MbufBatch, DpdkError, Eal};

/// A ring of mbufs. Created rings are freed on drop (mbufs still inside are
/// dequeued and freed first); looked-up rings belong to their creator.
#[derive(Debug)]
pub struct Ring {
    raw: NonNull<dpdk_sys::rte_ring>,
    name: String,
    owned: bool,
}

// SAFETY: rte_ring's default mode is multi-producer/multi-consumer safe.
unsafe impl Send for Ring {}
// SAFETY: see Send.
unsafe impl Sync for Ring {}

impl Ring {
    /// Creates a ring of `size` slots (a power of two; usable size - 1) on
    /// NUMA `socket` (-1 for any).
    pub fn create(_eal: &Eal, name: &str, size: u32, socket: i32) -> Result<Self, DpdkError> {
        let c_name = CString::new(name)
            .map_err(|_| DpdkError::from_errno(format!("ring name {name:?}"), libc::EINVAL))?;
        // SAFETY: valid C string; flags 0 = MP/MC.
        let raw = unsafe { dpdk_sys::rte_ring_create(c_name.as_ptr(), size, socket, 0) };
        let raw = NonNull::new(raw)
            .ok_or_else(|| DpdkError::last(format!("creating ring {name:?} of {size} slots")))?;
        Ok(Self {
            raw,
            name: name.to_owned(),
            owned: true,
        })
    }

    /// Finds a ring created by this or another process of the same DPDK prefix.
    pub fn lookup(_eal: &Eal, name: &str) -> Result<Self, DpdkError> {
        let c_name = CString::new(name)
            .map_err(|_| DpdkError::from_errno(format!("ring name {name:?}"), libc::EINVAL))?;
        // SAFETY: valid C string.
        let raw = unsafe { dpdk_sys::rte_ring_lookup(c_name.as_ptr()) };
        let raw = NonNull::new(raw)
            .ok_or_else(|| DpdkError::last(format!("looking up ring {name:?}")))?;
        Ok(Self {
            raw,
            name: name.to_owned(),
            owned: false,
        })
    }

    /// The ring's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Moves as many of `batch`'s mbufs into the ring as fit; returns how many.
    /// The rest stay in the batch.
    #[inline]
    pub fn enqueue(&self, batch: &mut MbufBatch) -> usize {
        let (slots, n) = batch.held_raw();
        // SAFETY: slots[..n] are owned mbufs; the ring takes ownership of the
        // first `done`, which the batch then forgets.
        let done = unsafe {
            dpdk_sys::shim_rte_ring_enqueue_burst(self.raw.as_ptr(), slots.cast(), n as u32)
        };
        batch.consumed(done as usize);
        done as usize
    }

    /// Moves mbufs from the ring into the free slots of `batch`.
    #[inline]
    pub fn dequeue(&self, batch: &mut MbufBatch) -> usize {
        let (slots, room) = batch.spare_raw();
        // SAFETY: slots has `room` free entries; the ring only holds mbufs put
        // there by `enqueue`, whose ownership passes to the batch.
        let n = unsafe {
            dpdk_sys::shim_rte_ring_dequeue_burst(self.raw.as_ptr(), slots.cast(), room as u32)
        };
        batch.filled(n as usize);
        n as usize
    }

    /// Entries in the ring.
    pub fn count(&self) -> u32 {
        // SAFETY: live ring.
        unsafe { dpdk_sys::shim_rte_ring_count(self.raw.as_ptr()) }
    }

    /// Free slots in the ring.
    pub fn free_count(&self) -> u32 {
        // SAFETY: live ring.
        unsafe { dpdk_sys::shim_rte_ring_free_count(self.raw.as_ptr()) }
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        loop {
            // Dropping the batch frees what was dequeued.
            let mut batch = MbufBatch::new();
            if self.dequeue(&mut batch) == 0 {
                break;
            }
        }
        // SAFETY: we created the ring and emptied it.
        unsafe { dpdk_sys::rte_ring_free(self.raw.as_ptr()) };
    }
}
