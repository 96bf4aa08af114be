//! The stack threads do not allocate on the data path: once connections are
//! up, moving megabytes through them costs no heap allocation on any stack
//! thread. Checked with a counting global allocator (`no_alloc_body`;
//! `no_alloc_rtc.rs` checks run to completion). Needs root.

#[path = "no_alloc_body/body.rs"]
mod body;
mod common;

#[test]
fn data_path_does_not_allocate() {
    body::run(gazelle_config::StackThreadMode::RunToWakeup);
}
