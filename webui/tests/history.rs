//! What the poller derives between samples: the bond's failover history
//! from a made-up sequence of bond states, shown on the bond page and in
//! `GET /api/v1/bond`; and the receive latency of one second from two
//! snapshots of a cumulative histogram.

mod support;

use axum::http::Method;
use gazelle_ctl_proto::{BondStatus, RxLatency};
use gazelle_webui::history::{latency_between, BondHistory, LatencySecond, FAILOVERS_KEPT};
use support::{ltran_stats, req, Fixture, ADMIN_PASSWORD};

/// The fixture's two-port bond with `active` carrying traffic, the links
/// as given and ltran's failover counter at `failovers`.
fn bond(active: Option<usize>, links: [bool; 2], failovers: u64) -> BondStatus {
    let mut b = ltran_stats(1).bond;
    b.active = active;
    b.failovers = failovers;
    for (i, p) in b.ports.iter_mut().enumerate() {
        p.link_up = links[i];
        p.active = active == Some(i);
    }
    b
}

const P0: &str = "net_af_packet0 (veth0)";
const P1: &str = "net_af_packet1 (veth1)";

#[test]
fn a_link_cut_and_its_return_are_two_failovers_with_their_reasons() {
    let mut h = BondHistory::default();
    h.observe(1_000, &bond(Some(0), [true, true], 0));
    h.observe(2_000, &bond(Some(0), [true, true], 0));
    assert!(
        h.failovers().is_empty(),
        "nothing moved: {:?}",
        h.failovers()
    );
    // The active port's link goes down: traffic moves to port 1.
    h.observe(3_000, &bond(Some(1), [false, true], 1));
    // Then port 1's goes down too, and port 0's comes back.
    h.observe(4_000, &bond(None, [false, false], 1));
    h.observe(5_000, &bond(Some(0), [true, false], 2));
    let f = h.failovers();
    assert_eq!(f.len(), 3, "{f:?}");
    // Newest first.
    assert_eq!(f[2].at_unix_ms, 3_000);
    assert_eq!(f[2].from.as_deref(), Some(P0));
    assert_eq!(f[2].to.as_deref(), Some(P1));
    assert_eq!(f[2].reason, format!("link down on {P0}"));
    assert_eq!((f[1].from.as_deref(), f[1].to.as_deref()), (Some(P1), None));
    assert_eq!(f[1].reason, "every link went down");
    assert_eq!((f[0].from.as_deref(), f[0].to.as_deref()), (None, Some(P0)));
    assert_eq!(f[0].reason, format!("link up on {P0}"));
}

#[test]
fn failovers_between_two_looks_are_counted_and_a_restart_is_not_one() {
    let mut h = BondHistory::default();
    h.observe(1_000, &bond(Some(0), [true, true], 5));
    // Away and back within the second: only ltran's counter tells.
    h.observe(2_000, &bond(Some(0), [true, true], 7));
    let f = h.failovers();
    assert_eq!(f.len(), 1, "{f:?}");
    assert!(f[0].reason.contains("within a second"), "{}", f[0].reason);
    assert!(
        f[0].reason.contains("counted 2 failovers"),
        "{}",
        f[0].reason
    );
    // ltran restarted on the other port: its counter fell.
    h.observe(3_000, &bond(Some(1), [true, true], 0));
    // ltran was not reachable for a while, then came back elsewhere.
    h.lost();
    h.observe(4_000, &bond(Some(0), [true, true], 0));
    assert_eq!(h.failovers().len(), 1, "{:?}", h.failovers());
}

#[test]
fn the_history_is_bounded_and_keeps_the_newest() {
    let mut h = BondHistory::default();
    h.observe(0, &bond(Some(0), [true, true], 0));
    for i in 1..=(FAILOVERS_KEPT as u64 + 10) {
        let active = usize::from(i % 2 == 1);
        h.observe(i * 1000, &bond(Some(active), [true, true], i));
    }
    let f = h.failovers();
    assert_eq!(f.len(), FAILOVERS_KEPT);
    assert_eq!(f[0].at_unix_ms, (FAILOVERS_KEPT as u64 + 10) * 1000);
    assert_eq!(f[0].reason, "ltran moved the traffic (links unchanged)");
}

#[tokio::test]
async fn the_bond_page_and_the_api_list_the_failovers_with_their_time() {
    let f = Fixture::new();
    let s = f.login("admin", ADMIN_PASSWORD).await;
    let html = f
        .send(req(Method::GET, "/bond").cookie_only(&s).empty())
        .await
        .text();
    assert!(html.contains(r#"id="no-failovers""#), "{html}");
    {
        let mut h = f.state.bond_history.lock().unwrap();
        h.observe(1_733_353_506_000, &bond(Some(0), [true, true], 0));
        h.observe(1_733_353_507_000, &bond(Some(1), [false, true], 1));
    }
    let html = f
        .send(req(Method::GET, "/bond").cookie_only(&s).empty())
        .await
        .text();
    let table = html
        .split(r#"<table id="failovers">"#)
        .nth(1)
        .unwrap_or_else(|| panic!("no failover table: {html}"));
    for want in [
        "2024-12-04 23:05:07 UTC",
        format!("<td>{P0}</td><td>{P1}</td><td>link down on {P0}</td>").as_str(),
    ] {
        assert!(table.contains(want), "{want} not in {table}");
    }
    let api: serde_json::Value = f
        .send(req(Method::GET, "/api/v1/bond").cookie_only(&s).empty())
        .await
        .json();
    assert_eq!(api["failover_history"][0]["to"], P1, "{api}");
    assert_eq!(
        api["failover_history"][0]["at_unix_ms"],
        1_733_353_507_000u64
    );
}

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
