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

// SAFETY: the handle is a pointer into shared hugepage memory; moving it
// between threads is fine. Enqueue and dequeue take `&mut self`, so one
// handle is never used by two threads at once, which single-producer/
// single-consumer rings require (each side of such a ring must hold only
// one handle).
unsafe impl Send for Ring {}
// SAFETY: `&Ring` only reads counters.
unsafe impl Sync for Ring {}

impl Ring {
    /// Creates a ring of `size` slots (a power of two; usable size - 1) on
    /// NUMA `socket` (-1 for any).
    pub fn create(eal: &Eal, name: &str, size: u32, socket: i32) -> Result<Self, DpdkError> {
        Self::create_with_flags(eal, name, size, socket, 0)
    }

    /// Creates a single-producer/single-consumer ring: cheaper, and safe
    /// only when one thread enqueues and one thread dequeues.
    pub fn create_spsc(eal: &Eal, name: &str, size: u32, socket: i32) -> Result<Self, DpdkError> {
        Self::create_with_flags(
            eal,
            name,
            size,
            socket,
            dpdk_sys::RING_F_SP_ENQ | dpdk_sys::RING_F_SC_DEQ,
        )
    }

    fn create_with_flags(
        _eal: &Eal,
        name: &str,
        size: u32,
        socket: i32,
        flags: u32,
    ) -> Result<Self, DpdkError> {
        let c_name = CString::new(name)
            .map_err(|_| DpdkError::from_errno(format!("ring name {name:?}"), libc::EINVAL))?;
        // SAFETY: valid C string; flags are RING_F_* bits.
        let raw = unsafe { dpdk_sys::rte_ring_create(c_name.as_ptr(), size, socket, flags) };
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
    pub fn enqueue(&mut self, batch: &mut MbufBatch) -> usize {
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
    pub fn dequeue(&mut self, batch: &mut MbufBatch) -> usize {
        self.dequeue_max(batch, crate::mbuf::BURST_SIZE)
    }

    /// As [`Ring::dequeue`], taking at most `max` entries.
    pub fn dequeue_max(&mut self, batch: &mut MbufBatch, max: usize) -> usize {
        let (slots, room) = batch.spare_raw();
        let room = room.min(max);
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
