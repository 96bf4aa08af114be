//! The HTML pages through `app(state).oneshot(...)`: the login page and
//! its cookie, every page behind a session, forms that need the CSRF
//! token, our Origin and the admin role, field-level messages from the
//! API's problems, the pending-change banner with Confirm and Roll back,
//! and what a rollback restored, told on the page. Over the same fixture
//! as the API's handler tests (a real applianced handler; stand-in ltran
//! and lstack sockets).

mod support;

use std::time::Duration;

use axum::http::{header, Method, StatusCode};
use support::{req, Answer, Fixture, Options, Session, ADMIN_PASSWORD, VIEWER_PASSWORD};

/// A form post from one of our pages.
fn form(path: &str, s: &Session, fields: &[(&str, &str)]) -> axum::http::Request<axum::body::Body> {
    let mut all = vec![("csrf", s.csrf.as_str())];
    all.extend_from_slice(fields);
    req(Method::POST, path)
        .header("cookie", &s.cookie)
        .header("origin", "https://localhost")
        .raw(
            "application/x-www-form-urlencoded",
            serde_urlencoded::to_string(&all).unwrap(),
        )
}

async fn page(f: &Fixture, s: &Session, path: &str) -> Answer {
    f.send(req(Method::GET, path).cookie_only(s).empty()).await
}

fn location(a: &Answer) -> String {
    a.headers[header::LOCATION].to_str().unwrap().to_owned()
}

/// The message a redirect carries to the next page.
fn flash(a: &Answer) -> String {
    let loc = location(a);
    let q = loc.split_once('?').map(|(_, q)| q).unwrap_or_default();
    serde_urlencoded::from_str::<Vec<(String, String)>>(q)
        .unwrap()
        .into_iter()
        .find(|(k, _)| k == "flash")
        .map(|(_, v)| v)
        .unwrap_or_default()
}

fn has_all(html: &str, what: &str, needles: &[&str]) {
    for needle in needles {
        assert!(html.contains(needle), "{what} without {needle:?}");
    }
}

#[tokio::test]
async fn pages_need_a_session_and_the_login_form_makes_one() {
    let f = Fixture::new();
    let a = f.send(req(Method::GET, "/dashboard").empty()).await;
    assert_eq!(a.status, StatusCode::SEE_OTHER);
    assert_eq!(location(&a), "/login?next=%2Fdashboard");
    let a = f.send(req(Method::GET, "/").empty()).await;
    assert_eq!(location(&a), "/dashboard");
    // A bearer token is for scripts, not pages.
    let (_, token) = f
        .state
        .auth
        .create_token("admin", "t", gazelle_webui::auth::Role::Admin)
        .unwrap();
    let a = f
        .send(req(Method::GET, "/dashboard").bearer(&token).empty())
        .await;
    assert_eq!(a.status, StatusCode::SEE_OTHER);

    let login = f.send(req(Method::GET, "/login?next=/bond").empty()).await;
    assert_eq!(login.status, StatusCode::OK);
    let html = login.text();
    assert!(
        html.contains("<title>Log in · gazelle appliance</title>"),
        "{html}"
    );
    assert!(html.contains(r#"<label for="password">"#), "{html}");
    assert!(html.contains(r#"name="next" value="/bond""#), "{html}");

    let post = |user: &str, pw: &str, origin: &str| {
        req(Method::POST, "/login").header("origin", origin).raw(
            "application/x-www-form-urlencoded",
            serde_urlencoded::to_string([("username", user), ("password", pw), ("next", "/bond")])
                .unwrap(),
        )
    };
    let a = f
        .send(post("admin", "wrong-password", "https://localhost"))
        .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert!(a.text().contains(r#"class="error""#), "{}", a.text());
    let a = f
        .send(post("admin", ADMIN_PASSWORD, "https://evil.example"))
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "login CSRF is refused");
    let a = f
        .send(post("admin", ADMIN_PASSWORD, "https://localhost"))
        .await;
    assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.text());
    assert_eq!(location(&a), "/bond");
    let cookie = a.headers[header::SET_COOKIE].to_str().unwrap();
    assert!(cookie.starts_with("__Host-"), "{cookie}");
    assert!(
        cookie.contains("HttpOnly")
            && cookie.contains("Secure")
            && cookie.contains("SameSite=Strict")
    );
    // Somewhere else after logging in is not followed.
    let a = f
        .send(
            req(Method::POST, "/login")
                .header("origin", "https://localhost")
                .raw(
                    "application/x-www-form-urlencoded",
                    serde_urlencoded::to_string([
                        ("username", "admin"),
                        ("password", ADMIN_PASSWORD),
                        ("next", "//evil.example/"),
                    ])
                    .unwrap(),
                ),
        )
        .await;
    assert_eq!(location(&a), "/dashboard");

    // Logging out ends the session.
    let s = f.login("admin", ADMIN_PASSWORD).await;
    assert_eq!(page(&f, &s, "/dashboard").await.status, StatusCode::OK);
    let a = f.send(form("/logout", &s, &[])).await;
    assert_eq!(location(&a), "/login");
    assert_eq!(
        page(&f, &s, "/dashboard").await.status,
        StatusCode::SEE_OTHER
    );
}

#[tokio::test]
async fn every_page_renders_with_its_title_nav_and_units() {
    let f = Fixture::new();
    let _poller = gazelle_webui::poller::spawn(f.state.clone());
    let s = f.login("admin", ADMIN_PASSWORD).await;
    // Two samples make rates.
    let mut rx = f.state.rates.subscribe();
    while f.state.rates.borrow().ltran.is_none() {
        rx.changed().await.unwrap();
    }
    for (path, title) in [
        ("/dashboard", "Dashboard"),
        ("/devices", "Devices"),
        ("/bond", "Bond"),
        ("/subnets", "Subnets and addresses"),
        ("/instances", "Instances"),
        ("/instances/redis", "Instance redis"),
        ("/config", "Configuration"),
        ("/account", "Account"),
        ("/audit", "Audit log"),
    ] {
        let a = page(&f, &s, path).await;
        assert_eq!(a.status, StatusCode::OK, "{path}: {}", a.text());
        assert!(a.content_type().starts_with("text/html"), "{path}");
        // A form post from a no-referrer page carries `Origin: null`.
        assert_eq!(a.headers["referrer-policy"], "same-origin", "{path}");
        let html = a.text();
        assert!(
            html.contains(&format!("<title>{title} · gazelle appliance</title>")),
            "{path}"
        );
        assert!(
            html.contains(&format!(r#"href="{path}" aria-current="page""#))
                || path.starts_with("/instances/"),
            "{path}: nav"
        );
        assert!(html.contains(r#"<script src="/assets/app.js" defer></script>"#));
        assert!(
            !html.contains("style=\""),
            "{path}: inline styles break the CSP"
        );
    }
    let html = page(&f, &s, "/dashboard").await.text();
    has_all(
        &html,
        "dashboard",
        &[
            "net_af_packet0",
            "pkt/s",
            "bit/s",
            "frames/s",
            "100 ms",
            "malformed",
            "data-series=\"bps\"",
        ],
    );
    // The instance page: counters with units, connections filtered, MIB-2,
    // the latency histogram.
    let html = page(&f, &s, "/instances/redis").await.text();
    has_all(
        &html,
        "instance page",
        &[
            "rx_packets",
            " pkt",
            "LISTEN",
            "192.168.100.10:6379",
            "in_receives",
            "<meter",
        ],
    );
    assert!(
        html.contains("option not honoured: IPPROTO_TCP/TCP_DEFER_ACCEPT"),
        "{html}"
    );
    assert!(html.contains("on the kernel: loopback"), "{html}");
    assert!(
        html.contains(">2 sockets<") && html.contains(">set 1 time<"),
        "counts with their units: {html}"
    );
    // A socket the application kept on the kernel is listed, with why.
    assert!(
        html.contains("kernel (tcp fd 9): loopback"),
        "the kernel-path socket is not shown with its reason: {html}"
    );
    let html = page(&f, &s, "/instances/redis?state=LISTEN").await.text();
    assert!(html.contains("1 of 2 sockets shown"), "{html}");
    let a = page(&f, &s, "/instances/nope").await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    // The script and the stylesheet.
    let js = f.send(req(Method::GET, "/assets/app.js").empty()).await;
    assert!(js.content_type().starts_with("text/javascript"));
    assert!(js.text().contains("EventSource"));
    let css = f.send(req(Method::GET, "/assets/app.css").empty()).await;
    assert!(css.content_type().starts_with("text/css"));
}

#[tokio::test]
async fn a_bond_form_runs_pending_and_is_confirmed_from_the_banner() {
    let f = Fixture::new();
    let s = f.login("admin", ADMIN_PASSWORD).await;
    let a = f
        .send(form(
            "/bond",
            &s,
            &[
                ("bond_miimon", "250"),
                ("bond_ports", "0x3"),
                ("bond_mtu", "1500"),
            ],
        ))
        .await;
    assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.text());
    assert!(flash(&a).contains("pending confirmation"), "{}", flash(&a));
    // The banner, on every page, with the deadline for the countdown and
    // both buttons.
    for path in ["/dashboard", "/audit"] {
        let html = page(&f, &s, path).await.text();
        assert!(html.contains(r#"id="pending-banner""#), "{path}");
        assert!(html.contains("data-deadline-ms=\""), "{path}");
        assert!(
            html.contains(r#"action="/pending/confirm""#)
                && html.contains(r#"action="/pending/rollback""#)
        );
    }
    let a = f
        .send(form("/pending/confirm", &s, &[("back", "/bond")]))
        .await;
    assert!(location(&a).starts_with("/bond?"), "{}", location(&a));
    assert!(flash(&a).starts_with("Confirmed"), "{}", flash(&a));
    let html = page(&f, &s, "/bond").await.text();
    assert!(!html.contains(r#"id="pending-banner""#));
    assert!(html.contains(r#"value="250""#), "{html}");
    assert!(f.running().to_toml_string().contains("bond_miimon = 250"));
}

#[tokio::test]
async fn a_refused_field_is_shown_next_to_its_input_and_nothing_changes() {
    let f = Fixture::new();
    let s = f.login("admin", ADMIN_PASSWORD).await;
    let before = f.running();
    let a = f.send(form("/bond", &s, &[("bond_mtu", "9000")])).await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY);
    let html = a.text();
    assert!(html.contains(r#"id="bond_mtu-error""#), "{html}");
    assert!(html.contains(r#"aria-invalid="true" aria-describedby="bond_mtu-error""#));
    assert!(
        html.contains(r#"value="9000""#),
        "the form keeps what was typed"
    );
    // Not a number: our own message, the API is not asked.
    let a = f.send(form("/bond", &s, &[("bond_miimon", "often")])).await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        a.text().contains("is not a whole number of ms"),
        "{}",
        a.text()
    );
    let a = f
        .send(form("/subnets", &s, &[("dispatch_subnet", "300.1.2.0")]))
        .await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        a.text().contains(r#"id="dispatch_subnet-error""#),
        "{}",
        a.text()
    );
    let a = f
        .send(form(
            "/instances",
            &s,
            &[
                ("name", "x"),
                ("command", "redis-server"),
                ("host_addr", "10.9.9.9.9"),
                ("based_on", "redis"),
            ],
        ))
        .await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(a.text().contains(r#"id="host_addr-error""#), "{}", a.text());
    assert_eq!(f.running(), before);
}

#[tokio::test]
async fn forms_need_the_token_our_origin_and_the_admin_role() {
    let f = Fixture::new();
    let s = f.login("admin", ADMIN_PASSWORD).await;
    let before = f.running();
    let no_token = req(Method::POST, "/bond")
        .header("cookie", &s.cookie)
        .header("origin", "https://localhost")
        .raw("application/x-www-form-urlencoded", "bond_miimon=200");
    assert_eq!(f.send(no_token).await.status, StatusCode::FORBIDDEN);
    let foreign = req(Method::POST, "/bond")
        .header("cookie", &s.cookie)
        .header("origin", "https://evil.example")
        .raw(
            "application/x-www-form-urlencoded",
            format!("csrf={}&bond_miimon=200", s.csrf),
        );
    assert_eq!(f.send(foreign).await.status, StatusCode::FORBIDDEN);

    let v = f.login("viewer", VIEWER_PASSWORD).await;
    for path in [
        "/dashboard",
        "/bond",
        "/subnets",
        "/devices",
        "/instances",
        "/instances/redis",
        "/config",
        "/account",
    ] {
        let html = page(&f, &v, path).await.text();
        for action in html.split("method=\"post\" action=\"").skip(1) {
            let action = action.split('"').next().unwrap();
            assert!(
                action == "/logout" || action == "/account/password",
                "the viewer sees a form posting to {action} on {path}"
            );
        }
    }
    let a = f.send(form("/bond", &v, &[("bond_miimon", "200")])).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert!(a.text().contains("viewer role"), "{}", a.text());
    for (path, fields) in [
        ("/instances/redis/control", vec![("action", "stop")]),
        ("/config/restore", vec![("id", "x")]),
        ("/account/tokens", vec![("name", "n"), ("role", "admin")]),
        ("/pending/confirm", vec![]),
    ] {
        assert_eq!(
            f.send(form(path, &v, &fields)).await.status,
            StatusCode::FORBIDDEN,
            "{path}"
        );
    }
    assert_eq!(f.running(), before);
    // Its own password it may change.
    let a = f
        .send(form(
            "/account/password",
            &v,
            &[
                ("current_password", VIEWER_PASSWORD),
                ("new_password", "a-new-password-1"),
                ("repeat_password", "a-new-password-1"),
            ],
        ))
        .await;
    assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.text());
}

#[tokio::test]
async fn a_rollback_is_told_on_every_page_with_what_it_restored() {
    let f = Fixture::with(Options {
        confirm_timeout: Duration::from_millis(400),
        ..Options::default()
    });
    let s = f.login("admin", ADMIN_PASSWORD).await;
    let before = f.running();
    let a = f.send(form("/bond", &s, &[("bond_miimon", "250")])).await;
    assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.text());
    let end = std::time::Instant::now() + Duration::from_secs(10);
    while f.running() != before {
        assert!(std::time::Instant::now() < end, "no rollback");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    gazelle_webui::poller::follow_pending(&f.state).await;
    let html = page(&f, &s, "/instances").await.text();
    assert!(html.contains(r#"id="rollback-banner""#), "{html}");
    assert!(html.contains("not confirmed in time"), "{html}");
    assert!(
        html.contains("-bond_miimon = 250") && html.contains("+bond_miimon = 100"),
        "{html}"
    );

    // Rolled back by hand: who did it.
    let f = Fixture::new();
    let s = f.login("admin", ADMIN_PASSWORD).await;
    f.send(form("/bond", &s, &[("bond_miimon", "250")])).await;
    let a = f
        .send(form("/pending/rollback", &s, &[("back", "/dashboard")]))
        .await;
    assert!(flash(&a).starts_with("Rolled back"), "{}", flash(&a));
    let html = page(&f, &s, "/dashboard").await.text();
    assert!(
        html.contains("admin rolled back the change admin made"),
        "{html}"
    );
    assert!(html.contains("+bond_miimon = 100"), "{html}");
    // A change confirmed since ends that story.
    f.send(form("/bond", &s, &[("bond_miimon", "200")])).await;
    f.send(form("/pending/confirm", &s, &[])).await;
    let html = page(&f, &s, "/dashboard").await.text();
    assert!(!html.contains(r#"id="rollback-banner""#), "{html}");
}

#[tokio::test]
async fn instances_tokens_and_accounts_through_their_forms() {
    let f = Fixture::new();
    let s = f.login("admin", ADMIN_PASSWORD).await;
    let a = f
        .send(form(
            "/instances",
            &s,
            &[
                ("name", "web"),
                ("command", "nginx\n-g\ndaemon off;\n"),
                ("host_addr", "192.168.100.11"),
                ("mask_addr", "255.255.255.0"),
                ("num_cpus", "1"),
                ("restart", "always"),
                ("based_on", "redis"),
            ],
        ))
        .await;
    assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.text());
    assert!(flash(&a).contains("web added"), "{}", flash(&a));
    f.send(form("/pending/confirm", &s, &[])).await;
    let running = f.running();
    let web = running.instances.iter().find(|i| i.name == "web").unwrap();
    assert_eq!(web.command, ["nginx", "-g", "daemon off;"]);
    let toml = running.to_toml_string();
    assert!(toml.contains("host_addr = \"192.168.100.11\""), "{toml}");
    // Edited, then removed.
    let a = f
        .send(form(
            "/instances/web",
            &s,
            &[
                ("command", "nginx"),
                ("host_addr", "192.168.100.11"),
                ("num_cpus", "1"),
                ("restart", "never"),
            ],
        ))
        .await;
    assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.text());
    assert!(flash(&a).contains("web changed"), "{}", flash(&a));
    if flash(&a).contains("pending") {
        f.send(form("/pending/confirm", &s, &[])).await;
    }
    assert_eq!(
        f.running()
            .instances
            .iter()
            .find(|i| i.name == "web")
            .unwrap()
            .command,
        ["nginx"]
    );
    let a = f.send(form("/instances/web/delete", &s, &[])).await;
    assert!(flash(&a).contains("web removed"), "{}", flash(&a));

    // A token is shown once, on the answer to the form only.
    let a = f
        .send(form(
            "/account/tokens",
            &s,
            &[("name", "ci"), ("role", "viewer")],
        ))
        .await;
    assert_eq!(a.status, StatusCode::OK);
    let html = a.text();
    let secret = html
        .split(r#"<code id="new-token-secret">"#)
        .nth(1)
        .unwrap()
        .split('<')
        .next()
        .unwrap()
        .to_owned();
    assert!(
        f.state.auth.token(&secret).is_some(),
        "the secret shown works"
    );
    assert!(!page(&f, &s, "/account").await.text().contains(&secret));
    // Users.
    let a = f
        .send(form(
            "/account/users",
            &s,
            &[
                ("username", "ops"),
                ("role", "viewer"),
                ("password", "short"),
            ],
        ))
        .await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        a.text().contains(r#"id="user_password-error""#),
        "{}",
        a.text()
    );
    let a = f
        .send(form(
            "/account/users",
            &s,
            &[
                ("username", "ops"),
                ("role", "viewer"),
                ("password", "long-enough-pw"),
            ],
        ))
        .await;
    assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.text());
    // The audit log page has them.
    let html = page(&f, &s, "/audit").await.text();
    for action in [
        "instance.create",
        "instance.delete",
        "token.create",
        "account.create",
    ] {
        assert!(html.contains(action), "audit page without {action}");
    }
}
