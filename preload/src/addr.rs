//! `sockaddr` <-> `SocketAddr`, with the checks libc does.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use libc::{sockaddr, sockaddr_in, sockaddr_in6, socklen_t, AF_INET, AF_INET6};

/// Reads a socket address the application passed in.
///
/// # Safety
/// `addr` must be null or point to `len` readable bytes.
pub unsafe fn read(addr: *const sockaddr, len: socklen_t) -> Result<SocketAddr, i32> {
    if addr.is_null() {
        return Err(libc::EFAULT);
    }
    // SAFETY: addr points to at least sa_family (checked by len below before use).
    if (len as usize) < std::mem::size_of::<libc::sa_family_t>() {
        return Err(libc::EINVAL);
    }
    // SAFETY: len covers sa_family.
    let family = i32::from(unsafe { (*addr).sa_family });
    match family {
        AF_INET => {
            if (len as usize) < std::mem::size_of::<sockaddr_in>() {
                return Err(libc::EINVAL);
            }
            // SAFETY: len covers a sockaddr_in; read_unaligned tolerates any alignment.
            let a = unsafe { std::ptr::read_unaligned(addr.cast::<sockaddr_in>()) };
            Ok(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u16::from_be(a.sin_port),
            )))
        }
        AF_INET6 => {
            if (len as usize) < std::mem::size_of::<sockaddr_in6>() {
                return Err(libc::EINVAL);
            }
            // SAFETY: as above, for sockaddr_in6.
            let a = unsafe { std::ptr::read_unaligned(addr.cast::<sockaddr_in6>()) };
            let ip = Ipv6Addr::from(a.sin6_addr.s6_addr);
            if let Some(v4) = ip.to_ipv4_mapped() {
                // A v4-mapped address means IPv4 on the wire.
                return Ok(SocketAddr::V4(SocketAddrV4::new(
                    v4,
                    u16::from_be(a.sin6_port),
                )));
            }
            Ok(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => Err(libc::EAFNOSUPPORT),
    }
}

/// Writes `sa` to an application buffer as `getsockname`/`accept` do:
/// truncated to `*len`, with `*len` set to the full size. A null `addr`
/// writes nothing.
///
/// # Safety
/// `addr` must be null or point to `*len` writable bytes; `len` must be
/// null or valid.
pub unsafe fn write(sa: SocketAddr, addr: *mut sockaddr, len: *mut socklen_t) -> Result<(), i32> {
    if addr.is_null() {
        return Ok(());
    }
    if len.is_null() {
        return Err(libc::EFAULT);
    }
    // SAFETY: checked non-null above; caller guarantees validity.
    let cap = unsafe { *len } as usize;
    let (bytes, full): ([u8; 28], usize) = match sa {
        SocketAddr::V4(v4) => {
            let a = sockaddr_in {
                sin_family: AF_INET as u16,
                sin_port: v4.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(*v4.ip()).to_be(),
                },
                sin_zero: [0; 8],
            };
            let mut b = [0u8; 28];
            // SAFETY: sockaddr_in is 16 plain bytes.
            let raw: [u8; 16] = unsafe { std::mem::transmute(a) };
            b[..16].copy_from_slice(&raw);
            (b, 16)
        }
        SocketAddr::V6(v6) => {
            let a = sockaddr_in6 {
                sin6_family: AF_INET6 as u16,
                sin6_port: v6.port().to_be(),
                sin6_flowinfo: v6.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: v6.ip().octets(),
                },
                sin6_scope_id: v6.scope_id(),
            };
            // SAFETY: sockaddr_in6 is 28 plain bytes.
            let raw: [u8; 28] = unsafe { std::mem::transmute(a) };
            (raw, 28)
        }
    };
    let n = cap.min(full);
    // SAFETY: the caller's buffer holds `cap` >= n bytes.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), addr.cast::<u8>(), n);
        *len = full as socklen_t;
    }
    Ok(())
}
