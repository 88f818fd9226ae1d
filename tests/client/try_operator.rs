//! Issue 28: `?` works across tokengate's own calls, and on what a program meets beside them
//! (a response body read, ureq called through the middleware, an ID token's claims), in a
//! function returning `Result<_, tokengate::Error>`.

use std::io;

use crate::harness::fixtures::TempDir;
use crate::harness::servers::TokenServer;
use tokengate::ureq::{self, Agent};
use tokengate::{Error, FileStore, IdTokenError, TokenStore, Tokens};

/// What a newcomer writes: each step with `?`, into tokengate's own error. Reads the body of
/// `items`: as a string, as JSON, as the wrong JSON (`Error::Json`), then (over a 1-byte
/// limit) into ureq's body error.
fn login_and_read(srv: &TokenServer, dir: &TempDir) -> Result<(String, Error), Error> {
    let store = FileStore::new(dir.path("tokens.json"))?;
    let client = srv
        .client_builder()
        .store(store)
        .tokens(srv.login())
        .build()?;
    let mut resp = client.get("items").call()?;
    let text = resp.body_mut().read_to_string()?;
    // ureq's json feature is on: read_json, with `?`, into the JSON asked for.
    let mut resp = client.get("items").call()?;
    let json: serde_json::Value = resp.body_mut().read_json()?;
    assert_eq!(json["token"], "at-1");
    let mut resp = client.get("items").call()?;
    match resp.body_mut().read_json::<Vec<u32>>().map_err(Error::from) {
        Err(Error::Json(e)) => assert!(e.is_data(), "{e}"),
        other => panic!("expected Error::Json, got {other:?}"),
    }
    let mut resp = client.get("items").call()?;
    let body_error = read_at_most(&mut resp, 1).unwrap_err();
    client.close()?;
    Ok((text, body_error))
}

fn read_at_most(resp: &mut ureq::http::Response<ureq::Body>, limit: u64) -> Result<String, Error> {
    Ok(resp
        .body_mut()
        .with_config()
        .limit(limit)
        .read_to_string()?)
}

#[test]
fn a_file_store_and_a_body_read_work_with_the_question_mark() -> Result<(), Error> {
    let srv = TokenServer::start();
    let dir = TempDir::new("try-operator");
    let (text, body_error) = login_and_read(&srv, &dir)?;
    let body: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["token"], "at-1");
    match &body_error {
        Error::Http(e) => {
            assert!(
                matches!(e.ureq_error(), ureq::Error::BodyExceedsLimit(1)),
                "{e:?}"
            );
            assert_eq!(e.proxy(), None);
        }
        other => panic!("expected Error::Http, got {other:?}"),
    }
    // The login went through the store.
    let stored = FileStore::new(dir.path("tokens.json"))?
        .load()
        .unwrap()
        .unwrap();
    assert_eq!(stored.access_token().secret(), "at-1");
    // FileStore::new's I/O error is Error::Store, its message as before.
    match FileStore::new("/") {
        Err(Error::Store(e)) => {
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
            assert_eq!(e.to_string(), "token file path / does not name a file");
        }
        other => panic!("expected Error::Store, got {other:?}"),
    }
    Ok(())
}

#[test]
fn ureq_errors_become_tokengate_errors() {
    assert!(matches!(
        Error::from(ureq::Error::StatusCode(401)),
        Error::Unauthorized
    ));
    assert!(matches!(
        Error::from(ureq::Error::StatusCode(503)),
        Error::StatusCode(503)
    ));
    assert!(matches!(
        Error::from(ureq::Error::StatusCode(404)),
        Error::StatusCode(404)
    ));
    let reset = io::Error::new(io::ErrorKind::ConnectionReset, "peer reset");
    let e = Error::from(ureq::Error::Io(reset));
    match &e {
        Error::Http(t) => {
            assert!(
                matches!(t.ureq_error(), ureq::Error::Io(io) if io.kind() == io::ErrorKind::ConnectionReset),
                "{t:?}"
            );
            assert_eq!(t.proxy(), None);
        }
        other => panic!("expected Error::Http, got {other:?}"),
    }
    assert!(e.is_transient());
    assert_eq!(e.to_string(), "http transport error: io: peer reset");
    // The middleware's own error (in ureq::Error::Other) comes back as itself; another
    // Other stays a transport error.
    let e = Error::from(ureq::Error::Other(Box::new(Error::SessionExpired)));
    assert!(matches!(e, Error::SessionExpired), "{e:?}");
    let e = Error::from(ureq::Error::Other(Box::new(io::Error::other("mine"))));
    assert!(matches!(&e, Error::Http(t) if matches!(t.ureq_error(), ureq::Error::Other(_))));
}

#[test]
fn a_url_in_a_ureq_error_is_cut_to_its_origin() {
    let cases = [
        (
            ureq::Error::RequireHttpsOnly("http://u:pw@api.example.com/v1/me?key=SECRET#f".into()),
            "http transport error: configured for https only: http://api.example.com:80",
        ),
        (
            ureq::Error::BadUri("/v1/me?code=SECRET is missing scheme".into()),
            "http transport error: bad uri: [redacted] is missing scheme",
        ),
        (
            ureq::Error::BadUri("unknown scheme: ftp".into()),
            "http transport error: bad uri: unknown scheme: ftp",
        ),
    ];
    for (error, message) in cases {
        let e = Error::from(error);
        assert!(matches!(e, Error::Http(_)), "{e:?}");
        assert_eq!(e.to_string(), message);
        assert!(!format!("{e:?}").contains("SECRET"), "{e:?}");
    }
}

/// Through the middleware: no tokens is `ureq::Error::Other` holding `Error::NoTokens`, which
/// `?` gives back as `Error::NoTokens`.
#[test]
fn the_middlewares_error_comes_back_through_the_question_mark() {
    let srv = TokenServer::start();
    let client = srv.client_builder().build().unwrap();
    let agent: Agent = Agent::config_builder()
        .proxy(None)
        .middleware(client.middleware())
        .build()
        .into();
    let call = || -> Result<String, Error> {
        let mut resp = agent.get(format!("{}me", srv.api_url())).call()?;
        Ok(resp.body_mut().read_to_string()?)
    };
    assert!(matches!(call(), Err(Error::NoTokens)));
    assert_eq!(srv.api_requests(), 0);
}

#[test]
fn an_id_token_error_works_with_the_question_mark() {
    let claims = |tokens: &Tokens| -> Result<Option<String>, Error> {
        let Some(id) = tokens.id_token() else {
            return Ok(None);
        };
        Ok(id.unverified_claims()?.sub().map(str::to_owned))
    };
    let e = claims(&Tokens::new("at").with_id_token("not-a-jwt")).unwrap_err();
    assert!(matches!(e, Error::IdToken(IdTokenError::NotAJwt)), "{e:?}");
    assert_eq!(
        e.to_string(),
        "could not read the ID token: id_token is not a signed JWT (three segments separated by dots)"
    );
    assert!(!e.is_transient());
    assert_eq!(e.status(), None);
}

/// A body that is not the JSON asked for says where, never what: serde_json quotes the value
/// it refused, which may be a token.
#[test]
fn a_json_error_of_a_body_quotes_no_value() {
    let refused = serde_json::from_str::<Vec<u64>>(r#"["s3cret-token"]"#).unwrap_err();
    assert!(refused.to_string().contains("s3cret-token"), "{refused}");
    let e = Error::from(ureq::Error::Json(refused));
    let (shown, debug) = (format!("{e:#}"), format!("{e:?}"));
    assert!(matches!(e, Error::Json(_)), "{debug}");
    assert!(
        !shown.contains("s3cret") && !debug.contains("s3cret"),
        "{shown} / {debug}"
    );
    assert_eq!(
        shown,
        "json body: the body is not the JSON expected (a value of another type or shape) at line 1 column 15"
    );
    assert!(!e.is_transient());
    // Messages that quote nothing from the body are kept: a field the caller's own type
    // names, and an error of writing a value (send_json through a middleware's agent).
    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Me {
        id: u64,
    }
    let missing = serde_json::from_str::<Me>("{}").unwrap_err();
    assert_eq!(
        Error::from(ureq::Error::Json(missing)).to_string(),
        "json body: missing field `id` at line 1 column 2"
    );
    let unwritable =
        serde_json::to_string(&std::collections::BTreeMap::from([(vec![1u8], 1)])).unwrap_err();
    assert_eq!(
        Error::from(ureq::Error::Json(unwritable)).to_string(),
        "json body: key must be a string"
    );
    // A syntax error quotes nothing and is kept as serde_json wrote it.
    let bad = serde_json::from_str::<Vec<u64>>("<html>").unwrap_err();
    assert_eq!(
        Error::from(ureq::Error::Json(bad)).to_string(),
        "json body: expected value at line 1 column 1"
    );
}

/// ureq parses a body as it arrives: a connection that broke mid-body comes as a JSON error
/// of category Io, and is the transport error it wraps (transient), not a JSON one.
#[test]
fn a_body_cut_while_read_as_json_is_a_transport_error() {
    let reset = io::Error::new(io::ErrorKind::ConnectionReset, "peer reset");
    let cut = serde_json::from_reader::<_, Vec<u64>>(FailingReader(Some(reset))).unwrap_err();
    assert!(cut.is_io());
    let e = Error::from(ureq::Error::Json(cut));
    match &e {
        Error::Http(t) => assert!(
            matches!(t.ureq_error(), ureq::Error::Io(io) if io.kind() == io::ErrorKind::ConnectionReset),
            "{t:?}"
        ),
        other => panic!("expected Error::Http, got {other:?}"),
    }
    assert!(e.is_transient());
    // ureq's own error, wrapped in the io error ureq's body reader gives serde_json, comes back
    // as itself.
    let limit = io::Error::other(ureq::Error::BodyExceedsLimit(10));
    let cut = serde_json::from_reader::<_, Vec<u64>>(FailingReader(Some(limit))).unwrap_err();
    let e = Error::from(ureq::Error::Json(cut));
    match &e {
        Error::Http(t) => assert!(
            matches!(t.ureq_error(), ureq::Error::BodyExceedsLimit(10)),
            "{t:?}"
        ),
        other => panic!("expected Error::Http, got {other:?}"),
    }
    // Retrying would only read the same body over the same limit.
    assert!(!e.is_transient());
}

/// A reader whose first read fails with the error it holds.
struct FailingReader(Option<io::Error>);

impl io::Read for FailingReader {
    fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
        Err(self
            .0
            .take()
            .unwrap_or_else(|| io::Error::other("read twice")))
    }
}

/// `{:#}` goes on into the cause of the error ureq wraps (ureq's own type reports none).
#[test]
fn the_cause_chain_goes_through_a_transport_error() {
    #[derive(Debug)]
    struct Outer(io::Error);
    impl std::fmt::Display for Outer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("outer")
        }
    }
    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }
    let e = Error::from(ureq::Error::Other(Box::new(Outer(io::Error::other(
        "inner cause",
    )))));
    assert_eq!(
        format!("{e:#}"),
        "http transport error: other: outer: inner cause"
    );
    assert!(!e.is_transient());
}

/// The README's login program: a session that ended is `needs_login()` in the run that saw
/// it end (`SessionExpired`) and in another run sharing the store (`NoTokens`, taken over
/// from the cleared record), so both log in again.
#[test]
fn a_session_that_ended_needs_a_login_in_every_run_that_shares_the_store() {
    let server = tokengate::testing::TestServer::start();
    let dir = TempDir::new("needs-login");
    let run = || {
        tokengate::AuthClient::builder(server.api_url())
            .refresher(server.auth_server().refresh_grant())
            .store(FileStore::new(dir.path("tokens.json")).unwrap())
            .build()
            .unwrap()
    };
    let (a, b) = (run(), run());
    a.set_tokens(server.login()).unwrap();
    assert_eq!(b.get("me").call().unwrap().status(), 200);
    server.revoke_all(); // the refresh token is dead: the next refresh gets invalid_grant
    server.revoke_access_tokens();

    let seen_by_a = a.get("me").call().unwrap_err();
    assert!(matches!(seen_by_a, Error::SessionExpired), "{seen_by_a:?}");
    let seen_by_b = b.get("me").call().unwrap_err();
    assert!(matches!(seen_by_b, Error::NoTokens), "{seen_by_b:?}");
    assert!(seen_by_a.needs_login() && seen_by_b.needs_login());
    assert!(!seen_by_b.is_session_expired());
    // One refresh call (a's, refused); b made none.
    assert_eq!(server.refreshes(), 1);
    assert_eq!(server.reuse_detected(), 0);
}
