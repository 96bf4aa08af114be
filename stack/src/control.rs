//! The stack's side of `gazellectl lstack show`: its counters, MIB-2
//! counters, receive latency and connections, served on a control socket
//! (see [`gazelle_ctl_proto`]).

use std::{
    path::Path,
    sync::{Arc, Weak},
};

use gazelle_ctl_proto::{
    server::Server, Connection, IcmpMib, IpMib, LstackLatency, LstackSnmp, LstackStats,
    PortCounters, Request, Response, Snmp, TcpExt, TcpMib, ThreadCounters, UdpMib,
};
use smoltcp::socket::{tcp, Socket};

use crate::{
    engine::ThreadShared,
    mib::{IcmpCounters, IpCounters, UdpCounters},
    stats::ThreadStats,
    Runtime, Stack,
};

/// Starts serving `path` for `stack` (a failure is logged: the stack runs
/// on without a control socket).
pub(crate) fn serve(stack: &Stack, path: &Path) {
    let runtime: Weak<Runtime> = Arc::downgrade(&stack.runtime);
    let served = Server::start(path, "lstack-ctl", move |req| {
        let Some(runtime) = runtime.upgrade() else {
            return Response::Error {
                message: "the stack is shutting down".into(),
            };
        };
        let stack = Stack {
            shared: Arc::clone(&runtime.shared),
            runtime,
        };
        match req {
            Request::Ping => Response::Pong {
                daemon: "lstack".into(),
                pid: std::process::id(),
            },
            Request::LstackStats => Response::LstackStats(stack.stats_snapshot()),
            Request::LstackConnections => Response::LstackConnections {
                connections: stack.connections(),
            },
            Request::LstackSnmp => Response::LstackSnmp(stack.snmp_snapshot()),
            Request::LstackLatency => Response::LstackLatency(stack.latency_snapshot()),
            other => Response::Error {
                message: format!("lstack does not answer {other:?} (ask ltran)"),
            },
        }
    });
    match served {
        Ok(server) => {
            tracing::info!(path = %path.display(), "gazellectl control socket");
            *stack
                .runtime
                .control
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = Some(server);
        }
        Err(e) => tracing::warn!(
            path = %path.display(),
            error = %e,
            "no gazellectl control socket"
        ),
    }
}

fn thread_counters(s: &ThreadStats) -> ThreadCounters {
    ThreadCounters {
        rx_packets: s.rx_packets.get(),
        rx_bytes: s.rx_bytes.get(),
        tx_packets: s.tx_packets.get(),
        tx_bytes: s.tx_bytes.get(),
        tx_dropped: s.tx_dropped.get(),
        tx_nombuf: s.tx_nombuf.get(),
        steered_in: s.steered_in.get(),
        steer_dropped: s.steer_dropped.get(),
        conn_limit_refused: s.conn_limit_refused.get(),
        accept_overflow: s.accept_overflow.get(),
        tcp_established: s.tcp_established.get(),
        half_open: s.half_open.get(),
        half_open_evicted: s.half_open_evicted.get(),
        half_open_expired: s.half_open_expired.get(),
        syn_challenges: s.syn_challenges.get(),
        syn_challenges_answered: s.syn_challenges_answered.get(),
        pmtu_learned: s.pmtu_learned.get(),
        pmtu_ignored: s.pmtu_ignored.get(),
        pmtu_split: s.pmtu_split.get(),
        kernel_rx: s.kernel_rx.get(),
        kernel_tx: s.kernel_tx.get(),
        kernel_dropped: s.kernel_dropped.get(),
        idle_loops: s.idle_loops.get(),
        sleeps: s.sleeps.get(),
        panics: s.panics.get(),
        drops: s
            .drops()
            .filter(|(_, n)| *n > 0)
            .map(|(r, n)| (format!("{r:?}"), n))
            .collect(),
    }
}

fn ip_mib(c: &IpCounters) -> IpMib {
    IpMib {
        in_receives: c.in_receives.get(),
        in_hdr_errors: c.in_hdr_errors.get(),
        in_addr_errors: c.in_addr_errors.get(),
        in_unknown_protos: c.in_unknown_protos.get(),
        in_delivers: c.in_delivers.get(),
        out_requests: c.out_requests.get(),
    }
}

fn icmp_mib(c: &IcmpCounters) -> IcmpMib {
    IcmpMib {
        in_msgs: c.in_msgs.get(),
        in_errors: c.in_errors.get(),
        in_dest_unreachs: c.in_dest_unreachs.get(),
        in_echos: c.in_echos.get(),
        in_echo_reps: c.in_echo_reps.get(),
        out_msgs: c.out_msgs.get(),
        out_dest_unreachs: c.out_dest_unreachs.get(),
        out_echos: c.out_echos.get(),
        out_echo_reps: c.out_echo_reps.get(),
    }
}

fn udp_mib(c: &UdpCounters) -> UdpMib {
    UdpMib {
        in_datagrams: c.in_datagrams.get(),
        no_ports: c.no_ports.get(),
        in_errors: c.in_errors.get(),
        out_datagrams: c.out_datagrams.get(),
        rcvbuf_errors: c.rcvbuf_errors.get(),
    }
}

/// One thread's MIB-2 counters; `CurrEstab` is read from its sockets.
fn thread_snmp(t: &ThreadShared) -> Snmp {
    let s = &t.stats;
    let m = &s.mib;
    Snmp {
        ip: ip_mib(&m.ip),
        icmp: icmp_mib(&m.icmp),
        tcp: TcpMib {
            active_opens: m.tcp.active_opens.get(),
            passive_opens: m.tcp.passive_opens.get(),
            attempt_fails: m.tcp.attempt_fails.get(),
            estab_resets: m.tcp.estab_resets.get(),
            curr_estab: curr_estab(t),
            in_segs: m.tcp.in_segs.get(),
            out_segs: m.tcp.out_segs.get(),
            in_errs: m.tcp.in_errs.get(),
            out_rsts: m.tcp.out_rsts.get(),
        },
        udp: udp_mib(&m.udp),
        ip6: ip_mib(&m.ip6),
        icmp6: icmp_mib(&m.icmp6),
        udp6: udp_mib(&m.udp6),
        tcp_ext: TcpExt {
            in_rsts: m.tcp.in_rsts.get(),
            accept_overflow: s.accept_overflow.get(),
            conn_limit_refused: s.conn_limit_refused.get(),
            established: s.tcp_established.get(),
        },
    }
}

/// Connections of thread `t` in ESTABLISHED or CLOSE-WAIT (RFC 1213's
/// `tcpCurrEstab`), counted shard by shard.
fn curr_estab(t: &ThreadShared) -> u64 {
    t.shards
        .iter()
        .map(|shard| {
            shard
                .lock()
                .sockets
                .iter()
                .filter(|(_, s)| {
                    matches!(s, Socket::Tcp(s)
                        if matches!(s.state(), tcp::State::Established | tcp::State::CloseWait))
                })
                .count() as u64
        })
        .sum()
}

/// The state as `ss` names it.
fn state_name(s: tcp::State) -> &'static str {
    match s {
        tcp::State::Closed => "CLOSE",
        tcp::State::Listen => "LISTEN",
        tcp::State::SynSent => "SYN-SENT",
        tcp::State::SynReceived => "SYN-RECV",
        tcp::State::Established => "ESTAB",
        tcp::State::FinWait1 => "FIN-WAIT-1",
        tcp::State::FinWait2 => "FIN-WAIT-2",
        tcp::State::CloseWait => "CLOSE-WAIT",
        tcp::State::Closing => "CLOSING",
        tcp::State::LastAck => "LAST-ACK",
        tcp::State::TimeWait => "TIME-WAIT",
    }
}

impl Stack {
    /// The path to the kernel, if the stack shares its address with it.
    pub fn kernel_path_status(&self) -> Option<gazelle_ctl_proto::KernelPathStatus> {
        self.runtime.kernel_side.as_ref().map(|k| k.status())
    }

    /// Every counter of the stack, as `gazellectl lstack show` prints them.
    pub fn stats_snapshot(&self) -> LstackStats {
        let port = self
            .port_stats()
            .map(|p| PortCounters {
                rx_packets: p.rx_packets,
                tx_packets: p.tx_packets,
                rx_bytes: p.rx_bytes,
                tx_bytes: p.tx_bytes,
                rx_missed: p.rx_missed,
                rx_errors: p.rx_errors,
                tx_errors: p.tx_errors,
                rx_nombuf: p.rx_nombuf,
            })
            .unwrap_or_default();
        let local = &self.shared.local;
        LstackStats {
            pid: std::process::id(),
            process: process_name(),
            ip: local.ipv4.map(|a| a.to_string()),
            ip6: local.ipv6.map(|a| a.to_string()),
            uptime_secs: self.runtime.started.elapsed().as_secs(),
            tcp_connections: self.tcp_connections() as u64,
            mbufs_available: u64::from(self.mbufs_available()),
            kernel_sockets: self.kernel_sockets(),
            unhonoured_options: self
                .shared
                .opts
                .process
                .map(|p| (p.unhonoured_options)())
                .unwrap_or_default(),
            port,
            bond: self
                .shared
                .bond
                .as_ref()
                .map(|b| b.status(&self.runtime.eal)),
            kernel_path: self.kernel_path_status(),
            threads: self
                .shared
                .threads
                .iter()
                .map(|t| thread_counters(&t.stats))
                .collect(),
        }
    }

    /// The MIB-2 counters of every thread and their sum, as
    /// `gazellectl lstack show -s` prints them.
    pub fn snmp_snapshot(&self) -> LstackSnmp {
        LstackSnmp {
            pid: std::process::id(),
            process: process_name(),
            ip: self.shared.local.ipv4.map(|a| a.to_string()),
            threads: self.shared.threads.iter().map(thread_snmp).collect(),
            total: Snmp::default(),
        }
        .with_total()
    }

    /// How long received data waited for the application's reads, per
    /// thread and in all, as `gazellectl lstack show -l` prints it.
    pub fn latency_snapshot(&self) -> LstackLatency {
        LstackLatency {
            pid: std::process::id(),
            process: process_name(),
            ip: self.shared.local.ipv4.map(|a| a.to_string()),
            threads: self
                .shared
                .threads
                .iter()
                .map(|t| t.stats.rx_latency.snapshot())
                .collect(),
            total: Default::default(),
        }
        .with_total()
    }

    /// Every TCP socket of the stack: listeners (as `ss` shows them: the
    /// accept queue as receive queue, the backlog as send queue), connections
    /// and sockets closing; then the process's sockets on the kernel's path,
    /// with the reason (see [`crate::ProcessView`]).
    pub fn connections(&self) -> Vec<Connection> {
        let mut out = Vec::new();
        let listeners = self
            .shared
            .listeners
            .read()
            .unwrap_or_else(|e| e.into_inner());
        for l in listeners.values().flatten() {
            if l.closed.load(std::sync::atomic::Ordering::Relaxed) {
                continue;
            }
            let local = match l.endpoint.addr {
                Some(a) => format!("{a}:{}", l.endpoint.port),
                None if l.v6 => format!("[::]:{}", l.endpoint.port),
                None => format!("0.0.0.0:{}", l.endpoint.port),
            };
            out.push(Connection {
                thread: 0,
                state: "LISTEN".into(),
                local,
                remote: "*".into(),
                recv_queue: l.queue.lock().unwrap_or_else(|e| e.into_inner()).len() as u64,
                send_queue: l.backlog as u64,
                recv_capacity: 0,
                send_capacity: 0,
                kernel: None,
            });
        }
        drop(listeners);
        for (thread, t) in self.shared.threads.iter().enumerate() {
            for shard in t.shards.iter() {
                let inner = shard.lock();
                for (_, socket) in inner.sockets.iter() {
                    let Socket::Tcp(s) = socket else { continue };
                    // Listening sockets are the pool's spares, shown above
                    // as their listener.
                    let Some(local) = s.local_endpoint().map(|ep| ep.to_string()) else {
                        continue;
                    };
                    out.push(Connection {
                        thread,
                        state: state_name(s.state()).to_owned(),
                        local,
                        remote: s
                            .remote_endpoint()
                            .map_or_else(|| "*".to_owned(), |e| e.to_string()),
                        recv_queue: s.recv_queue() as u64,
                        send_queue: s.send_queue() as u64,
                        recv_capacity: s.recv_capacity() as u64,
                        send_capacity: s.send_capacity() as u64,
                        kernel: None,
                    });
                }
            }
        }
        if let Some(p) = self.shared.opts.process {
            out.extend((p.kernel_sockets)());
        }
        out
    }
}

/// `/proc/self/comm`.
fn process_name() -> String {
    std::fs::read_to_string("/proc/self/comm")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}
