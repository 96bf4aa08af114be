//! What the poller derives between samples: the receive latency of one
//! second from two snapshots of a cumulative histogram.

use gazelle_ctl_proto::RxLatency;
use gazelle_webui::history::{latency_between, LatencySecond};

/// A cumulative histogram of reads of these latencies, ns.
fn hist(samples: &[u64]) -> RxLatency {
    RxLatency::from_samples(samples)
}

#[test]
fn the_latency_of_a_second_is_of_that_seconds_reads_only() {
    // A thousand slow reads long ago, then a hundred fast ones.
    let old: Vec<u64> = vec![4_000_000; 1000];
    let mut all = old.clone();
    all.extend(std::iter::repeat_n(3_000, 100));
    let second = latency_between(&hist(&old), &hist(&all)).expect("reads in the second");
    assert_eq!(second.count, 100);
    let s = LatencySecond::of(&second).unwrap();
    assert_eq!(s.reads, 100);
    // 3 µs lies in the bucket [2048, 4095] ns: the estimate stays in it.
    assert!((2.048..=4.095).contains(&s.p50_us), "{s:?}");
    assert!((2.048..=4.095).contains(&s.p99_us), "{s:?}");
    // The merged second of two stacks: the slow one's reads show in p99.
    let slow = latency_between(&hist(&[]), &hist(&[900_000; 5])).unwrap();
    let both = LatencySecond::of(&RxLatency::merge([&second, &slow])).unwrap();
    assert_eq!(both.reads, 105);
    assert!(both.p99_us > 500.0, "{both:?}");
    assert!(both.p50_us < 5.0, "{both:?}");
}

#[test]
fn no_reads_or_a_restarted_stack_give_no_latency() {
    let h = hist(&[1_000, 2_000]);
    assert_eq!(latency_between(&h, &h), None);
    assert_eq!(latency_between(&h, &hist(&[1_000])), None);
    assert_eq!(LatencySecond::of(&RxLatency::default()), None);
}
