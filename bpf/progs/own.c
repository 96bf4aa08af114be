/* Only the ownership map: Ownership::create loads this object to create the
 * map (and pin it) before any program exists. */
#include "own_map.h"

char LICENSE[] SEC("license") = "Dual MIT/GPL";
