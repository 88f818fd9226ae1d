//! The browser login's paste path, for a browser on another machine: the address the
//! browser ended on (its `state` checked, as the listener checks it) or the bare code,
//! read from a reader raced against the listener, or given to `complete`.

use std::io::Cursor;
use std::sync::Arc;

use tokengate::login::BrowserError;
use tokengate::testing::{Grant, Outcome, TestServer};

use crate::browser::{browser_error, flow, one_code_exchange, query_of, ChannelReader, Watcher};

/// Lines that are not this login's address are answered and the wait goes on; the address
/// pasted then logs in. Nothing the user pasted is echoed.
#[test]
fn a_pasted_address_logs_in_after_lines_that_are_not_it() {
    let srv = TestServer::start();
    let other = flow(&srv).start().unwrap();
    let other_redirect = srv.authorize(other.authorization_url()).unwrap();
    let pending = flow(&srv).start().unwrap();
    let redirect_uri = pending.redirect_uri().to_owned();
    let redirect = srv.authorize(pending.authorization_url()).unwrap();
    let q = query_of(&redirect);
    let input = Cursor::new(format!(
        "this is not it\n\n{other_redirect}\n  {redirect}  \nlater line\n"
    ));
    let mut out = Vec::new();
    let tokens = pending.wait_or_paste(input, &mut out).unwrap();
    assert_eq!(tokens.access_token().secret(), "at-1");
    one_code_exchange(&srv, 1);

    let out = String::from_utf8(out).unwrap();
    assert!(
        out.contains(&format!("(it starts with {redirect_uri})")),
        "{out}"
    );
    assert_eq!(out.matches("That is not it").count(), 2, "{out}");
    assert!(
        out.contains("That is not it: not a redirect URL with a code, nor a code."),
        "{out}"
    );
    assert!(
        out.contains("That is not it: the redirect URL belongs to another login"),
        "{out}"
    );
    for value in [&q["code"], &q["state"], &query_of(&other_redirect)["code"]] {
        assert!(!out.contains(value.as_str()), "{value} in {out}");
    }
    drop(other);
}

/// A pasted error address with this login's `state` ends the wait with the refusal.
#[test]
fn a_pasted_error_address_is_the_refusal() {
    let srv = TestServer::start();
    srv.deny_next_authorizations(1);
    let pending = flow(&srv).start().unwrap();
    let redirect = srv.authorize(pending.authorization_url()).unwrap();
    let mut out = Vec::new();
    let e = browser_error(pending.wait_or_paste(Cursor::new(format!("{redirect}\n")), &mut out));
    assert!(e.is_access_denied(), "{e:?}");
    assert_eq!(srv.token_calls().len(), 0);
}

/// A pasted error address whose description echoes the login's `state` is the refusal, the
/// `state` hidden from its message and `Debug` (as the listener hides it).
#[test]
fn a_pasted_refusal_echoing_the_state_does_not_show_it() {
    let srv = TestServer::start();
    let pending = flow(&srv).start().unwrap();
    let state = query_of(pending.authorization_url())["state"].clone();
    let pasted = format!(
        "{}?error=access_denied&error_description=denied+for+{state}&state={state}",
        pending.redirect_uri()
    );
    let e = browser_error(pending.complete(&pasted));
    assert!(e.is_access_denied(), "{e:?}");
    assert!(!e.to_string().contains(&state), "{e}");
    assert!(!format!("{e:?}").contains(&state), "{e:?}");
    assert_eq!(srv.token_calls().len(), 0);
}

/// `complete` takes the bare code (its PKCE verifier still ties it to this login) or the
/// address; another login's address is `StateMismatch`, anything else `NotARedirect`;
/// neither sends anything.
#[test]
fn complete_takes_a_bare_code_and_refuses_another_logins_address() {
    let srv = TestServer::start();
    let pending = flow(&srv).start().unwrap();
    let redirect = srv.authorize(pending.authorization_url()).unwrap();
    let code = query_of(&redirect)["code"].clone();
    let tokens = pending.complete(&code).unwrap();
    assert_eq!(tokens.access_token().secret(), "at-1");
    one_code_exchange(&srv, 1);

    let mine = flow(&srv).start().unwrap();
    let theirs = flow(&srv).start().unwrap();
    let their_redirect = srv.authorize(theirs.authorization_url()).unwrap();
    let e = browser_error(mine.complete(&their_redirect));
    assert!(matches!(e, BrowserError::StateMismatch), "{e:?}");
    assert!(!e.to_string().contains(&query_of(&their_redirect)["state"]));
    for nothing in [
        "",
        "   ",
        "two words",
        "http://127.0.0.1:1/callback?state=x",
    ] {
        let pending = flow(&srv).start().unwrap();
        let e = browser_error(pending.complete(nothing));
        assert!(
            matches!(e, BrowserError::NotARedirect),
            "{nothing:?}: {e:?}"
        );
    }
    assert_eq!(srv.token_calls().len(), 1);

    // A bare code has no state: its PKCE verifier ties it to its login. Another login's
    // code pasted bare is refused by the server, and stays good for its own login.
    let theirs = flow(&srv).start().unwrap();
    let their_redirect = srv.authorize(theirs.authorization_url()).unwrap();
    let their_code = query_of(&their_redirect)["code"].clone();
    let e = browser_error(flow(&srv).start().unwrap().complete(&their_code));
    assert!(
        matches!(&e, BrowserError::OAuth { error, .. } if error == "invalid_grant"),
        "{e:?}"
    );
    assert!(!e.to_string().contains(&their_code), "{e}");
    assert_eq!(srv.token_calls().len(), 2);
    theirs.complete(&their_redirect).unwrap();
    assert_eq!(srv.token_calls().len(), 3);
}

/// The listener wins while the paste reader blocks (a person who types nothing): the wait
/// does not wait for the reader; a line typed afterwards changes nothing.
#[test]
fn the_listener_wins_while_the_paste_reader_blocks() {
    let srv = TestServer::start();
    let pending = flow(&srv).start().unwrap();
    let url = pending.authorization_url().to_owned();
    let (typing, reader) = ChannelReader::new();
    let mut opened = 0;
    let mut out = Watcher::new(|line| {
        // The browser comes back once the prompt for a paste is shown: during the wait.
        if line.contains("paste here") {
            opened += 1;
            assert_eq!(srv.open_in_browser(&url).unwrap(), 200);
        }
    });
    let tokens = pending.wait_or_paste(reader, &mut out).unwrap();
    assert_eq!(tokens.access_token().secret(), "at-1");
    assert!(!out.text().contains("That is not it"), "{}", out.text());
    drop(out);
    assert_eq!(opened, 1);
    typing.send("code-1\n".to_owned()).unwrap();
    drop(typing);
    one_code_exchange(&srv, 1);
}

/// A word pasted by mistake is tried as a bare code: the server refuses it (one
/// `invalid_grant` exchange), the user is told, and the login goes on. A line over 16 KiB is
/// skipped whole (never read as a code), and answered; then the browser comes back to the
/// listener and logs in.
#[test]
fn a_refused_bare_code_or_an_overlong_line_does_not_end_the_login() {
    let srv = Arc::new(TestServer::start());
    let pending = flow(&srv).start().unwrap();
    let url = pending.authorization_url().to_owned();
    let input = Cursor::new(format!("y\n{}\n", "a".repeat(20_000)));
    let user = srv.clone();
    let mut out = Watcher::new(move |line: &str| {
        // The second line answered: the user now uses the browser.
        if line.starts_with("That is not it: not a redirect") {
            assert_eq!(user.open_in_browser(&url).unwrap(), 200);
        }
    });
    let tokens = pending.wait_or_paste(input, &mut out).unwrap();
    assert_eq!(tokens.access_token().secret(), "at-1");
    let text = out.text();
    assert_eq!(
        text.matches("That code did not log in").count(),
        1,
        "{text}"
    );
    assert_eq!(text.matches("That is not it").count(), 1, "{text}");
    let calls = srv.token_calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert!(calls.iter().all(|c| c.grant == Grant::AuthorizationCode));
    assert!(!matches!(calls[0].outcome, Outcome::Issued(_)), "{calls:?}");
    assert!(matches!(calls[1].outcome, Outcome::Issued(_)), "{calls:?}");
}
