//! Shared parts of the benchmark and soak commands.
//!
//! - [`cpu`]: CPU time a process (or the whole machine) used over a window,
//!   read from `/proc`: on 2-core test machines the load generator and the
//!   stack share the CPUs, so every measurement says what each side consumed.
//! - [`interrupt`]: Ctrl-C, SIGTERM and SIGHUP as a flag long runs poll.
//! - [`lstack_conf`]: an lstack configuration file for a test topology's
//!   `net_af_packet` port, as `lstack-bench`'s preloaded servers and
//!   `lstack-soak`'s `lstack-echo` read it.

pub mod cpu;
pub mod interrupt;
pub mod lstack_conf;
