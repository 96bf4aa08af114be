//! The `/api/v1` resources, one module each, and the OpenAPI document
//! made from their annotations and the Rust types.
//!
//! - [`session`]: login, logout, the session, passwords, accounts, API
//!   tokens, the audit log;
//! - [`config`]: the whole config: running and saved, validate, apply,
//!   confirm, rollback, history, restore, diff;
//! - [`edits`]: devices, bond, subnets and instances, each edit one
//!   whole-config change through applianced; instances also started,
//!   stopped and restarted;
//! - [`stats`]: ltran's and every lstack's statistics (every view of
//!   `gazellectl`), the rates, and their live stream;
//! - [`machine`]: processes, host facts, hugepages.

use axum::response::IntoResponse as _;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::problem::{Problem, PROBLEM_JSON};
use crate::AppState;

pub mod config;
pub mod edits;
pub mod machine;
pub mod session;
pub mod stats;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "gazelle appliance API",
        description = "Configure and observe the kernel-bypass appliance: applianced's config store \
                       (confirm-or-rollback), its devices, bond, subnets and instances, and every \
                       statistic of ltran and lstack. Errors are application/problem+json. \
                       Authenticate with a session (POST /api/v1/auth/login; changes then need \
                       the X-CSRF-Token header) or an API token (Authorization: Bearer).",
        license(name = "MIT OR Apache-2.0")
    ),
    components(schemas(Problem, appliance::supervisor::ProcessAction)),
    security(("session" = []), ("token" = []))
)]
struct ApiDoc;

/// What every operation shares: the two ways to authenticate, and the
/// problems any of them may answer.
struct Conventions;

/// The problems every operation may answer, with when.
const PROBLEMS: &[(&str, &str)] = &[
    ("400", "Malformed request (path, query or JSON syntax)"),
    ("401", "No valid session or token"),
    (
        "403",
        "Not allowed: the viewer role, a missing CSRF token or a foreign Origin",
    ),
    ("404", "No such resource"),
    ("405", "Method not allowed"),
    (
        "409",
        "Conflicts with the state (a change is pending confirmation...)",
    ),
    ("413", "Body too large"),
    ("415", "The body is not JSON"),
    (
        "422",
        "The body does not fit the schema, or applianced refused the config (field names it)",
    ),
    ("429", "Too many failed logins"),
    ("500", "Internal error"),
    ("502", "A daemon answered with an error"),
    (
        "503",
        "A daemon (applianced, ltran, an lstack) is not running",
    ),
];

impl Modify for Conventions {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                crate::auth::SESSION_COOKIE,
                "The session of POST /api/v1/auth/login",
            ))),
        );
        components.add_security_scheme(
            "token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An API token (POST /api/v1/tokens)"))
                    .build(),
            ),
        );
        for item in openapi.paths.paths.values_mut() {
            for op in [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ]
            .into_iter()
            .flatten()
            {
                for (code, description) in PROBLEMS {
                    op.responses
                        .responses
                        .entry((*code).to_owned())
                        .or_insert_with(|| {
                            ResponseBuilder::new()
                                .description(*description)
                                .content(
                                    PROBLEM_JSON,
                                    ContentBuilder::new()
                                        .schema(Some(Ref::from_schema_name("Problem")))
                                        .build(),
                                )
                                .into()
                        });
                }
            }
        }
    }
}

/// Every `/api/v1` route with its documentation.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(session::login))
        .routes(routes!(session::logout))
        .routes(routes!(session::current))
        .routes(routes!(session::change_password))
        .routes(routes!(session::list_accounts, session::create_account))
        .routes(routes!(session::delete_account))
        .routes(routes!(session::list_tokens, session::create_token))
        .routes(routes!(session::revoke_token))
        .routes(routes!(session::audit))
        .routes(routes!(config::get_config, config::set_config))
        .routes(routes!(config::validate))
        .routes(routes!(config::confirm))
        .routes(routes!(config::rollback))
        .routes(routes!(config::history))
        .routes(routes!(config::version))
        .routes(routes!(config::restore))
        .routes(routes!(config::diff))
        .routes(routes!(edits::list_devices))
        .routes(routes!(edits::get_device, edits::update_device))
        .routes(routes!(edits::get_bond, edits::update_bond))
        .routes(routes!(edits::get_subnets, edits::update_subnets))
        .routes(routes!(edits::list_instances, edits::create_instance))
        .routes(routes!(
            edits::get_instance,
            edits::update_instance,
            edits::delete_instance
        ))
        .routes(routes!(edits::control_instance))
        .routes(routes!(stats::ltran))
        .routes(routes!(stats::ltran_instances))
        .routes(routes!(stats::ltran_burst))
        .routes(routes!(stats::ltran_latency))
        .routes(routes!(stats::ltran_rates))
        .routes(routes!(stats::lstacks))
        .routes(routes!(stats::lstack))
        .routes(routes!(stats::lstack_connections))
        .routes(routes!(stats::lstack_snmp))
        .routes(routes!(stats::lstack_latency))
        .routes(routes!(stats::lstack_rates))
        .routes(routes!(stats::rates))
        .routes(routes!(stats::stream))
        .routes(routes!(machine::status))
        .routes(routes!(machine::host))
        .routes(routes!(machine::hugepages))
        .routes(routes!(openapi_json))
}

/// The OpenAPI 3 document of this API (the conventions are added once
/// every route is in).
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = router().split_for_parts().1;
    Conventions.modify(&mut doc);
    doc
}

/// The OpenAPI 3 document of this API (this very description).
#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    tag = "meta",
    security(()),
    responses((status = 200, description = "The OpenAPI 3 document", content_type = "application/json", body = Object))
)]
pub async fn openapi_json() -> axum::response::Response {
    static DOC: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    let body = DOC.get_or_init(|| serde_json::to_vec(&openapi()).unwrap_or_default());
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body.clone(),
    )
        .into_response()
}
