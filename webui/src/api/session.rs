//! Logging in and out, the session, passwords, accounts, API tokens and
//! the audit log.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::audit::AuditEntry;
use crate::auth::{AccountInfo, AuthError, Principal, Role, TokenInfo, Via};
use crate::guard::{clear_session_cookie, session_cookie, ClientIp};
use crate::problem::{Json, Path, Problem, Query};
use crate::AppState;

impl From<AuthError> for Problem {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::BadCredentials => Problem::unauthorized(e.to_string()),
            AuthError::RateLimited(_) => Problem::too_many(e.to_string()),
            AuthError::Invalid(m) => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-value",
                "Invalid value",
                m,
            ),
            AuthError::NotFound(m) => Problem::not_found(m),
            AuthError::Conflict(m) => Problem::conflict(m),
            AuthError::Storage(m) => Problem::internal(m),
        }
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, AuthError> + Send + 'static,
) -> Result<T, Problem> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Problem::internal(format!("a worker thread failed: {e}")))?
        .map_err(Problem::from)
}

/// Credentials.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Login {
    /// The account.
    pub username: String,
    /// Its password.
    pub password: String,
}

/// A session: who, what it may do, and the CSRF token its changes need.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SessionInfo {
    /// The account (or `token:<name>`).
    pub username: String,
    /// What it may do.
    pub role: Role,
    /// `session` or `token`.
    pub via: String,
    /// Send it as `X-CSRF-Token` with every change made through the
    /// session (absent for tokens, which need none).
    pub csrf_token: Option<String>,
    /// Seconds a session may stay unused before it ends.
    pub idle_timeout_secs: u64,
}

fn session_info(state: &AppState, p: &Principal) -> SessionInfo {
    let (via, csrf) = match &p.via {
        Via::Session { csrf, .. } => ("session", Some(csrf.clone())),
        Via::Token { .. } => ("token", None),
    };
    SessionInfo {
        username: p.name.clone(),
        role: p.role,
        via: via.into(),
        csrf_token: csrf,
        idle_timeout_secs: state.auth.idle_timeout.as_secs(),
    }
}

/// Log in: a session cookie (`__Host-gazelle-session`) and the CSRF token.
/// Failed attempts are rate-limited per address and per account.
#[utoipa::path(
    post,
    path = "/api/v1/auth/login",
    tag = "session",
    security(()),
    request_body = Login,
    responses((status = 200, description = "Logged in; the cookie is set", body = SessionInfo,
               headers(("set-cookie" = String, description = "The session cookie"))))
)]
pub async fn login(
    State(state): State<AppState>,
    ip: ClientIp,
    Json(body): Json<Login>,
) -> Result<Response, Problem> {
    let ip = ip.or_unspecified();
    let auth_state = state.clone();
    let name = body.username.clone();
    let role = blocking(move || auth_state.auth.verify(ip, &body.username, &body.password)).await;
    let role = match role {
        Ok(r) => r,
        Err(p) => {
            let mut e = AuditEntry::new(&name, Some(ip), "login", "refused");
            e.detail = Some(p.detail.clone());
            state.audit.record(&e);
            return Err(p);
        }
    };
    let (id, csrf) = state.auth.create_session(&name, role);
    state
        .audit
        .record(&AuditEntry::new(&name, Some(ip), "login", "ok"));
    let info = SessionInfo {
        username: name,
        role,
        via: "session".into(),
        csrf_token: Some(csrf),
        idle_timeout_secs: state.auth.idle_timeout.as_secs(),
    };
    Ok((
        [(header::SET_COOKIE, session_cookie(&id))],
        axum::Json(info),
    )
        .into_response())
}

/// End the session (tokens are revoked instead).
#[utoipa::path(
    post,
    path = "/api/v1/auth/logout",
    tag = "session",
    responses((status = 204, description = "Logged out; the cookie is cleared"))
)]
pub async fn logout(State(state): State<AppState>, Extension(p): Extension<Principal>) -> Response {
    if let Via::Session { key, .. } = &p.via {
        state.auth.end_session(key);
    }
    (
        StatusCode::NO_CONTENT,
        [(header::SET_COOKIE, clear_session_cookie())],
    )
        .into_response()
}

/// Who this request is, and the CSRF token of its session.
#[utoipa::path(
    get,
    path = "/api/v1/auth/session",
    tag = "session",
    responses((status = 200, description = "The session or token", body = SessionInfo))
)]
pub async fn current(
    State(state): State<AppState>,
    Extension(p): Extension<Principal>,
) -> Json<SessionInfo> {
    Json(session_info(&state, &p))
}

/// A password change.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordChange {
    /// The password now.
    pub current_password: String,
    /// The new one (10 to 1024 characters).
    pub new_password: String,
}

/// Change the password of the session's own account; its other sessions
/// end.
#[utoipa::path(
    put,
    path = "/api/v1/auth/password",
    tag = "session",
    request_body = PasswordChange,
    responses((status = 204, description = "Changed"))
)]
pub async fn change_password(
    State(state): State<AppState>,
    Extension(p): Extension<Principal>,
    ip: ClientIp,
    Json(body): Json<PasswordChange>,
) -> Result<StatusCode, Problem> {
    let Via::Session { key, .. } = p.via.clone() else {
        return Err(Problem::forbidden(
            "a token has no password: log in with the account to change it",
        ));
    };
    let s = state.clone();
    let name = p.name.clone();
    let addr = ip.or_unspecified();
    let result = blocking(move || {
        s.auth.change_password(
            addr,
            &name,
            &body.current_password,
            &body.new_password,
            Some(&key),
        )
    })
    .await;
    let outcome = if result.is_ok() { "ok" } else { "refused" };
    state
        .audit
        .record(&AuditEntry::new(&p.name, ip.0, "password.change", outcome));
    result.map(|()| StatusCode::NO_CONTENT)
}

/// Every account.
#[utoipa::path(
    get,
    path = "/api/v1/accounts",
    tag = "accounts",
    responses((status = 200, description = "The accounts", body = Vec<AccountInfo>))
)]
pub async fn list_accounts(State(state): State<AppState>) -> Json<Vec<AccountInfo>> {
    Json(state.auth.accounts())
}

/// A new account.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewAccount {
    /// 1 to 32 characters from `A-Z a-z 0-9 . _ -`.
    pub username: String,
    /// What it may do.
    pub role: Role,
    /// Its password (10 to 1024 characters).
    pub password: String,
}

/// Make an account (admin).
#[utoipa::path(
    post,
    path = "/api/v1/accounts",
    tag = "accounts",
    request_body = NewAccount,
    responses((status = 201, description = "Made", body = AccountInfo))
)]
pub async fn create_account(
    State(state): State<AppState>,
    Extension(p): Extension<Principal>,
    ip: ClientIp,
    Json(body): Json<NewAccount>,
) -> Result<(StatusCode, Json<AccountInfo>), Problem> {
    let s = state.clone();
    let name = body.username.clone();
    let result = blocking(move || {
        s.auth
            .create_account(&body.username, body.role, &body.password)
    })
    .await;
    let mut e = AuditEntry::new(
        &p.name,
        ip.0,
        "account.create",
        if result.is_ok() { "ok" } else { "refused" },
    );
    e.target = Some(name);
    state.audit.record(&e);
    result.map(|a| (StatusCode::CREATED, Json(a)))
}

/// Remove an account (admin; not the last admin); its sessions end.
#[utoipa::path(
    delete,
    path = "/api/v1/accounts/{username}",
    tag = "accounts",
    params(("username" = String, Path, description = "The account")),
    responses((status = 204, description = "Removed"))
)]
pub async fn delete_account(
    State(state): State<AppState>,
    Extension(p): Extension<Principal>,
    ip: ClientIp,
    Path(username): Path<String>,
) -> Result<StatusCode, Problem> {
    let result = state.auth.delete_account(&username);
    let mut e = AuditEntry::new(
        &p.name,
        ip.0,
        "account.delete",
        if result.is_ok() { "ok" } else { "refused" },
    );
    e.target = Some(username);
    state.audit.record(&e);
    result
        .map(|()| StatusCode::NO_CONTENT)
        .map_err(Problem::from)
}

/// Every API token (never their secrets).
#[utoipa::path(
    get,
    path = "/api/v1/tokens",
    tag = "tokens",
    responses((status = 200, description = "The tokens", body = Vec<TokenInfo>))
)]
pub async fn list_tokens(State(state): State<AppState>) -> Json<Vec<TokenInfo>> {
    Json(state.auth.tokens())
}

/// A token to make.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    /// What it is for (1 to 64 characters).
    pub name: String,
    /// What it may do.
    pub role: Role,
}

/// A token just made: the only time its secret is shown.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreatedToken {
    /// The token.
    #[serde(flatten)]
    pub info: TokenInfo,
    /// Send it as `Authorization: Bearer <token>`; it is not shown again.
    pub token: String,
}

/// Make an API token (admin). Its secret is in this answer only.
#[utoipa::path(
    post,
    path = "/api/v1/tokens",
    tag = "tokens",
    request_body = NewToken,
    responses((status = 201, description = "Made", body = CreatedToken))
)]
pub async fn create_token(
    State(state): State<AppState>,
    Extension(p): Extension<Principal>,
    ip: ClientIp,
    Json(body): Json<NewToken>,
) -> Result<(StatusCode, Json<CreatedToken>), Problem> {
    let (info, token) = state.auth.create_token(&p.name, &body.name, body.role)?;
    let mut e = AuditEntry::new(&p.name, ip.0, "token.create", "ok");
    e.target = Some(format!("{} ({})", info.id, info.name));
    state.audit.record(&e);
    Ok((StatusCode::CREATED, Json(CreatedToken { info, token })))
}

/// Revoke an API token (admin).
#[utoipa::path(
    delete,
    path = "/api/v1/tokens/{id}",
    tag = "tokens",
    params(("id" = String, Path, description = "The token's id")),
    responses((status = 204, description = "Revoked"))
)]
pub async fn revoke_token(
    State(state): State<AppState>,
    Extension(p): Extension<Principal>,
    ip: ClientIp,
    Path(id): Path<String>,
) -> Result<StatusCode, Problem> {
    let result = state.auth.revoke_token(&id);
    let mut e = AuditEntry::new(
        &p.name,
        ip.0,
        "token.revoke",
        if result.is_ok() { "ok" } else { "refused" },
    );
    e.target = Some(id);
    state.audit.record(&e);
    result
        .map(|_| StatusCode::NO_CONTENT)
        .map_err(Problem::from)
}

/// How much of the audit log.
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// The newest this many entries (default 100, at most 10000).
    #[param(minimum = 0, maximum = 10000)]
    pub limit: Option<u32>,
}

/// The audit log, oldest first.
#[utoipa::path(
    get,
    path = "/api/v1/audit",
    tag = "audit",
    params(AuditQuery),
    responses((status = 200, description = "The newest entries", body = Vec<AuditEntry>))
)]
pub async fn audit(
    State(state): State<AppState>,
    Query(q): Query<AuditQuery>,
) -> Result<Json<Vec<AuditEntry>>, Problem> {
    let limit = q.limit.unwrap_or(100).min(10_000) as usize;
    let s = state.clone();
    tokio::task::spawn_blocking(move || s.audit.tail(limit))
        .await
        .map_err(|e| Problem::internal(e.to_string()))?
        .map(Json)
        .map_err(|e| Problem::internal(format!("reading the audit log: {e}")))
}
