//! Issue 15, part 2: `Tokens` works with serde, so a store of your own (a database row, a
//! keychain entry) keeps them as JSON without hand-written code, with absolute times.

use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::harness::observe::body_json;
use crate::harness::servers::TokenServer;
use tokengate::time::ManualClock;
use tokengate::{TokenStore, Tokens};

/// Keeps the tokens as a JSON string, as a database column would.
#[derive(Default)]
struct JsonColumn(Mutex<Option<String>>);

impl TokenStore for JsonColumn {
    fn load(&self) -> io::Result<Option<Tokens>> {
        self.0
            .lock()
            .unwrap()
            .as_deref()
            .map(serde_json::from_str)
            .transpose()
            .map_err(io::Error::other)
    }
    fn save(&self, tokens: &Tokens) -> io::Result<()> {
        *self.0.lock().unwrap() = Some(serde_json::to_string(tokens).map_err(io::Error::other)?);
        Ok(())
    }
    fn clear(&self) -> io::Result<()> {
        *self.0.lock().unwrap() = None;
        Ok(())
    }
}

#[test]
fn a_store_of_your_own_keeps_tokens_as_json_with_absolute_times() {
    let srv = TokenServer::start();
    let clock = Arc::new(ManualClock::new());
    let column = Arc::new(JsonColumn::default());
    let client = srv
        .client_builder()
        .clock(clock.clone())
        .store(column.clone())
        .tokens(srv.login())
        .build()
        .unwrap();
    srv.revoke_access_tokens();
    client.get("me").call().unwrap(); // refreshed and saved

    let json: serde_json::Value =
        serde_json::from_str(column.0.lock().unwrap().as_deref().unwrap()).unwrap();
    assert_eq!(json["access_token"], "at-2");
    assert_eq!(json["refresh_token"], "rt-2");
    assert_eq!(json["token_type"], "Bearer");
    let expires = json["expires_at_unix_ms"].as_u64().unwrap();
    let issued = json["issued_at_unix_ms"].as_u64().unwrap();
    assert_eq!(expires - issued, 3_600_000, "the whole lifetime, absolute");
    assert!(json.get("expires_in").is_none());

    // A later run loads them and uses them as they were.
    clock.advance(Duration::from_secs(60));
    let again = srv
        .client_builder()
        .clock(clock.clone())
        .store(column.clone())
        .build()
        .unwrap();
    let ms = |t: Tokens| {
        let at = t.expires_at().unwrap();
        at.duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis()
    };
    assert_eq!(ms(again.tokens().unwrap()), ms(client.tokens().unwrap()));
    let mut r = again.get("me").call().unwrap();
    assert_eq!(body_json(&mut r)["token"], "at-2");
    assert_eq!(srv.refreshes(), 1);
}
