//! The providers people use, as their documentation says they answer: GitHub, Microsoft
//! Entra, Google, Auth0 (issue 25). Each module plays one provider on a loopback httpmock
//! server, with the status codes, error fields and field names of the documentation page it
//! names at its top, and checks what tokengate makes of them, counting the calls to each
//! endpoint exactly (httpmock's call counts). `secrets` is a provider that echoes what it was
//! sent. Device flows run on a `TestTime`: no test sleeps.
//!
//! Discovery of these providers (Entra's multi-tenant issuer, Keycloak, Okta) is tested in
//! `tests/login/discovery.rs`.

#[path = "../harness/mod.rs"]
mod harness;

mod auth0;
mod entra;
mod github;
mod google;
mod secrets;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use httpmock::prelude::*;
use httpmock::{Mock, When};
use serde_json::Value;

use harness::servers::json;
use tokengate::login::DeviceError;
use tokengate::{Error, Tokens};

/// An endpoint that answers the requests `when` matches (besides `POST path`) with
/// `answers` in order, the last one again once they run out, and keeps each request's body.
pub struct Endpoint<'a> {
    pub mock: Mock<'a>,
    bodies: Arc<Mutex<Vec<String>>>,
}

impl Endpoint<'_> {
    /// How many requests it answered.
    pub fn hits(&self) -> usize {
        self.mock.calls()
    }

    /// The form bodies it received, in order.
    pub fn bodies(&self) -> Vec<String> {
        self.bodies.lock().unwrap().clone()
    }
}

/// See [`Endpoint`]. Mocks are tried in the order they were made: make the narrow ones first.
pub fn endpoint<'a>(
    server: &'a MockServer,
    path: &str,
    when: impl FnOnce(When) -> When,
    answers: Vec<(u16, Value)>,
) -> Endpoint<'a> {
    assert!(!answers.is_empty());
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let log = bodies.clone();
    let next = AtomicUsize::new(0);
    let mock = server.mock(move |w, then| {
        when(w.method(POST).path(path));
        then.respond_with(move |req| {
            log.lock()
                .unwrap()
                .push(String::from_utf8_lossy(req.body_ref()).into_owned());
            let i = next.fetch_add(1, Ordering::SeqCst).min(answers.len() - 1);
            json(answers[i].0, &answers[i].1)
        });
    });
    Endpoint { mock, bodies }
}

/// Answers every request no other mock took with 418 (so nothing unexpected goes unseen);
/// make it last.
pub fn unexpected(server: &MockServer) -> Mock<'_> {
    server.mock(|when, then| {
        when.any_request();
        then.status(418);
    })
}

/// The device error in `result`.
pub fn device_error(result: Result<Tokens, Error>) -> DeviceError {
    match result {
        Err(Error::Device(e)) => e,
        other => panic!("expected a device error, got {other:?}"),
    }
}
