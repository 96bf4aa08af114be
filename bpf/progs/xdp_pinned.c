/* xdp_bifurcate as DPDK's net_af_xdp loads it (devarg xdp_prog=<file>):
 * DPDK 22.11 opens the file with libbpf and creates the object's maps
 * itself, so the maps lstack shares with the program are pinned by name
 * (libbpf's default pin root, /sys/fs/bpf) under names no other object
 * uses; lstack opens them from those pins once DPDK has loaded the
 * program. xsks_map stays unpinned: DPDK fills it with its sockets. One
 * such program per host (the pin names are fixed). */
#define GAZELLE_PIN_BY_NAME 1
#define own lstack_xdp_own
#define counters lstack_xdp_cnt
#define arp_wanted lstack_xdp_arp
#include "xdp_bifurcate.c"
