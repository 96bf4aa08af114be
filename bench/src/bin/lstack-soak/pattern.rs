//! The bytes a connection streams: pseudo-random, seeded per connection,
//! and addressable by offset, so the receiver recomputes what it should get
//! at any point of the stream without keeping a copy of what was sent.
//!
//! Byte `i` of stream `seed` is byte `i % 8` (little-endian) of
//! `splitmix64(seed + (i / 8) * GOLDEN)`.

/// splitmix64's increment.
const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;

/// splitmix64's output function: a well-mixed 64-bit hash of `x`.
pub fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The seed of stream `index` of a run seeded with `run_seed`.
pub fn stream_seed(run_seed: u64, index: u64) -> u64 {
    mix(run_seed ^ mix(index.wrapping_add(1)))
}

fn word(seed: u64, index: u64) -> [u8; 8] {
    mix(seed.wrapping_add(index.wrapping_mul(GOLDEN))).to_le_bytes()
}

/// Fills `buf` with bytes `offset..offset + buf.len()` of stream `seed`.
pub fn fill(seed: u64, offset: u64, buf: &mut [u8]) {
    let mut at = 0usize;
    let mut pos = offset;
    while at < buf.len() {
        let w = word(seed, pos / 8);
        let skip = (pos % 8) as usize;
        let n = (8 - skip).min(buf.len() - at);
        buf[at..at + n].copy_from_slice(&w[skip..skip + n]);
        at += n;
        pos += n as u64;
    }
}

/// Checks `data` against bytes `offset..` of stream `seed`, using `scratch`
/// (grown as needed) for the expected bytes. Returns how many bytes differ
/// and the stream offset of the first that does.
pub fn verify(seed: u64, offset: u64, data: &[u8], scratch: &mut Vec<u8>) -> (u64, Option<u64>) {
    scratch.resize(data.len(), 0);
    fill(seed, offset, scratch);
    if scratch[..] == *data {
        return (0, None);
    }
    let mut bad = 0u64;
    let mut first = None;
    for (i, (a, b)) in data.iter().zip(scratch.iter()).enumerate() {
        if a != b {
            bad += 1;
            first.get_or_insert(offset + i as u64);
        }
    }
    (bad, first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_slice_is_the_same_as_cut_from_the_whole() {
        let seed = stream_seed(7, 3);
        let mut whole = vec![0u8; 1000];
        fill(seed, 0, &mut whole);
        for (start, len) in [
            (0, 1),
            (1, 7),
            (3, 16),
            (8, 8),
            (13, 987),
            (999, 1),
            (500, 0),
        ] {
            let mut part = vec![0u8; len];
            fill(seed, start as u64, &mut part);
            assert_eq!(part, whole[start..start + len], "at {start}+{len}");
        }
    }

    #[test]
    fn streams_differ_per_connection_and_look_random() {
        let (mut a, mut b) = (vec![0u8; 4096], vec![0u8; 4096]);
        fill(stream_seed(1, 0), 0, &mut a);
        fill(stream_seed(1, 1), 0, &mut b);
        assert_ne!(a, b);
        let same = a.iter().zip(&b).filter(|(x, y)| x == y).count();
        assert!(same < 64, "{same} equal bytes of 4096");
        let mut counts = [0u32; 256];
        a.iter().for_each(|&x| counts[x as usize] += 1);
        assert!(counts.iter().all(|&c| c < 64), "{counts:?}");
    }

    #[test]
    fn verify_finds_each_wrong_byte_and_the_first_offset() {
        let seed = stream_seed(9, 0);
        let mut data = vec![0u8; 300];
        let mut scratch = Vec::new();
        fill(seed, 5000, &mut data);
        assert_eq!(verify(seed, 5000, &data, &mut scratch), (0, None));
        data[17] ^= 1;
        data[200] ^= 0x80;
        assert_eq!(verify(seed, 5000, &data, &mut scratch), (2, Some(5017)));
        // The right bytes at the wrong offset (a lost or repeated segment).
        fill(seed, 5001, &mut data);
        let (bad, first) = verify(seed, 5000, &data, &mut scratch);
        assert!(bad > 250, "{bad}");
        assert_eq!(first, Some(5000));
    }
}
