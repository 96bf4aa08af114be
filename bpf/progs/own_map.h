/* The ownership map, alone so that own.c can create it without the rest. */
#ifndef GAZELLE_BPF_OWN_MAP_H
#define GAZELLE_BPF_OWN_MAP_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

/* One bit per (protocol, local port): word (p*65536 + port) / 64, bit port % 64.
 * User space maps the array (BPF_F_MMAPABLE) and flips bits with atomics. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 2048);
	__uint(map_flags, BPF_F_MMAPABLE);
} own SEC(".maps");

#endif
