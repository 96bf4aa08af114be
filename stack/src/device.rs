//! smoltcp's `Device` over DPDK mbufs, one frame at a time.
//!
//! Receive hands smoltcp the mbuf's own data (parsed in place, no copy);
//! transmit writes straight into a fresh mbuf's data room and queues it in a
//! fixed-size burst that goes to the NIC when full or at the end of a loop.

use std::sync::Arc;

use dpdk::{Mbuf, MbufBatch, Mempool, TxQueue};
use smoltcp::{
    phy::{self, Checksum, ChecksumCapabilities, DeviceCapabilities, Medium},
    time::Instant,
};

use crate::stats::ThreadStats;

/// Largest Ethernet frame without FCS at MTU 1500.
pub const MAX_FRAME: usize = 1514;

/// How many times a full NIC queue is retried before frames are dropped.
const TX_RETRIES: usize = 8;

/// A stack thread's transmit side: its NIC queue, pool and pending burst.
#[derive(Debug)]
pub struct TxPath {
    queue: TxQueue,
    pool: Arc<Mempool>,
    batch: MbufBatch,
    stats: Arc<ThreadStats>,
    /// Where smoltcp writes a frame when the pool is empty; it is then dropped.
    scratch: Box<[u8; MAX_FRAME]>,
}

impl TxPath {
    /// A transmit path over `queue` with buffers from `pool`.
    pub fn new(queue: TxQueue, pool: Arc<Mempool>, stats: Arc<ThreadStats>) -> Self {
        Self {
            queue,
            pool,
            batch: MbufBatch::new(),
            stats,
            scratch: Box::new([0; MAX_FRAME]),
        }
    }

    /// Queues a frame, sending the burst if it is full.
    #[inline]
    pub fn push(&mut self, m: Mbuf) {
        self.stats.tx_packets.incr();
        self.stats.tx_bytes.add(m.len() as u64);
        if let Err(m) = self.batch.push(m) {
            self.flush();
            if self.batch.push(m).is_err() {
                self.stats.tx_dropped.incr();
            }
        }
    }

    /// Sends everything queued; what the NIC will not take after a few tries
    /// is dropped and counted (TCP retransmits it).
    #[inline]
    pub fn flush(&mut self) {
        for _ in 0..TX_RETRIES {
            if self.batch.is_empty() {
                return;
            }
            self.queue.tx_burst(&mut self.batch);
        }
        let left = self.batch.len() as u64;
        if left > 0 {
            self.stats.tx_dropped.add(left);
            self.batch = MbufBatch::new();
        }
    }

    /// The queue's port info.
    pub fn queue(&self) -> &TxQueue {
        &self.queue
    }
}

/// A `Device` that yields at most one received frame and transmits into
/// `tx`. Built per smoltcp call; costs nothing to create.
#[derive(Debug)]
pub struct FrameDevice<'a> {
    /// The frame smoltcp will receive, if any.
    pub rx: Option<Mbuf>,
    /// Where transmitted frames go.
    pub tx: &'a mut TxPath,
}

/// The capabilities every stack device reports: Ethernet, MTU 1500, and
/// checksums verified on receive by [`crate::classify`] (so smoltcp only
/// computes them on transmit).
pub fn capabilities() -> DeviceCapabilities {
    let mut caps = DeviceCapabilities::default();
    caps.medium = Medium::Ethernet;
    caps.max_transmission_unit = MAX_FRAME;
    caps.max_burst_size = Some(dpdk::BURST_SIZE);
    let mut csum = ChecksumCapabilities::default();
    csum.ipv4 = Checksum::Tx;
    csum.tcp = Checksum::Tx;
    csum.udp = Checksum::Tx;
    csum.icmpv4 = Checksum::Tx;
    csum.icmpv6 = Checksum::Tx;
    caps.checksum = csum;
    caps
}

impl phy::Device for FrameDevice<'_> {
    type RxToken<'b>
        = MbufRxToken
    where
        Self: 'b;
    type TxToken<'b>
        = MbufTxToken<'b>
    where
        Self: 'b;

    fn receive(&mut self, _ts: Instant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        let m = self.rx.take()?;
        Some((MbufRxToken(m), MbufTxToken { tx: self.tx }))
    }

    fn transmit(&mut self, _ts: Instant) -> Option<Self::TxToken<'_>> {
        Some(MbufTxToken { tx: self.tx })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        capabilities()
    }
}

/// A received mbuf; freed when the token is consumed or dropped.
#[derive(Debug)]
pub struct MbufRxToken(Mbuf);

impl phy::RxToken for MbufRxToken {
    fn consume<R, F>(self, f: F) -> R
    where
        F: FnOnce(&[u8]) -> R,
    {
        f(self.0.data())
    }
}

/// Permission to send one frame. smoltcp may drop it unused, which costs
/// nothing: the mbuf is only taken in `consume`.
#[derive(Debug)]
pub struct MbufTxToken<'a> {
    tx: &'a mut TxPath,
}

impl phy::TxToken for MbufTxToken<'_> {
    fn consume<R, F>(self, len: usize, f: F) -> R
    where
        F: FnOnce(&mut [u8]) -> R,
    {
        let tx = self.tx;
        let Some(mut m) = tx.pool.alloc() else {
            tx.stats.tx_nombuf.incr();
            let len = len.min(MAX_FRAME);
            return f(&mut tx.scratch[..len]);
        };
        let Some(buf) = m.append(len) else {
            // Larger than an mbuf's data room: smoltcp never builds frames
            // over the MTU we report, so this is a bug; drop it counted.
            tx.stats.tx_dropped.incr();
            let len = len.min(MAX_FRAME);
            return f(&mut tx.scratch[..len]);
        };
        let r = f(buf);
        tx.push(m);
        r
    }
}
