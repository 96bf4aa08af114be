/* TC ingress on the kernel interface under a DPDK net_af_packet port, when
 * lstack shares its address with the kernel through the exception interface
 * (kni_switch / flow_bifurcation).
 *
 * net_af_packet reads the interface through a packet socket, which the
 * kernel serves before its own ingress: without this program the kernel
 * would also take every frame as its own (Linux accepts a packet for any
 * local address on any interface), answering lstack's peers twice and
 * resetting lstack's connections. The kernel's address lives on the
 * exception interface; here it gets nothing, and every frame it did not get
 * is counted. DPDK's packet socket has seen it already.
 */
#include <linux/pkt_cls.h>

#define LOAD(ctx, off, dst, len) bpf_skb_load_bytes(ctx, off, dst, len)
#include "common.h"

SEC("classifier")
int nic_block(struct __sk_buff *skb __attribute__((unused)))
{
	count(C_NIC_BLOCKED);
	return TC_ACT_SHOT;
}
