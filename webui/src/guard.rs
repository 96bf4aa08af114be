//! What every request passes: authentication (a session cookie or a
//! bearer token), the role check, CSRF protection of browser sessions
//! (the `X-CSRF-Token` header and our own `Origin`), and the security
//! headers on every answer.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::auth::{secret_eq, Principal, Role, Via, CSRF_HEADER, SESSION_COOKIE};
use crate::problem::Problem;
use crate::AppState;

/// Paths anyone may call: logging in and the API's description.
const PUBLIC: &[&str] = &["/api/v1/auth/login", "/api/v1/openapi.json"];
/// Changes a viewer may make: to its own session and password.
const ANY_ROLE_CHANGES: &[&str] = &["/api/v1/auth/logout", "/api/v1/auth/password"];

/// The client's address, when the server recorded it.
pub fn client_ip(request: &Request) -> Option<IpAddr> {
    request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
}

/// The client's address for rate limits and the audit log (unspecified
/// when unknown, as in tests without a socket).
pub fn client_ip_or_unspecified(request: &Request) -> IpAddr {
    client_ip(request).unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
}

/// The value of cookie `name`.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The bearer token of `Authorization`, if the header is one.
pub fn bearer(headers: &HeaderMap) -> Option<Result<&str, ()>> {
    let value = headers.get(header::AUTHORIZATION)?;
    Some(
        value
            .to_str()
            .ok()
            .and_then(|v| {
                let (scheme, token) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .ok_or(()),
    )
}

/// The session cookie for `id`: `__Host-` with Secure, HttpOnly,
/// SameSite=Strict and Path=/ (and no Domain, which `__Host-` forbids).
pub fn session_cookie(id: &str) -> String {
    format!("{SESSION_COOKIE}={id}; Path=/; Secure; HttpOnly; SameSite=Strict")
}

/// The header that makes the browser forget the session cookie.
pub fn clear_session_cookie() -> String {
    format!("{SESSION_COOKIE}=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0")
}

fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Whether a browser's request comes from one of our own pages: its
/// `Origin` (when sent) must be `https://<Host>` (HTTP/2 carries the host
/// in the URI's authority instead of a Host header), and its
/// `Sec-Fetch-Site` (when sent) `same-origin` or `none`.
pub fn same_origin(headers: &HeaderMap, uri: &axum::http::Uri) -> Result<(), Problem> {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| uri.authority().map(|a| a.as_str()))
        .unwrap_or_default();
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or_default();
        if host.is_empty() || origin != format!("https://{host}") {
            return Err(Problem::forbidden(format!(
                "Origin {origin:?} is not this server's (https://{host}): changes are taken \
                 only from this server's own pages"
            )));
        }
    }
    if let Some(site) = headers.get("sec-fetch-site") {
        if !matches!(site.to_str().unwrap_or_default(), "same-origin" | "none") {
            return Err(Problem::forbidden(
                "a cross-site request (Sec-Fetch-Site) may not change anything",
            ));
        }
    }
    Ok(())
}

/// Authenticates every `/api/v1` request but [`PUBLIC`] ones, checks the
/// role and, for a browser session's changes, the CSRF token and origin;
/// the [`Principal`] goes into the request's extensions.
pub async fn authenticate(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path().to_owned();
    let safe = is_safe(request.method());
    if PUBLIC.contains(&path.as_str()) {
        // Logging in from another site's page (login CSRF) is refused too.
        if !safe {
            if let Err(p) = same_origin(request.headers(), request.uri()) {
                return p.into_response();
            }
        }
        return next.run(request).await;
    }
    let principal = match principal(&state, request.headers()) {
        Ok(p) => p,
        Err(p) => return p.into_response(),
    };
    if !safe {
        if let Via::Session { csrf, .. } = &principal.via {
            if let Err(p) = same_origin(request.headers(), request.uri()) {
                return p.into_response();
            }
            let sent = request
                .headers()
                .get(CSRF_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            if sent.is_empty() || !secret_eq(sent, csrf) {
                return Problem::forbidden(
                    "missing or wrong X-CSRF-Token: send the csrf_token of the login (or of \
                     GET /api/v1/auth/session) with every change",
                )
                .into_response();
            }
        }
        if principal.role != Role::Admin && !ANY_ROLE_CHANGES.contains(&path.as_str()) {
            return Problem::forbidden(format!(
                "{} has the viewer role: it reads, it does not change anything",
                principal.name
            ))
            .into_response();
        }
    }
    request.extensions_mut().insert(principal);
    next.run(request).await
}

/// The principal of a request's token or session cookie.
pub fn principal(state: &AppState, headers: &HeaderMap) -> Result<Principal, Problem> {
    match bearer(headers) {
        Some(Ok(token)) => state
            .auth
            .token(token)
            .ok_or_else(|| Problem::unauthorized("the bearer token is unknown or revoked")),
        Some(Err(())) => Err(Problem::unauthorized(
            "Authorization must be \"Bearer <token>\"",
        )),
        None => match cookie(headers, SESSION_COOKIE) {
            Some(id) => state.auth.session(id).ok_or_else(|| {
                Problem::unauthorized("the session has ended (logged out or idle); log in again")
            }),
            None => Err(Problem::unauthorized(
                "log in (POST /api/v1/auth/login) or send Authorization: Bearer <token>",
            )),
        },
    }
}

/// Security headers on every answer: no framing, no sniffing, no
/// referrer (but for the pages' own forms), a strict CSP, HSTS, and no
/// caching of API answers.
pub async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    let cached = h.contains_key(header::CACHE_CONTROL);
    // The pages ask for `same-origin` (see `pages`); all else sends none.
    let has_referrer_policy = h.contains_key(header::REFERRER_POLICY);
    let mut set = |name: &'static str, value: &'static str| {
        h.insert(name, HeaderValue::from_static(value));
    };
    set(
        "content-security-policy",
        "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'",
    );
    set("x-frame-options", "DENY");
    set("x-content-type-options", "nosniff");
    if !has_referrer_policy {
        set("referrer-policy", "no-referrer");
    }
    set("strict-transport-security", "max-age=31536000");
    set("cross-origin-opener-policy", "same-origin");
    if !cached {
        set("cache-control", "no-store");
    }
    response
}

/// Unknown paths.
pub async fn not_found(request: Request) -> Problem {
    Problem::not_found(format!("nothing at {}", request.uri().path()))
}

/// Known paths, other methods.
pub async fn method_not_allowed(request: Request) -> Problem {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        "Method not allowed",
        format!(
            "{} does not take {}",
            request.uri().path(),
            request.method()
        ),
    )
}

/// The client's address, as an extractor (`None` without a socket, as in
/// tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub Option<IpAddr>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(ClientIp(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip()),
        ))
    }
}

impl ClientIp {
    /// The address, or the unspecified one.
    pub fn or_unspecified(self) -> IpAddr {
        self.0.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
    }
}

/// The answer to a request whose handler panicked (a bug): a 500 problem,
/// logged.
pub fn panicked(err: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let what = err
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| err.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "a panic".to_owned());
    tracing::error!("a handler panicked: {what}");
    Problem::internal("the server hit a bug answering this request; it is logged").into_response()
}
