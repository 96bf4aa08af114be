//! lstack-tcp-hold: a kernel TCP client that opens many connections and holds
//! them, to check how many connections a stack carries.
//!
//! The scale test runs it inside the peer namespace, in several
//! processes, because one process may not have enough file descriptors for
//! 20000 sockets. Protocol on stdin/stdout:
//! - start: `lstack-tcp-hold ADDR COUNT THREADS`; prints `connected COUNT SECS`;
//! - stdin line `echo BASE`: writes BASE+i (u64, big endian) on connection i,
//!   reads 8 bytes back, checks them, prints `echoed COUNT` (or `error ...`
//!   and exits 1);
//! - stdin EOF: closes everything and exits 0.

use std::{
    io::{BufRead, Read, Write},
    net::{SocketAddr, TcpStream},
    time::{Duration, Instant},
};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 {
        eprintln!("usage: lstack-tcp-hold ADDR COUNT THREADS");
        std::process::exit(2);
    }
    let addr: SocketAddr = args[1].parse().expect("ADDR");
    let count: usize = args[2].parse().expect("COUNT");
    let threads: usize = args[3].parse::<usize>().expect("THREADS").max(1);
    let start = Instant::now();
    let per = count.div_ceil(threads);
    let mut conns: Vec<TcpStream> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|t| {
                let n = per.min(count.saturating_sub(t * per));
                s.spawn(move || {
                    (0..n)
                        .map(|i| {
                            TcpStream::connect_timeout(&addr, Duration::from_secs(30))
                                .unwrap_or_else(|e| {
                                    println!("error connecting {t}/{i}: {e}");
                                    std::process::exit(1)
                                })
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        hs.into_iter()
            .flat_map(|h| h.join().expect("connect thread"))
            .collect()
    });
    println!(
        "connected {} {:.3}",
        conns.len(),
        start.elapsed().as_secs_f64()
    );
    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        let line = line.expect("stdin");
        let Some(base) = line
            .strip_prefix("echo ")
            .and_then(|b| b.trim().parse::<u64>().ok())
        else {
            println!("error: unknown command {line:?}");
            std::process::exit(1);
        };
        for (i, c) in conns.iter_mut().enumerate() {
            c.write_all(&(base + i as u64).to_be_bytes())
                .expect("write");
        }
        for (i, c) in conns.iter_mut().enumerate() {
            c.set_read_timeout(Some(Duration::from_secs(60)))
                .expect("timeout");
            let mut b = [0u8; 8];
            if let Err(e) = c.read_exact(&mut b) {
                println!("error: connection {i}: {e}");
                std::process::exit(1);
            }
            if u64::from_be_bytes(b) != base + i as u64 {
                println!(
                    "error: connection {i} got {} instead of {}",
                    u64::from_be_bytes(b),
                    base + i as u64
                );
                std::process::exit(1);
            }
        }
        println!("echoed {}", conns.len());
    }
}
