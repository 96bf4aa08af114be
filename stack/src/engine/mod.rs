//! The stack threads: one per NIC queue, each polling its queue, demuxing
//! frames to socket shards and running smoltcp.
//!
//! ## Why shards
//! smoltcp matches every ingress segment against every socket of the set it
//! is given and walks every socket on egress. With 20 000 connections one set
//! would make each packet cost 20 000 comparisons. Each thread therefore
//! keeps its TCP sockets in `shards` small [`SocketSet`]s chosen by a keyed
//! hash of the flow ([`FlowKey::hash`]); a frame is handed to smoltcp with
//! only its flow's shard, and egress walks only shards that had traffic, were
//! touched by the application, or have a timer due. The last shard of every
//! thread is the control shard: ARP, ICMP, NDP, fragments and UDP sockets.
//!
//! ## Why a listener pool
//! A smoltcp listening socket turns into the connection it accepts. So each
//! listening port keeps, in every shard that receives a SYN for it, a spare
//! socket in `Listen` state, created just before the SYN is ingested. Since a
//! flow always hashes to the same shard, the socket that took the SYN also
//! gets the rest of the flow. Established connections move to the
//! listener's accept queue.
//!
//! ## Threads
//! A flow belongs to thread `hash % threads`. When a NIC spreads flows over
//! several queues by its own hash, a thread passes frames of flows it does
//! not own to the owner's steering queue; ARP and NDP go to every thread.
//!
//! ## Counting
//! Each frame from the port is counted in the MIB-2 counters ([`crate::mib`])
//! by the thread that took it off its queue. TCP connection counters come
//! from the state changes a thread sees after polling a shard: spares that
//! took a SYN (passive opens), handshakes completed or failed, and the
//! connections each shard watches (`ShardInner::conns`) for resets.
//!
//! ## Receive latency
//! Every socket carries an [`RxMark`]. When a read leaves a socket's receive
//! queue empty, the socket is *armed*: put on its shard's `armed` list.
//! After smoltcp ingests a frame with data into the shard, the armed
//! sockets whose queue is no longer empty get the arrival time of the burst
//! the frame came in, and leave the list. The application's next read
//! records how long that data waited ([`crate::stats::LatencyHistogram`]).
//! Only data frames look at the list, and only at the entry of their flow
//! (UDP: of their port); the application's read costs a clock read and a
//! few atomic adds.
//!
//! ## Layout
//! - `shard`: [`Shard`] and [`ShardInner`], the socket sets and their pool.
//! - `marks`: [`RxMark`] and the `armed` lists (receive latency).
//! - `listener`: [`ListenerShared`] and its accept queue.
//! - `shared`: [`ThreadShared`], [`StackShared`], [`Command`].
//! - `ports`: [`PortHomes`] (`listen_shadow = 0`) and [`EphemeralPorts`].
//! - `rtc`: run to completion, [`Rtc`] and the `StackShared` methods that
//!   drive it.
//! - `worker`: [`Worker`], the loop of a stack thread and its `step`, which
//!   both modes run.
//! - `policy`: the decisions, without DPDK: where a frame goes (`route`),
//!   what a SYN gets (`prepare_listener`), the bookkeeping after smoltcp ran
//!   (`after_ingest`, `settle`).
//! - `fuzzing`: the policy driven without DPDK, for the `ingest` fuzz target
//!   and the unit tests.

pub mod fuzzing;
mod listener;
mod marks;
mod policy;
mod ports;
mod rtc;
mod shard;
mod shared;
mod worker;

#[cfg(test)]
mod tests;

use crate::event::Event;

pub(crate) use listener::{Accepted, ListenerShared};
pub(crate) use marks::{Armed, RxMark, RxSocket};
pub(crate) use ports::{EphemeralPorts, PortHomes, EPHEMERAL, EPHEMERAL_SHARED};
pub(crate) use rtc::{Rtc, RtcContext};
pub(crate) use shard::{Shard, ShardInner};
pub(crate) use shared::{Command, ConnectReply, StackShared, ThreadShared};
pub(crate) use worker::Worker;
