//! Run to completion, the stack's passes do not allocate on the data path
//! either (see `no_alloc_body`). Needs root.

#[path = "no_alloc_body/body.rs"]
mod body;
mod common;

#[test]
fn data_path_does_not_allocate_run_to_completion() {
    body::run(gazelle_config::StackThreadMode::RunToCompletion);
}
