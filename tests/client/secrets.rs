//! Behaviour 8: no token (ID tokens included) or client secret ever shows in `Display`/`Debug` of errors (with
//! their whole source chain), tokens, clients, builders, requests, strategies, stores or
//! events — even when a server echoes them back. Plus how non-2xx final responses surface.

use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::harness::fixtures::{refused_addr, ClientSlot, TempDir};
use crate::harness::observe::{release_together, wait_until, Recorder, HANG_GUARD};
use crate::harness::servers::Api;
use tokengate::store::{Revision, Stored};
use tokengate::ureq::Agent;
use tokengate::{
    AuthClient, AuthServer, ClientSecret, Error, JsonRefresh, MemoryStore, OAuth2Refresh,
    RefreshError, Tokens,
};

const ACC: &str = "SECRET-acc-123";
const REF: &str = "SECRET-ref-456";
const CS: &str = "SECRET-cs-789";
const IDT: &str = "SECRET-idt.eyJzdWIiOiJTRUNSRVQifQ.sig";

fn secret_tokens() -> Tokens {
    Tokens::new(ACC)
        .with_refresh_token(REF)
        .with_expires_in(Duration::from_secs(3600))
        .with_scope("read")
        .with_id_token(IDT)
}

/// Every way an error can be printed: Display, Debug, pretty Debug, and the same for each
/// error in its `source()` chain.
fn all_renderings(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = format!("{e} | {e:?} | {e:#?}");
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(&format!(" <- {s} | {s:?} | {s:#?}"));
        cur = s.source();
    }
    out
}

#[track_caller]
fn assert_clean(what: &str, text: &str) {
    assert!(!text.contains("SECRET"), "{what} leaks a secret: {text}");
}

#[track_caller]
fn assert_error_clean(what: &str, e: &Error) {
    assert_clean(what, &all_renderings(e));
}

/// A client with secret tokens whose API rejects them, refreshing through `refresher`.
fn failing_client(api: &Api, refresher: impl tokengate::Refresh, events: &Recorder) -> AuthClient {
    AuthClient::builder(api.url())
        .proxy(None)
        .refresher(refresher)
        .tokens(secret_tokens())
        .on_event(events.listener())
        .build()
        .unwrap()
}

fn oauth(api: &Api, path: &str) -> OAuth2Refresh {
    AuthServer::new(api.server.url(path))
        .client_id("app")
        .client_secret(CS)
        .refresh_grant()
}

#[test]
fn refresh_errors_never_print_secrets_even_when_the_server_echoes_them() {
    let api = Api::start(&[]);
    let events = Recorder::new();
    let echo = format!("{ACC} {REF} {CS}");
    let bodies: Vec<(&str, u16, String)> = vec![
        ("not-json", 200, echo.clone()),
        ("not-object", 200, serde_json::json!([ACC, REF]).to_string()),
        (
            "bad-chars",
            200,
            serde_json::json!({"access_token": format!("{ACC} x"), "refresh_token": REF})
                .to_string(),
        ),
        (
            "bad-type",
            200,
            serde_json::json!({"access_token": ACC, "token_type": "mac", "refresh_token": REF})
                .to_string(),
        ),
        (
            "bad-id-token",
            200,
            serde_json::json!({"access_token": ACC, "refresh_token": REF, "id_token": format!("{IDT} x")})
                .to_string(),
        ),
        (
            "id-token-not-a-string",
            200,
            serde_json::json!({"access_token": ACC, "id_token": {"sub": IDT}}).to_string(),
        ),
        (
            "bad-expiry",
            200,
            serde_json::json!({"access_token": ACC, "expires_in": REF}).to_string(),
        ),
        (
            "echo-error",
            400,
            serde_json::json!({"error": format!("invalid_request {REF}"), "error_description": echo})
                .to_string(),
        ),
        (
            "echo-client",
            401,
            serde_json::json!({"error": CS}).to_string(),
        ),
        ("unavailable", 503, echo.clone()),
        (
            "invalid-grant",
            400,
            serde_json::json!({"error": "invalid_grant", "error_description": echo}).to_string(),
        ),
    ];
    for (path, status, body) in bodies {
        let p = format!("/{path}");
        api.endpoint(&p, move |_| (status, body.clone()));
        let client = failing_client(&api, oauth(&api, &p), &events);
        let err = client.get("x").call().unwrap_err();
        assert!(
            matches!(err, Error::Refresh(_) | Error::SessionExpired),
            "{path}: {err:?}"
        );
        assert_error_clean(path, &err);
        assert_clean("client", &format!("{client:?}"));
    }

    // JSON endpoint rejection, connection refused, client credentials.
    api.endpoint("/json", move |_| (401, format!(r#"{{"message":"{REF}"}}"#)));
    let client = failing_client(&api, JsonRefresh::new(api.server.url("/json")), &events);
    let err = client.get("x").call().unwrap_err();
    assert!(err.is_session_expired());
    assert_error_clean("json", &err);

    let client = failing_client(
        &api,
        AuthServer::new(format!("http://{}/token", refused_addr()))
            .client_secret(CS)
            .refresh_grant(),
        &events,
    );
    let err = client.get("x").call().unwrap_err();
    assert!(matches!(err, Error::Refresh(_)), "{err:?}");
    assert_error_clean("refused", &err);

    api.endpoint("/cc", move |_| (400, format!(r#"{{"error":"{CS}"}}"#)));
    let client = AuthClient::builder(api.url())
        .proxy(None)
        .refresher(
            AuthServer::new(api.server.url("/cc"))
                .client_id("svc")
                .client_secret(CS)
                .client_credentials(),
        )
        .build()
        .unwrap();
    let err = client.get("x").call().unwrap_err();
    assert!(matches!(err, Error::Refresh(_)), "{err:?}");
    assert_error_clean("client credentials", &err);

    let events = format!("{:?} {:#?}", events.all(), events.all());
    assert!(events.contains("RefreshFailed"), "{events}");
    assert_clean("events", &events);
}

#[test]
fn api_side_errors_never_print_secrets() {
    let api = Api::start(&[ACC]);
    let mut errors: Vec<(&str, Error)> = Vec::new();
    let client = AuthClient::builder(api.url())
        .proxy(None)
        .tokens(secret_tokens())
        .build()
        .unwrap();

    errors.push((
        "status",
        client.get("status/404").query("k", CS).call().unwrap_err(),
    ));
    errors.push((
        "invalid header",
        client
            .get("x")
            .header("X-Api-Key", &format!("{CS}\r\nX-Evil: 1"))
            .call()
            .unwrap_err(),
    ));
    errors.push((
        "invalid url",
        client
            .get(&format!("//evil.example/{ACC}"))
            .call()
            .unwrap_err(),
    ));
    errors.push((
        "invalid token",
        client
            .set_tokens(Tokens::new(format!("{ACC} with space")).with_refresh_token(REF))
            .unwrap_err(),
    ));
    errors.push((
        "invalid refresh token",
        client
            .set_tokens(Tokens::new(ACC).with_refresh_token(format!("{REF}\n")))
            .unwrap_err(),
    ));
    errors.push((
        "token url with credentials",
        AuthClient::builder(api.url())
            .proxy(None)
            .refresher(
                AuthServer::new(format!("http://app:{CS}@auth.example.com/token")).refresh_grant(),
            )
            .build()
            .unwrap_err(),
    ));
    errors.push((
        "insecure token url with a secret in the query",
        AuthClient::builder(api.url())
            .proxy(None)
            .refresher(
                AuthServer::new(format!("http://auth.example.com/token?client_secret={CS}"))
                    .refresh_grant(),
            )
            .build()
            .unwrap_err(),
    ));
    errors.push((
        "base url with credentials",
        AuthClient::builder(format!("https://user:{CS}@api.example.com/"))
            .proxy(None)
            .build()
            .unwrap_err(),
    ));

    api.reject(ACC);
    errors.push(("unauthorized", client.get("x").call().unwrap_err()));

    let refused = AuthClient::builder(format!("http://{}/", refused_addr()))
        .proxy(None)
        .tokens(secret_tokens())
        .build()
        .unwrap();
    errors.push(("transport", refused.get("x").call().unwrap_err()));

    // A refresh that times out waiting, and one whose leader panics.
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let (rx, started) = (Mutex::new(rx), Arc::new(AtomicUsize::new(0)));
    let s = started.clone();
    let slow = AuthClient::builder(api.url())
        .proxy(None)
        .refresh_timeout(Duration::from_millis(20))
        .refresher(
            move |_: &Agent, _: &Tokens| -> Result<Tokens, RefreshError> {
                s.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let _ = rx.lock().unwrap().recv_timeout(HANG_GUARD);
                Err(RefreshError::transient("gave up"))
            },
        )
        .tokens(secret_tokens())
        .build()
        .unwrap();
    let c = slow.clone();
    let leader = std::thread::spawn(move || c.get("x").call().unwrap_err());
    wait_until("the leader refreshing", || {
        started.load(std::sync::atomic::Ordering::SeqCst) == 1
    });
    errors.push(("timeout", slow.get("x").call().unwrap_err()));
    tx.send(()).unwrap();
    errors.push(("custom transient", leader.join().unwrap()));

    client.clear_tokens().unwrap();
    errors.push(("no tokens", client.get("x").call().unwrap_err()));
    errors.push(("panicked", refresher_panicked_error()));
    errors.push(("store", corrupt_store_error(&api)));

    let kinds: Vec<String> = errors
        .iter()
        .map(|(_, e)| {
            format!("{e:?}")
                .split(['(', ' ', '{'])
                .next()
                .unwrap()
                .to_owned()
        })
        .collect();
    for expected in [
        "RefresherPanicked",
        "Store",
        "StatusCode",
        "InvalidHeader",
        "InvalidUrl",
        "InvalidToken",
        "InsecureUrl",
        "Unauthorized",
        "Http",
        "RefreshTimeout",
        "Refresh",
        "NoTokens",
    ] {
        assert!(
            kinds.iter().any(|k| k == expected),
            "{expected} not exercised: {kinds:?}"
        );
    }
    for (what, e) in &errors {
        assert_error_clean(what, e);
    }
}

/// The error a thread gets when the refresh it waited on panicked. The panic message carries
/// every secret the refresher could see; the waiter's error must carry none of them.
fn refresher_panicked_error() -> Error {
    let api = Api::start(&[]);
    let slot = ClientSlot::default();
    let s = slot.clone();
    let client = AuthClient::builder(api.url())
        .proxy(None)
        .refresher(
            move |_: &Agent, current: &Tokens| -> Result<Tokens, RefreshError> {
                s.wait_for_waiters(1);
                panic!(
                    "refresher bug (expected by the test) with {} {} {CS}",
                    current.access_token().secret(),
                    current.refresh_token().unwrap().secret()
                );
            },
        )
        .tokens(secret_tokens())
        .build()
        .unwrap();
    slot.set(&client);
    let mut results: Vec<_> = release_together(2, &client, |_, c| c.get("x").call())
        .into_iter()
        .map(|h| h.join())
        .collect();
    slot.clear();
    results.retain(Result::is_ok); // the thread that ran the refresher panicked
    assert_eq!(results.len(), 1);
    let err = results.pop().unwrap().unwrap().unwrap_err();
    assert!(matches!(err, Error::RefresherPanicked), "{err:?}");
    err
}

/// A request's error when the token file holds the secrets but cannot be used.
fn corrupt_store_error(api: &Api) -> Error {
    let dir = TempDir::new("secrets-corrupt-store");
    let path = dir.path("tokens.json");
    let client = AuthClient::builder(api.url())
        .proxy(None)
        .store(tokengate::FileStore::new(&path).unwrap())
        .tokens(secret_tokens())
        .build()
        .unwrap();
    // Valid JSON, but the access token has a space (and so cannot be sent).
    std::fs::write(
        &path,
        format!(r#"{{"version":1,"access_token":"{ACC} {CS}","refresh_token":"{REF}"}}"#),
    )
    .unwrap();
    let err = client.get("x").call().unwrap_err();
    assert!(matches!(err, Error::Store(_)), "{err:?}");
    err
}

#[test]
fn values_holding_secrets_print_redacted() {
    let api = Api::start(&[ACC]);
    let tokens = secret_tokens();
    let store = MemoryStore::with_tokens(tokens.clone());
    let lock = Stored::new(Some(tokens.clone()), Revision::new(7));
    let server = AuthServer::new(api.server.url("/token"))
        .client_id("app")
        .client_secret(CS)
        .device_authorization_url(api.server.url("/device"))
        .revocation_url(api.server.url("/revoke"));
    let oauth = server.refresh_grant();
    let device = server.device_flow().unwrap();
    let cc = AuthServer::new(api.server.url("/token"))
        .client_id("svc")
        .client_secret(CS)
        .client_credentials();
    let builder = AuthClient::builder(api.url())
        .proxy(None)
        .refresher(oauth.clone())
        .tokens(tokens.clone());
    let builder_debug = format!("{builder:?} {builder:#?}");
    let client = builder.build().unwrap();
    let request = client
        .post("x")
        .header("Authorization", &format!("Bearer {ACC}"))
        .header("X-Api-Key", CS)
        .query("refresh_token", REF);
    let mut printed = vec![
        ("tokens", format!("{tokens:?} {tokens:#?}")),
        ("access", format!("{:?}", tokens.access_token())),
        ("refresh", format!("{:?}", tokens.refresh_token())),
        ("id token", format!("{:?}", tokens.id_token())),
        ("client secret", format!("{:?}", ClientSecret::new(CS))),
        ("store", format!("{store:?}")),
        ("refresh lock", format!("{lock:?} {lock:#?}")),
        ("auth server", format!("{server:?} {server:#?}")),
        ("oauth2", format!("{oauth:?} {oauth:#?}")),
        ("device flow", format!("{device:?} {device:#?}")),
        ("client credentials", format!("{cc:?} {cc:#?}")),
        ("builder", builder_debug),
        ("client", format!("{client:?} {client:#?}")),
        ("request", format!("{request:?} {request:#?}")),
        ("client tokens", format!("{:?}", client.tokens())),
    ];
    // The request still works: the secret is only hidden from printing.
    assert_eq!(request.send("body").unwrap().status(), 200);
    printed.push(("client after use", format!("{client:?}")));
    for (what, text) in &printed {
        assert_clean(what, text);
    }
    assert!(printed[0].1.contains("[redacted]"));
    let server_debug = &printed.iter().find(|(w, _)| *w == "auth server").unwrap().1;
    assert!(
        server_debug.contains("[redacted]") && server_debug.contains("/token"),
        "the secret is shown redacted, the endpoints as they are: {server_debug}"
    );
    assert!(printed[0].1.contains("read"), "non-secret fields are shown");
    let client_debug = &printed.iter().find(|(w, _)| *w == "client").unwrap().1;
    assert!(
        client_debug.starts_with("AuthClient {") && client_debug.contains("has_tokens: true"),
        "the client's state is shown: {client_debug}"
    );
}

#[test]
fn non_2xx_final_responses_are_errors_by_default_or_returned_when_asked() {
    let api = Api::start(&["acc"]);
    let strict = AuthClient::builder(api.url())
        .proxy(None)
        .tokens(Tokens::new("acc"))
        .build()
        .unwrap();
    for status in [400u16, 404, 409, 429, 500, 503] {
        let err = strict.get(&format!("status/{status}")).call().unwrap_err();
        assert!(
            matches!(err, Error::StatusCode(s) if s == status),
            "{err:?}"
        );
        assert_eq!(err.status(), Some(status));
        assert_eq!(err.is_transient(), status == 429 || status >= 500);
    }
    assert_eq!(strict.get("status/204").call().unwrap().status(), 204);

    let lenient = AuthClient::builder(api.url())
        .proxy(None)
        .tokens(Tokens::new("acc"))
        .http_status_as_error(false)
        .build()
        .unwrap();
    let mut resp = lenient.get("status/404").call().unwrap();
    assert_eq!(resp.status(), 404);
    let body = resp.body_mut().read_to_string().unwrap();
    assert!(body.contains("/api/status/404"), "{body}");
    assert_eq!(lenient.get("status/503").call().unwrap().status(), 503);
    // A token-rejecting 401 still goes through the gate: with no refresher it is final.
    api.reject("acc");
    assert!(matches!(lenient.get("x").call(), Err(Error::Unauthorized)));
}
