//! 20000 concurrent TCP connections held open and still echoing, as in
//! `scale.rs`, with the application's threads running the stack (run to
//! completion). Needs root; fails loudly without it.

#[path = "scale_held/body.rs"]
mod body;
mod common;

#[test]
fn twenty_thousand_connections_held_and_echoing_run_to_completion() {
    body::run(gazelle_config::StackThreadMode::RunToCompletion);
}
