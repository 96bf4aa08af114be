//! Which process holds an mbuf of a pool shared between processes.
//!
//! ltran (the primary) and every lstack (secondaries) share the receive and
//! transmit pools. When an lstack dies, the mbufs it held would leak for the
//! life of the pools. Each mbuf therefore carries a 32-bit owner tag in a
//! dynamic field: the process that takes an mbuf out of a pool writes its own
//! tag, ltran writes the receiving instance's tag when it queues a frame to
//! it, and every free (and ltran's transmit) clears it. After an instance is
//! known dead and its rings are drained, the mbufs still tagged with its tag
//! are exactly the ones it held, and [`reclaim`] puts them back.
//!
//! Tagging is off (and costs one relaxed load per alloc/free) until
//! [`enable`] is called.

use std::{
    ffi::CString,
    ptr::NonNull,
    sync::atomic::{AtomicI32, AtomicU32, Ordering},
};

use crate::{DpdkError, Eal, Mbuf, Mempool};

/// Name of the dynamic mbuf field.
pub const FIELD_NAME: &str = "gazelle_owner";

static OFFSET: AtomicI32 = AtomicI32::new(-1);
static SELF_TAG: AtomicU32 = AtomicU32::new(0);

/// Turns tagging on in this process: the primary registers the field, a
/// secondary finds it. `self_tag` is written into every mbuf this process
/// allocates (0 for ltran, which tags explicitly).
pub fn enable(eal: &Eal, self_tag: u32) -> Result<(), DpdkError> {
    let name = CString::new(FIELD_NAME).expect("no NUL in the field name");
    // SAFETY: valid C string; the EAL is initialised.
    let off = unsafe {
        match eal.process_type() {
            crate::eal::ProcessType::Primary => {
                dpdk_sys::shim_mbuf_dynfield_register(name.as_ptr(), 4)
            }
            crate::eal::ProcessType::Secondary => {
                dpdk_sys::shim_mbuf_dynfield_lookup(name.as_ptr())
            }
        }
    };
    if off < 0 {
        return Err(DpdkError::last(format!(
            "registering the mbuf field {FIELD_NAME:?}"
        )));
    }
    SELF_TAG.store(self_tag, Ordering::Relaxed);
    OFFSET.store(off, Ordering::Release);
    Ok(())
}

/// Whether tagging is on.
pub fn enabled() -> bool {
    OFFSET.load(Ordering::Relaxed) >= 0
}

#[inline]
fn field(m: *mut dpdk_sys::rte_mbuf) -> Option<*mut u32> {
    let off = OFFSET.load(Ordering::Relaxed);
    if off < 0 {
        return None;
    }
    // SAFETY: the offset came from DPDK's dynfield registry and lies inside
    // struct rte_mbuf, 4-byte aligned.
    Some(unsafe { m.cast::<u8>().add(off as usize).cast::<u32>() })
}

/// Writes `tag` into a raw mbuf (no-op when tagging is off).
///
/// # Safety
/// `m` must point to a live mbuf.
#[inline]
pub(crate) unsafe fn set_raw(m: *mut dpdk_sys::rte_mbuf, tag: u32) {
    if let Some(p) = field(m) {
        // SAFETY: caller guarantees a live mbuf; the field is ours.
        unsafe { p.write(tag) };
    }
}

/// Tags a fresh allocation with this process's own tag.
///
/// # Safety
/// `m` must point to a live mbuf.
#[inline]
pub(crate) unsafe fn mark_allocated(m: *mut dpdk_sys::rte_mbuf) {
    if enabled() {
        // SAFETY: forwarded.
        unsafe { set_raw(m, SELF_TAG.load(Ordering::Relaxed)) };
    }
}

/// Sets the owner tag of `m`.
#[inline]
pub fn set(m: &mut Mbuf, tag: u32) {
    // SAFETY: m is a live mbuf we own.
    unsafe { set_raw(m.as_raw(), tag) }
}

/// The owner tag of `m` (0 when tagging is off).
#[inline]
pub fn get(m: &Mbuf) -> u32 {
    match field(m.as_raw()) {
        // SAFETY: live mbuf, field inside it.
        Some(p) => unsafe { p.read() },
        None => 0,
    }
}

struct ReclaimArgs {
    tag: u32,
    found: Vec<NonNull<dpdk_sys::rte_mbuf>>,
}

unsafe extern "C" fn collect(m: *mut dpdk_sys::rte_mbuf, arg: *mut std::ffi::c_void) {
    // SAFETY: arg is the &mut ReclaimArgs passed to the iterator below.
    let args = unsafe { &mut *arg.cast::<ReclaimArgs>() };
    if let (Some(p), Some(m)) = (field(m), NonNull::new(m)) {
        // SAFETY: every pool object is a (possibly free) mbuf.
        if unsafe { p.read() } == args.tag {
            args.found.push(m);
        }
    }
}

/// Puts back into `pool` every mbuf still tagged `tag`, and returns how many.
///
/// Call only once the owner is dead and every ring it used has been
/// drained; the mbufs then have no holder and nobody else writes their tag.
/// Not for the hot path: it walks the whole pool.
pub fn reclaim(pool: &Mempool, tag: u32) -> usize {
    if tag == 0 || !enabled() {
        return 0;
    }
    let mut args = ReclaimArgs {
        tag,
        found: Vec::new(),
    };
    // SAFETY: the pool is live; `collect` only reads each object's tag.
    unsafe {
        dpdk_sys::shim_rte_mempool_mbuf_iter(
            pool.as_ptr(),
            Some(collect),
            (&mut args as *mut ReclaimArgs).cast(),
        );
    }
    for m in &args.found {
        // SAFETY: the mbuf belonged to the dead owner: nobody holds it.
        unsafe {
            set_raw(m.as_ptr(), 0);
            dpdk_sys::shim_rte_mbuf_reclaim(m.as_ptr());
        }
    }
    args.found.len()
}
