/* See shim.h: forwarders for DPDK's inline API. */
#define ALLOW_EXPERIMENTAL_API 1
#include "shim.h"
#include <stdio.h>
#include <string.h>
#include <rte_mbuf_dyn.h>

/* The Rust side mirrors these flag values as constants; fail the build if
 * the system DPDK ever disagrees. */
_Static_assert(RTE_ETH_RX_OFFLOAD_IPV4_CKSUM == (1ULL << 1), "rx ipv4 cksum");
_Static_assert(RTE_ETH_RX_OFFLOAD_UDP_CKSUM == (1ULL << 2), "rx udp cksum");
_Static_assert(RTE_ETH_RX_OFFLOAD_TCP_CKSUM == (1ULL << 3), "rx tcp cksum");
_Static_assert(RTE_ETH_TX_OFFLOAD_IPV4_CKSUM == (1ULL << 1), "tx ipv4 cksum");
_Static_assert(RTE_ETH_TX_OFFLOAD_UDP_CKSUM == (1ULL << 2), "tx udp cksum");
_Static_assert(RTE_ETH_TX_OFFLOAD_TCP_CKSUM == (1ULL << 3), "tx tcp cksum");
_Static_assert(RTE_ETH_TX_OFFLOAD_MULTI_SEGS == (1ULL << 15), "tx multi segs");
_Static_assert(RTE_ETH_TX_OFFLOAD_MBUF_FAST_FREE == (1ULL << 16), "tx fast free");
_Static_assert(RTE_MBUF_F_RX_IP_CKSUM_MASK == ((1ULL << 4) | (1ULL << 7)), "rx ip mask");
_Static_assert(RTE_MBUF_F_RX_IP_CKSUM_GOOD == (1ULL << 7), "rx ip good");
_Static_assert(RTE_MBUF_F_RX_IP_CKSUM_BAD == (1ULL << 4), "rx ip bad");
_Static_assert(RTE_MBUF_F_RX_L4_CKSUM_MASK == ((1ULL << 3) | (1ULL << 8)), "rx l4 mask");
_Static_assert(RTE_MBUF_F_RX_L4_CKSUM_GOOD == (1ULL << 8), "rx l4 good");
_Static_assert(RTE_MBUF_F_RX_L4_CKSUM_BAD == (1ULL << 3), "rx l4 bad");
_Static_assert(RTE_MBUF_F_TX_TCP_CKSUM == (1ULL << 52), "tx tcp");
_Static_assert(RTE_MBUF_F_TX_UDP_CKSUM == (3ULL << 52), "tx udp");
_Static_assert(RTE_MBUF_F_TX_IP_CKSUM == (1ULL << 54), "tx ip");
_Static_assert(RTE_MBUF_F_TX_IPV4 == (1ULL << 55), "tx ipv4");
_Static_assert(RTE_MBUF_F_TX_IPV6 == (1ULL << 56), "tx ipv6");
_Static_assert(RTE_MBUF_F_RX_RSS_HASH == (1ULL << 1), "rx rss hash");
_Static_assert(RTE_ETH_RX_OFFLOAD_VLAN_STRIP == (1ULL << 0), "rx vlan strip");
_Static_assert(RTE_ETH_TX_OFFLOAD_VLAN_INSERT == (1ULL << 0), "tx vlan insert");
_Static_assert(RTE_MBUF_F_RX_VLAN == (1ULL << 0), "rx vlan");
_Static_assert(RTE_MBUF_F_RX_VLAN_STRIPPED == (1ULL << 6), "rx vlan stripped");
_Static_assert(RTE_MBUF_F_TX_VLAN == (1ULL << 57), "tx vlan");

int shim_rte_errno(void) { return rte_errno; }
void shim_set_rte_errno(int value) { rte_errno = value; }
unsigned shim_rte_lcore_id(void) { return rte_lcore_id(); }

uint16_t shim_rte_eth_rx_burst(uint16_t port_id, uint16_t queue_id,
                               struct rte_mbuf **rx_pkts, uint16_t nb_pkts)
{
	return rte_eth_rx_burst(port_id, queue_id, rx_pkts, nb_pkts);
}

uint16_t shim_rte_eth_tx_burst(uint16_t port_id, uint16_t queue_id,
                               struct rte_mbuf **tx_pkts, uint16_t nb_pkts)
{
	return rte_eth_tx_burst(port_id, queue_id, tx_pkts, nb_pkts);
}

struct rte_mbuf *shim_rte_pktmbuf_alloc(struct rte_mempool *mp)
{
	return rte_pktmbuf_alloc(mp);
}

int shim_rte_pktmbuf_alloc_bulk(struct rte_mempool *mp, struct rte_mbuf **mbufs,
                                unsigned count)
{
	return rte_pktmbuf_alloc_bulk(mp, mbufs, count);
}

void shim_rte_pktmbuf_free(struct rte_mbuf *m) { rte_pktmbuf_free(m); }

void shim_rte_pktmbuf_free_bulk(struct rte_mbuf **mbufs, unsigned count)
{
	rte_pktmbuf_free_bulk(mbufs, count);
}

void *shim_rte_pktmbuf_mtod(struct rte_mbuf *m) { return rte_pktmbuf_mtod(m, void *); }
uint32_t shim_rte_pktmbuf_pkt_len(const struct rte_mbuf *m) { return rte_pktmbuf_pkt_len(m); }
uint16_t shim_rte_pktmbuf_data_len(const struct rte_mbuf *m) { return rte_pktmbuf_data_len(m); }
uint16_t shim_rte_pktmbuf_nb_segs(const struct rte_mbuf *m) { return m->nb_segs; }
char *shim_rte_pktmbuf_append(struct rte_mbuf *m, uint16_t len) { return rte_pktmbuf_append(m, len); }
int shim_rte_pktmbuf_trim(struct rte_mbuf *m, uint16_t len) { return rte_pktmbuf_trim(m, len); }
uint16_t shim_rte_pktmbuf_tailroom(const struct rte_mbuf *m) { return rte_pktmbuf_tailroom(m); }
uint16_t shim_rte_pktmbuf_headroom(const struct rte_mbuf *m) { return rte_pktmbuf_headroom(m); }
char *shim_rte_pktmbuf_prepend(struct rte_mbuf *m, uint16_t len) { return rte_pktmbuf_prepend(m, len); }
char *shim_rte_pktmbuf_adj(struct rte_mbuf *m, uint16_t len) { return rte_pktmbuf_adj(m, len); }
uint16_t shim_rte_mbuf_vlan_tci(const struct rte_mbuf *m) { return m->vlan_tci; }

void shim_rte_mbuf_set_tx_vlan(struct rte_mbuf *m, uint16_t tci)
{
	m->ol_flags |= RTE_MBUF_F_TX_VLAN;
	m->vlan_tci = tci;
}
void shim_rte_mbuf_refcnt_update(struct rte_mbuf *m, int16_t value) { rte_mbuf_refcnt_update(m, value); }
uint64_t shim_rte_mbuf_ol_flags(const struct rte_mbuf *m) { return m->ol_flags; }

void shim_rte_mbuf_set_tx_offload(struct rte_mbuf *m, uint64_t ol_flags,
                                  uint16_t l2_len, uint16_t l3_len)
{
	m->ol_flags |= ol_flags;
	m->l2_len = l2_len;
	m->l3_len = l3_len;
}

uint32_t shim_rte_mbuf_packet_type(const struct rte_mbuf *m) { return m->packet_type; }
uint32_t shim_rte_mbuf_rss_hash(const struct rte_mbuf *m) { return m->hash.rss; }

unsigned shim_rte_ring_enqueue_burst(struct rte_ring *r, void *const *objs, unsigned n)
{
	return rte_ring_enqueue_burst(r, objs, n, NULL);
}

unsigned shim_rte_ring_dequeue_burst(struct rte_ring *r, void **objs, unsigned n)
{
	return rte_ring_dequeue_burst(r, objs, n, NULL);
}

unsigned shim_rte_ring_count(const struct rte_ring *r) { return rte_ring_count(r); }
unsigned shim_rte_ring_free_count(const struct rte_ring *r) { return rte_ring_free_count(r); }

uint16_t shim_rte_ipv4_phdr_cksum(const void *ipv4_hdr, uint64_t ol_flags)
{
	return rte_ipv4_phdr_cksum((const struct rte_ipv4_hdr *)ipv4_hdr, ol_flags);
}

uint16_t shim_rte_ipv6_phdr_cksum(const void *ipv6_hdr, uint64_t ol_flags)
{
	return rte_ipv6_phdr_cksum((const struct rte_ipv6_hdr *)ipv6_hdr, ol_flags);
}

uint64_t shim_rte_get_tsc_cycles(void) { return rte_get_tsc_cycles(); }
uint64_t shim_rte_get_tsc_hz(void) { return rte_get_tsc_hz(); }

int shim_rte_thread_register(void) { return rte_thread_register(); }
void shim_rte_thread_unregister(void) { rte_thread_unregister(); }

int shim_mbuf_dynfield_register(const char *name, unsigned size)
{
	struct rte_mbuf_dynfield desc;
	memset(&desc, 0, sizeof(desc));
	snprintf(desc.name, sizeof(desc.name), "%s", name);
	desc.size = size;
	desc.align = size;
	return rte_mbuf_dynfield_register(&desc);
}

int shim_mbuf_dynfield_lookup(const char *name) { return rte_mbuf_dynfield_lookup(name, NULL); }

void shim_rte_mbuf_reclaim(struct rte_mbuf *m)
{
	rte_mbuf_refcnt_set(m, 1);
	m->next = NULL;
	m->nb_segs = 1;
	rte_mbuf_raw_free(m);
}

struct mbuf_iter { void (*f)(struct rte_mbuf *, void *); void *arg; };

static void mbuf_iter_one(struct rte_mempool *mp, void *opaque, void *obj, unsigned idx)
{
	struct mbuf_iter *it = opaque;
	(void)mp;
	(void)idx;
	it->f((struct rte_mbuf *)obj, it->arg);
}

unsigned shim_rte_mempool_mbuf_iter(struct rte_mempool *mp,
                                    void (*f)(struct rte_mbuf *m, void *arg),
                                    void *arg)
{
	struct mbuf_iter it = { f, arg };
	return rte_mempool_obj_iter(mp, mbuf_iter_one, &it);
}
