//! Instances: the list (state, address, restarts; start, stop, restart,
//! remove), the form that adds one (its stack settings copied from an
//! existing instance), and a page per instance: its counters,
//! connections filtered like `ss`, MIB-2 counters, receive-latency
//! histogram, output tail and the form that edits it.

use appliance::config::{Instance, RestartMode, RestartPolicy, SubConfig};
use appliance::supervisor::ProcessAction;
use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use gazelle_ctl_proto::bucket_bounds;
use serde::Deserialize;

use super::{bytes, change_message, layout, render, Change, FieldErrors, Layout, Session};
use crate::api::config::running_toml;
use crate::api::edits::{self, InstanceUpdate, InstanceView};
use crate::api::stats;
use crate::problem::{Json, Path};
use crate::AppState;

/// One row of the list.
#[derive(Debug)]
pub struct Row {
    name: String,
    state: String,
    pid: String,
    address: String,
    command: String,
    restarts: u32,
    note: String,
}

fn state_word(i: &InstanceView) -> String {
    i.process
        .as_ref()
        .map(|p| format!("{:?}", p.state).to_lowercase())
        .unwrap_or_else(|| "not supervised".into())
}

/// The add form's fields.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct NewForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    command: String,
    #[serde(default)]
    host_addr: String,
    #[serde(default)]
    mask_addr: String,
    #[serde(default)]
    num_cpus: String,
    #[serde(default)]
    based_on: String,
    #[serde(default)]
    restart: String,
}

const NEW_INPUTS: &[&str] = &[
    "name",
    "command",
    "host_addr",
    "mask_addr",
    "num_cpus",
    "restart",
];

#[derive(Template)]
#[template(path = "instances.html")]
struct ListPage {
    layout: Layout,
    rows: Vec<Row>,
    names: Vec<String>,
    form: NewForm,
    errors: FieldErrors,
    unavailable: Option<String>,
}

async fn list_view(
    state: &AppState,
    s: &Session,
    form: Option<NewForm>,
    errors: FieldErrors,
) -> Response {
    let layout = layout(state, s, "Instances").await;
    let (list, unavailable) = match edits::list_instances(State(state.clone())).await {
        Ok(Json(l)) => (l, None),
        Err(p) => (Vec::new(), Some(p.detail)),
    };
    let rows = list
        .iter()
        .map(|i| Row {
            name: i.name.clone(),
            state: state_word(i),
            pid: i
                .process
                .as_ref()
                .and_then(|p| p.pid)
                .map(|p| p.to_string())
                .unwrap_or_default(),
            address: i.addresses.host_addr.clone().unwrap_or_default(),
            command: shown_command(&i.command),
            restarts: i.process.as_ref().map(|p| p.restarts).unwrap_or(0),
            note: i
                .process
                .as_ref()
                .and_then(|p| {
                    p.note
                        .clone()
                        .or_else(|| p.last_exit.as_ref().map(|e| e.description.clone()))
                })
                .unwrap_or_default(),
        })
        .collect();
    let names: Vec<String> = list.iter().map(|i| i.name.clone()).collect();
    let form = form.unwrap_or_else(|| NewForm {
        mask_addr: "255.255.255.0".into(),
        num_cpus: "1".into(),
        based_on: names.first().cloned().unwrap_or_default(),
        restart: "on-failure".into(),
        ..NewForm::default()
    });
    let status = if errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    let page = ListPage {
        layout,
        rows,
        names,
        form,
        errors,
        unavailable,
    };
    (status, render(&page)).into_response()
}

/// `GET /instances`.
pub async fn list(State(state): State<AppState>, s: Session) -> Response {
    list_view(&state, &s, None, FieldErrors::default()).await
}

/// A command line as a shell would need it typed: empty arguments and
/// ones with white space or quotes in quotes, so `--save ""` is seen.
fn shown_command(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            if a.is_empty() || a.contains(|c: char| c.is_whitespace() || c == '"' || c == '\'') {
                format!("{a:?}")
            } else {
                a.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The arguments of a command typed one per line (a line may be empty:
/// an empty argument; trailing empty lines are dropped).
fn argv(text: &str) -> Vec<String> {
    let mut v: Vec<String> = text
        .lines()
        .map(|l| l.trim_end_matches('\r').to_owned())
        .collect();
    while v.last().is_some_and(|l| l.trim().is_empty()) {
        v.pop();
    }
    v
}

/// The command field: one argument per line, not empty.
fn command_field(errors: &mut FieldErrors, text: &str) -> Vec<String> {
    let command = argv(text);
    if command.is_empty() {
        errors.add(
            "command",
            "the program to run is missing: one argument per line, the program first",
        );
    }
    command
}

fn restart_mode(errors: &mut FieldErrors, text: &str) -> Option<RestartMode> {
    match text {
        "" => None,
        "never" => Some(RestartMode::Never),
        "on-failure" => Some(RestartMode::OnFailure),
        "always" => Some(RestartMode::Always),
        other => {
            errors.add(
                "restart",
                format!("{other:?} is not one of never, on-failure, always"),
            );
            None
        }
    }
}

/// `POST /instances`: add one.
pub async fn create(State(state): State<AppState>, change: Change) -> Response {
    let form: NewForm = match change.form() {
        Ok(f) => f,
        Err(r) => return r,
    };
    let mut errors = FieldErrors::default();
    let command = command_field(&mut errors, &form.command);
    let mode = restart_mode(&mut errors, &form.restart).unwrap_or_default();
    // The new stack's settings: those of the instance it is based on
    // (DPDK arguments, use_ltran, devices...), with its own addresses.
    let mut table = toml::Table::new();
    if !form.based_on.is_empty() {
        match running_toml(&state).await {
            Ok((config, _)) => match config.instances.iter().find(|i| i.name == form.based_on) {
                Some(Instance {
                    lstack: SubConfig::Inline(t),
                    ..
                }) => table = t.clone(),
                Some(_) => errors.add(
                    "based_on",
                    format!(
                        "{}'s lstack config is a file: base the new one on an inline one",
                        form.based_on
                    ),
                ),
                None => errors.add(
                    "based_on",
                    format!("no instance is named {:?}", form.based_on),
                ),
            },
            Err(p) => errors.general = Some(p.detail),
        }
    } else {
        table.insert("use_ltran".into(), 1.into());
    }
    for (key, value) in [
        ("host_addr", &form.host_addr),
        ("mask_addr", &form.mask_addr),
        ("num_cpus", &form.num_cpus),
    ] {
        let v = value.trim();
        if v.is_empty() {
            table.remove(key);
        } else {
            table.insert(key.into(), v.into());
        }
    }
    table.remove("host_addr6");
    if !errors.is_empty() {
        return list_view(&state, &change.session, Some(form), errors).await;
    }
    let instance = Instance {
        name: form.name.trim().to_owned(),
        command,
        environment: Default::default(),
        restart: RestartPolicy {
            mode,
            ..RestartPolicy::default()
        },
        lstack: SubConfig::Inline(table),
    };
    match edits::create_instance(
        State(state.clone()),
        Extension(change.session.who.clone()),
        change.ip,
        Json(instance),
    )
    .await
    {
        Ok(Json(c)) => change.done(
            "/instances",
            &change_message(&format!("Instance {} added", form.name.trim()), &c),
        ),
        Err(p) => {
            let errors = FieldErrors::from_problem(&p, NEW_INPUTS);
            list_view(&state, &change.session, Some(form), errors).await
        }
    }
}

#[derive(Deserialize)]
struct ControlForm {
    action: ProcessAction,
}

/// `POST /instances/{name}/control`: start, stop or restart.
pub async fn control(
    State(state): State<AppState>,
    Path(name): Path<String>,
    change: Change,
) -> Response {
    let form: ControlForm = match change.form() {
        Ok(f) => f,
        Err(r) => return r,
    };
    let back = format!("/instances/{name}");
    match edits::control_instance(
        State(state),
        Extension(change.session.who.clone()),
        change.ip,
        Path((name.clone(), form.action)),
    )
    .await
    {
        Ok(Json(p)) => change.done(
            &back,
            &format!("{name}: {:?} done; now {:?}", form.action, p.state).to_lowercase(),
        ),
        Err(p) => change.done(&back, &format!("{name}: {}", p.detail)),
    }
}

/// `POST /instances/{name}/delete`.
pub async fn delete(
    State(state): State<AppState>,
    Path(name): Path<String>,
    change: Change,
) -> Response {
    match edits::delete_instance(
        State(state),
        Extension(change.session.who.clone()),
        change.ip,
        Path(name.clone()),
    )
    .await
    {
        Ok(Json(c)) => change.done(
            "/instances",
            &change_message(&format!("Instance {name} removed"), &c),
        ),
        Err(p) => change.done(
            &format!("/instances/{name}"),
            &format!("Not removed: {}", p.detail),
        ),
    }
}

// ---- the page of one instance ----------------------------------------------------

/// The edit form's fields.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct EditForm {
    #[serde(default)]
    command: String,
    #[serde(default)]
    host_addr: String,
    #[serde(default)]
    mask_addr: String,
    #[serde(default)]
    gateway_addr: String,
    #[serde(default)]
    host_addr6: String,
    #[serde(default)]
    num_cpus: String,
    #[serde(default)]
    restart: String,
}

const EDIT_INPUTS: &[&str] = &[
    "command",
    "host_addr",
    "mask_addr",
    "gateway_addr",
    "host_addr6",
    "num_cpus",
    "restart",
];

/// `?state=&addr=`: the connection filter, like `ss state established
/// '( sport = :6379 )'` in fewer words.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ConnFilter {
    #[serde(default)]
    state: String,
    #[serde(default)]
    addr: String,
}

/// A connection row.
#[derive(Debug)]
pub struct ConnRow {
    state: String,
    local: String,
    remote: String,
    recv_q: String,
    send_q: String,
    /// The stack thread, or `-` for a socket on the kernel's path.
    thread: String,
    /// `lstack`, or `kernel: <why>` (fd, protocol and reason).
    path: String,
}

/// A latency bucket.
#[derive(Debug)]
pub struct Bucket {
    range: String,
    count: u64,
}

#[derive(Template)]
#[template(path = "instance.html")]
struct InstancePage {
    layout: Layout,
    name: String,
    state: String,
    pid: String,
    restarts: u32,
    last_exit: String,
    tail: String,
    form: EditForm,
    errors: FieldErrors,
    counters: Vec<(String, String)>,
    drops: Vec<(String, u64)>,
    /// What the process does not accelerate: sockets on the kernel by
    /// reason, then socket options lstack ignores.
    not_accelerated: Vec<(String, String)>,
    stack_unavailable: Option<String>,
    filter: ConnFilter,
    states: Vec<String>,
    connections: Vec<ConnRow>,
    connections_total: usize,
    mib: Vec<(String, Vec<(String, u64)>)>,
    latency: Option<String>,
    buckets: Vec<Bucket>,
    bucket_max: u64,
}

fn ns(n: u64) -> String {
    match n {
        n if n >= 1_000_000_000 => format!("{:.2} s", n as f64 / 1e9),
        n if n >= 1_000_000 => format!("{:.2} ms", n as f64 / 1e6),
        n if n >= 1_000 => format!("{:.1} µs", n as f64 / 1e3),
        n => format!("{n} ns"),
    }
}

/// A counter's value with its unit, from its name.
fn with_unit(name: &str, v: u64) -> String {
    if name.ends_with("bytes") {
        format!("{v} B ({})", bytes(v))
    } else if name.ends_with("packets") || name.contains("dropped") || name.ends_with("nombuf") {
        format!("{v} pkt")
    } else if name.contains("conn") || name.contains("established") || name.contains("half_open") {
        format!("{v} connections")
    } else {
        v.to_string()
    }
}

fn numbers(v: &serde_json::Value) -> Vec<(String, u64)> {
    v.as_object()
        .map(|o| {
            o.iter()
                .filter_map(|(k, v)| v.as_u64().map(|n| (k.clone(), n)))
                .collect()
        })
        .unwrap_or_default()
}

async fn instance_view(
    state: &AppState,
    s: &Session,
    name: String,
    filter: ConnFilter,
    form: Option<EditForm>,
    errors: FieldErrors,
) -> Response {
    let i = match edits::get_instance(State(state.clone()), Path(name.clone())).await {
        Ok(Json(i)) => i,
        Err(p) => {
            return super::refused(s, p.status_code(), &p.detail);
        }
    };
    let layout = layout(state, s, &format!("Instance {name}")).await;
    let addr = i.addresses.host_addr.clone().unwrap_or_default();
    let current = EditForm {
        command: i.command.join("\n"),
        host_addr: addr.clone(),
        mask_addr: i.addresses.mask_addr.clone().unwrap_or_default(),
        gateway_addr: i.addresses.gateway_addr.clone().unwrap_or_default(),
        host_addr6: i.addresses.host_addr6.clone().unwrap_or_default(),
        num_cpus: i.num_cpus.clone().unwrap_or_default(),
        restart: serde_json::to_value(i.restart.mode)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default(),
    };
    let (mut counters, mut drops, mut stack_unavailable) = (Vec::new(), Vec::new(), None);
    let mut not_accelerated = Vec::new();
    let (mut connections, mut states, mut connections_total) = (Vec::new(), Vec::new(), 0);
    let (mut mib, mut latency, mut buckets, mut bucket_max) = (Vec::new(), None, Vec::new(), 0);
    match stats::lstack(State(state.clone()), Path(addr.clone())).await {
        Ok(Json(st)) => {
            let total = st.total();
            counters.push(("uptime".into(), super::duration(st.uptime_secs)));
            counters.push((
                "tcp_connections".into(),
                format!("{} connections", st.tcp_connections),
            ));
            counters.push((
                "mbufs_available".into(),
                format!("{} mbufs", st.mbufs_available),
            ));
            counters.push(("stack threads".into(), st.threads.len().to_string()));
            let t = serde_json::to_value(&total).unwrap_or_default();
            for (k, v) in numbers(&t) {
                let shown = with_unit(&k, v);
                counters.push((k, shown));
            }
            drops = total.drops.into_iter().collect();
            let plural =
                |n: u64, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
            for (why, n) in &st.kernel_sockets {
                not_accelerated.push((
                    format!("on the kernel: {why}"),
                    plural(*n, "socket", "sockets"),
                ));
            }
            for (option, n) in &st.unhonoured_options {
                not_accelerated.push((
                    format!("option not honoured: {option}"),
                    format!("set {}", plural(*n, "time", "times")),
                ));
            }
            if let Ok(Json(list)) =
                stats::lstack_connections(State(state.clone()), Path(addr.clone())).await
            {
                connections_total = list.len();
                for c in &list {
                    if !states.contains(&c.state) {
                        states.push(c.state.clone());
                    }
                }
                states.sort();
                let want_state = filter.state.trim();
                let want_addr = filter.addr.trim();
                connections = list
                    .into_iter()
                    .filter(|c| want_state.is_empty() || c.state.eq_ignore_ascii_case(want_state))
                    .filter(|c| {
                        want_addr.is_empty()
                            || c.local.contains(want_addr)
                            || c.remote.contains(want_addr)
                    })
                    .map(|c| ConnRow {
                        state: c.state,
                        local: c.local,
                        remote: c.remote,
                        recv_q: format!("{} B", c.recv_queue),
                        send_q: format!("{} B", c.send_queue),
                        thread: if c.kernel.is_some() {
                            "-".into()
                        } else {
                            c.thread.to_string()
                        },
                        path: c.kernel.map_or_else(
                            || "lstack".into(),
                            |k| format!("kernel ({} fd {}): {}", k.protocol, k.fd, k.reason),
                        ),
                    })
                    .collect();
            }
            if let Ok(Json(snmp)) =
                stats::lstack_snmp(State(state.clone()), Path(addr.clone())).await
            {
                let v = serde_json::to_value(snmp.total).unwrap_or_default();
                if let Some(o) = v.as_object() {
                    for (group, counters) in o {
                        mib.push((group.clone(), numbers(counters)));
                    }
                }
            }
            if let Ok(Json(l)) =
                stats::lstack_latency(State(state.clone()), Path(addr.clone())).await
            {
                let t = &l.total;
                latency = Some(format!(
                    "{} reads measured: min {}, mean {}, p50 {}, p90 {}, p99 {}, max {}",
                    t.count,
                    ns(t.min_ns),
                    ns(t.mean_ns),
                    ns(t.p50_ns),
                    ns(t.p90_ns),
                    ns(t.p99_ns),
                    ns(t.max_ns)
                ));
                bucket_max = t.buckets.iter().copied().max().unwrap_or(0);
                buckets = t
                    .buckets
                    .iter()
                    .enumerate()
                    .filter(|(_, n)| **n > 0)
                    .map(|(i, n)| {
                        let (lo, hi) = bucket_bounds(i);
                        Bucket {
                            range: if hi == u64::MAX {
                                format!("≥ {}", ns(lo))
                            } else {
                                format!("{} – {}", ns(lo), ns(hi))
                            },
                            count: *n,
                        }
                    })
                    .collect();
            }
        }
        Err(p) => stack_unavailable = Some(p.detail),
    }
    let status = if errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    let process = i.process.as_ref();
    let page = InstancePage {
        layout,
        state: state_word(&i),
        pid: process
            .and_then(|p| p.pid)
            .map(|p| p.to_string())
            .unwrap_or_default(),
        restarts: process.map(|p| p.restarts).unwrap_or(0),
        last_exit: process
            .and_then(|p| p.last_exit.as_ref())
            .map(|e| e.description.clone())
            .unwrap_or_default(),
        tail: process
            .map(|p| p.output_tail.join("\n"))
            .unwrap_or_default(),
        name,
        form: form.unwrap_or(current),
        errors,
        counters,
        drops,
        not_accelerated,
        stack_unavailable,
        filter,
        states,
        connections,
        connections_total,
        mib,
        latency,
        buckets,
        bucket_max,
    };
    (status, render(&page)).into_response()
}

/// `GET /instances/{name}`.
pub async fn page(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(filter): Query<ConnFilter>,
    s: Session,
) -> Response {
    instance_view(&state, &s, name, filter, None, FieldErrors::default()).await
}

/// `POST /instances/{name}`: edit it.
pub async fn update(
    State(state): State<AppState>,
    Path(name): Path<String>,
    change: Change,
) -> Response {
    let form: EditForm = match change.form() {
        Ok(f) => f,
        Err(r) => return r,
    };
    let mut errors = FieldErrors::default();
    let command = command_field(&mut errors, &form.command);
    let mode = restart_mode(&mut errors, &form.restart);
    if !errors.is_empty() {
        return instance_view(
            &state,
            &change.session,
            name,
            ConnFilter::default(),
            Some(form),
            errors,
        )
        .await;
    }
    let current = match edits::get_instance(State(state.clone()), Path(name.clone())).await {
        Ok(Json(i)) => i,
        Err(p) => return super::refused(&change.session, p.status_code(), &p.detail),
    };
    let field = |v: &str| Some(v.trim().to_owned());
    let update = InstanceUpdate {
        command: Some(command),
        environment: None,
        restart: mode.map(|mode| RestartPolicy {
            mode,
            ..current.restart.clone()
        }),
        host_addr: field(&form.host_addr).filter(|s| !s.is_empty()),
        mask_addr: field(&form.mask_addr).filter(|s| !s.is_empty()),
        gateway_addr: field(&form.gateway_addr),
        host_addr6: field(&form.host_addr6),
        num_cpus: field(&form.num_cpus).filter(|s| !s.is_empty()),
    };
    match edits::update_instance(
        State(state.clone()),
        Extension(change.session.who.clone()),
        change.ip,
        Path(name.clone()),
        Json(update),
    )
    .await
    {
        Ok(Json(c)) => change.done(
            &format!("/instances/{name}"),
            &change_message(&format!("Instance {name} changed"), &c),
        ),
        Err(p) => {
            let errors = FieldErrors::from_problem(&p, EDIT_INPUTS);
            instance_view(
                &state,
                &change.session,
                name,
                ConnFilter::default(),
                Some(form),
                errors,
            )
            .await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_is_one_argument_per_line() {
        assert_eq!(
            argv("redis-server\n--save\n\n--port\n6379\n\n"),
            ["redis-server", "--save", "", "--port", "6379"]
        );
        assert!(argv("\n \n").is_empty());
        let shown = shown_command(&[
            "redis-server".into(),
            "--save".into(),
            String::new(),
            "daemon off;".into(),
        ]);
        assert_eq!(shown, r#"redis-server --save "" "daemon off;""#);
    }
}
