/* Shared by every gazelle-bpf program: the ownership map, the counters and
 * a small header parser built on a LOAD(ctx, off, dst, len) macro that the
 * including file defines (bpf_skb_load_bytes for TC, bpf_xdp_load_bytes for
 * XDP). Copying headers onto the stack works the same whether the packet is
 * linear or not, and never makes an skb writable (which would unclone every
 * TCP segment on egress). */
#ifndef GAZELLE_BPF_COMMON_H
#define GAZELLE_BPF_COMMON_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define ETH_HDR_LEN 14
/* linux/icmp.h drags in libc socket headers; the few constants we need: */
#define ICMP_DEST_UNREACH 3
#define ICMP_PROT_UNREACH 2
#define ICMP_PORT_UNREACH 3
#define ICMP_TIME_EXCEEDED 11
#define ICMP_PARAMETERPROB 12
#define ICMPV6_DEST_UNREACH 1
#define ICMPV6_PKT_TOOBIG 2
#define ICMPV6_TIME_EXCEED 3
#define ICMPV6_PARAMPROB 4
#define ICMPV6_PORT_UNREACH 4
#define NDISC_NEIGHBOUR_ADVERTISEMENT 136
#define PROTO_TCP 0
#define PROTO_UDP 1

/* Counter indexes: keep in sync with `Counter` in src/lib.rs. */
enum counter {
	C_EGRESS_PASSED = 0,
	C_RST_DROPPED = 1,
	C_ICMP_UNREACH_DROPPED = 2,
	C_INGRESS_PASSED = 3,
	C_RPF_MARTIAN_DROPPED = 4,
	C_RPF_NO_ROUTE_DROPPED = 5,
	C_RPF_UNCHECKED = 6,
	C_XDP_REDIRECTED = 7,
	C_XDP_NO_SOCKET = 8,
	C_XDP_PASSED = 9,
	C_XDP_NEIGH = 10,
	C_NIC_BLOCKED = 11,
	C_MAX = 16,
};

#include "own_map.h"

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, C_MAX);
	GAZELLE_PIN
} counters SEC(".maps");

static __always_inline void count(__u32 idx)
{
	__u64 *c = bpf_map_lookup_elem(&counters, &idx);

	if (c)
		*c += 1;
}

/* proto_idx: PROTO_TCP or PROTO_UDP; port in host byte order. */
static __always_inline int owned(__u32 proto_idx, __u16 port)
{
	__u32 bit = proto_idx * 65536 + port;
	__u32 key = bit / 64;
	__u64 *w = bpf_map_lookup_elem(&own, &key);

	if (!w)
		return 0;
	return (*w >> (bit % 64)) & 1;
}

static __always_inline int proto_index(__u8 l4proto, __u32 *idx)
{
	if (l4proto == IPPROTO_TCP) {
		*idx = PROTO_TCP;
		return 0;
	}
	if (l4proto == IPPROTO_UDP) {
		*idx = PROTO_UDP;
		return 0;
	}
	return -1;
}

struct pkt {
	__u16 eth_proto; /* host order: ETH_P_IP, ETH_P_IPV6, ETH_P_ARP, ... */
	__u8 l4proto;
	__u32 l4off;
	__u32 saddr4, daddr4; /* network order */
	struct in6_addr saddr6, daddr6;
};

/* Skips IPv6 hop-by-hop, routing and destination options headers. Returns
 * the upper-layer protocol, or -1 (fragments and anything else we cannot
 * see ports through). */
#define IPV6_SKIP_EXT(ctx, nh, off)                                              \
	({                                                                       \
		int __r = -1;                                                    \
		_Pragma("unroll") for (int __i = 0; __i < 4; __i++)              \
		{                                                                \
			if (nh != IPPROTO_HOPOPTS && nh != IPPROTO_ROUTING &&    \
			    nh != IPPROTO_DSTOPTS) {                             \
				__r = nh;                                        \
				break;                                           \
			}                                                        \
			__u8 __ext[2];                                           \
			if (LOAD(ctx, off, __ext, 2))                            \
				break;                                           \
			nh = __ext[0];                                           \
			off += ((__u32)__ext[1] + 1) * 8;                        \
		}                                                                \
		__r;                                                             \
	})

/* Parses Ethernet + IPv4/IPv6 up to the L4 header. Returns 0 on success,
 * 1 for a non-IP frame (eth_proto is still set), -1 if unparseable (short,
 * non-first fragment, ...). */
static __always_inline int parse(void *ctx, struct pkt *p)
{
	__be16 proto;

	if (LOAD(ctx, 12, &proto, 2))
		return -1;
	p->eth_proto = bpf_ntohs(proto);
	if (p->eth_proto == ETH_P_IP) {
		struct iphdr ip;

		if (LOAD(ctx, ETH_HDR_LEN, &ip, sizeof(ip)))
			return -1;
		if (ip.version != 4 || ip.ihl < 5)
			return -1;
		if (ip.frag_off & bpf_htons(0x1fff))
			return -1;
		p->l4proto = ip.protocol;
		p->l4off = ETH_HDR_LEN + ip.ihl * 4;
		p->saddr4 = ip.saddr;
		p->daddr4 = ip.daddr;
		return 0;
	}
	if (p->eth_proto == ETH_P_IPV6) {
		struct ipv6hdr ip6;
		__u32 off = ETH_HDR_LEN + sizeof(struct ipv6hdr);
		int nh;

		if (LOAD(ctx, ETH_HDR_LEN, &ip6, sizeof(ip6)))
			return -1;
		if (ip6.version != 6)
			return -1;
		p->saddr6 = ip6.saddr;
		p->daddr6 = ip6.daddr;
		nh = ip6.nexthdr;
		nh = IPV6_SKIP_EXT(ctx, nh, off);
		if (nh < 0)
			return -1;
		p->l4proto = nh;
		p->l4off = off;
		return 0;
	}
	return 1;
}

#define QUOTED_SPORT 0
#define QUOTED_DPORT 2

/* For an ICMP error whose message body starts at `q` (the quoted IP header),
 * returns the quoted packet's protocol index and one of its ports (host
 * order): `which` is QUOTED_SPORT or QUOTED_DPORT, the offset of that port in
 * both the TCP and the UDP header. Which one is our local port depends on
 * who sent the quoted packet: an error we receive quotes a packet we sent
 * (source port is ours); an error we send quotes a packet we received
 * (destination port is ours). */
static __always_inline int quoted_port(void *ctx, __u32 q, int v6, __u32 which, __u32 *pidx,
				       __u16 *port)
{
	__be16 p16;
	__u8 l4proto;

	if (!v6) {
		struct iphdr ip;

		if (LOAD(ctx, q, &ip, sizeof(ip)))
			return -1;
		if (ip.version != 4 || ip.ihl < 5)
			return -1;
		if (ip.frag_off & bpf_htons(0x1fff))
			return -1;
		l4proto = ip.protocol;
		q += ip.ihl * 4;
	} else {
		struct ipv6hdr ip6;
		int nh;

		if (LOAD(ctx, q, &ip6, sizeof(ip6)))
			return -1;
		if (ip6.version != 6)
			return -1;
		q += sizeof(ip6);
		nh = ip6.nexthdr;
		nh = IPV6_SKIP_EXT(ctx, nh, q);
		if (nh < 0)
			return -1;
		l4proto = nh;
	}
	if (proto_index(l4proto, pidx))
		return -1;
	if (LOAD(ctx, q + which, &p16, 2))
		return -1;
	*port = bpf_ntohs(p16);
	return 0;
}

static __always_inline int ipv6_eq(const struct in6_addr *a, const struct in6_addr *b)
{
	return a->in6_u.u6_addr32[0] == b->in6_u.u6_addr32[0] &&
	       a->in6_u.u6_addr32[1] == b->in6_u.u6_addr32[1] &&
	       a->in6_u.u6_addr32[2] == b->in6_u.u6_addr32[2] &&
	       a->in6_u.u6_addr32[3] == b->in6_u.u6_addr32[3];
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";

#endif
