//! The error every fallible DPDK call returns.

use std::ffi::CStr;

/// A DPDK call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{op}: {message} (errno {errno})")]
pub struct DpdkError {
    /// What was being attempted, e.g. `configuring port 0 with 1 rx / 1 tx queues`.
    pub op: String,
    /// The positive errno value DPDK reported.
    pub errno: i32,
    /// DPDK's `rte_strerror` text for `errno`.
    pub message: String,
}

impl DpdkError {
    /// Builds an error from an explicit errno (a negative DPDK return, negated).
    pub fn from_errno(op: impl Into<String>, errno: i32) -> Self {
        let errno = errno.abs();
        // SAFETY: rte_strerror accepts any value and returns a pointer to a
        // static or thread-local NUL-terminated string.
        let message = unsafe { CStr::from_ptr(dpdk_sys::rte_strerror(errno)) }
            .to_string_lossy()
            .into_owned();
        Self {
            op: op.into(),
            errno,
            message,
        }
    }

    /// Builds an error from the calling thread's `rte_errno`.
    pub fn last(op: impl Into<String>) -> Self {
        // SAFETY: reads a thread-local integer.
        let errno = unsafe { dpdk_sys::shim_rte_errno() };
        Self::from_errno(op, errno)
    }

    /// Turns a DPDK return code (negative errno on failure) into a result.
    pub(crate) fn check(ret: i32, op: impl FnOnce() -> String) -> Result<i32, Self> {
        if ret < 0 {
            Err(Self::from_errno(op(), -ret))
        } else {
            Ok(ret)
        }
    }
}
