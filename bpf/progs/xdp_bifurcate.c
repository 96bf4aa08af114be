/* XDP bifurcation for an interface driven by DPDK's net_af_xdp: frames for
 * lstack go to its AF_XDP socket on the receiving queue, the rest to the
 * kernel.
 *
 * To lstack: TCP/UDP to a destination port lstack owns; ICMP errors quoting
 * a packet whose source (= our local) port lstack owns; ARP replies and IPv6
 * neighbour advertisements for addresses lstack asked about (arp_wanted,
 * until the expiry it gave). Everything else: XDP_PASS.
 *
 * bpf_redirect_map with XDP_PASS as flags falls back to XDP_PASS when no
 * AF_XDP socket is bound on that queue: the kernel then sees the frame. */
#define LOAD(ctx, off, dst, len) bpf_xdp_load_bytes(ctx, off, dst, len)
#include "common.h"

/* DPDK/libxdp look the socket map up by this exact name. */
struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, 64);
} xsks_map SEC(".maps");

/* Key: IPv6 address, or IPv4-mapped (::ffff:a.b.c.d). Value: expiry in
 * bpf_ktime_get_ns() (CLOCK_MONOTONIC) nanoseconds. */
struct neigh_key {
	__u8 addr[16];
};

/* LRU: the neighbours lstack asks for are the peers it sends to, which a
 * flood of spoofed on-link sources makes many. A plain hash would fill for
 * good (each insert then failing, no ARP reply reaching lstack again); here
 * the oldest entries, long expired, make room. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct neigh_key);
	__type(value, __u64);
	__uint(max_entries, 1024);
	GAZELLE_PIN
} arp_wanted SEC(".maps");

#define ARPOP_REPLY 2

static __always_inline int wanted(struct neigh_key *k)
{
	__u64 *exp = bpf_map_lookup_elem(&arp_wanted, k);

	return exp && bpf_ktime_get_ns() < *exp;
}

static __always_inline int to_lstack(struct xdp_md *ctx, int neigh)
{
	long r = bpf_redirect_map(&xsks_map, ctx->rx_queue_index, XDP_PASS);

	if (neigh)
		count(C_XDP_NEIGH);
	count(r == XDP_REDIRECT ? C_XDP_REDIRECTED : C_XDP_NO_SOCKET);
	return r;
}

SEC("xdp")
int xdp_bifurcate(struct xdp_md *ctx)
{
	struct neigh_key k = {};
	struct pkt p = {};
	__u32 pidx;
	__u16 port;
	int v6, rc;

	rc = parse(ctx, &p);
	if (rc > 0 && p.eth_proto == ETH_P_ARP) {
		/* Ethernet/IPv4 ARP: htype(2) ptype(2) hlen plen op(2) sha(6) spa(4) */
		__u8 arp[18];

		if (LOAD(ctx, ETH_HDR_LEN, arp, sizeof(arp)))
			goto pass;
		if (arp[6] != 0 || arp[7] != ARPOP_REPLY || arp[4] != 6 || arp[5] != 4)
			goto pass;
		k.addr[10] = 0xff;
		k.addr[11] = 0xff;
		__builtin_memcpy(&k.addr[12], &arp[14], 4);
		if (wanted(&k))
			return to_lstack(ctx, 1);
		goto pass;
	}
	if (rc != 0)
		goto pass;
	v6 = p.eth_proto == ETH_P_IPV6;

	if (p.l4proto == IPPROTO_TCP || p.l4proto == IPPROTO_UDP) {
		__be16 dport;

		if (LOAD(ctx, p.l4off + 2, &dport, 2))
			goto pass;
		if (owned(p.l4proto == IPPROTO_TCP ? PROTO_TCP : PROTO_UDP, bpf_ntohs(dport)))
			return to_lstack(ctx, 0);
		goto pass;
	}
	if (p.l4proto == IPPROTO_ICMP && !v6) {
		__u8 t;

		if (LOAD(ctx, p.l4off, &t, 1))
			goto pass;
		if (t != ICMP_DEST_UNREACH && t != ICMP_TIME_EXCEEDED && t != ICMP_PARAMETERPROB)
			goto pass;
	} else if (p.l4proto == IPPROTO_ICMPV6 && v6) {
		__u8 t;

		if (LOAD(ctx, p.l4off, &t, 1))
			goto pass;
		if (t == NDISC_NEIGHBOUR_ADVERTISEMENT) {
			/* type code csum(2) flags(4) target(16) */
			if (LOAD(ctx, p.l4off + 8, k.addr, 16))
				goto pass;
			if (wanted(&k))
				return to_lstack(ctx, 1);
			goto pass;
		}
		if (t != ICMPV6_DEST_UNREACH && t != ICMPV6_PKT_TOOBIG &&
		    t != ICMPV6_TIME_EXCEED && t != ICMPV6_PARAMPROB)
			goto pass;
	} else {
		goto pass;
	}
	/* The quoted packet is one lstack sent: its source port is ours. */
	if (quoted_port(ctx, p.l4off + 8, v6, QUOTED_SPORT, &pidx, &port))
		goto pass;
	if (owned(pidx, port))
		return to_lstack(ctx, 0);
pass:
	count(C_XDP_PASSED);
	return XDP_PASS;
}
