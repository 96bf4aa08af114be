//! 20000 concurrent TCP connections (gazelle's `tcp_conn_count` maximum),
//! held open and still echoing, the stack on its own thread (run to
//! wakeup; `scale_rtc.rs` runs the same in run to completion). Needs root;
//! fails loudly without it.

#[path = "scale_held/body.rs"]
mod body;
mod common;

#[test]
fn twenty_thousand_connections_held_and_echoing() {
    body::run(gazelle_config::StackThreadMode::RunToWakeup);
}
