//! EAL initialisation: once per process, from an argument list.

use std::{
    ffi::{c_char, c_int, CString},
    sync::Mutex,
};

use crate::DpdkError;

/// Proof that the EAL is initialised in this process.
///
/// DPDK allows one `rte_eal_init` per process and never a second one, even
/// after a failure, so [`Eal::init`] returns the same handle to every caller
/// after the first success and refuses after a failure.
#[derive(Debug, Clone, Copy)]
pub struct Eal {
    _private: (),
}

/// Whether this process is the DPDK primary or a secondary attached to one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessType {
    /// Owns hugepage memory and devices.
    Primary,
    /// Attached to a primary's memory (`--proc-type=secondary`).
    Secondary,
}

enum State {
    Uninit,
    Ready(Vec<String>),
    Failed(DpdkError),
}

static STATE: Mutex<State> = Mutex::new(State::Uninit);

impl Eal {
    /// Initialises the EAL with `args` (the first is the program name, as argv).
    ///
    /// A second call returns the existing handle if the arguments are the same
    /// and an error if they differ or the first call failed.
    pub fn init<S: AsRef<str>>(args: &[S]) -> Result<Eal, DpdkError> {
        let args: Vec<String> = args.iter().map(|a| a.as_ref().to_owned()).collect();
        let mut state = STATE.lock().unwrap_or_else(|e| e.into_inner());
        match &*state {
            State::Ready(prev) if *prev == args => return Ok(Eal { _private: () }),
            State::Ready(prev) => {
                return Err(DpdkError::from_errno(
                    format!(
                        "EAL already initialised with {prev:?}, cannot re-initialise with {args:?}"
                    ),
                    libc::EALREADY,
                ))
            }
            State::Failed(e) => return Err(e.clone()),
            State::Uninit => {}
        }
        let c_args = args
            .iter()
            .map(|a| CString::new(a.as_str()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| DpdkError::from_errno("EAL argument contains a NUL byte", libc::EINVAL))?;
        // rte_eal_init may permute argv and keeps pointers into it for the
        // process's lifetime: hand it memory that is never freed.
        let c_args: &'static [CString] = Box::leak(c_args.into_boxed_slice());
        let argv: &'static mut [*mut c_char] = Box::leak(
            c_args
                .iter()
                .map(|a| a.as_ptr().cast_mut())
                .chain(std::iter::once(std::ptr::null_mut()))
                .collect::<Vec<_>>()
                .into_boxed_slice(),
        );
        let argc = c_int::try_from(c_args.len())
            .map_err(|_| DpdkError::from_errno("too many EAL arguments", libc::E2BIG))?;
        // SAFETY: argv holds argc valid NUL-terminated strings followed by NULL,
        // all leaked so they outlive the EAL; the mutex serialises init.
        let ret = unsafe { dpdk_sys::rte_eal_init(argc, argv.as_mut_ptr()) };
        if ret < 0 {
            let err = DpdkError::last(format!("initialising the DPDK EAL with {args:?}"));
            *state = State::Failed(err.clone());
            return Err(err);
        }
        tracing::info!(?args, "DPDK EAL initialised");
        *state = State::Ready(args);
        Ok(Eal { _private: () })
    }

    /// The handle, if the EAL was initialised in this process.
    pub fn current() -> Option<Eal> {
        Self::is_initialised().then_some(Eal { _private: () })
    }

    /// Whether the EAL was initialised in this process.
    pub fn is_initialised() -> bool {
        matches!(
            *STATE.lock().unwrap_or_else(|e| e.into_inner()),
            State::Ready(_)
        )
    }

    /// The process type the EAL settled on.
    pub fn process_type(&self) -> ProcessType {
        // SAFETY: the EAL is initialised (self exists).
        match unsafe { dpdk_sys::rte_eal_process_type() } {
            dpdk_sys::rte_proc_type_t_RTE_PROC_SECONDARY => ProcessType::Secondary,
            _ => ProcessType::Primary,
        }
    }

    /// Number of lcores the EAL was given.
    pub fn lcore_count(&self) -> u32 {
        // SAFETY: the EAL is initialised.
        unsafe { dpdk_sys::rte_lcore_count() }
    }

    /// The NUMA socket of the calling thread (0 when unknown).
    pub fn socket_id(&self) -> i32 {
        // SAFETY: the EAL is initialised.
        let id = unsafe { dpdk_sys::rte_socket_id() };
        i32::try_from(id).unwrap_or(0)
    }
}

/// Registers the calling (non-EAL) thread with DPDK so it gets an lcore id
/// and mempool per-lcore caches apply to it. Returns false when DPDK has no
/// lcore slot left; the thread then still works, without caches.
pub fn register_thread(_eal: &Eal) -> bool {
    // SAFETY: the EAL is initialised; registering the calling thread is
    // allowed from any thread.
    unsafe { dpdk_sys::shim_rte_thread_register() == 0 }
}
