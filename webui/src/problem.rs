//! Every error the API answers, in one shape: RFC 9457 problem details
//! (`application/problem+json`), with the config field at fault when a
//! change was refused and the daemon's name when one is not running.

use std::fmt;

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The media type of a problem.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// What went wrong, for a person and for a program.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem (`urn:gazelle:problem:<kind>`).
    #[serde(rename = "type")]
    pub kind: String,
    /// The kind, in a few words.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What exactly was wrong and, where it helps, what would be right.
    pub detail: String,
    /// The config field at fault, as applianced names it
    /// (`instances[0].lstack.host_addr`), when a config was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// The daemon that is not running or did not answer (`applianced`,
    /// `ltran`, `lstack 10.0.0.2`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daemon: Option<String>,
}

impl Problem {
    /// A problem of `status` whose kind is `kind` (a short slug).
    pub fn new(status: StatusCode, kind: &str, title: &str, detail: impl Into<String>) -> Self {
        Self {
            kind: format!("urn:gazelle:problem:{kind}"),
            title: title.to_owned(),
            status: status.as_u16(),
            detail: detail.into(),
            field: None,
            daemon: None,
        }
    }

    /// 400: the request itself is malformed.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "bad-request",
            "Bad request",
            detail,
        )
    }

    /// 401: no valid session or token.
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Authentication required",
            detail,
        )
    }

    /// 403: authenticated, but not allowed (role, CSRF, origin).
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", "Forbidden", detail)
    }

    /// 404: no such resource.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", "Not found", detail)
    }

    /// 409: the request conflicts with the state (a pending change...).
    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", "Conflict", detail)
    }

    /// 422: a config (or part of one) that applianced refused.
    pub fn invalid_config(detail: impl Into<String>, field: Option<String>) -> Self {
        Self {
            field,
            ..Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-config",
                "Invalid configuration: nothing changed",
                detail,
            )
        }
    }

    /// 429: too many failed logins.
    pub fn too_many(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate-limited",
            "Too many attempts",
            detail,
        )
    }

    /// 503: a daemon is not running (or not reachable).
    pub fn unavailable(daemon: &str, detail: impl Into<String>) -> Self {
        Self {
            daemon: Some(daemon.to_owned()),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "daemon-unavailable",
                &format!("{daemon} is not available"),
                detail,
            )
        }
    }

    /// 502: a daemon answered, but not with what the question asked.
    pub fn bad_gateway(daemon: &str, detail: impl Into<String>) -> Self {
        Self {
            daemon: Some(daemon.to_owned()),
            ..Self::new(
                StatusCode::BAD_GATEWAY,
                "daemon-error",
                &format!("{daemon} failed"),
                detail,
            )
        }
    }

    /// 500: our own fault (a file we could not write...).
    pub fn internal(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal error",
            detail,
        )
    }

    /// The status as a [`StatusCode`].
    pub fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}): {}", self.title, self.status, self.detail)
    }
}

impl std::error::Error for Problem {}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut response = (self.status_code(), body).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        response
    }
}

impl From<JsonRejection> for Problem {
    fn from(r: JsonRejection) -> Self {
        match r {
            JsonRejection::JsonDataError(e) => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-body",
                "The body does not fit the schema",
                // The inner error names the field path and what was
                // expected ("unknown field `x`", "invalid type...").
                std::error::Error::source(&e).map_or_else(|| e.body_text(), |s| s.to_string()),
            ),
            JsonRejection::JsonSyntaxError(e) => Self::bad_request(format!(
                "the body is not JSON: {}",
                std::error::Error::source(&e).map_or_else(|| e.body_text(), |s| s.to_string())
            )),
            JsonRejection::MissingJsonContentType(_) => Self::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported media type",
                "send the body as JSON, with Content-Type: application/json",
            ),
            JsonRejection::BytesRejection(e) => {
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    Self::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "too-large",
                        "Body too large",
                        format!("bodies are limited to {} bytes", crate::MAX_BODY),
                    )
                } else {
                    Self::bad_request(format!("reading the body: {}", e.body_text()))
                }
            }
            other => Self::bad_request(other.body_text()),
        }
    }
}

impl From<PathRejection> for Problem {
    fn from(r: PathRejection) -> Self {
        Self::bad_request(format!("in the path: {}", r.body_text()))
    }
}

impl From<QueryRejection> for Problem {
    fn from(r: QueryRejection) -> Self {
        Self::bad_request(format!("in the query: {}", r.body_text()))
    }
}

/// A JSON body whose rejections are problems.
#[derive(Debug, Clone, Copy, Default, axum::extract::FromRequest)]
#[from_request(via(axum::Json), rejection(Problem))]
pub struct Json<T>(pub T);

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// Path parameters whose rejections are problems.
#[derive(Debug, Clone, Copy, Default, axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(Problem))]
pub struct Path<T>(pub T);

/// Query parameters whose rejections are problems.
#[derive(Debug, Clone, Copy, Default, axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(Problem))]
pub struct Query<T>(pub T);
