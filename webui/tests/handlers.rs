//! The API without a socket: `app(state).oneshot(request)` over a real
//! applianced handler (config store with confirm-or-rollback, on a real
//! control socket in a temporary directory; the machine side only
//! records what it is asked to apply) and stand-in ltran/lstack control
//! sockets. Every resource, the error shape, and the security rules:
//! sessions, cookies, CSRF and Origin, roles, tokens, rate limits,
//! headers, the redirect. No root needed.

mod support;

use std::time::Duration;

use axum::http::{header, Method, StatusCode};
use support::{req, Fixture, Options, ADMIN_PASSWORD, LSTACK_IP, VIEWER_PASSWORD};

#[tokio::test]
async fn no_session_is_401_in_the_problem_shape() {
    let f = Fixture::new();
    for path in ["/api/v1/config", "/api/v1/stats/ltran", "/api/v1/audit"] {
        let p = f
            .send(req(Method::GET, path).empty())
            .await
            .problem(StatusCode::UNAUTHORIZED);
        assert!(p["detail"].as_str().unwrap().contains("log in"), "{p}");
    }
    // A cookie of no session, a malformed or unknown token.
    let a = f
        .send(
            req(Method::GET, "/api/v1/config")
                .header("cookie", "__Host-gazelle-session=00")
                .empty(),
        )
        .await;
    a.problem(StatusCode::UNAUTHORIZED);
    let a = f
        .send(
            req(Method::GET, "/api/v1/config")
                .header("authorization", "Basic eDp5")
                .empty(),
        )
        .await;
    a.problem(StatusCode::UNAUTHORIZED);
    let a = f
        .send(
            req(Method::GET, "/api/v1/config")
                .bearer("gzt_00_11")
                .empty(),
        )
        .await;
    a.problem(StatusCode::UNAUTHORIZED);
    // The description of the API is public.
    let doc = f
        .send(req(Method::GET, "/api/v1/openapi.json").empty())
        .await;
    assert_eq!(doc.status, StatusCode::OK);
    assert!(doc.json()["openapi"].as_str().unwrap().starts_with("3."));
}

#[tokio::test]
async fn login_sets_a_host_cookie_with_exactly_the_right_attributes() {
    let f = Fixture::new();
    let a = f
        .send(
            req(Method::POST, "/api/v1/auth/login")
                .json(&serde_json::json!({"username": "admin", "password": ADMIN_PASSWORD})),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let cookie = a.headers.get(header::SET_COOKIE).unwrap().to_str().unwrap();
    let (pair, attributes) = cookie.split_once("; ").unwrap();
    let (name, value) = pair.split_once('=').unwrap();
    assert_eq!(name, "__Host-gazelle-session");
    assert_eq!(value.len(), 64);
    assert!(value.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(attributes, "Path=/; Secure; HttpOnly; SameSite=Strict");
    let body = a.json();
    assert_eq!(body["role"], "admin");
    assert_eq!(body["csrf_token"].as_str().unwrap().len(), 64);

    let s = f.login("admin", ADMIN_PASSWORD).await;
    let me = f
        .send(
            req(Method::GET, "/api/v1/auth/session")
                .cookie_only(&s)
                .empty(),
        )
        .await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(me.json()["csrf_token"], s.csrf.as_str());

    // Logout ends it and clears the cookie.
    let out = f
        .send(req(Method::POST, "/api/v1/auth/logout").session(&s).empty())
        .await;
    assert_eq!(out.status, StatusCode::NO_CONTENT);
    let cleared = out
        .headers
        .get(header::SET_COOKIE)
        .unwrap()
        .to_str()
        .unwrap();
    assert!(
        cleared.starts_with("__Host-gazelle-session=;") && cleared.contains("Max-Age=0"),
        "{cleared}"
    );
    f.send(
        req(Method::GET, "/api/v1/auth/session")
            .cookie_only(&s)
            .empty(),
    )
    .await
    .problem(StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn wrong_passwords_are_rate_limited() {
    let f = Fixture::new();
    let login = |password: &str| {
        req(Method::POST, "/api/v1/auth/login")
            .json(&serde_json::json!({"username": "admin", "password": password}))
    };
    for _ in 0..gazelle_webui::auth::MAX_FAILURES {
        f.send(login("not the password"))
            .await
            .problem(StatusCode::UNAUTHORIZED);
    }
    // Even the right password is refused now, from that address...
    let p = f
        .send(login(ADMIN_PASSWORD))
        .await
        .problem(StatusCode::TOO_MANY_REQUESTS);
    assert!(p["detail"].as_str().unwrap().contains("try again"), "{p}");
    // ...and for that account from elsewhere.
    let elsewhere = req(Method::POST, "/api/v1/auth/login")
        .from([198, 51, 100, 1])
        .json(&serde_json::json!({"username": "admin", "password": ADMIN_PASSWORD}));
    f.send(elsewhere)
        .await
        .problem(StatusCode::TOO_MANY_REQUESTS);
    // Another account from another address is not held up.
    let other = req(Method::POST, "/api/v1/auth/login")
        .from([198, 51, 100, 2])
        .json(&serde_json::json!({"username": "viewer", "password": VIEWER_PASSWORD}));
    assert_eq!(f.send(other).await.status, StatusCode::OK);
    let audit = std::fs::read_to_string(f.state_dir().join("audit.jsonl")).unwrap();
    assert!(
        audit
            .lines()
            .filter(|l| l.contains("\"login\"") && l.contains("refused"))
            .count()
            >= 5
    );
}

#[tokio::test]
async fn changes_need_the_csrf_token_and_this_servers_origin() {
    let f = Fixture::new();
    let s = f.login("admin", ADMIN_PASSWORD).await;
    let body = serde_json::json!({"miimon_ms": 150});
    let before = f.applied_count();
    // No token.
    let p = f
        .send(
            req(Method::PATCH, "/api/v1/bond")
                .cookie_only(&s)
                .header("origin", "https://localhost")
                .json(&body),
        )
        .await
        .problem(StatusCode::FORBIDDEN);
    assert!(
        p["detail"].as_str().unwrap().contains("X-CSRF-Token"),
        "{p}"
    );
    // A wrong token.
    f.send(
        req(Method::PATCH, "/api/v1/bond")
            .cookie_only(&s)
            .header("x-csrf-token", &"0".repeat(64))
            .json(&body),
    )
    .await
    .problem(StatusCode::FORBIDDEN);
    // The right token from another site's page.
    let p = f
        .send(
            req(Method::PATCH, "/api/v1/bond")
                .cookie_only(&s)
                .header("x-csrf-token", &s.csrf)
                .header("origin", "https://evil.example")
                .json(&body),
        )
        .await
        .problem(StatusCode::FORBIDDEN);
    assert!(p["detail"].as_str().unwrap().contains("Origin"), "{p}");
    f.send(
        req(Method::PATCH, "/api/v1/bond")
            .cookie_only(&s)
            .header("x-csrf-token", &s.csrf)
            .header("sec-fetch-site", "cross-site")
            .json(&body),
    )
    .await
    .problem(StatusCode::FORBIDDEN);
    // A login from another site's page (login CSRF).
    f.send(
        req(Method::POST, "/api/v1/auth/login")
            .header("origin", "https://evil.example")
            .json(&serde_json::json!({"username": "admin", "password": ADMIN_PASSWORD})),
    )
    .await
    .problem(StatusCode::FORBIDDEN);
    assert_eq!(
        f.applied_count(),
        before,
        "a refused request applied something"
    );
    // Token and origin right: applied.
    let ok = f
        .send(req(Method::PATCH, "/api/v1/bond").session(&s).json(&body))
        .await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text());
    assert_eq!(f.applied_count(), before + 1);
    // HTTP/2 has no Host header: the URI's authority is the host.
    let h2 = axum::http::Request::builder()
        .method(Method::POST)
        .uri("https://localhost/api/v1/config/confirm")
        .header("cookie", &s.cookie)
        .header("x-csrf-token", &s.csrf)
        .header("origin", "https://localhost")
        .body(axum::body::Body::empty())
        .unwrap();
    let a = f.send(h2).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
}

#[tokio::test]
async fn a_viewer_reads_but_changes_nothing() {
    let f = Fixture::new();
    let v = f.login("viewer", VIEWER_PASSWORD).await;
    for path in [
        "/api/v1/config",
        "/api/v1/bond",
        "/api/v1/instances",
        "/api/v1/stats/ltran",
        "/api/v1/audit",
    ] {
        let a = f.send(req(Method::GET, path).cookie_only(&v).empty()).await;
        assert_eq!(a.status, StatusCode::OK, "{path}: {}", a.text());
    }
    let before = f.applied_count();
    let p = f
        .send(
            req(Method::PATCH, "/api/v1/bond")
                .session(&v)
                .json(&serde_json::json!({"miimon_ms": 150})),
        )
        .await
        .problem(StatusCode::FORBIDDEN);
    assert!(p["detail"].as_str().unwrap().contains("viewer"), "{p}");
    f.send(
        req(Method::POST, "/api/v1/config/confirm")
            .session(&v)
            .empty(),
    )
    .await
    .problem(StatusCode::FORBIDDEN);
    f.send(
        req(Method::POST, "/api/v1/tokens")
            .session(&v)
            .json(&serde_json::json!({"name": "x", "role": "admin"})),
    )
    .await
    .problem(StatusCode::FORBIDDEN);
    assert_eq!(f.applied_count(), before);
    // Its own password it may change.
    let a = f
        .send(req(Method::PUT, "/api/v1/auth/password").session(&v).json(
            &serde_json::json!({"current_password": VIEWER_PASSWORD, "new_password": "another-password-2"}),
        ))
        .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{}", a.text());
    f.login("viewer", "another-password-2").await;
}

#[tokio::test]
async fn tokens_have_a_role_are_shown_once_and_revoked_tokens_are_401() {
    let f = Fixture::new();
    let s = f.login("admin", ADMIN_PASSWORD).await;
    let made = f
        .send(
            req(Method::POST, "/api/v1/tokens")
                .session(&s)
                .json(&serde_json::json!({"name": "ci", "role": "viewer"})),
        )
        .await;
    assert_eq!(made.status, StatusCode::CREATED, "{}", made.text());
    let made = made.json();
    let token = made["token"].as_str().unwrap().to_owned();
    let id = made["id"].as_str().unwrap().to_owned();
    // Listed without the secret.
    let list = f
        .send(req(Method::GET, "/api/v1/tokens").cookie_only(&s).empty())
        .await;
    assert!(!list.text().contains(&token[token.len() - 20..]));
    // Reads; a viewer token changes nothing (and needs no CSRF token).
    let a = f
        .send(
            req(Method::GET, "/api/v1/stats/ltran")
                .bearer(&token)
                .empty(),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK);
    f.send(
        req(Method::PATCH, "/api/v1/bond")
            .bearer(&token)
            .json(&serde_json::json!({"miimon_ms": 150})),
    )
    .await
    .problem(StatusCode::FORBIDDEN);
    // An admin token changes things without CSRF.
    let admin = f
        .send(
            req(Method::POST, "/api/v1/tokens")
                .session(&s)
                .json(&serde_json::json!({"name": "ops", "role": "admin"})),
        )
        .await
        .json();
    let admin = admin["token"].as_str().unwrap();
    let a = f
        .send(
            req(Method::PATCH, "/api/v1/bond")
                .bearer(admin)
                .json(&serde_json::json!({"miimon_ms": 150})),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    // Revoked: 401.
    let r = f
        .send(
            req(Method::DELETE, &format!("/api/v1/tokens/{id}"))
                .session(&s)
                .empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
    let p = f
        .send(
            req(Method::GET, "/api/v1/stats/ltran")
                .bearer(&token)
                .empty(),
        )
        .await
        .problem(StatusCode::UNAUTHORIZED);
    assert!(p["detail"].as_str().unwrap().contains("revoked"), "{p}");
    let stored = std::fs::read_to_string(f.state_dir().join("accounts.json")).unwrap();
    assert!(
        !stored.contains(admin.rsplit('_').next().unwrap()),
        "a token's secret is stored"
    );
}

#[tokio::test]
async fn a_bond_change_is_pending_then_confirmed_and_audited_with_its_diff() {
    let f = Fixture::new();
    let s = f.login("admin", ADMIN_PASSWORD).await;
    let bond = f
        .send(req(Method::GET, "/api/v1/bond").cookie_only(&s).empty())
        .await
        .json();
    assert_eq!(bond["config"]["miimon_ms"], 100);
    assert_eq!(bond["config"]["ports"][0], "0x3");
    assert_eq!(bond["live"]["ports"][0]["link_up"], true);
    assert_eq!(bond["live"]["failovers"], 2);

    let a = f
        .send(
            req(Method::PATCH, "/api/v1/bond")
                .session(&s)
                .json(&serde_json::json!({"miimon_ms": 250})),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let change = a.json();
    assert_eq!(change["confirmation_needed"], true, "{change}");
    assert!(change["pending"]["deadline_unix_ms"].as_u64().unwrap() > 0);
    let status = f
        .send(req(Method::GET, "/api/v1/status").cookie_only(&s).empty())
        .await
        .json();
    assert!(status["pending"].is_object(), "{status}");
    // Another change waits for this one.
    f.send(
        req(Method::PATCH, "/api/v1/bond")
            .session(&s)
            .json(&serde_json::json!({"miimon_ms": 300})),
    )
    .await
    .problem(StatusCode::CONFLICT);
    let c = f
        .send(
            req(Method::POST, "/api/v1/config/confirm")
                .session(&s)
                .empty(),
        )
        .await;
    assert_eq!(c.status, StatusCode::OK, "{}", c.text());
    let saved = f
        .send(
            req(Method::GET, "/api/v1/config?which=saved")
                .cookie_only(&s)
                .empty(),
        )
        .await
        .json();
    assert!(
        saved["toml"]
            .as_str()
            .unwrap()
            .contains("bond_miimon = 250"),
        "{saved}"
    );
    let history = f
        .send(
            req(Method::GET, "/api/v1/config/history")
                .cookie_only(&s)
                .empty(),
        )
        .await
        .json();
    let id = history["versions"][0]["id"].as_str().unwrap().to_owned();
    let version = f
        .send(
            req(Method::GET, &format!("/api/v1/config/history/{id}"))
                .cookie_only(&s)
                .empty(),
        )
        .await
        .json();
    assert!(version["toml"]
        .as_str()
        .unwrap()
        .contains("bond_miimon = 250"));
    let diff = f
        .send(
            req(
                Method::GET,
                &format!("/api/v1/config/diff?from={id}&to=running"),
            )
            .cookie_only(&s)
            .empty(),
        )
        .await
        .json();
    assert_eq!(diff["diff"], "", "{diff}");

    let audit = f
        .send(req(Method::GET, "/api/v1/audit").cookie_only(&s).empty())
        .await
        .json();
    let entries = audit.as_array().unwrap();
    let update = entries
        .iter()
        .find(|e| e["action"] == "bond.update" && e["outcome"] == "pending")
        .unwrap();
    assert_eq!(update["who"], "admin");
    assert_eq!(update["from"], "192.0.2.7");
    let d = update["diff"].as_str().unwrap();
    assert!(
        d.contains("-bond_miimon = 100") && d.contains("+bond_miimon = 250"),
        "{d}"
    );
    assert!(entries
        .iter()
        .any(|e| e["action"] == "config.confirm" && e["outcome"] == "confirmed"));
    assert!(entries
        .iter()
        .any(|e| e["action"] == "bond.update" && e["outcome"] == "refused"));
}

#[tokio::test]
async fn a_change_left_unconfirmed_rolls_back_and_the_audit_log_says_so() {
    let f = Fixture::with(Options {
        confirm_timeout: Duration::from_millis(300),
        ..Options::default()
    });
    let s = f.login("admin", ADMIN_PASSWORD).await;
    let before = f.running();
    let a = f
        .send(
            req(Method::PATCH, "/api/v1/subnets")
                .session(&s)
                .json(&serde_json::json!({"dispatch_subnet6": "fd00:100::/64"})),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_eq!(a.json()["confirmation_needed"], true);
    assert_ne!(f.running(), before);
    let end = std::time::Instant::now() + Duration::from_secs(10);
    while f.running() != before {
        assert!(std::time::Instant::now() < end, "no rollback");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    gazelle_webui::poller::follow_pending(&f.state).await;
    let audit = std::fs::read_to_string(f.state_dir().join("audit.jsonl")).unwrap();
    assert!(
        audit
            .lines()
            .any(|l| l.contains("config.pending-ended") && l.contains("rolled_back")),
        "{audit}"
    );
}

#[tokio::test]
async fn an_invalid_change_names_the_field_and_changes_nothing() {
    let f = Fixture::new();
    let s = f.login("admin", ADMIN_PASSWORD).await;
    let before = (f.running(), f.applied_count());
    let p = f
        .send(
            req(Method::PATCH, "/api/v1/bond")
                .session(&s)
                .json(&serde_json::json!({"mtu": 9000})),
        )
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(p["field"], "ltran.bond_mtu", "{p}");
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains("out of range 68..=1500"),
        "{p}"
    );
    let p = f
        .send(
            req(Method::PATCH, "/api/v1/instances/redis")
                .session(&s)
                .json(&serde_json::json!({"host_addr": "192.168.101.10", "gateway_addr": "192.168.101.1"})),
        )
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(p["field"], "instances[0].lstack.host_addr", "{p}");
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains("outside ltran's dispatch subnet"),
        "{p}"
    );
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains("outside ltran's dispatch subnet"),
        "{p}"
    );
    let bad = appliance::config::DEFAULT_CONFIG_TOML
        .replace("bond_mtu = 1500", "bond_mtu = 1500\ncolour = 1");
    let p = f
        .send(
            req(Method::PUT, "/api/v1/config")
                .session(&s)
                .json(&serde_json::json!({"toml": bad})),
        )
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(p["field"], "ltran.colour", "{p}");
    let p = f
        .send(
            req(Method::POST, "/api/v1/config/validate")
                .cookie_only(&s)
                .header("x-csrf-token", &s.csrf)
                .json(&serde_json::json!({"toml": "[[nics]]\nrole = 5"})),
        )
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(p["field"], "nics[0].role", "{p}");
    assert_eq!(
        (f.running(), f.applied_count()),
        before,
        "something was applied"
    );
    let audit = f
        .send(req(Method::GET, "/api/v1/audit").cookie_only(&s).empty())
        .await
        .json();
    assert!(audit
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["outcome"] == "refused"
            && e["detail"].as_str().unwrap().contains("ltran.bond_mtu")));
}

#[tokio::test]
async fn a_change_made_from_a_config_that_no_longer_runs_is_a_409() {
    let f = Fixture::new();
    let s = f.login("admin", ADMIN_PASSWORD).await;
    let read = f
        .send(req(Method::GET, "/api/v1/config").cookie_only(&s).empty())
        .await
        .json();
    let base = read["toml"].as_str().unwrap().to_owned();
    // Another operator's edit lands between this one's read and write.
    let a = f
        .send(
            req(Method::PATCH, "/api/v1/instances/redis")
                .session(&s)
                .json(&serde_json::json!({"restart": {"mode": "always"}})),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let before = (f.running(), f.applied_count());
    // Written from the old read, it would undo that edit: refused.
    let p = f
        .send(
            req(Method::PUT, "/api/v1/config")
                .session(&s)
                .json(&serde_json::json!({"toml": base, "base": base})),
        )
        .await
        .problem(StatusCode::CONFLICT);
    assert!(
        p["detail"].as_str().unwrap().contains("changed since"),
        "{p}"
    );
    assert_eq!(
        (f.running(), f.applied_count()),
        before,
        "something was applied"
    );
    assert_eq!(
        f.running().instances[0].restart.mode,
        appliance::config::RestartMode::Always
    );
    // Made from what runs now, the same write goes through.
    let now = f
        .send(req(Method::GET, "/api/v1/config").cookie_only(&s).empty())
        .await
        .json();
    let a = f
        .send(
            req(Method::PUT, "/api/v1/config")
                .session(&s)
                .json(&serde_json::json!({"toml": base, "base": now["toml"]})),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_ne!(
        f.running().instances[0].restart.mode,
        appliance::config::RestartMode::Always
    );
}

#[tokio::test]
async fn bad_input_gets_a_clear_4xx() {
    let f = Fixture::new();
    let s = f.login("admin", ADMIN_PASSWORD).await;
    let before = f.applied_count();
    let patch = |body: &str| {
        req(Method::PATCH, "/api/v1/bond")
            .session(&s)
            .raw("application/json", body.to_owned())
    };
    let p = f
        .send(patch("{\"miimon_ms\": "))
        .await
        .problem(StatusCode::BAD_REQUEST);
    assert!(p["detail"].as_str().unwrap().contains("not JSON"), "{p}");
    let p = f
        .send(patch("{\"miimon_ms\": \"fast\"}"))
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY);
    assert!(p["detail"].as_str().unwrap().contains("miimon_ms"), "{p}");
    let p = f
        .send(patch("{\"speed\": 1}"))
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains("unknown field `speed`"),
        "{p}"
    );
    f.send(
        req(Method::PATCH, "/api/v1/bond")
            .session(&s)
            .raw("text/plain", "{}"),
    )
    .await
    .problem(StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let huge = format!("{{\"toml\": \"{}\"}}", "x".repeat(2 << 20));
    f.send(
        req(Method::PUT, "/api/v1/config")
            .session(&s)
            .raw("application/json", huge),
    )
    .await
    .problem(StatusCode::PAYLOAD_TOO_LARGE);
    for path in [
        "/api/v1/config/history/..%2F..%2Fetc%2Fpasswd",
        "/api/v1/config/history/..",
        "/api/v1/stats/lstack/..%2F..%2Fetc%2Fshadow",
        "/api/v1/stats/lstack/10.0.0.1%00",
        "/api/v1/devices/..%2F0000:00:04.0",
        "/api/v1/instances/..%2Fredis",
        "/api/v1/nothing/here",
    ] {
        let a = f.send(req(Method::GET, path).cookie_only(&s).empty()).await;
        assert!(a.status.is_client_error(), "{path}: {}", a.status);
        a.problem(a.status);
    }
    f.send(
        req(Method::POST, "/api/v1/instances/redis/explode")
            .session(&s)
            .empty(),
    )
    .await
    .problem(StatusCode::BAD_REQUEST);
    f.send(
        req(Method::GET, "/api/v1/audit?limit=lots")
            .cookie_only(&s)
            .empty(),
    )
    .await
    .problem(StatusCode::BAD_REQUEST);
    f.send(req(Method::DELETE, "/api/v1/bond").session(&s).empty())
        .await
        .problem(StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(f.applied_count(), before, "bad input applied something");
}

#[tokio::test]
async fn a_daemon_that_is_not_running_is_a_503_naming_it() {
    let mut f = Fixture::with(Options {
        ltran: false,
        lstack: false,
        ..Options::default()
    });
    let s = f.login("admin", ADMIN_PASSWORD).await;
    let p = f
        .send(
            req(Method::GET, "/api/v1/stats/ltran")
                .cookie_only(&s)
                .empty(),
        )
        .await
        .problem(StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(p["daemon"], "ltran", "{p}");
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains("ltran is not running"),
        "{p}"
    );
    let p = f
        .send(
            req(
                Method::GET,
                &format!("/api/v1/stats/lstack/{LSTACK_IP}/snmp"),
            )
            .cookie_only(&s)
            .empty(),
        )
        .await
        .problem(StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(p["daemon"], format!("lstack {LSTACK_IP}"), "{p}");
    // The bond is still shown from the config, without its live state.
    let bond = f
        .send(req(Method::GET, "/api/v1/bond").cookie_only(&s).empty())
        .await
        .json();
    assert!(bond["live"].is_null() && bond["live_unavailable"].as_str().unwrap().contains("ltran"));
    drop(f.appliance.take());
    for (method, path) in [
        (Method::GET, "/api/v1/config"),
        (Method::GET, "/api/v1/status"),
        (Method::PATCH, "/api/v1/bond"),
    ] {
        let r = if method == Method::PATCH {
            req(method, path)
                .session(&s)
                .json(&serde_json::json!({"miimon_ms": 150}))
        } else {
            req(method, path).cookie_only(&s).empty()
        };
        let p = f.send(r).await.problem(StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(p["daemon"], "applianced", "{p}");
        assert!(
            p["detail"]
                .as_str()
                .unwrap()
                .contains("applianced is not running"),
            "{p}"
        );
    }
}

#[tokio::test]
async fn every_gazellectl_view_is_a_resource() {
    let f = Fixture::new();
    let s = f.login("viewer", VIEWER_PASSWORD).await;
    let get = |path: String| {
        let s = &s;
        let f = &f;
        async move {
            let a = f.send(req(Method::GET, &path).cookie_only(s).empty()).await;
            assert_eq!(a.status, StatusCode::OK, "{path}: {}", a.text());
            a.json()
        }
    };
    let ltran = get("/api/v1/stats/ltran".into()).await;
    assert_eq!(ltran["pid"], 4242);
    assert_eq!(ltran["bond"]["ports"][1]["iface"], "veth1");
    assert!(ltran["dispatch"]["tcp"].as_u64().unwrap() >= 100);
    let instances = get("/api/v1/stats/ltran/instances".into()).await;
    assert_eq!(instances[0]["ipv4"], LSTACK_IP);
    assert_eq!(
        get("/api/v1/stats/ltran/burst".into())
            .await
            .as_array()
            .unwrap()
            .len(),
        7
    );
    let latency = get("/api/v1/stats/ltran/latency".into()).await;
    assert_eq!(latency["mean_ns"], 500.0);
    let lstacks = get("/api/v1/stats/lstack".into()).await;
    assert_eq!(lstacks[0]["ip"], LSTACK_IP);
    let stats = get(format!("/api/v1/stats/lstack/{LSTACK_IP}")).await;
    assert_eq!(
        stats["threads"][0]["drops"]["malformed"]
            .as_u64()
            .map(|n| n > 0),
        Some(true)
    );
    let conns = get(format!("/api/v1/stats/lstack/{LSTACK_IP}/connections")).await;
    assert_eq!(conns[0]["state"], "LISTEN");
    let snmp = get(format!("/api/v1/stats/lstack/{LSTACK_IP}/snmp")).await;
    assert!(snmp["total"]["tcp"].is_object(), "{snmp}");
    let latency = get(format!("/api/v1/stats/lstack/{LSTACK_IP}/latency")).await;
    assert_eq!(latency["total"]["count"], 2);
    // An address no lstack serves: a 503 naming it.
    let p = f
        .send(
            req(Method::GET, "/api/v1/stats/lstack/192.168.100.99")
                .cookie_only(&s)
                .empty(),
        )
        .await
        .problem(StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(p["daemon"], "lstack 192.168.100.99");
    for path in [
        "/api/v1/host",
        "/api/v1/host/hugepages",
        "/api/v1/devices",
        "/api/v1/subnets",
        "/api/v1/instances",
        "/api/v1/config/history",
        "/api/v1/config/diff",
    ] {
        get(path.into()).await;
    }
    let subnets = get("/api/v1/subnets".into()).await;
    assert_eq!(subnets["dispatch_subnet"], "192.168.100.0");
    assert_eq!(subnets["instances"][0]["host_addr"], "192.168.100.10");
    let instance = get("/api/v1/instances/redis".into()).await;
    assert_eq!(instance["command"][0], "redis-server");
    assert_eq!(instance["use_ltran"], true);
    assert_eq!(instance["num_cpus"], "1");
}

#[tokio::test]
async fn the_stream_pushes_rates_and_latency_once_a_second_from_one_poller() {
    let f = Fixture::new();
    let _poller = gazelle_webui::poller::spawn(f.state.clone());
    let s = f.login("viewer", VIEWER_PASSWORD).await;
    let response = tower::ServiceExt::oneshot(
        f.app.clone(),
        req(Method::GET, "/api/v1/stats/stream")
            .cookie_only(&s)
            .empty(),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "text/event-stream"
    );
    let mut body = response.into_body().into_data_stream();
    let mut text = String::new();
    let end = tokio::time::Instant::now() + Duration::from_secs(10);
    // Two events carrying rates: the first sample has none (rates need two).
    while text.matches("\"rx_pps\"").count() < 2 {
        let chunk = tokio::time::timeout_at(end, tokio_stream::StreamExt::next(&mut body))
            .await
            .expect("no rates within 10 s")
            .unwrap()
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    let data = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str::<serde_json::Value>(d).unwrap())
        .find(|v| !v["ltran"].is_null())
        .unwrap();
    // The stand-in's counters grow by 1000 frames per question, asked once a second.
    let pps = data["ltran"]["ports"][0]["rx_pps"].as_f64().unwrap();
    assert!(pps > 500.0 && pps < 2000.0, "{data}");
    assert_eq!(data["lstacks"][0]["ip"], LSTACK_IP);
    // The stand-in's histogram gains a 1 µs and a 2 µs read per question:
    // the stream has the second's two reads, not the total.
    let latency = &data["rx_latency"];
    assert_eq!(latency["reads"], 2, "{data}");
    let (p50, p99) = (
        latency["p50_us"].as_f64().unwrap(),
        latency["p99_us"].as_f64().unwrap(),
    );
    assert!((1.0..=2.0).contains(&p50) && p99 == 2.0, "{data}");
    let rates = f
        .send(
            req(Method::GET, "/api/v1/stats/rates")
                .cookie_only(&s)
                .empty(),
        )
        .await
        .json();
    assert!(rates["sequence"].as_u64().unwrap() >= 2);
    let a = f
        .send(
            req(
                Method::GET,
                &format!("/api/v1/stats/lstack/{LSTACK_IP}/rates"),
            )
            .cookie_only(&s)
            .empty(),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let a = f
        .send(
            req(Method::GET, "/api/v1/stats/ltran/rates")
                .cookie_only(&s)
                .empty(),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
}

#[tokio::test]
async fn security_headers_are_on_every_answer() {
    let f = Fixture::new();
    for request in [
        req(Method::GET, "/api/v1/config").empty(),
        req(Method::GET, "/api/v1/openapi.json").empty(),
        req(Method::GET, "/nowhere").empty(),
    ] {
        let a = f.send(request).await;
        let h = &a.headers;
        assert!(h["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("frame-ancestors 'none'"));
        assert_eq!(h["x-frame-options"], "DENY");
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["referrer-policy"], "no-referrer");
        assert!(h.contains_key("strict-transport-security"));
    }
}

#[tokio::test]
async fn metrics_answer_loopback_and_tokens_only() {
    let f = Fixture::new();
    let far = f.send(req(Method::GET, "/metrics").empty()).await;
    far.problem(StatusCode::UNAUTHORIZED);
    let near = f
        .send(req(Method::GET, "/metrics").from([127, 0, 0, 1]).empty())
        .await;
    assert_eq!(near.status, StatusCode::OK);
    let text = near.text();
    for line in [
        "gazelle_ltran_up 1.0",
        "gazelle_ltran_dispatch_total{counter=\"tcp\"}",
        "gazelle_ltran_port_rx_packets_total{port=\"0\",name=\"net_af_packet0\"}",
        "gazelle_ltran_port_link_up{port=\"1\",name=\"net_af_packet1\"} 0.0",
        "gazelle_ltran_instance_rx_packets_total{instance=\"192.168.100.10\"",
        "gazelle_lstack_thread_rx_packets_total{instance=\"192.168.100.10\",thread=\"0\"}",
        "gazelle_lstack_thread_drops_total{instance=\"192.168.100.10\",thread=\"0\",reason=\"malformed\"}",
        "gazelle_lstack_kernel_sockets_total{instance=\"192.168.100.10\",reason=\"loopback\"} 2",
        "gazelle_lstack_unhonoured_socket_options_total{instance=\"192.168.100.10\",option=\"IPPROTO_TCP/TCP_DEFER_ACCEPT\"} 1",
        "gazelle_appliance_up 1.0",
        "gazelle_host_cpus",
        "gazelle_host_load_average{minutes=\"1\"}",
    ] {
        assert!(text.contains(line), "no {line} in\n{text}");
    }
    let (_, token) = f
        .state
        .auth
        .create_token("admin", "prometheus", gazelle_webui::auth::Role::Viewer)
        .unwrap();
    let with = f
        .send(req(Method::GET, "/metrics").bearer(&token).empty())
        .await;
    assert_eq!(with.status, StatusCode::OK);
}

#[tokio::test]
async fn plain_http_only_redirects_to_https() {
    let request = req(Method::GET, "/api/v1/stats/ltran?x=1")
        .header("host", "gazelle.example:8080")
        .empty();
    let mut request = request;
    request
        .headers_mut()
        .insert(header::HOST, "gazelle.example:8080".parse().unwrap());
    let response = gazelle_webui::tls::redirect(8443, request).await;
    assert_eq!(response.status(), StatusCode::PERMANENT_REDIRECT);
    assert_eq!(
        response.headers()[header::LOCATION],
        "https://gazelle.example:8443/api/v1/stats/ltran?x=1"
    );
    let mut request = req(Method::POST, "/").empty();
    request
        .headers_mut()
        .insert(header::HOST, "[::1]:80".parse().unwrap());
    let response = gazelle_webui::tls::redirect(443, request).await;
    assert_eq!(response.headers()[header::LOCATION], "https://[::1]/");
}

#[tokio::test]
async fn devices_and_instances_are_edited_one_at_a_time() {
    let f = Fixture::new();
    let s = f.login("admin", ADMIN_PASSWORD).await;
    // A device that is not there, and one named wrongly.
    f.send(
        req(Method::PUT, "/api/v1/devices/0000:00:1f.7")
            .session(&s)
            .json(&serde_json::json!({"role": "data"})),
    )
    .await
    .problem(StatusCode::NOT_FOUND);
    f.send(
        req(Method::PUT, "/api/v1/devices/nonsense")
            .session(&s)
            .json(&serde_json::json!({"role": "data"})),
    )
    .await
    .problem(StatusCode::NOT_FOUND);
    // A harmless instance change is saved at once.
    let a = f
        .send(
            req(Method::PATCH, "/api/v1/instances/redis")
                .session(&s)
                .json(&serde_json::json!({"restart": {"mode": "always"}})),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let change = a.json();
    assert_eq!(change["confirmation_needed"], false, "{change}");
    assert!(change["version"].is_string());
    assert_eq!(
        f.running().instances[0].restart.mode,
        appliance::config::RestartMode::Always
    );
    // A second instance, then removed again.
    let mut second = serde_json::to_value(&f.running().instances[0]).unwrap();
    second["name"] = "redis2".into();
    second["lstack"]["host_addr"] = "192.168.100.11".into();
    let a = f
        .send(
            req(Method::POST, "/api/v1/instances")
                .session(&s)
                .json(&second),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_eq!(f.running().instances.len(), 2);
    // New addresses can cut the operator off: confirmed.
    assert_eq!(a.json()["confirmation_needed"], true);
    let c = f
        .send(
            req(Method::POST, "/api/v1/config/confirm")
                .session(&s)
                .empty(),
        )
        .await;
    assert_eq!(c.status, StatusCode::OK, "{}", c.text());
    let a = f
        .send(
            req(Method::DELETE, "/api/v1/instances/redis2")
                .session(&s)
                .empty(),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_eq!(f.running().instances.len(), 1);
    let r = f
        .send(
            req(Method::POST, "/api/v1/config/rollback")
                .session(&s)
                .empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(
        f.running().instances.len(),
        2,
        "the rollback brought it back"
    );
    f.send(
        req(Method::DELETE, "/api/v1/instances/nobody")
            .session(&s)
            .empty(),
    )
    .await
    .problem(StatusCode::NOT_FOUND);
    // Not supervised here (the recorder runs nothing): a clear 404.
    f.send(
        req(Method::POST, "/api/v1/instances/redis/restart")
            .session(&s)
            .empty(),
    )
    .await
    .problem(StatusCode::NOT_FOUND);
}
