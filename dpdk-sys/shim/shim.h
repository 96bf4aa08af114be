/*
 * C shim over DPDK's static-inline functions and macros, which bindgen cannot
 * bind. Every function here is a one-line forwarder; keep logic in Rust.
 */
#ifndef LSTACK_DPDK_SHIM_H
#define LSTACK_DPDK_SHIM_H

#include <stdint.h>
#include <rte_config.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_lcore.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>
#include <rte_ring.h>
#include <rte_ip.h>
#include <rte_cycles.h>

int shim_rte_errno(void);
void shim_set_rte_errno(int value);
unsigned shim_rte_lcore_id(void);

uint16_t shim_rte_eth_rx_burst(uint16_t port_id, uint16_t queue_id,
                               struct rte_mbuf **rx_pkts, uint16_t nb_pkts);
uint16_t shim_rte_eth_tx_burst(uint16_t port_id, uint16_t queue_id,
                               struct rte_mbuf **tx_pkts, uint16_t nb_pkts);

struct rte_mbuf *shim_rte_pktmbuf_alloc(struct rte_mempool *mp);
int shim_rte_pktmbuf_alloc_bulk(struct rte_mempool *mp, struct rte_mbuf **mbufs,
                                unsigned count);
void shim_rte_pktmbuf_free(struct rte_mbuf *m);
void shim_rte_pktmbuf_free_bulk(struct rte_mbuf **mbufs, unsigned count);
void *shim_rte_pktmbuf_mtod(struct rte_mbuf *m);
uint32_t shim_rte_pktmbuf_pkt_len(const struct rte_mbuf *m);
uint16_t shim_rte_pktmbuf_data_len(const struct rte_mbuf *m);
uint16_t shim_rte_pktmbuf_nb_segs(const struct rte_mbuf *m);
char *shim_rte_pktmbuf_append(struct rte_mbuf *m, uint16_t len);
int shim_rte_pktmbuf_trim(struct rte_mbuf *m, uint16_t len);
uint16_t shim_rte_pktmbuf_tailroom(const struct rte_mbuf *m);
uint16_t shim_rte_pktmbuf_headroom(const struct rte_mbuf *m);
char *shim_rte_pktmbuf_prepend(struct rte_mbuf *m, uint16_t len);
char *shim_rte_pktmbuf_adj(struct rte_mbuf *m, uint16_t len);
uint16_t shim_rte_mbuf_vlan_tci(const struct rte_mbuf *m);
/* Asks for the 802.1Q tag `tci` on transmit (RTE_MBUF_F_TX_VLAN). */
void shim_rte_mbuf_set_tx_vlan(struct rte_mbuf *m, uint16_t tci);
void shim_rte_mbuf_refcnt_update(struct rte_mbuf *m, int16_t value);
uint64_t shim_rte_mbuf_ol_flags(const struct rte_mbuf *m);
void shim_rte_mbuf_set_tx_offload(struct rte_mbuf *m, uint64_t ol_flags,
                                  uint16_t l2_len, uint16_t l3_len);
uint32_t shim_rte_mbuf_packet_type(const struct rte_mbuf *m);
uint32_t shim_rte_mbuf_rss_hash(const struct rte_mbuf *m);

unsigned shim_rte_ring_enqueue_burst(struct rte_ring *r, void *const *objs,
                                     unsigned n);
unsigned shim_rte_ring_dequeue_burst(struct rte_ring *r, void **objs, unsigned n);
unsigned shim_rte_ring_count(const struct rte_ring *r);
unsigned shim_rte_ring_free_count(const struct rte_ring *r);

uint16_t shim_rte_ipv4_phdr_cksum(const void *ipv4_hdr, uint64_t ol_flags);
uint16_t shim_rte_ipv6_phdr_cksum(const void *ipv6_hdr, uint64_t ol_flags);

/* Gives a non-EAL thread an lcore id, so mempool per-lcore caches work. */
int shim_rte_thread_register(void);
void shim_rte_thread_unregister(void);

uint64_t shim_rte_get_tsc_cycles(void);
uint64_t shim_rte_get_tsc_hz(void);

/* Dynamic mbuf field of `size` bytes (aligned to size) named `name`:
 * registers it (primary) or finds it (secondary); returns its offset or -1. */
int shim_mbuf_dynfield_register(const char *name, unsigned size);
int shim_mbuf_dynfield_lookup(const char *name);

/* Puts an mbuf of a dead process back into its pool: resets refcnt, chain
 * and segment count (which the dead owner may have left in any state), then
 * rte_mbuf_raw_free. */
void shim_rte_mbuf_reclaim(struct rte_mbuf *m);

/* rte_mempool_obj_iter over a pktmbuf pool, handing each object as an mbuf. */
unsigned shim_rte_mempool_mbuf_iter(struct rte_mempool *mp,
                                    void (*f)(struct rte_mbuf *m, void *arg),
                                    void *arg);

#endif
