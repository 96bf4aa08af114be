//! Owned packet buffers and fixed-size bursts of them.

use std::ptr::NonNull;

use dpdk_sys::rte_mbuf;

/// Largest burst moved in one rx/tx/ring call.
pub const BURST_SIZE: usize = 32;

/// One packet buffer, owned: dropping it returns it to its pool.
///
/// Only single-segment mbufs are produced by this crate's ports (no scatter
/// rx); [`Mbuf::data`] covers the first segment.
#[derive(Debug)]
pub struct Mbuf {
    raw: NonNull<rte_mbuf>,
}

// SAFETY: an Mbuf is an exclusively owned buffer; DPDK lets any thread free or
// use it.
unsafe impl Send for Mbuf {}

impl Mbuf {
    /// Takes ownership of a raw mbuf.
    ///
    /// # Safety
    /// `raw` must be a valid mbuf that nothing else will use or free.
    #[inline]
    pub unsafe fn from_raw(raw: NonNull<rte_mbuf>) -> Self {
        Self { raw }
    }

    /// The raw pointer, still owned by `self`.
    #[inline]
    pub(crate) fn as_raw(&self) -> *mut rte_mbuf {
        self.raw.as_ptr()
    }

    /// Gives up ownership without freeing.
    #[inline]
    pub fn into_raw(self) -> NonNull<rte_mbuf> {
        let raw = self.raw;
        std::mem::forget(self);
        raw
    }

    /// Bytes of packet data in the first segment.
    #[inline]
    pub fn len(&self) -> usize {
        // SAFETY: raw is a valid mbuf we own.
        usize::from(unsafe { dpdk_sys::shim_rte_pktmbuf_data_len(self.raw.as_ptr()) })
    }

    /// Whether the mbuf holds no data.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Total packet length over all segments.
    #[inline]
    pub fn pkt_len(&self) -> usize {
        // SAFETY: raw is a valid mbuf we own.
        unsafe { dpdk_sys::shim_rte_pktmbuf_pkt_len(self.raw.as_ptr()) as usize }
    }

    /// Number of segments in the chain.
    #[inline]
    pub fn segments(&self) -> u16 {
        // SAFETY: raw is a valid mbuf we own.
        unsafe { dpdk_sys::shim_rte_pktmbuf_nb_segs(self.raw.as_ptr()) }
    }

    /// The packet data of the first segment.
    #[inline]
    pub fn data(&self) -> &[u8] {
        // SAFETY: mtod points at data_len initialised bytes inside the mbuf's
        // data room, which lives as long as the mbuf and is ours alone.
        unsafe {
            let ptr = dpdk_sys::shim_rte_pktmbuf_mtod(self.raw.as_ptr()).cast::<u8>();
            std::slice::from_raw_parts(ptr, self.len())
        }
    }

    /// The packet data of the first segment, writable.
    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `data`, and `&mut self` makes the access exclusive.
        unsafe {
            let ptr = dpdk_sys::shim_rte_pktmbuf_mtod(self.raw.as_ptr()).cast::<u8>();
            std::slice::from_raw_parts_mut(ptr, self.len())
        }
    }

    /// Grows the data by `len` bytes at the tail and returns them (zeroed is
    /// not guaranteed), or `None` when the tailroom is too small.
    #[inline]
    pub fn append(&mut self, len: usize) -> Option<&mut [u8]> {
        let len16 = u16::try_from(len).ok()?;
        // SAFETY: raw is a valid mbuf we own.
        let ptr = unsafe { dpdk_sys::shim_rte_pktmbuf_append(self.raw.as_ptr(), len16) };
        if ptr.is_null() {
            return None;
        }
        // SAFETY: append returned `len` bytes of tailroom now counted as data.
        Some(unsafe { std::slice::from_raw_parts_mut(ptr.cast::<u8>(), len) })
    }

    /// Removes `len` bytes from the tail.
    #[inline]
    pub fn trim(&mut self, len: usize) -> bool {
        let Ok(len) = u16::try_from(len) else {
            return false;
        };
        // SAFETY: raw is a valid mbuf we own.
        unsafe { dpdk_sys::shim_rte_pktmbuf_trim(self.raw.as_ptr(), len) == 0 }
    }

    /// Bytes that can still be appended.
    #[inline]
    pub fn tailroom(&self) -> usize {
        // SAFETY: raw is a valid mbuf we own.
        usize::from(unsafe { dpdk_sys::shim_rte_pktmbuf_tailroom(self.raw.as_ptr()) })
    }

    /// Bytes free in front of the data, for [`Mbuf::prepend`].
    #[inline]
    pub fn headroom(&self) -> usize {
        // SAFETY: raw is a valid mbuf we own.
        usize::from(unsafe { dpdk_sys::shim_rte_pktmbuf_headroom(self.raw.as_ptr()) })
    }

    /// Grows the data by `len` bytes at the front and returns all of it, the
    /// `len` new bytes first (not zeroed), or `None` when the headroom is
    /// too small. Nothing is copied: the start of the data moves.
    #[inline]
    pub fn prepend(&mut self, len: usize) -> Option<&mut [u8]> {
        let len16 = u16::try_from(len).ok()?;
        // SAFETY: raw is a valid mbuf we own.
        let ptr = unsafe { dpdk_sys::shim_rte_pktmbuf_prepend(self.raw.as_ptr(), len16) };
        if ptr.is_null() {
            return None;
        }
        Some(self.data_mut())
    }

    /// Removes `len` bytes from the front of the data (`rte_pktmbuf_adj`):
    /// the start of the data moves, nothing is copied. False, and nothing
    /// changes, when the first segment holds fewer than `len` bytes.
    #[inline]
    pub fn adj(&mut self, len: usize) -> bool {
        let Ok(len) = u16::try_from(len) else {
            return false;
        };
        // SAFETY: raw is a valid mbuf we own; adj checks len against the data.
        let ptr = unsafe { dpdk_sys::shim_rte_pktmbuf_adj(self.raw.as_ptr(), len) };
        !ptr.is_null()
    }

    /// The 802.1Q tag control information (PCP, DEI and VLAN id) the NIC
    /// took out of the received frame's data (`RTE_MBUF_F_RX_VLAN_STRIPPED`
    /// with the port's VLAN strip offload), if it did. A tag still in the
    /// data is not reported here.
    #[inline]
    pub fn rx_vlan_stripped(&self) -> Option<u16> {
        use dpdk_sys::flags::{MBUF_F_RX_VLAN, MBUF_F_RX_VLAN_STRIPPED};
        let both = MBUF_F_RX_VLAN | MBUF_F_RX_VLAN_STRIPPED;
        if self.ol_flags() & both != both {
            return None;
        }
        // SAFETY: raw is a valid mbuf we own.
        Some(unsafe { dpdk_sys::shim_rte_mbuf_vlan_tci(self.raw.as_ptr()) })
    }

    /// Asks the NIC to insert an 802.1Q tag with control information `tci`
    /// when it sends the frame (`RTE_MBUF_F_TX_VLAN`). Only for a port with
    /// the VLAN insert offload enabled ([`crate::PortInfo::tx_vlan_insert`]);
    /// another sends the frame untagged.
    #[inline]
    pub fn request_vlan_insert(&mut self, tci: u16) {
        // SAFETY: raw is a valid mbuf we own.
        unsafe { dpdk_sys::shim_rte_mbuf_set_tx_vlan(self.raw.as_ptr(), tci) }
    }

    /// The offload flags (`ol_flags`) the driver set on receive.
    #[inline]
    pub fn ol_flags(&self) -> u64 {
        // SAFETY: raw is a valid mbuf we own.
        unsafe { dpdk_sys::shim_rte_mbuf_ol_flags(self.raw.as_ptr()) }
    }

    /// The RSS hash, if the driver computed one.
    #[inline]
    pub fn rss_hash(&self) -> Option<u32> {
        if self.ol_flags() & dpdk_sys::flags::MBUF_F_RX_RSS_HASH == 0 {
            return None;
        }
        // SAFETY: raw is a valid mbuf we own.
        Some(unsafe { dpdk_sys::shim_rte_mbuf_rss_hash(self.raw.as_ptr()) })
    }

    /// Requests transmit checksum offloads: `flags` are `MBUF_F_TX_*` bits,
    /// `l2_len`/`l3_len` the header lengths the NIC needs to find L3 and L4.
    #[inline]
    pub fn set_tx_offload(&mut self, flags: u64, l2_len: u16, l3_len: u16) {
        // SAFETY: raw is a valid mbuf we own.
        unsafe { dpdk_sys::shim_rte_mbuf_set_tx_offload(self.raw.as_ptr(), flags, l2_len, l3_len) }
    }
}

impl Drop for Mbuf {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: we own the mbuf; it is not used after this.
        unsafe {
            crate::owner::set_raw(self.raw.as_ptr(), 0);
            dpdk_sys::shim_rte_pktmbuf_free(self.raw.as_ptr())
        }
    }
}

/// Up to [`BURST_SIZE`] owned mbufs in a fixed array: the unit of rx, tx and
/// ring transfers. It never allocates; dropping it frees what it still holds.
#[derive(Debug)]
pub struct MbufBatch {
    slots: [*mut rte_mbuf; BURST_SIZE],
    len: usize,
}

// SAFETY: the batch exclusively owns the mbufs it points to (see Mbuf).
unsafe impl Send for MbufBatch {}

impl Default for MbufBatch {
    fn default() -> Self {
        Self::new()
    }
}

impl MbufBatch {
    /// An empty batch.
    pub const fn new() -> Self {
        Self {
            slots: [std::ptr::null_mut(); BURST_SIZE],
            len: 0,
        }
    }

    /// Mbufs held.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the batch is empty.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether no more mbufs fit.
    #[inline]
    pub fn is_full(&self) -> bool {
        self.len == BURST_SIZE
    }

    /// Adds an mbuf, or gives it back when the batch is full.
    #[inline]
    pub fn push(&mut self, m: Mbuf) -> Result<(), Mbuf> {
        if self.is_full() {
            return Err(m);
        }
        self.slots[self.len] = m.into_raw().as_ptr();
        self.len += 1;
        Ok(())
    }

    /// Takes the mbufs out in order, leaving the batch empty. Mbufs the
    /// iterator does not yield are freed when it is dropped.
    #[inline]
    pub fn drain(&mut self) -> Drain<'_> {
        let end = std::mem::replace(&mut self.len, 0);
        Drain {
            slots: &self.slots[..end],
            next: 0,
        }
    }

    /// Borrow of the i-th mbuf.
    #[inline]
    pub fn get(&self, i: usize) -> Option<&[u8]> {
        if i >= self.len {
            return None;
        }
        // SAFETY: slot i < len holds an owned mbuf; the slice lives as long as
        // the borrow of the batch.
        unsafe {
            let m = self.slots[i];
            let ptr = dpdk_sys::shim_rte_pktmbuf_mtod(m).cast::<u8>();
            let len = usize::from(dpdk_sys::shim_rte_pktmbuf_data_len(m));
            Some(std::slice::from_raw_parts(ptr, len))
        }
    }

    /// Raw slots for a burst call to fill: returns the free part.
    #[inline]
    pub(crate) fn spare_raw(&mut self) -> (*mut *mut rte_mbuf, usize) {
        // SAFETY: len <= BURST_SIZE, so the offset stays inside the array.
        (
            unsafe { self.slots.as_mut_ptr().add(self.len) },
            BURST_SIZE - self.len,
        )
    }

    /// Marks `n` more slots filled after a burst call wrote them.
    #[inline]
    pub(crate) fn filled(&mut self, n: usize) {
        debug_assert!(self.len + n <= BURST_SIZE);
        self.len += n;
    }

    /// Raw pointer to the held mbufs, for a burst call that consumes them.
    #[inline]
    pub(crate) fn held_raw(&mut self) -> (*mut *mut rte_mbuf, usize) {
        (self.slots.as_mut_ptr(), self.len)
    }

    /// Forgets the first `n` mbufs (a burst call took them) and shifts the rest
    /// to the front.
    #[inline]
    pub(crate) fn consumed(&mut self, n: usize) {
        debug_assert!(n <= self.len);
        self.slots.copy_within(n..self.len, 0);
        self.len -= n;
    }
}

impl Drop for MbufBatch {
    fn drop(&mut self) {
        if self.len > 0 {
            // SAFETY: slots[..len] are owned mbufs, freed once here.
            unsafe {
                if crate::owner::enabled() {
                    for &m in &self.slots[..self.len] {
                        crate::owner::set_raw(m, 0);
                    }
                }
                dpdk_sys::shim_rte_pktmbuf_free_bulk(self.slots.as_mut_ptr(), self.len as u32)
            }
        }
    }
}

/// Iterator of [`MbufBatch::drain`].
#[derive(Debug)]
pub struct Drain<'a> {
    slots: &'a [*mut rte_mbuf],
    next: usize,
}

impl Iterator for Drain<'_> {
    type Item = Mbuf;

    #[inline]
    fn next(&mut self) -> Option<Mbuf> {
        let p = *self.slots.get(self.next)?;
        self.next += 1;
        // SAFETY: the slots were owned, non-null mbufs of the batch, whose len
        // was reset, so each is yielded (or freed in Drop) exactly once.
        Some(unsafe { Mbuf::from_raw(NonNull::new_unchecked(p)) })
    }
}

impl Drop for Drain<'_> {
    fn drop(&mut self) {
        for _ in self.by_ref() {}
    }
}

/// Pseudo-header checksums for transmit checksum offload: the NIC expects the
/// TCP/UDP checksum field to hold the pseudo-header sum when it is asked to
/// finish the checksum (`MBUF_F_TX_TCP_CKSUM`/`MBUF_F_TX_UDP_CKSUM`).
pub mod offload {
    /// Pseudo-header checksum of the IPv4 header at the start of `ip`, in the
    /// byte order to store into the L4 header; `None` if `ip` is too short.
    #[inline]
    pub fn ipv4_phdr_cksum(ip: &[u8], ol_flags: u64) -> Option<u16> {
        if ip.len() < 20 {
            return None;
        }
        // SAFETY: the function reads the 20-byte IPv4 header, which `ip` holds.
        Some(unsafe { dpdk_sys::shim_rte_ipv4_phdr_cksum(ip.as_ptr().cast(), ol_flags) })
    }

    /// Pseudo-header checksum of the IPv6 header at the start of `ip`; `None`
    /// if `ip` is too short.
    #[inline]
    pub fn ipv6_phdr_cksum(ip: &[u8], ol_flags: u64) -> Option<u16> {
        if ip.len() < 40 {
            return None;
        }
        // SAFETY: the function reads the 40-byte IPv6 header, which `ip` holds.
        Some(unsafe { dpdk_sys::shim_rte_ipv6_phdr_cksum(ip.as_ptr().cast(), ol_flags) })
    }
}
