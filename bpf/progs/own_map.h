/* The ownership map, alone so that own.c can create it without the rest. */
#ifndef GAZELLE_BPF_OWN_MAP_H
#define GAZELLE_BPF_OWN_MAP_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

/* xdp_pinned.c defines GAZELLE_PIN_BY_NAME: then libbpf (the copy DPDK's
 * net_af_xdp loads through its xdp_prog= devarg) pins the shared maps at
 * /sys/fs/bpf/<map name>, or reuses the maps pinned there. */
#ifdef GAZELLE_PIN_BY_NAME
#define GAZELLE_PIN __uint(pinning, LIBBPF_PIN_BY_NAME);
#else
#define GAZELLE_PIN
#endif

/* One bit per (protocol, local port): word (p*65536 + port) / 64, bit port % 64.
 * User space maps the array (BPF_F_MMAPABLE) and flips bits with atomics. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 2048);
	__uint(map_flags, BPF_F_MMAPABLE);
	GAZELLE_PIN
} own SEC(".maps");

#endif
