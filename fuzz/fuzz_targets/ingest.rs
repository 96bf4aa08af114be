//! Fuzzes lstack's whole receive path minus DPDK: the engine's own per-frame
//! policy (`lstack::fuzzing`: `classify`, the RFC 5961 checks, the shard of
//! the flow, the listener pool), then smoltcp's
//! `Interface::poll_ingress_single` with the shard the engine picked, the
//! application reading and writing, `poll_egress`, the engine's settle and
//! `poll_at`, over several frames and a fake clock. A frame that `classify` lets
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
