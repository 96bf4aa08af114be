//! What an application can make the stack hold is bounded, on a real port
//! (`net_af_packet` on a veth, the peer's kernel as the network). Needs
//! root; fails loudly without it.
//!
//! One stack serves every test of this file (one EAL per process).

mod common;

use std::{io::ErrorKind, net::SocketAddr, sync::OnceLock};

use common::Env;
use netns_testbed::TopologyOptions;

/// Sockets an application may open.
const UDP_LIMIT: u32 = 64;

fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        common::start_topology(
            TopologyOptions {
                name_hint: "limits".into(),
                ..Default::default()
            },
            |config, _| {
                config.udp_conn_count = UDP_LIMIT;
            },
        )
    })
}

/// UDP sockets are bounded by `udp_conn_count`: one more is refused with an
/// error that names the key (`ENOBUFS` through `liblstack.so`), and closing
/// one makes room again.
#[test]
fn udp_sockets_stop_at_udp_conn_count() {
    let env = env();
    let any = SocketAddr::from(([0, 0, 0, 0], 0));
    let mut open = Vec::new();
    let err = loop {
        match env.stack.udp_bind(any) {
            Ok(s) => open.push(s),
            Err(e) => break e,
        }
        assert!(
            open.len() <= UDP_LIMIT as usize,
            "{} UDP sockets opened with udp_conn_count = {UDP_LIMIT}",
            open.len()
        );
    };
    assert_eq!(open.len(), UDP_LIMIT as usize, "refused early: {err}");
    assert_eq!(err.kind(), ErrorKind::OutOfMemory, "{err}");
    assert!(
        err.to_string()
            .contains(&format!("udp_conn_count = {UDP_LIMIT}")),
        "{err}"
    );
    // Connected sockets count too.
    let peer = SocketAddr::new(env.topo.peer_ip4.into(), 9);
    let err = env.stack.udp_connect(40000, peer).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::OutOfMemory, "{err}");
    open.pop();
    let again = env
        .stack
        .udp_connect(40000, peer)
        .expect("a slot was given back");
    drop(again);
    drop(open);
    env.stack.udp_bind(any).expect("every slot was given back");
}
