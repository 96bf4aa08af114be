/* TC programs for lstack's exception interface (a tap on which lstack hands
 * the kernel the frames it does not own).
 *
 * egress_guard: the kernel must not answer for ports lstack owns. When a
 *   frame for an lstack connection leaks to the kernel, the kernel would
 *   answer with a RST (source port = the local port) or an ICMP port/protocol
 *   unreachable quoting that frame (quoted destination port = the local
 *   port) that resets lstack's peer. Those answers are dropped here.
 * ingress_rpf: strict reverse path filter, in eBPF, for what lstack hands
 *   to the kernel: martian sources and sources whose route back does not
 *   leave through this interface are dropped.
 */
#include <linux/pkt_cls.h>

#define LOAD(ctx, off, dst, len) bpf_skb_load_bytes(ctx, off, dst, len)
#include "common.h"

#define AF_INET 2
#define AF_INET6 10

/* The instance's own addresses, written by user space (TapGuard::attach). */
struct guard_cfg {
	__u32 has_ipv4;
	__u32 ipv4; /* network order */
	__u32 has_ipv6;
	__u8 ipv6[16];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct guard_cfg);
	__uint(max_entries, 1);
} guard_cfg SEC(".maps");

#define TCP_FLAG_RST 0x04

SEC("classifier")
int egress_guard(struct __sk_buff *skb)
{
	struct pkt p = {};
	__u32 pidx;
	__u16 port;
	int v6;

	if (parse(skb, &p) != 0)
		goto pass;
	v6 = p.eth_proto == ETH_P_IPV6;

	if (p.l4proto == IPPROTO_TCP) {
		__u8 hdr[14];

		if (LOAD(skb, p.l4off, hdr, sizeof(hdr)))
			goto pass;
		port = ((__u16)hdr[0] << 8) | hdr[1];
		if ((hdr[13] & TCP_FLAG_RST) && owned(PROTO_TCP, port)) {
			count(C_RST_DROPPED);
			return TC_ACT_SHOT;
		}
		goto pass;
	}

	if (p.l4proto == IPPROTO_ICMP && !v6) {
		__u8 tc[2];

		if (LOAD(skb, p.l4off, tc, 2))
			goto pass;
		if (tc[0] != ICMP_DEST_UNREACH ||
		    (tc[1] != ICMP_PROT_UNREACH && tc[1] != ICMP_PORT_UNREACH))
			goto pass;
	} else if (p.l4proto == IPPROTO_ICMPV6 && v6) {
		__u8 tc[2];

		if (LOAD(skb, p.l4off, tc, 2))
			goto pass;
		if (tc[0] != ICMPV6_DEST_UNREACH || tc[1] != ICMPV6_PORT_UNREACH)
			goto pass;
	} else {
		goto pass;
	}
	/* ICMP error header is 8 bytes, then the quoted packet: the one the
	 * kernel received, so its destination port is the local port. */
	if (quoted_port(skb, p.l4off + 8, v6, QUOTED_DPORT, &pidx, &port))
		goto pass;
	if (owned(pidx, port)) {
		count(C_ICMP_UNREACH_DROPPED);
		return TC_ACT_SHOT;
	}
pass:
	count(C_EGRESS_PASSED);
	return TC_ACT_OK;
}

static __always_inline int martian4(__u32 saddr, const struct guard_cfg *cfg)
{
	__u8 first = bpf_ntohl(saddr) >> 24;

	if (first == 0 || first == 127 || (first & 0xf0) == 0xe0)
		return 1;
	if (saddr == 0xffffffff)
		return 1;
	if (cfg && cfg->has_ipv4 && cfg->ipv4 == saddr)
		return 1;
	return 0;
}

static __always_inline int martian6(const struct pkt *p, const struct guard_cfg *cfg)
{
	const struct in6_addr *s = &p->saddr6;
	__u32 w0 = s->in6_u.u6_addr32[0], w1 = s->in6_u.u6_addr32[1];
	__u32 w2 = s->in6_u.u6_addr32[2], w3 = s->in6_u.u6_addr32[3];

	if (s->in6_u.u6_addr8[0] == 0xff)
		return 1; /* multicast */
	if (!w0 && !w1 && !w2) {
		if (w3 == bpf_htonl(1))
			return 1; /* ::1 */
		/* :: is the source of duplicate address detection probes,
		 * which are ICMPv6; anything else from :: is martian. */
		if (!w3 && p->l4proto != IPPROTO_ICMPV6)
			return 1;
	}
	if (cfg && cfg->has_ipv6 && ipv6_eq(s, (const struct in6_addr *)cfg->ipv6))
		return 1;
	return 0;
}

/* fe80::/10 */
static __always_inline int link_local6(const struct in6_addr *a)
{
	return a->in6_u.u6_addr8[0] == 0xfe && (a->in6_u.u6_addr8[1] & 0xc0) == 0x80;
}

SEC("classifier")
int ingress_rpf(struct __sk_buff *skb)
{
	struct bpf_fib_lookup fib = {};
	struct pkt p = {};
	__u32 zero = 0;
	struct guard_cfg *cfg = bpf_map_lookup_elem(&guard_cfg, &zero);
	int rc = parse(skb, &p);
	long r;

	if (rc > 0 || (p.eth_proto != ETH_P_IP && p.eth_proto != ETH_P_IPV6))
		goto pass; /* ARP and other non-IP frames */
	if (rc < 0 && p.eth_proto == ETH_P_IPV6) {
		/* Extension headers we do not walk: addresses are still known
		 * if the fixed header was readable; re-read it. */
		struct ipv6hdr ip6;

		if (LOAD(skb, ETH_HDR_LEN, &ip6, sizeof(ip6)))
			goto pass;
		p.saddr6 = ip6.saddr;
		p.daddr6 = ip6.daddr;
		p.l4proto = 0xff;
	} else if (rc < 0) {
		struct iphdr ip;

		if (LOAD(skb, ETH_HDR_LEN, &ip, sizeof(ip)))
			goto pass;
		p.saddr4 = ip.saddr;
		p.daddr4 = ip.daddr;
		p.l4proto = ip.protocol;
	}

	if (p.eth_proto == ETH_P_IP) {
		if (martian4(p.saddr4, cfg))
			goto martian;
		fib.family = AF_INET;
		fib.ipv4_dst = p.saddr4;
		/* Our address as the source of the route back (policy routing),
		 * unless the packet went to a multicast or broadcast address. */
		if ((bpf_ntohl(p.daddr4) >> 28) != 0xe && p.daddr4 != 0xffffffff)
			fib.ipv4_src = p.daddr4;
	} else {
		if (martian6(&p, cfg))
			goto martian;
		if (!p.saddr6.in6_u.u6_addr32[0] && !p.saddr6.in6_u.u6_addr32[1] &&
		    !p.saddr6.in6_u.u6_addr32[2] && !p.saddr6.in6_u.u6_addr32[3])
			goto pass; /* DAD probe: nothing to route back to */
		/* Link-local sources are on this link by definition, and
		 * bpf_fib_lookup refuses (NOT_FWDED) link-local or multicast
		 * addresses: neighbour discovery would never pass. */
		if (link_local6(&p.saddr6))
			goto pass;
		fib.family = AF_INET6;
		__builtin_memcpy(fib.ipv6_dst, &p.saddr6, 16);
		if (p.daddr6.in6_u.u6_addr8[0] != 0xff && !link_local6(&p.daddr6))
			__builtin_memcpy(fib.ipv6_src, &p.daddr6, 16);
	}
	fib.l4_protocol = p.l4proto;
	fib.ifindex = skb->ifindex;

	/* Input lookup of the route back to the source, as if it had come in
	 * on this interface: strict RPF wants it to leave through the same. */
	r = bpf_fib_lookup(skb, &fib, sizeof(fib), 0);
	if (r == BPF_FIB_LKUP_RET_FWD_DISABLED) {
		/* bpf_fib_lookup refuses to look anything up on an interface
		 * without forwarding; the rp_filter sysctl still applies. */
		count(C_RPF_UNCHECKED);
		goto pass;
	}
	if ((r == BPF_FIB_LKUP_RET_SUCCESS || r == BPF_FIB_LKUP_RET_NO_NEIGH) &&
	    fib.ifindex == skb->ifindex)
		goto pass;
	count(C_RPF_NO_ROUTE_DROPPED);
	return TC_ACT_SHOT;
martian:
	count(C_RPF_MARTIAN_DROPPED);
	return TC_ACT_SHOT;
pass:
	count(C_INGRESS_PASSED);
	return TC_ACT_OK;
}
