//! Fuzzes lstack's whole receive path minus DPDK: `classify`, then smoltcp's
//! `Interface::poll_ingress_single` with the socket shard the engine would
//! pick, the application reading and writing, `poll_egress` and `poll_at`,
//! over several frames and a fake clock. A frame that `classify` lets
//! through must not make smoltcp panic, and what smoltcp sends must be well
//! formed. The input layout and the invariants are in `lstack_fuzz::ingest`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(
    init: lstack_fuzz::ingest::keep_heap(),
    |data: &[u8]| {
        lstack_fuzz::ingest::run(data);
    }
);
