//! Configuration (running vs saved, history with restore), the account
//! (password, API tokens shown once, users for admins) and the audit log.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use serde::Deserialize;

use super::{change_message, layout, render, Change, FieldErrors, Layout, Session};
use crate::api::config::{self, DiffQuery};
use crate::api::session::{self, AuditQuery, NewAccount, NewToken, PasswordChange};
use crate::audit::AuditEntry;
use crate::auth::{AccountInfo, Role, TokenInfo};
use crate::problem::{Json, Path};
use crate::AppState;

// ---- configuration ----------------------------------------------------------

#[derive(Template)]
#[template(path = "config.html")]
struct ConfigPage {
    layout: Layout,
    running_vs_saved: String,
    versions: Vec<String>,
    shown: Option<(String, String)>,
    running: String,
    unavailable: Option<String>,
}

/// `?diff=<version>`: that version against what runs.
#[derive(Debug, Deserialize)]
pub struct ConfigQuery {
    diff: Option<String>,
}

/// `GET /config`.
pub async fn config_page(
    State(state): State<AppState>,
    Query(q): Query<ConfigQuery>,
    s: Session,
) -> Response {
    let layout = layout(&state, &s, "Configuration").await;
    let mut unavailable = None;
    let running_vs_saved = match config::diff(
        State(state.clone()),
        crate::problem::Query(DiffQuery {
            from: None,
            to: None,
        }),
    )
    .await
    {
        Ok(Json(d)) => d.diff,
        Err(p) => {
            unavailable = Some(p.detail);
            String::new()
        }
    };
    let versions = match config::history(State(state.clone())).await {
        Ok(Json(h)) => h.versions.into_iter().map(|v| v.id).collect(),
        Err(_) => Vec::new(),
    };
    let shown = match q.diff {
        Some(id) => match config::diff(
            State(state.clone()),
            crate::problem::Query(DiffQuery {
                from: Some(id.clone()),
                to: Some("running".into()),
            }),
        )
        .await
        {
            Ok(Json(d)) => Some((id, d.diff)),
            Err(p) => Some((id, format!("(no diff: {})", p.detail))),
        },
        None => None,
    };
    let running = config::running_toml(&state)
        .await
        .map(|(_, t)| t)
        .unwrap_or_default();
    render(&ConfigPage {
        layout,
        running_vs_saved,
        versions,
        shown,
        running,
        unavailable,
    })
}

#[derive(Deserialize)]
struct RestoreForm {
    id: String,
}

/// `POST /config/restore`: make a saved version run again.
pub async fn restore(State(state): State<AppState>, change: Change) -> Response {
    let form: RestoreForm = match change.form() {
        Ok(f) => f,
        Err(r) => return r,
    };
    match config::restore(
        State(state),
        Extension(change.session.who.clone()),
        change.ip,
        Path(form.id.clone()),
    )
    .await
    {
        Ok(Json(c)) => change.done(
            "/config",
            &change_message(&format!("Version {} restored", form.id), &c),
        ),
        Err(p) => change.done("/config", &format!("Not restored: {}", p.detail)),
    }
}

// ---- the account --------------------------------------------------------------

#[derive(Template)]
#[template(path = "account.html")]
struct AccountPage {
    layout: Layout,
    password_errors: FieldErrors,
    tokens: Vec<TokenInfo>,
    new_token: Option<(String, String)>,
    token_errors: FieldErrors,
    accounts: Vec<AccountInfo>,
    user_errors: FieldErrors,
}

fn role_word(r: Role) -> &'static str {
    match r {
        Role::Admin => "admin",
        Role::Viewer => "viewer",
    }
}

impl AccountPage {
    /// A role as a word, for the template.
    fn role(&self, r: impl std::borrow::Borrow<Role>) -> &'static str {
        role_word(*r.borrow())
    }
}

#[derive(Default)]
struct AccountMessages {
    password: FieldErrors,
    token: FieldErrors,
    user: FieldErrors,
    new_token: Option<(String, String)>,
}

async fn account_view(state: &AppState, s: &Session, m: AccountMessages) -> Response {
    let layout = layout(state, s, "Account").await;
    let failed = !(m.password.is_empty() && m.token.is_empty() && m.user.is_empty());
    let page = AccountPage {
        layout,
        password_errors: m.password,
        tokens: if s.admin() {
            session::list_tokens(State(state.clone())).await.0
        } else {
            Vec::new()
        },
        new_token: m.new_token,
        token_errors: m.token,
        accounts: if s.admin() {
            session::list_accounts(State(state.clone())).await.0
        } else {
            Vec::new()
        },
        user_errors: m.user,
    };
    let status = if failed {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    (status, render(&page)).into_response()
}

/// `GET /account`.
pub async fn account_page(State(state): State<AppState>, s: Session) -> Response {
    account_view(&state, &s, AccountMessages::default()).await
}

#[derive(Deserialize)]
struct PasswordForm {
    current_password: String,
    new_password: String,
    repeat_password: String,
}

/// `POST /account/password`: any role, its own password.
pub async fn password(State(state): State<AppState>, change: Change) -> Response {
    let form: PasswordForm = match change.form() {
        Ok(f) => f,
        Err(r) => return r,
    };
    let mut errors = FieldErrors::default();
    if form.new_password != form.repeat_password {
        errors.add("repeat_password", "the two new passwords differ");
        let m = AccountMessages {
            password: errors,
            ..Default::default()
        };
        return account_view(&state, &change.session, m).await;
    }
    let body = PasswordChange {
        current_password: form.current_password,
        new_password: form.new_password,
    };
    match session::change_password(
        State(state.clone()),
        Extension(change.session.who.clone()),
        change.ip,
        Json(body),
    )
    .await
    {
        Ok(_) => change.done(
            "/account",
            "Password changed; your other sessions have ended",
        ),
        Err(p) => {
            // The API says which: a wrong current password, or a new one
            // that does not fit the rules.
            if p.status == 401 {
                errors.add("current_password", p.detail);
            } else {
                errors.add("new_password", p.detail);
            }
            let m = AccountMessages {
                password: errors,
                ..Default::default()
            };
            account_view(&state, &change.session, m).await
        }
    }
}

#[derive(Deserialize)]
struct TokenForm {
    name: String,
    role: Role,
}

/// `POST /account/tokens`: the token's secret is on this answer only
/// (no redirect, so it is in no URL and no history entry).
pub async fn create_token(State(state): State<AppState>, change: Change) -> Response {
    let form: TokenForm = match change.form() {
        Ok(f) => f,
        Err(r) => return r,
    };
    let result = session::create_token(
        State(state.clone()),
        Extension(change.session.who.clone()),
        change.ip,
        Json(NewToken {
            name: form.name,
            role: form.role,
        }),
    )
    .await;
    let m = match result {
        Ok((_, Json(t))) => AccountMessages {
            new_token: Some((t.info.name, t.token)),
            ..Default::default()
        },
        Err(p) => {
            let mut e = FieldErrors::default();
            e.add("token_name", p.detail);
            AccountMessages {
                token: e,
                ..Default::default()
            }
        }
    };
    account_view(&state, &change.session, m).await
}

#[derive(Deserialize)]
struct IdForm {
    id: String,
}

/// `POST /account/tokens/revoke`.
pub async fn revoke_token(State(state): State<AppState>, change: Change) -> Response {
    let form: IdForm = match change.form() {
        Ok(f) => f,
        Err(r) => return r,
    };
    match session::revoke_token(
        State(state),
        Extension(change.session.who.clone()),
        change.ip,
        Path(form.id.clone()),
    )
    .await
    {
        Ok(_) => change.done("/account", &format!("Token {} revoked", form.id)),
        Err(p) => change.done("/account", &format!("Not revoked: {}", p.detail)),
    }
}

#[derive(Deserialize)]
struct UserForm {
    username: String,
    role: Role,
    password: String,
}

/// `POST /account/users`: a new account (admin).
pub async fn create_user(State(state): State<AppState>, change: Change) -> Response {
    let form: UserForm = match change.form() {
        Ok(f) => f,
        Err(r) => return r,
    };
    let name = form.username.clone();
    match session::create_account(
        State(state.clone()),
        Extension(change.session.who.clone()),
        change.ip,
        Json(NewAccount {
            username: form.username,
            role: form.role,
            password: form.password,
        }),
    )
    .await
    {
        Ok(_) => change.done("/account", &format!("Account {name} made")),
        Err(p) => {
            let mut e = FieldErrors::default();
            if p.detail.to_lowercase().contains("password") {
                e.add("user_password", p.detail);
            } else {
                e.add("user_name", p.detail);
            }
            let m = AccountMessages {
                user: e,
                ..Default::default()
            };
            account_view(&state, &change.session, m).await
        }
    }
}

#[derive(Deserialize)]
struct UserDeleteForm {
    username: String,
}

/// `POST /account/users/delete`.
pub async fn delete_user(State(state): State<AppState>, change: Change) -> Response {
    let form: UserDeleteForm = match change.form() {
        Ok(f) => f,
        Err(r) => return r,
    };
    match session::delete_account(
        State(state),
        Extension(change.session.who.clone()),
        change.ip,
        Path(form.username.clone()),
    )
    .await
    {
        Ok(_) => change.done("/account", &format!("Account {} removed", form.username)),
        Err(p) => change.done("/account", &format!("Not removed: {}", p.detail)),
    }
}

// ---- the audit log --------------------------------------------------------------

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditPage {
    layout: Layout,
    entries: Vec<AuditEntry>,
    error: Option<String>,
}

/// `GET /audit`: the newest 200 entries, newest first.
pub async fn audit_page(State(state): State<AppState>, s: Session) -> Response {
    let layout = layout(&state, &s, "Audit log").await;
    let (entries, error) = match session::audit(
        State(state.clone()),
        crate::problem::Query(AuditQuery { limit: Some(200) }),
    )
    .await
    {
        Ok(Json(mut e)) => {
            e.reverse();
            (e, None)
        }
        Err(p) => (Vec::new(), Some(p.detail)),
    };
    render(&AuditPage {
        layout,
        entries,
        error,
    })
}
