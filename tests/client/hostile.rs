//! Bad and hostile input (issue 3): each gets a clear typed error, never a panic, a hang or
//! lost tokens.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::harness::servers::raw::{Action, RawServer};
use tokengate::{AuthClient, AuthServer, Error, RefreshError, RetryPolicy, Tokens};

/// An API that accepts only `Bearer good`.
fn api() -> RawServer {
    RawServer::start(|req| match req.header("authorization") {
        Some("Bearer good") => Action::Respond(200, vec![], b"ok".to_vec()),
        _ => Action::Respond(401, vec![], vec![]),
    })
}

/// Long enough for any loaded machine: only a server that never answers reaches it.
const TOKEN_TIMEOUT: Duration = Duration::from_secs(10);

fn client_with_token_server(api: &RawServer, token: &RawServer) -> AuthClient {
    client_with_token_timeout(api, token, TOKEN_TIMEOUT)
}

fn client_with_token_timeout(api: &RawServer, token: &RawServer, timeout: Duration) -> AuthClient {
    AuthClient::builder(api.url("/"))
        .proxy(None)
        .retry(RetryPolicy::none())
        .token_timeout(timeout)
        .refresher(AuthServer::new(token.url("/token")).refresh_grant())
        .tokens(Tokens::new("SECRET-old-access").with_refresh_token("SECRET-refresh"))
        .build()
        .unwrap()
}

fn assert_tokens_kept(c: &AuthClient) {
    let t = c.tokens().expect("tokens kept");
    assert_eq!(t.access_token().secret(), "SECRET-old-access");
    assert_eq!(t.refresh_token().unwrap().secret(), "SECRET-refresh");
}

#[test]
fn unusable_token_responses_are_typed_errors_and_keep_the_tokens() {
    let big = format!(
        r#"{{"access_token":"good","pad":"{}"}}"#,
        "x".repeat(70 * 1024)
    );
    let bodies: Vec<String> = vec![
        "<html><body>Service temporarily down SECRET-page</body></html>".into(),
        "[1,2,3]".into(),
        r#"{"token_type":"bearer"}"#.into(),
        r#"{"access_token":["good"]}"#.into(),
        r#"{"access_token":"good","token_type":"mac"}"#.into(),
        r#"{"access_token":"good","expires_in":-30}"#.into(),
        r#"{"access_token":"good","expires_in":1e300}"#.into(),
        r#"{"access_token":"good\r\nX-Injected: 1"}"#.into(),
        r#"{"access_token":"good","refresh_token":"bad\u0000"}"#.into(),
        r#"{"access_token":""}"#.into(),
        big,
    ];
    let api = api();
    for body in bodies {
        let b = body.clone().into_bytes();
        let token = RawServer::start(move |_| {
            Action::Respond(
                200,
                vec![b"content-type: application/json".to_vec()],
                b.clone(),
            )
        });
        let c = client_with_token_server(&api, &token);
        let err = c.get("x").call().unwrap_err();
        let Error::Refresh(cause) = &err else {
            panic!("{err:?} for {body:.60}")
        };
        assert!(
            matches!(**cause, RefreshError::InvalidResponse(_)),
            "{cause:?} for {body:.60}"
        );
        assert!(!err.is_session_expired());
        let text = format!("{err} {err:?} {cause}");
        assert!(!text.contains("SECRET") && !text.contains("good"), "{text}");
        assert_tokens_kept(&c);
    }
}

#[test]
fn a_token_endpoint_that_never_answers_times_out_and_keeps_the_tokens() {
    let api = api();
    // The server never answers (until the test is over): the timeout is the fault under
    // test, not a limit on how fast anything must be.
    let token = RawServer::start(|_| Action::Hang(TOKEN_TIMEOUT * 2));
    let c = client_with_token_timeout(&api, &token, Duration::from_millis(300));
    let err = c.get("x").call().unwrap_err();
    assert!(
        matches!(&err, Error::Refresh(e) if matches!(&**e, RefreshError::Transport(t) if matches!(t.ureq_error(), ureq::Error::Timeout(_)))),
        "{err:?}"
    );
    assert!(err.is_transient());
    assert_tokens_kept(&c);
}

#[test]
fn a_reset_mid_body_is_a_transport_error_and_keeps_the_tokens() {
    let api = api();
    let token = RawServer::start(|_| Action::CutBody {
        len: 100,
        partial: br#"{"access_token":"go"#.to_vec(),
    });
    let c = client_with_token_server(&api, &token);
    let err = c.get("x").call().unwrap_err();
    assert!(
        matches!(&err, Error::Refresh(e) if matches!(**e, RefreshError::Transport(_))),
        "{err:?}"
    );
    assert_tokens_kept(&c);
}

#[test]
fn tokens_that_cannot_travel_in_a_header_are_rejected_when_set() {
    let api = api();
    let c = AuthClient::builder(api.url("/"))
        .proxy(None)
        .tokens(Tokens::new("good"))
        .build()
        .unwrap();
    for bad in ["a\r\nX-Evil: 1", "nul\0", "", "sp ace", "tab\t", "ünïcode"] {
        let err = c.set_tokens(Tokens::new(bad)).unwrap_err();
        assert!(
            matches!(err, Error::InvalidToken("access token")),
            "{bad:?}: {err:?}"
        );
        assert!(!err.to_string().contains(bad) || bad.is_empty());
        let err = c
            .set_tokens(Tokens::new("ok").with_refresh_token(bad))
            .unwrap_err();
        assert!(
            matches!(err, Error::InvalidToken("refresh token")),
            "{bad:?}"
        );
    }
    assert_eq!(
        c.tokens().unwrap().access_token().secret(),
        "good",
        "unchanged"
    );
    assert!(c.get("x").call().is_ok());
    let err = AuthClient::builder(api.url("/"))
        .tokens(Tokens::new("a\nb"))
        .build()
        .unwrap_err();
    assert!(matches!(err, Error::InvalidToken(_)));
}

#[test]
fn bad_base_urls_and_escaping_paths_are_rejected_before_sending() {
    for bad in [
        "",
        "not a url",
        "api.example.com/v1",
        "ftp://example.com/",
        "https://example.com/?q=1",
        "https://user:pw@example.com/",
    ] {
        let err = AuthClient::builder(bad).build().unwrap_err();
        assert!(matches!(err, Error::InvalidUrl(_)), "{bad:?}: {err:?}");
    }
    let err = AuthClient::builder("http://api.example.com/")
        .build()
        .unwrap_err();
    assert!(matches!(err, Error::InsecureUrl(_)), "{err:?}");
    let err = AuthClient::builder("https://api.example.com/")
        .refresher(AuthServer::new("http://auth.example.com/token").refresh_grant())
        .build()
        .unwrap_err();
    assert!(matches!(err, Error::InsecureUrl(_)), "{err:?}");
    assert!(AuthClient::builder("http://api.example.com/")
        .allow_insecure_http(true)
        .build()
        .is_ok());

    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let server = RawServer::start(move |req| {
        h.fetch_add(1, Ordering::SeqCst);
        let auth = req.header("authorization").unwrap_or("none").to_owned();
        Action::Respond(200, vec![], auth.into_bytes())
    });
    let c = AuthClient::builder(server.url("/v1/"))
        .proxy(None)
        .tokens(Tokens::new("tok"))
        .build()
        .unwrap();
    for path in [
        "//evil.example/x",
        "\\\\evil.example/x",
        "http://evil.example/x",
        "HTTPS://evil.example/x",
        "javascript:alert(1)",
        "file:///etc/passwd",
        "a b",
    ] {
        let err = c.get(path).call().unwrap_err();
        assert!(matches!(err, Error::InvalidUrl(_)), "{path:?}: {err:?}");
    }
    assert_eq!(hits.load(Ordering::SeqCst), 0, "nothing was sent");
    // the base origin itself, absolute, is fine
    let mut resp = c.get(&server.url("/v1/x")).call().unwrap();
    assert_eq!(resp.body_mut().read_to_string().unwrap(), "Bearer tok");

    // Opted in: another origin is reachable, without the token.
    let c = AuthClient::builder("http://localhost:1/")
        .proxy(None)
        .allow_other_origins(true)
        .tokens(Tokens::new("tok"))
        .build()
        .unwrap();
    let mut resp = c.get(&server.url("/elsewhere")).call().unwrap();
    assert_eq!(resp.body_mut().read_to_string().unwrap(), "none");
}

#[test]
fn www_authenticate_decides_whether_a_refresh_can_help() {
    let calls = Arc::new(AtomicUsize::new(0));
    let refresher = {
        let calls = calls.clone();
        move |_: &ureq::Agent, _: &Tokens| -> Result<Tokens, RefreshError> {
            calls.fetch_add(1, Ordering::SeqCst);
            Ok(Tokens::new("good"))
        }
    };
    let server = RawServer::start(|req| {
        if req.header("authorization") == Some("Bearer good") {
            return Action::Respond(200, vec![], b"ok".to_vec());
        }
        let challenge: &[u8] = match req.path.as_str() {
            "/expired" => br#"www-authenticate: Bearer realm="api", error="invalid_token""#,
            "/scope" => br#"www-authenticate: Bearer error="insufficient_scope", scope="admin""#,
            "/forbidden" => {
                return Action::Respond(
                    403,
                    vec![br#"www-authenticate: Bearer error="insufficient_scope""#.to_vec()],
                    vec![],
                )
            }
            _ => b"www-authenticate: Bearer error=\"\xff\xfe\"",
        };
        Action::Respond(401, vec![challenge.to_vec()], vec![])
    });
    let build = || {
        AuthClient::builder(server.url("/"))
            .proxy(None)
            .refresher(refresher.clone())
            .tokens(Tokens::new("old").with_refresh_token("r"))
            .build()
            .unwrap()
    };
    assert!(build().get("expired").call().is_ok());
    assert_eq!(calls.swap(0, Ordering::SeqCst), 1);
    match build().get("scope").call() {
        Err(Error::InsufficientScope { status, scope }) => {
            assert_eq!((status, scope.as_deref()), (401, Some("admin")));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        calls.swap(0, Ordering::SeqCst),
        0,
        "insufficient_scope: a new token would not help"
    );
    assert!(matches!(
        build().get("forbidden").call(),
        Err(Error::InsufficientScope {
            status: 403,
            scope: None
        })
    ));
    assert_eq!(calls.swap(0, Ordering::SeqCst), 0);
    assert!(
        build().get("garbled").call().is_ok(),
        "non-UTF-8 challenge: treated as a plain 401"
    );
    assert_eq!(calls.swap(0, Ordering::SeqCst), 1);
}
