//! MIB-2 style counters of an lstack (`gazellectl lstack show <ip> -s`).
//!
//! The groups and names are RFC 1213's (`ipInReceives` is `in_receives` in
//! JSON and `InReceives` in tables, as Linux's `/proc/net/snmp` prints it).
//! IPv4 and IPv6 have separate IP, ICMP and UDP groups, as Linux's `Ip`/`Ip6`,
//! `Icmp`/`Icmp6` and `Udp`/`Udp6`; TCP counts both families in one group, as
//! Linux does. [`TcpExt`] holds what RFC 1213 has no name for.

use serde::{Deserialize, Serialize};

/// Defines a group of counters: the struct with its JSON names, its MIB
/// names in MIB order, and addition.
macro_rules! mib_group {
    (
        $(#[$doc:meta])*
        $name:ident {
            $( $(#[$fdoc:meta])* $field:ident => $mib:literal, )*
        }
    ) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        #[serde(default)]
        pub struct $name {
            $( $(#[$fdoc])* pub $field: u64, )*
        }

        impl $name {
            /// Every counter with its MIB name, in the MIB's order.
            pub fn entries(&self) -> Vec<(&'static str, u64)> {
                vec![$( ($mib, self.$field), )*]
            }

            /// Adds `o`'s counters to these.
            pub fn add(&mut self, o: &Self) {
                $( self.$field = self.$field.wrapping_add(o.$field); )*
            }
        }
    };
}

mib_group! {
    /// The IP group (RFC 1213 `ip`), for one family.
    IpMib {
        /// Datagrams received from the port, those in error included
        /// (frames to another MAC address excluded).
        in_receives => "InReceives",
        /// Discarded for an error in the IP header: too short, wrong version
        /// or header length, total length beyond the frame, bad checksum, a
        /// multicast or broadcast source.
        in_hdr_errors => "InHdrErrors",
        /// Discarded because the destination is not an address of this
        /// stack (nor broadcast or multicast).
        in_addr_errors => "InAddrErrors",
        /// Discarded for a protocol the stack does not handle.
        in_unknown_protos => "InUnknownProtos",
        /// Handed to ICMP, TCP, UDP or IGMP (those protocols may still find
        /// them in error). Fragments are not counted: they are reassembled
        /// later, by smoltcp.
        in_delivers => "InDelivers",
        /// Datagrams the stack sent (first fragments only, so a fragmented
        /// datagram counts once).
        out_requests => "OutRequests",
    }
}

mib_group! {
    /// The ICMP group (RFC 1213 `icmp`), for ICMPv4 or ICMPv6.
    IcmpMib {
        /// Messages received, those in error included.
        in_msgs => "InMsgs",
        /// Messages received too short or with a bad checksum.
        in_errors => "InErrors",
        /// Destination Unreachable messages received.
        in_dest_unreachs => "InDestUnreachs",
        /// Echo Requests received.
        in_echos => "InEchos",
        /// Echo Replies received.
        in_echo_reps => "InEchoReps",
        /// Messages sent.
        out_msgs => "OutMsgs",
        /// Destination Unreachable messages sent.
        out_dest_unreachs => "OutDestUnreachs",
        /// Echo Requests sent.
        out_echos => "OutEchos",
        /// Echo Replies sent.
        out_echo_reps => "OutEchoReps",
    }
}

mib_group! {
    /// The TCP group (RFC 1213 `tcp`), IPv4 and IPv6 together.
    ///
    /// `RetransSegs` is missing on purpose: smoltcp does not say which
    /// segments it retransmits, and guessing from sequence numbers without
    /// per-flow state would be a made-up number. For the same reason
    /// `OutSegs` includes retransmissions.
    TcpMib {
        /// Connections that went from CLOSED to SYN-SENT (`connect`).
        active_opens => "ActiveOpens",
        /// Connections that went from LISTEN to SYN-RCVD (a SYN a listener
        /// took).
        passive_opens => "PassiveOpens",
        /// Handshakes that failed: SYN-SENT or SYN-RCVD to CLOSED, or
        /// SYN-RCVD back to LISTEN.
        attempt_fails => "AttemptFails",
        /// Connections that went from ESTABLISHED or CLOSE-WAIT straight to
        /// CLOSED (a reset received or sent, or a retransmission timeout).
        estab_resets => "EstabResets",
        /// Connections now in ESTABLISHED or CLOSE-WAIT (a gauge).
        curr_estab => "CurrEstab",
        /// Segments received, those in error included.
        in_segs => "InSegs",
        /// Segments sent, retransmissions included.
        out_segs => "OutSegs",
        /// Segments received in error: too short, bad data offset, bad
        /// checksum.
        in_errs => "InErrs",
        /// Segments sent with RST.
        out_rsts => "OutRsts",
    }
}

mib_group! {
    /// The UDP group (RFC 1213 `udp`), for one family.
    UdpMib {
        /// Datagrams delivered to a socket.
        in_datagrams => "InDatagrams",
        /// Unicast datagrams for a port no socket takes (each answered
        /// with ICMP Port Unreachable).
        no_ports => "NoPorts",
        /// Datagrams received too short, with a length that disagrees with
        /// IP, or a bad checksum, or for a socket whose receive buffer was
        /// full.
        in_errors => "InErrors",
        /// Datagrams sent.
        out_datagrams => "OutDatagrams",
        /// Datagrams dropped because the socket's receive buffer was full
        /// (also in `InErrors`, as Linux counts them).
        rcvbuf_errors => "RcvbufErrors",
    }
}

mib_group! {
    /// TCP counters of this stack that RFC 1213 has no name for.
    TcpExt {
        /// Segments received with RST.
        in_rsts => "InRsts",
        /// SYNs dropped because the listener's accept queue and handshakes
        /// in progress filled its backlog (Linux `ListenOverflows`).
        accept_overflow => "ListenOverflows",
        /// SYNs dropped because `tcp_conn_count` connections were open.
        conn_limit_refused => "ConnLimitRefused",
        /// Handshakes completed, accepted or connected.
        established => "Established",
    }
}

/// Every MIB group of one stack thread (or of all of them added up).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(default)]
pub struct Snmp {
    /// IPv4.
    pub ip: IpMib,
    /// ICMPv4.
    pub icmp: IcmpMib,
    /// TCP over IPv4 and IPv6.
    pub tcp: TcpMib,
    /// UDP over IPv4.
    pub udp: UdpMib,
    /// IPv6.
    pub ip6: IpMib,
    /// ICMPv6.
    pub icmp6: IcmpMib,
    /// UDP over IPv6.
    pub udp6: UdpMib,
    /// TCP counters outside RFC 1213.
    pub tcp_ext: TcpExt,
}

impl Snmp {
    /// Adds `o`'s counters to these.
    pub fn add(&mut self, o: &Snmp) {
        self.ip.add(&o.ip);
        self.icmp.add(&o.icmp);
        self.tcp.add(&o.tcp);
        self.udp.add(&o.udp);
        self.ip6.add(&o.ip6);
        self.icmp6.add(&o.icmp6);
        self.udp6.add(&o.udp6);
        self.tcp_ext.add(&o.tcp_ext);
    }

    /// The groups with their `/proc/net/snmp` names, in that file's order
    /// (IPv6 after IPv4, the extras last).
    pub fn sections(&self) -> Vec<(&'static str, Vec<(&'static str, u64)>)> {
        vec![
            ("Ip", self.ip.entries()),
            ("Icmp", self.icmp.entries()),
            ("Tcp", self.tcp.entries()),
            ("Udp", self.udp.entries()),
            ("Ip6", self.ip6.entries()),
            ("Icmp6", self.icmp6.entries()),
            ("Udp6", self.udp6.entries()),
            ("TcpExt", self.tcp_ext.entries()),
        ]
    }
}

/// Answer to [`Request::LstackSnmp`](crate::Request::LstackSnmp).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LstackSnmp {
    /// Process id.
    pub pid: u32,
    /// Process name.
    pub process: String,
    /// The stack's IPv4 address, if any.
    pub ip: Option<String>,
    /// One entry per stack thread.
    pub threads: Vec<Snmp>,
    /// The threads' counters added up.
    pub total: Snmp,
}

impl LstackSnmp {
    /// Fills `total` from `threads`.
    pub fn with_total(mut self) -> Self {
        let mut t = Snmp::default();
        for s in &self.threads {
            t.add(s);
        }
        self.total = t;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_add_every_group_and_names_follow_the_mib() {
        let mut a = Snmp::default();
        a.ip.in_receives = 3;
        a.icmp.in_echos = 1;
        a.tcp.curr_estab = 2;
        a.udp6.no_ports = 4;
        a.tcp_ext.in_rsts = 5;
        let mut b = a;
        b.ip.in_receives = 10;
        let s = LstackSnmp {
            threads: vec![a, b],
            ..Default::default()
        }
        .with_total();
        assert_eq!(s.total.ip.in_receives, 13);
        assert_eq!(s.total.icmp.in_echos, 2);
        assert_eq!(s.total.tcp.curr_estab, 4);
        assert_eq!(s.total.udp6.no_ports, 8);
        assert_eq!(s.total.tcp_ext.in_rsts, 10);
        let sections = s.total.sections();
        let names: Vec<&str> = sections.iter().map(|(n, _)| *n).collect();
        assert_eq!(
            names,
            ["Ip", "Icmp", "Tcp", "Udp", "Ip6", "Icmp6", "Udp6", "TcpExt"]
        );
        assert_eq!(sections[0].1[0], ("InReceives", 13));
        assert!(sections[1].1.contains(&("InEchos", 2)));
    }

    #[test]
    fn json_uses_snake_case_and_missing_counters_read_as_zero() {
        let mut s = Snmp::default();
        s.ip.in_hdr_errors = 7;
        let j = serde_json::to_value(s).unwrap();
        assert_eq!(j["ip"]["in_hdr_errors"], 7);
        // An older daemon without some counter still parses.
        let back: Snmp = serde_json::from_str(r#"{"ip":{"in_hdr_errors":7}}"#).unwrap();
        assert_eq!(back, s);
    }
}
