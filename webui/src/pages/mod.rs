//! The HTML dashboard: server-rendered askama pages over the same
//! handlers as `/api/v1`, so a page shows exactly what the API answers and
//! a form changes exactly what the API changes (same validation, same
//! confirm-or-rollback, same audit log).
//!
//! - this module: the session of a page (the `__Host-` cookie of the
//!   API's login; no session means the login page), the layout with its
//!   navigation and the pending-change banner on every page, the checks of
//!   every form (our own `Origin`, the session's CSRF token in a hidden
//!   field, the admin role), login and logout, confirm and rollback, the
//!   stylesheet and the small script (countdown, live charts);
//! - [`dashboard`]: bond, ports, dispatch, instances, host, live charts;
//! - [`settings`]: the bond, subnets and devices forms;
//! - [`instances`]: the instance list, forms and a page per instance;
//! - [`admin`]: configuration (diff, history, restore), the account,
//!   tokens, users and the audit log.
//!
//! Forms post `application/x-www-form-urlencoded` and answer with a
//! redirect (303) to the page with a message, or the form again with the
//! API's field-level message next to the field (422).

use std::time::{SystemTime, UNIX_EPOCH};

use appliance::api::{Request as ApiRequest, Response as ApiResponse};
use askama::Template;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use serde::Deserialize;

use crate::api::{config, session};
use crate::auth::{secret_eq, Principal, Role, Via, SESSION_COOKIE};
use crate::guard::{self, ClientIp};
use crate::problem::{Json, Problem};
use crate::AppState;

pub mod admin;
pub mod dashboard;
pub mod instances;
pub mod settings;

/// The stylesheet (no build chain: one hand-written file).
const STYLE: &str = include_str!("../../assets/app.css");
/// The tab's icon.
const ICON: &str = include_str!("../../assets/favicon.svg");
/// The countdown of the pending-change banner and the live charts.
const SCRIPT: &str = include_str!("../../assets/app.js");

/// Every page and form.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(|| async { Redirect::to("/dashboard") }))
        .route("/assets/app.css", get(style))
        .route("/assets/app.js", get(script))
        .route("/assets/favicon.svg", get(icon))
        // Browsers ask for it whatever the pages say.
        .route(
            "/favicon.ico",
            get(|| async { Redirect::permanent("/assets/favicon.svg") }),
        )
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/pending/confirm", post(confirm))
        .route("/pending/rollback", post(rollback))
        .route("/dashboard", get(dashboard::page))
        .route(
            "/bond",
            get(settings::bond_page).post(settings::bond_update),
        )
        .route(
            "/subnets",
            get(settings::subnets_page).post(settings::subnets_update),
        )
        .route("/devices", get(settings::devices_page))
        .route("/devices/{id}", post(settings::device_update))
        .route("/instances", get(instances::list).post(instances::create))
        .route(
            "/instances/{name}",
            get(instances::page).post(instances::update),
        )
        .route("/instances/{name}/delete", post(instances::delete))
        .route("/instances/{name}/control", post(instances::control))
        .route("/config", get(admin::config_page))
        .route("/config/restore", post(admin::restore))
        .route("/account", get(admin::account_page))
        .route("/account/password", post(admin::password))
        .route("/account/tokens", post(admin::create_token))
        .route("/account/tokens/revoke", post(admin::revoke_token))
        .route("/account/users", post(admin::create_user))
        .route("/account/users/delete", post(admin::delete_user))
        .route("/audit", get(admin::audit_page))
        .layer(axum::middleware::map_response(same_origin_referrer))
        .with_state(state)
}

/// Chromium sends `Origin: null` with a form post from a page whose
/// referrer policy is `no-referrer`, which our Origin check must refuse;
/// `same-origin` still sends no referrer to any other site.
async fn same_origin_referrer(mut response: Response) -> Response {
    response.headers_mut().insert(
        header::REFERRER_POLICY,
        axum::http::HeaderValue::from_static("same-origin"),
    );
    response
}

async fn style() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        STYLE,
    )
        .into_response()
}

async fn icon() -> Response {
    (
        [
            (header::CONTENT_TYPE, "image/svg+xml"),
            (header::CACHE_CONTROL, "max-age=86400"),
        ],
        ICON,
    )
        .into_response()
}

async fn script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        SCRIPT,
    )
        .into_response()
}

// ---- the session of a page ---------------------------------------------------

/// Who is looking at a page, where, and the message a form left for it.
#[derive(Debug, Clone)]
pub struct Session {
    /// The account.
    pub who: Principal,
    /// The page's path (forms of the banner come back here).
    pub path: String,
    /// `?flash=`: what the last form did.
    pub flash: Option<String>,
}

impl Session {
    /// Whether the account may change things.
    pub fn admin(&self) -> bool {
        self.who.role == Role::Admin
    }

    /// The session's CSRF token, for the forms' hidden field.
    pub fn csrf(&self) -> String {
        match &self.who.via {
            Via::Session { csrf, .. } => csrf.clone(),
            Via::Token { .. } => String::new(),
        }
    }
}

#[derive(Deserialize)]
struct FlashQuery {
    flash: Option<String>,
}

fn to_login(path: &str) -> Response {
    let next = serde_urlencoded::to_string([("next", path)]).unwrap_or_default();
    Redirect::to(&format!("/login?{next}")).into_response()
}

impl FromRequestParts<AppState> for Session {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let path = parts.uri.path().to_owned();
        // Pages are for browsers: a session cookie, never a bearer token.
        let who = guard::cookie(&parts.headers, SESSION_COOKIE)
            .and_then(|id| state.auth.session(id))
            .ok_or_else(|| to_login(&path))?;
        let flash = parts
            .uri
            .query()
            .and_then(|q| serde_urlencoded::from_str::<FlashQuery>(q).ok())
            .and_then(|q| q.flash);
        Ok(Session { who, path, flash })
    }
}

/// A form post: a session, from one of our own pages (Origin), with the
/// session's CSRF token, by an admin (or, for the paths any role may use,
/// anyone); the body stays to be read by the handler.
#[derive(Debug)]
pub struct Change {
    /// Who.
    pub session: Session,
    /// From where.
    pub ip: ClientIp,
    /// The form's fields.
    pub body: Bytes,
}

/// Forms any role may post: its own password and logging out.
const ANY_ROLE_FORMS: &[&str] = &["/logout", "/account/password"];

#[derive(Deserialize)]
struct CsrfField {
    #[serde(default)]
    csrf: String,
}

impl FromRequest<AppState> for Change {
    type Rejection = Response;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Response> {
        let (mut parts, body) = request.into_parts();
        let session = Session::from_request_parts(&mut parts, state).await?;
        let ip = ClientIp::from_request_parts(&mut parts, state)
            .await
            .unwrap_or(ClientIp(None));
        if let Err(p) = guard::same_origin(&parts.headers, &parts.uri) {
            return Err(refused(&session, StatusCode::FORBIDDEN, &p.detail));
        }
        let body = Bytes::from_request(Request::from_parts(parts, body), state)
            .await
            .map_err(IntoResponse::into_response)?;
        let sent = serde_urlencoded::from_bytes::<CsrfField>(&body)
            .map(|f| f.csrf)
            .unwrap_or_default();
        if sent.is_empty() || !secret_eq(&sent, &session.csrf()) {
            return Err(refused(
                &session,
                StatusCode::FORBIDDEN,
                "the form's CSRF token is missing or not this session's: reload the page and try again",
            ));
        }
        if !session.admin() && !ANY_ROLE_FORMS.contains(&session.path.as_str()) {
            return Err(refused(
                &session,
                StatusCode::FORBIDDEN,
                &format!(
                    "{} has the viewer role: it reads, it does not change anything",
                    session.who.name
                ),
            ));
        }
        Ok(Change { session, ip, body })
    }
}

impl Change {
    /// The form's fields as `T`.
    pub fn form<T: serde::de::DeserializeOwned>(&self) -> Result<T, Response> {
        serde_urlencoded::from_bytes(&self.body).map_err(|e| {
            refused(
                &self.session,
                StatusCode::BAD_REQUEST,
                &format!("the form is malformed: {e}"),
            )
        })
    }

    /// Back to `path` with `message` shown on top (303).
    pub fn done(&self, path: &str, message: &str) -> Response {
        let q = serde_urlencoded::to_string([("flash", message)]).unwrap_or_default();
        Redirect::to(&format!("{path}?{q}")).into_response()
    }
}

/// A page that says why a form was refused.
#[derive(Template)]
#[template(path = "refused.html")]
struct Refused {
    status: u16,
    detail: String,
}

pub(crate) fn refused(_session: &Session, status: StatusCode, detail: &str) -> Response {
    let page = Refused {
        status: status.as_u16(),
        detail: detail.to_owned(),
    };
    (status, render(&page)).into_response()
}

/// The HTML of a template (a template error is a bug: a 500 that says so).
pub fn render<T: Template>(t: &T) -> Response {
    match t.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => Problem::internal(format!("rendering the page: {e}")).into_response(),
    }
}

// ---- the layout ------------------------------------------------------------

/// A change pending confirmation, for the banner.
#[derive(Debug, Clone)]
pub struct PendingView {
    /// The deadline, UTC.
    pub deadline: String,
    /// The same, ms since the epoch (the countdown counts to it).
    pub deadline_unix_ms: u64,
    /// Seconds left when the page was made.
    pub seconds_left: u64,
    /// What in it can cut the operator off.
    pub reasons: String,
}

/// The last rollback, for the banner.
#[derive(Debug, Clone)]
pub struct RollbackView {
    /// When (UTC).
    pub at: String,
    /// What it says.
    pub summary: String,
    /// The diff from the rolled-back config to the restored one.
    pub diff: String,
}

/// What every page shows around its content.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The page's title.
    pub title: String,
    /// Its path (the banner's forms come back to it).
    pub path: String,
    /// The account.
    pub user: String,
    /// Its role, as a word.
    pub role: &'static str,
    /// Whether it may change things (forms are shown only then).
    pub admin: bool,
    /// The CSRF token for the forms.
    pub csrf: String,
    /// What the last form did.
    pub flash: Option<String>,
    /// The change pending confirmation.
    pub pending: Option<PendingView>,
    /// applianced is applying a change or a rollback now.
    pub applying: bool,
    /// A rollback of the last minutes.
    pub rollback: Option<RollbackView>,
    /// Navigation: (href, label, this page).
    pub nav: Vec<(&'static str, &'static str, bool)>,
}

const NAV: &[(&str, &str)] = &[
    ("/dashboard", "Dashboard"),
    ("/devices", "Devices"),
    ("/bond", "Bond"),
    ("/subnets", "Subnets"),
    ("/instances", "Instances"),
    ("/config", "Configuration"),
    ("/account", "Account"),
    ("/audit", "Audit log"),
];

/// How long a rollback stays on every page.
const ROLLBACK_SHOWN_MS: u64 = 10 * 60 * 1000;

/// Now, ms since the epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// A time, ms since the epoch, as `2026-12-04 23:05:07 UTC`.
pub fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = i64::try_from(days).unwrap_or(0) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The layout of a page titled `title` for `s`: asks applianced whether a
/// change is pending.
pub async fn layout(state: &AppState, s: &Session, title: &str) -> Layout {
    // A change of ours that ended (rolled back at its deadline) is told on
    // this very page, not a poller tick later.
    crate::poller::follow_pending(state).await;
    let (pending, applying) = match state.daemons.appliance(ApiRequest::Status, false).await {
        Ok(ApiResponse::Status {
            pending, applying, ..
        }) => (pending, applying),
        _ => (None, false),
    };
    let pending = pending.map(|p| PendingView {
        deadline: utc(p.deadline_unix_ms),
        deadline_unix_ms: p.deadline_unix_ms,
        seconds_left: p.seconds_left,
        reasons: p.reasons.join("; "),
    });
    let rollback = if pending.is_some() {
        None
    } else {
        state
            .last_rollback
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .filter(|n| now_ms().saturating_sub(n.at_unix_ms) < ROLLBACK_SHOWN_MS)
            .map(|n| RollbackView {
                at: utc(n.at_unix_ms),
                summary: if n.by == "applianced" {
                    format!(
                        "The change {} made was not confirmed in time: the appliance rolled it back and restored the saved configuration.",
                        n.change_by
                    )
                } else {
                    format!(
                        "{} rolled back the change {} made: the saved configuration is restored.",
                        n.by, n.change_by
                    )
                },
                diff: n.diff,
            })
    };
    Layout {
        title: title.to_owned(),
        path: s.path.clone(),
        user: s.who.name.clone(),
        role: if s.admin() { "admin" } else { "viewer" },
        admin: s.admin(),
        csrf: s.csrf(),
        flash: s.flash.clone(),
        pending,
        applying,
        rollback,
        nav: NAV
            .iter()
            .map(|(href, label)| (*href, *label, s.path.starts_with(href)))
            .collect(),
    }
}

// ---- units -----------------------------------------------------------------

/// `value` with an SI prefix and `unit`: `12.3 Mbit/s`.
pub fn si(value: f64, unit: &str) -> String {
    let (v, p) = match value.abs() {
        v if v >= 1e9 => (value / 1e9, "G"),
        v if v >= 1e6 => (value / 1e6, "M"),
        v if v >= 1e3 => (value / 1e3, "k"),
        _ => (value, ""),
    };
    if p.is_empty() && v.fract() == 0.0 {
        format!("{v:.0} {unit}")
    } else {
        format!("{v:.1} {p}{unit}")
    }
}

/// Bytes with a binary prefix: `1.5 GiB`.
pub fn bytes(n: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < units.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", units[i])
    }
}

/// Seconds as `3 d 4 h`, `5 min 6 s`.
pub fn duration(secs: u64) -> String {
    match secs {
        s if s >= 86_400 => format!("{} d {} h", s / 86_400, s % 86_400 / 3600),
        s if s >= 3600 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        s if s >= 60 => format!("{} min {} s", s / 60, s % 60),
        s => format!("{s} s"),
    }
}

// ---- field-level messages ----------------------------------------------------

/// A form's messages, by input name.
#[derive(Debug, Clone, Default)]
pub struct FieldErrors {
    /// (input name, message).
    pub fields: Vec<(String, String)>,
    /// A message about the whole form.
    pub general: Option<String>,
}

impl FieldErrors {
    /// The message for input `name`, or "".
    pub fn get(&self, name: &str) -> String {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }

    /// Whether input `name` has a message.
    pub fn has(&self, name: &str) -> bool {
        self.fields.iter().any(|(n, _)| n == name)
    }

    /// Adds a message for `name`.
    pub fn add(&mut self, name: &str, message: impl Into<String>) {
        self.fields.push((name.to_owned(), message.into()));
    }

    /// Whether there is nothing to say.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty() && self.general.is_none()
    }

    /// The API's problem, put next to the input it names (the last part
    /// of its config path, `ltran.bond_mtu` → `bond_mtu`) when the form
    /// has one, else over the whole form.
    pub fn from_problem(p: &Problem, inputs: &[&str]) -> Self {
        let mut e = FieldErrors::default();
        let input = p.field.as_deref().and_then(|f| {
            let last = f.rsplit('.').next().unwrap_or(f);
            let last = last.split('[').next().unwrap_or(last);
            inputs.iter().find(|i| **i == last)
        });
        match input {
            Some(i) => e.add(i, p.detail.clone()),
            None => {
                e.general = Some(match &p.field {
                    Some(f) => format!("{} ({f})", p.detail),
                    None => p.detail.clone(),
                })
            }
        }
        e
    }
}

/// An optional whole number from a form field ("" is absent).
pub fn int_field(errors: &mut FieldErrors, name: &str, value: &str, unit: &str) -> Option<i64> {
    let v = value.trim();
    if v.is_empty() {
        return None;
    }
    match v.parse() {
        Ok(n) => Some(n),
        Err(_) => {
            errors.add(name, format!("{v:?} is not a whole number of {unit}"));
            None
        }
    }
}

/// A list from a form field: items split at commas and white space.
pub fn list_field(value: &str) -> Vec<String> {
    value
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// What an applied change says: saved, or pending until a deadline.
pub fn change_message(what: &str, c: &appliance::api::ChangeResult) -> String {
    match (&c.version, &c.pending) {
        (_, Some(p)) if c.confirmation_needed => format!(
            "{what}: applied, pending confirmation: confirm within {} s or it is rolled back",
            p.seconds_left
        ),
        (Some(v), _) => format!("{what}: applied and saved as version {v}"),
        _ => format!("{what}: applied"),
    }
}

// ---- login, logout, confirm, rollback ------------------------------------------

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    next: String,
    username: String,
    error: Option<String>,
}

#[derive(Deserialize)]
struct NextQuery {
    next: Option<String>,
}

/// Only a path of ours (not `//host`, not a URL) is a place to go back to.
fn local_path(p: Option<&str>) -> String {
    match p {
        Some(p) if p.starts_with('/') && !p.starts_with("//") && !p.contains('\\') => p.to_owned(),
        _ => "/dashboard".to_owned(),
    }
}

async fn login_page(
    headers: HeaderMap,
    State(state): State<AppState>,
    uri: axum::http::Uri,
) -> Response {
    let next = uri
        .query()
        .and_then(|q| serde_urlencoded::from_str::<NextQuery>(q).ok())
        .and_then(|q| q.next);
    let next = local_path(next.as_deref());
    if guard::cookie(&headers, SESSION_COOKIE).is_some_and(|id| state.auth.session(id).is_some()) {
        return Redirect::to(&next).into_response();
    }
    render(&LoginPage {
        next,
        username: String::new(),
        error: None,
    })
}

#[derive(Deserialize)]
struct LoginForm {
    username: String,
    password: String,
    next: Option<String>,
}

async fn login(
    State(state): State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
    uri: axum::http::Uri,
    axum::Form(form): axum::Form<LoginForm>,
) -> Response {
    let next = local_path(form.next.as_deref());
    // Logging in from another site's page (login CSRF) is refused.
    if let Err(p) = guard::same_origin(&headers, &uri) {
        let page = LoginPage {
            next,
            username: form.username,
            error: Some(p.detail),
        };
        return (StatusCode::FORBIDDEN, render(&page)).into_response();
    }
    let body = session::Login {
        username: form.username.clone(),
        password: form.password,
    };
    match session::login(State(state), ip, Json(body)).await {
        Ok(answer) => {
            let cookie = answer.headers().get(header::SET_COOKIE).cloned();
            let mut r = Redirect::to(&next).into_response();
            if let Some(c) = cookie {
                r.headers_mut().insert(header::SET_COOKIE, c);
            }
            r
        }
        Err(p) => {
            let status = p.status_code();
            let page = LoginPage {
                next,
                username: form.username,
                error: Some(p.detail),
            };
            (status, render(&page)).into_response()
        }
    }
}

async fn logout(State(state): State<AppState>, change: Change) -> Response {
    let answer = session::logout(State(state), Extension(change.session.who)).await;
    let mut r = Redirect::to("/login").into_response();
    if let Some(c) = answer.headers().get(header::SET_COOKIE) {
        r.headers_mut().insert(header::SET_COOKIE, c.clone());
    }
    r
}

#[derive(Deserialize)]
struct BackForm {
    back: Option<String>,
}

/// Where the banner's forms go back to: the page they were on.
fn back_to(change: &Change) -> String {
    let back = change.form::<BackForm>().ok().and_then(|f| f.back);
    local_path(back.as_deref())
}

async fn confirm(State(state): State<AppState>, change: Change) -> Response {
    let back = back_to(&change);
    match config::confirm(
        State(state.clone()),
        Extension(change.session.who.clone()),
        change.ip,
    )
    .await
    {
        Ok(Json(c)) => {
            // A confirmed change supersedes the last rollback's story.
            *state
                .last_rollback
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = None;
            change.done(&back, &format!("Confirmed: saved as version {}", c.version))
        }
        Err(p) => change.done(&back, &format!("Not confirmed: {}", p.detail)),
    }
}

async fn rollback(State(state): State<AppState>, change: Change) -> Response {
    let back = back_to(&change);
    let made = state
        .pending
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    match config::rollback(
        State(state.clone()),
        Extension(change.session.who.clone()),
        change.ip,
    )
    .await
    {
        Ok(Json(r)) => {
            if let Some(made) = made {
                crate::poller::note_rollback(&state, &made, &change.session.who.name).await;
            }
            change.done(&back, &format!("Rolled back ({})", r.result))
        }
        Err(p) => change.done(&back, &format!("Not rolled back: {}", p.detail)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_say_what_they_are() {
        assert_eq!(si(0.0, "bit/s"), "0 bit/s");
        assert_eq!(si(12_345_678.0, "bit/s"), "12.3 Mbit/s");
        assert_eq!(si(1500.0, "pkt/s"), "1.5 kpkt/s");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(100), "100 B");
        assert_eq!(duration(3725), "1 h 2 min");
    }

    #[test]
    fn utc_is_the_civil_date() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(1_733_353_507_000), "2024-12-04 23:05:07 UTC");
    }

    #[test]
    fn only_our_own_paths_are_followed_after_login() {
        assert_eq!(local_path(Some("/bond")), "/bond");
        assert_eq!(local_path(Some("//evil.example/")), "/dashboard");
        assert_eq!(local_path(Some("https://evil.example/")), "/dashboard");
        assert_eq!(local_path(None), "/dashboard");
    }

    #[test]
    fn a_problem_lands_next_to_its_input() {
        let p = Problem::invalid_config(
            "bond_mtu = 9000 is out of range",
            Some("ltran.bond_mtu".into()),
        );
        let e = FieldErrors::from_problem(&p, &["bond_mtu", "bond_miimon"]);
        assert_eq!(e.get("bond_mtu"), "bond_mtu = 9000 is out of range");
        let e = FieldErrors::from_problem(&p, &["bond_miimon"]);
        assert!(e.general.unwrap().contains("ltran.bond_mtu"));
    }
}
