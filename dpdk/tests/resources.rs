//! The safe DPDK layer against the real library: mempools, mbufs, rings and a
//! `net_ring` port (whose transmit ring is its receive ring, a loopback).
//! One EAL per process, so one test drives everything in order.

use std::sync::Arc;

use dpdk::{
    mempool::DEFAULT_DATA_ROOM, Eal, MbufBatch, Mempool, Port, PortConfig, Ring, BURST_SIZE,
};

fn eal_args() -> Vec<String> {
    [
        "dpdk-test",
        "--no-huge",
        "-m",
        "128",
        "--no-pci",
        "--no-telemetry",
        "--lcores=0",
        "--log-level=*:warning",
        "--vdev=net_ring0",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain(std::iter::once(format!(
        "--file-prefix=dpdk_resources_{}",
        std::process::id()
    )))
    .collect()
}

#[test]
fn resources_behave_and_errors_say_what_failed() {
    let eal = Eal::init(&eal_args()).expect("EAL init with --no-huge");
    // Same arguments again: the same handle; different ones: refused.
    assert!(Eal::init(&eal_args()).is_ok());
    let err = Eal::init(&["other"]).expect_err("a second, different init must be refused");
    assert!(err.op.contains("already initialised"), "{err}");

    // Errors carry the operation and DPDK's own text.
    let err = Mempool::lookup(&eal, "no_such_pool").expect_err("lookup of a missing pool");
    assert!(err.op.contains("no_such_pool"), "{err}");
    assert_eq!(err.errno, libc::ENOENT, "{err}");
    assert!(!err.message.is_empty());
    let err = Ring::lookup(&eal, "no_such_ring").expect_err("lookup of a missing ring");
    assert!(
        err.to_string().contains("looking up ring \"no_such_ring\""),
        "{err}"
    );
    let err = Port::open(
        &eal,
        99,
        &PortConfig::default(),
        Arc::new(Mempool::create(&eal, "p99", 511, 0, DEFAULT_DATA_ROOM, -1).unwrap()),
    )
    .expect_err("port 99 does not exist");
    assert_eq!(err.errno, libc::ENODEV, "{err}");

    // Mempool: every mbuf can be taken, and all come back on drop.
    let pool =
        Arc::new(Mempool::create(&eal, "test_pool", 1023, 0, DEFAULT_DATA_ROOM, -1).unwrap());
    assert_eq!(pool.available(), 1023);
    let mut all = Vec::new();
    while let Some(m) = pool.alloc() {
        all.push(m);
    }
    assert_eq!(all.len(), 1023);
    assert_eq!(pool.in_use(), 1023);
    drop(all);
    assert_eq!(pool.available(), 1023);

    // Mbuf data: append, write, trim.
    let mut m = pool.alloc().unwrap();
    assert!(m.is_empty());
    m.append(100).unwrap().copy_from_slice(&[7u8; 100]);
    assert_eq!(m.len(), 100);
    assert_eq!(m.data(), &[7u8; 100][..]);
    assert!(m.trim(40));
    assert_eq!(m.len(), 60);
    assert!(
        m.append(m.tailroom() + 1).is_none(),
        "appending past the tailroom must fail"
    );
    // Front: prepend and adj move the start of the data, not the bytes.
    let head = m.headroom();
    assert_eq!(head, 128, "DPDK's default headroom");
    let data = m.prepend(4).expect("4 bytes of headroom");
    assert_eq!(data.len(), 64);
    data[..4].copy_from_slice(&[1, 2, 3, 4]);
    assert_eq!(&m.data()[4..], &[7u8; 60][..], "the old data follows");
    assert_eq!((m.headroom(), m.pkt_len()), (head - 4, 64));
    assert!(m.adj(4));
    assert_eq!(m.data(), &[7u8; 60][..]);
    assert_eq!((m.headroom(), m.pkt_len()), (head, 60));
    assert!(!m.adj(61), "removing more than the data must fail");
    assert_eq!(m.len(), 60, "and change nothing");
    assert!(
        m.prepend(head + 1).is_none(),
        "prepending past the headroom must fail"
    );
    assert_eq!(
        m.rx_vlan_stripped(),
        None,
        "a fresh mbuf has no stripped tag"
    );
    drop(m);

    // Ring: order kept; a full ring leaves the rest in the batch.
    let mut ring = Ring::create(&eal, "test_ring", 8, -1).unwrap();
    let mut batch = MbufBatch::new();
    for i in 0..BURST_SIZE {
        let mut m = pool.alloc().unwrap();
        m.append(1).unwrap()[0] = i as u8;
        batch.push(m).unwrap();
    }
    assert!(batch.is_full());
    let moved = ring.enqueue(&mut batch);
    assert_eq!(moved, 7, "a ring of 8 slots holds 7");
    assert_eq!(batch.len(), BURST_SIZE - 7);
    assert_eq!(
        batch.get(0).unwrap(),
        &[7u8],
        "the batch keeps the rest, in order"
    );
    let mut out = MbufBatch::new();
    assert_eq!(ring.dequeue(&mut out), 7);
    let firsts: Vec<u8> = out.drain().map(|m| m.data()[0]).collect();
    assert_eq!(firsts, (0..7).collect::<Vec<u8>>());
    drop(batch);
    // Dropping a created ring frees what is still inside it.
    let mut batch = MbufBatch::new();
    batch.push(pool.alloc().unwrap()).unwrap();
    ring.enqueue(&mut batch);
    drop(ring);
    assert_eq!(pool.in_use(), 0, "mbufs left in a dropped ring are freed");

    // A net_ring port loops transmitted frames back to its receive queue.
    let port_id = Port::id_by_name(&eal, "net_ring0").expect("the net_ring0 vdev");
    let mut port = Port::open(
        &eal,
        port_id,
        &PortConfig {
            rx_desc: 512,
            tx_desc: 512,
            ..Default::default()
        },
        Arc::clone(&pool),
    )
    .expect("opening net_ring0");
    assert_eq!(port.info().driver, "net_ring");
    assert!(port.link().up);
    let mut queues = port.take_queues();
    assert_eq!(queues.len(), 1);
    assert!(port.take_queues().is_empty(), "queues are handed out once");
    let (mut rx, mut tx) = queues.pop().unwrap();
    let mut batch = MbufBatch::new();
    for i in 0..10u8 {
        let mut m = pool.alloc().unwrap();
        m.append(64).unwrap().fill(i);
        batch.push(m).unwrap();
    }
    assert_eq!(tx.tx_burst(&mut batch), 10);
    let mut got = MbufBatch::new();
    assert_eq!(rx.rx_burst(&mut got), 10);
    for (i, m) in got.drain().enumerate() {
        assert_eq!(m.data(), &[i as u8; 64][..]);
    }
    let stats = port.stats().unwrap();
    assert_eq!((stats.tx_packets, stats.rx_packets), (10, 10), "{stats:?}");
    drop((rx, tx));
    drop(port);
    assert_eq!(pool.in_use(), 0, "every mbuf returned");
}
