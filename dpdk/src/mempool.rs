//! Packet-buffer pools.

use std::{ffi::CString, ptr::NonNull};

use crate::{DpdkError, Eal, Mbuf};

/// An `rte_mempool` of packet buffers (`rte_pktmbuf_pool_create`).
///
/// Shared between threads behind an `Arc`; ports keep a reference for their
/// receive queues. Dropping the last reference frees the pool only when no
/// mbuf is out of it; otherwise the pool is left allocated (and said so),
/// because an mbuf outliving its pool would point at freed memory.
#[derive(Debug)]
pub struct Mempool {
    raw: NonNull<dpdk_sys::rte_mempool>,
    name: String,
    owned: bool,
}

// SAFETY: rte_mempool operations are thread-safe (lock-free ring plus per-lcore
// caches); the handle is only a pointer into shared hugepage memory.
unsafe impl Send for Mempool {}
// SAFETY: see Send.
unsafe impl Sync for Mempool {}

/// The mempool driver whose ring uses relaxed tail sync (RTS). With the
/// default `ring_mp_mc`, a producer preempted between claiming its slots
/// and publishing them makes every later producer spin until it runs
/// again; two processes freeing into one pool from the same core then
/// lose a whole time slice each time, and can keep handing that wait back
/// and forth. With RTS the others go on (up to a bounded distance) and the
/// last one to finish publishes for all.
pub const OPS_RTS: &str = "ring_mt_rts";

/// Data room of one mbuf: 2 KiB of payload plus DPDK's headroom.
pub const DEFAULT_DATA_ROOM: u16 = 2048 + 128;

impl Mempool {
    /// Creates a pool of `count` mbufs with a per-lcore cache of `cache` and
    /// `data_room` bytes each, on NUMA `socket` (-1 for any), with DPDK's
    /// default mempool driver (`ring_mp_mc`).
    pub fn create(
        eal: &Eal,
        name: &str,
        count: u32,
        cache: u32,
        data_room: u16,
        socket: i32,
    ) -> Result<Self, DpdkError> {
        Self::create_with_ops(eal, name, count, cache, data_room, socket, None)
    }

    /// As [`Self::create`], with the mempool driver named `ops` (for
    /// instance [`OPS_RTS`]); `None` is DPDK's default.
    pub fn create_with_ops(
        _eal: &Eal,
        name: &str,
        count: u32,
        cache: u32,
        data_room: u16,
        socket: i32,
        ops: Option<&str>,
    ) -> Result<Self, DpdkError> {
        let c_name = CString::new(name)
            .map_err(|_| DpdkError::from_errno(format!("mempool name {name:?}"), libc::EINVAL))?;
        let c_ops = ops
            .map(CString::new)
            .transpose()
            .map_err(|_| DpdkError::from_errno(format!("mempool ops {ops:?}"), libc::EINVAL))?;
        // SAFETY: c_name (and c_ops, when given) are valid C strings; the EAL
        // is initialised.
        let raw = unsafe {
            match &c_ops {
                Some(o) => dpdk_sys::rte_pktmbuf_pool_create_by_ops(
                    c_name.as_ptr(),
                    count,
                    cache,
                    0,
                    data_room,
                    socket,
                    o.as_ptr(),
                ),
                None => dpdk_sys::rte_pktmbuf_pool_create(
                    c_name.as_ptr(),
                    count,
                    cache,
                    0,
                    data_room,
                    socket,
                ),
            }
        };
        let raw = NonNull::new(raw).ok_or_else(|| {
            DpdkError::last(format!(
                "creating mempool {name:?} of {count} mbufs x {data_room} B (cache {cache}, socket {socket}, ops {})",
                ops.unwrap_or("default")
            ))
        })?;
        Ok(Self {
            raw,
            name: name.to_owned(),
            owned: true,
        })
    }

    /// Finds a pool created by this or the primary process.
    pub fn lookup(_eal: &Eal, name: &str) -> Result<Self, DpdkError> {
        let c_name = CString::new(name)
            .map_err(|_| DpdkError::from_errno(format!("mempool name {name:?}"), libc::EINVAL))?;
        // SAFETY: c_name is a valid C string.
        let raw = unsafe { dpdk_sys::rte_mempool_lookup(c_name.as_ptr()) };
        let raw = NonNull::new(raw)
            .ok_or_else(|| DpdkError::last(format!("looking up mempool {name:?}")))?;
        Ok(Self {
            raw,
            name: name.to_owned(),
            owned: false,
        })
    }

    /// The pool's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Mbufs currently free (in the pool or its caches).
    pub fn available(&self) -> u32 {
        // SAFETY: raw is a live pool.
        unsafe { dpdk_sys::rte_mempool_avail_count(self.raw.as_ptr()) }
    }

    /// Mbufs currently handed out.
    pub fn in_use(&self) -> u32 {
        // SAFETY: raw is a live pool.
        unsafe { dpdk_sys::rte_mempool_in_use_count(self.raw.as_ptr()) }
    }

    /// Takes one mbuf, or `None` when the pool is empty.
    #[inline]
    pub fn alloc(&self) -> Option<Mbuf> {
        // SAFETY: raw is a live pktmbuf pool.
        let m = unsafe { dpdk_sys::shim_rte_pktmbuf_alloc(self.raw.as_ptr()) };
        // SAFETY: a non-null mbuf fresh from the pool is exclusively ours.
        NonNull::new(m).map(|m| unsafe {
            crate::owner::mark_allocated(m.as_ptr());
            Mbuf::from_raw(m)
        })
    }

    pub(crate) fn as_ptr(&self) -> *mut dpdk_sys::rte_mempool {
        self.raw.as_ptr()
    }
}

impl Drop for Mempool {
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        let in_use = self.in_use();
        if in_use != 0 {
            tracing::warn!(pool = %self.name, in_use, "mempool dropped with mbufs outstanding; leaving it allocated");
            return;
        }
        // SAFETY: we created the pool and no mbuf of it is outstanding.
        unsafe { dpdk_sys::rte_mempool_free(self.raw.as_ptr()) };
    }
}
