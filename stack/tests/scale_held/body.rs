//! The 20000-connection test's body, shared by `scale.rs` (run to wakeup)
//! and `scale_rtc.rs` (run to completion): one stack per process, so each
//! mode is a test binary of its own.

use std::{
    io::{BufRead, BufReader, Write},
    net::SocketAddr,
    process::Stdio,
    time::{Duration, Instant},
};

use gazelle_config::StackThreadMode;

use crate::common::{self, wait_until};

const CONNS: usize = 20_000;
const PORT: u16 = 8000;
const CLIENT_THREADS: usize = 8;
const HOLDERS: usize = 2;

/// Opens, holds and echoes on [`CONNS`] connections with the stack in
/// `mode`, then checks that one more is refused and counted.
pub fn run(mode: StackThreadMode) {
    let env = common::start("lsc", |cfg, opts| {
        cfg.tcp_conn_count = CONNS as u32;
        cfg.stack_thread_mode = mode;
        opts.tcp_rx_buffer = 4096;
        opts.tcp_tx_buffer = 4096;
    });
    assert_eq!(
        env.stack.run_to_completion(),
        mode == StackThreadMode::RunToCompletion
    );
    // Run to completion, an application's event loop waits in the stack
    // between its calls: this thread does (the server's own calls drive
    // too, until it is done echoing).
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let driver = env.stack.run_to_completion().then(|| {
        let (stack, stop) = (env.stack.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if !stack.drive() {
                    stack.sleep_for_work(&mut [], Some(Duration::from_millis(1)));
                }
            }
        })
    });

    let listener = env
        .stack
        .tcp_listen(SocketAddr::from(([0, 0, 0, 0], PORT)), 8192)
        .expect("listen");
    listener.set_nonblocking(false);
    let server = std::thread::spawn(move || {
        let mut conns = Vec::with_capacity(CONNS);
        while conns.len() < CONNS {
            let (c, _) = listener.accept().expect("accept");
            c.set_nonblocking(true);
            conns.push(c);
        }
        // Echo 8 bytes on every connection, polling them all.
        let mut done = vec![false; CONNS];
        let mut left = CONNS;
        let mut buf = [0u8; 8];
        let deadline = Instant::now() + Duration::from_secs(300);
        while left > 0 && Instant::now() < deadline {
            for (i, c) in conns.iter_mut().enumerate() {
                if done[i] {
                    continue;
                }
                match c.read(&mut buf) {
                    Ok(8) => {
                        c.write_all(&buf).expect("echo write");
                        done[i] = true;
                        left -= 1;
                    }
                    Ok(n) => panic!("connection {i}: short read of {n} bytes"),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => panic!("connection {i}: {e}"),
                }
            }
        }
        assert_eq!(left, 0, "connections that never echoed");
        // Keep listening: the connection over the limit must meet a listener.
        (conns, listener)
    });

    let to = SocketAddr::new(env.topo.stack_ip4.into(), PORT);
    // The kernel clients live in HOLDERS processes in the peer namespace: one
    // process may not have enough file descriptors for all of them.
    let hold = env!("CARGO_BIN_EXE_lstack-tcp-hold");
    let start = Instant::now();
    let mut holders: Vec<_> = (0..HOLDERS)
        .map(|_| {
            let mut cmd = env.topo.cmd(hold);
            cmd.args([
                to.to_string(),
                (CONNS / HOLDERS).to_string(),
                (CLIENT_THREADS / HOLDERS).to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
            let mut child = cmd
                .spawn()
                .expect("starting lstack-tcp-hold in the peer namespace");
            let out = BufReader::new(child.stdout.take().unwrap());
            (child, out)
        })
        .collect();
    for (child, out) in &mut holders {
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        assert!(
            line.starts_with(&format!("connected {}", CONNS / HOLDERS)),
            "lstack-tcp-hold {}: {line}",
            child.id()
        );
    }
    let opened = start.elapsed();
    assert!(
        wait_until(Duration::from_secs(30), || env.stack.tcp_connections()
            >= CONNS),
        "stack holds {} connections, wanted {CONNS}",
        env.stack.tcp_connections()
    );
    println!(
        "opened {CONNS} connections in {:.2} s ({:.0}/s)",
        opened.as_secs_f64(),
        CONNS as f64 / opened.as_secs_f64()
    );

    // Every connection still carries data, and only its own.
    let echo_start = Instant::now();
    for (i, (child, _)) in holders.iter_mut().enumerate() {
        writeln!(child.stdin.as_mut().unwrap(), "echo {}", i * 1_000_000).unwrap();
    }
    for (child, out) in &mut holders {
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        assert_eq!(
            line.trim(),
            format!("echoed {}", CONNS / HOLDERS),
            "lstack-tcp-hold {}",
            child.id()
        );
    }
    println!(
        "echoed on all {CONNS} connections in {:.2} s",
        echo_start.elapsed().as_secs_f64()
    );
    let (server_conns, _listener) = server.join().expect("server");
    assert_eq!(server_conns.len(), CONNS);
    let refused: u64 = (0..env.stack.threads())
        .map(|i| env.stack.thread_stats(i).unwrap().conn_limit_refused.get())
        .sum();
    assert_eq!(refused, 0, "no SYN may be refused below the limit");

    // One more is over tcp_conn_count: refused (its SYNs dropped), not crashing.
    let extra = env
        .topo
        .in_netns(|| std::net::TcpStream::connect_timeout(&to, Duration::from_secs(2)))
        .unwrap();
    assert!(
        extra.is_err(),
        "connection {} beyond tcp_conn_count was accepted",
        CONNS + 1
    );
    let refused: u64 = (0..env.stack.threads())
        .map(|i| env.stack.thread_stats(i).unwrap().conn_limit_refused.get())
        .sum();
    assert!(refused > 0, "the refusal was not counted");
    for (mut child, _) in holders {
        drop(child.stdin.take());
        assert!(child.wait().unwrap().success());
    }
    drop(server_conns);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    if let Some(d) = driver {
        d.join().expect("the driving thread");
    }
}
