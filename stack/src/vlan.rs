//! 802.1Q tags for a stack on one VLAN of its port (`nic_vlan_mode`).
//!
//! With `nic_vlan_mode = N`, the frames the stack takes are those tagged
//! for VLAN N, and every frame it sends carries that tag (priority 0). The
//! port does the work where it offers to ([`dpdk::PortInfo::rx_vlan_strip`]
//! and [`dpdk::PortInfo::tx_vlan_insert`]: `net_af_packet` has both, as the
//! kernel keeps a tag beside the frame); otherwise the tag is taken out of
//! or put into the data here: the two MAC addresses move by four bytes and
//! the mbuf's start moves by four, with no copy of the frame, allocation or
//! lock. Either way the classifier and smoltcp only see untagged Ethernet
//! frames.
//!
//! A received frame without a tag, or tagged for another VLAN, is dropped
//! and counted as [`crate::DropReason::NotOurVlan`].

use dpdk::Mbuf;

/// The EtherType of an 802.1Q tag (TPID).
pub const TPID: u16 = 0x8100;
/// Bytes of one tag: TPID and tag control information (TCI).
pub const TAG_LEN: usize = 4;
/// Bytes of the destination and source MAC addresses, in front of a tag.
const MACS: usize = 12;
/// The VLAN id bits of a TCI (the others are priority and DEI).
const VID_MASK: u16 = 0x0fff;

/// Where a received frame's tag is, and whether it is the stack's VLAN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RxTag {
    /// The port took the stack's tag out already: the frame is ready.
    Stripped,
    /// The stack's tag is in the data: [`untag`] it.
    InData,
    /// No tag, or another VLAN's: not the stack's.
    Foreign,
}

/// Where the tag of `frame` is, given the tag the port stripped into the
/// mbuf's metadata (`stripped`), for a stack on VLAN `id`. Only the VLAN
/// id bits count; a frame with a tag in neither place is foreign.
pub fn rx_tag(frame: &[u8], stripped: Option<u16>, id: u16) -> RxTag {
    let tci = match stripped {
        Some(tci) => tci,
        None => match tag_of(frame) {
            Some(tci) if tci & VID_MASK == id => return RxTag::InData,
            _ => return RxTag::Foreign,
        },
    };
    if tci & VID_MASK == id {
        RxTag::Stripped
    } else {
        RxTag::Foreign
    }
}

/// The TCI of the 802.1Q tag in `frame`'s data, if it carries one.
pub fn tag_of(frame: &[u8]) -> Option<u16> {
    let header = frame.get(..MACS + TAG_LEN + 2)?;
    if u16::from_be_bytes([header[MACS], header[MACS + 1]]) != TPID {
        return None;
    }
    Some(u16::from_be_bytes([header[MACS + 2], header[MACS + 3]]))
}

/// Takes the tag out of a tagged `frame` in place: moves the MAC addresses
/// over it, so the untagged frame is `frame[TAG_LEN..]` (the caller drops
/// the first [`TAG_LEN`] bytes). False, with `frame` untouched, if it has
/// no tag.
pub fn untag(frame: &mut [u8]) -> bool {
    if tag_of(frame).is_none() {
        return false;
    }
    frame.copy_within(..MACS, TAG_LEN);
    true
}

/// Tags a frame in place: `frame` is [`TAG_LEN`] spare bytes followed by
/// an untagged Ethernet frame, which becomes the same frame tagged with
/// `tci`. False, with `frame` untouched, if it is too short to hold a
/// tagged Ethernet header.
pub fn tag(frame: &mut [u8], tci: u16) -> bool {
    if frame.len() < TAG_LEN + MACS + 2 {
        return false;
    }
    frame.copy_within(TAG_LEN..TAG_LEN + MACS, 0);
    frame[MACS..MACS + 2].copy_from_slice(&TPID.to_be_bytes());
    frame[MACS + 2..MACS + TAG_LEN].copy_from_slice(&tci.to_be_bytes());
    true
}

/// The VLAN a stack is on, and which of the tag's work its port does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vlan {
    id: u16,
    rx_strip: bool,
    tx_insert: bool,
}

impl Vlan {
    /// VLAN `id` (0..=4094); `rx_strip`: the port strips tags on receive
    /// ([`Mbuf::rx_vlan_stripped`]; [`Vlan::receive`] handles a tag in
    /// either place); `tx_insert`: it inserts them on transmit
    /// ([`Mbuf::request_vlan_insert`]).
    pub fn new(id: u16, rx_strip: bool, tx_insert: bool) -> Self {
        Self {
            id: id & VID_MASK,
            rx_strip,
            tx_insert,
        }
    }

    /// The VLAN id.
    pub fn id(&self) -> u16 {
        self.id
    }

    /// Whether the port strips the tags of received frames.
    pub fn rx_strip(&self) -> bool {
        self.rx_strip
    }

    /// Whether the port inserts the tags of sent frames.
    pub fn tx_insert(&self) -> bool {
        self.tx_insert
    }

    /// The TCI of the stack's frames: its VLAN, priority 0.
    pub fn tci(&self) -> u16 {
        self.id
    }

    /// Bytes the tag adds to a frame's data before the port sees it: 0
    /// when the port inserts it.
    pub fn data_tag_len(&self) -> usize {
        if self.tx_insert {
            0
        } else {
            TAG_LEN
        }
    }

    /// Makes received `m` the untagged frame the stack sees, whether the
    /// port stripped its tag or left it in the data. False: not a frame of
    /// this VLAN (untagged or another's), for the caller to drop.
    #[inline]
    pub fn receive(&self, m: &mut Mbuf) -> bool {
        match rx_tag(m.data(), m.rx_vlan_stripped(), self.id) {
            RxTag::Stripped => true,
            RxTag::InData => untag(m.data_mut()) && m.adj(TAG_LEN),
            RxTag::Foreign => false,
        }
    }

    /// Tags `m`, an untagged frame about to be sent: asks the port to, or
    /// puts the tag into the data. False: no headroom for it (never with
    /// DPDK's mbufs, which keep 128 bytes), for the caller to drop.
    #[inline]
    pub fn transmit(&self, m: &mut Mbuf) -> bool {
        if self.tx_insert {
            m.request_vlan_insert(self.tci());
            return true;
        }
        m.prepend(TAG_LEN).is_some_and(|data| tag(data, self.tci()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An untagged frame: MACs 1..=12, EtherType IPv4, `payload` bytes.
    fn plain(payload: usize) -> Vec<u8> {
        let mut f: Vec<u8> = (1..=12).collect();
        f.extend_from_slice(&[0x08, 0x00]);
        f.extend((0..payload).map(|i| i as u8 ^ 0x5a));
        f
    }

    /// `plain` tagged with `tci`, as a wire would carry it.
    fn tagged(payload: usize, tci: u16) -> Vec<u8> {
        let p = plain(payload);
        let mut f = p[..12].to_vec();
        f.extend_from_slice(&TPID.to_be_bytes());
        f.extend_from_slice(&tci.to_be_bytes());
        f.extend_from_slice(&p[12..]);
        f
    }

    #[test]
    fn tag_then_untag_round_trips() {
        for tci in [0, 1, 100, 4094, 0xe000 | 42] {
            let mut buf = vec![0xee; TAG_LEN];
            buf.extend(plain(46));
            assert!(tag(&mut buf, tci));
            assert_eq!(buf, tagged(46, tci), "tci {tci:#x}");
            assert_eq!(tag_of(&buf), Some(tci));
            assert!(untag(&mut buf));
            assert_eq!(&buf[TAG_LEN..], &plain(46)[..]);
        }
    }

    #[test]
    fn untag_leaves_untagged_and_short_frames_alone() {
        let mut p = plain(46);
        assert!(!untag(&mut p));
        assert_eq!(p, plain(46));
        // A tag with no EtherType behind it.
        let mut short = tagged(0, 7)[..16].to_vec();
        let before = short.clone();
        assert!(!untag(&mut short));
        assert_eq!(short, before);
        assert_eq!(tag_of(&[]), None);
        assert!(!tag(&mut [0u8; TAG_LEN + 13], 7));
    }

    #[test]
    fn only_the_stacks_vlan_is_taken() {
        let id = 100;
        assert_eq!(rx_tag(&tagged(46, 100), None, id), RxTag::InData);
        // Priority and DEI bits do not matter.
        assert_eq!(rx_tag(&tagged(46, 0xf000 | 100), None, id), RxTag::InData);
        assert_eq!(rx_tag(&tagged(46, 101), None, id), RxTag::Foreign);
        assert_eq!(rx_tag(&plain(46), None, id), RxTag::Foreign);
        // A priority tag (VLAN 0) is VLAN 0's, not ours.
        assert_eq!(rx_tag(&tagged(46, 0), None, id), RxTag::Foreign);
        assert_eq!(rx_tag(&tagged(46, 0), None, 0), RxTag::InData);
        // Stripped by the port: the metadata decides, the data is plain.
        assert_eq!(rx_tag(&plain(46), Some(100), id), RxTag::Stripped);
        assert_eq!(rx_tag(&plain(46), Some(0x2000 | 100), id), RxTag::Stripped);
        assert_eq!(rx_tag(&plain(46), Some(5), id), RxTag::Foreign);
        assert_eq!(rx_tag(&[], None, id), RxTag::Foreign);
    }

    #[test]
    fn stacks_frames_have_priority_0() {
        let v = Vlan::new(4094, false, false);
        assert_eq!((v.id(), v.tci(), v.data_tag_len()), (4094, 4094, TAG_LEN));
        assert_eq!(Vlan::new(7, false, true).data_tag_len(), 0);
    }
}
