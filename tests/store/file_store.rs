//! FileStore in one process: the file format, permissions, corrupt files, changes made by
//! another store on the same file (standing in for another process: separate `FileStore`s
//! coordinate through the file and the lock file exactly as processes do), and the lock.
//! The multi-process and crash tests are in `file_store_multiprocess.rs` and
//! `file_store_crash.rs` (next to this file).

use std::io;
use std::path::Path;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::harness::fixtures::{id_token_of, Forwarding, TempDir};
use crate::harness::observe::body_json;
use crate::harness::servers::TokenServer;
use tokengate::{Error, FileStore, TokenStore, Tokens};

fn ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

fn full_tokens(n: u32) -> Tokens {
    Tokens::new(format!("access-{n}"))
        .with_refresh_token(format!("refresh-{n}"))
        .with_expires_at(ms(1_767_225_600_000 + u64::from(n)))
        .with_scope("read write")
}

/// Writes `content` to `path` as a user editing the file would, keeping it private (0600):
/// a file other users can read is refused before its content is looked at.
fn write_private(path: &Path, content: impl AsRef<[u8]>) {
    std::fs::write(path, content).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
}

fn access(t: &Option<Tokens>) -> Option<String> {
    t.as_ref().map(|t| t.access_token().secret().to_owned())
}

/// The access token the test API saw on a successful request.
fn token_seen_by_api(client: &tokengate::AuthClient) -> String {
    let mut resp = client.get("items").call().expect("request succeeds");
    body_json(&mut resp)["token"].as_str().unwrap().to_owned()
}

#[test]
fn saved_tokens_round_trip_through_a_versioned_json_file() {
    let dir = TempDir::new("file_store-round-trip");
    let path = dir.path("tokens.json");
    let store = FileStore::new(&path).unwrap();
    assert_eq!(store.path(), path);
    assert_eq!(store.lock_path(), dir.path("tokens.json.lock"));
    assert!(store.load().unwrap().is_none(), "no file: no tokens");

    store.save(&full_tokens(1)).unwrap();
    let raw: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(
        raw,
        serde_json::json!({
            "version": 1,
            "access_token": "access-1",
            "token_type": "Bearer",
            "refresh_token": "refresh-1",
            "expires_at_unix_ms": 1_767_225_600_001u64,
            "scope": "read write",
        })
    );

    // A second store (another process) reads exactly what was saved.
    let t = FileStore::new(&path).unwrap().load().unwrap().unwrap();
    assert_eq!(t.access_token().secret(), "access-1");
    assert_eq!(t.refresh_token().unwrap().secret(), "refresh-1");
    assert_eq!(t.expires_at(), Some(ms(1_767_225_600_001)));
    assert_eq!(t.scope(), Some("read write"));

    // Optional fields are optional; a relative expires_in is stamped when saved.
    let before = SystemTime::now();
    store
        .save(&Tokens::new("bare").with_expires_in(Duration::from_secs(600)))
        .unwrap();
    let raw: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    // version, access_token, token_type, expires_at_unix_ms, issued_at_unix_ms
    assert_eq!(raw.as_object().unwrap().len(), 5, "{raw}");
    let t = store.load().unwrap().unwrap();
    assert!(t.refresh_token().is_none() && t.scope().is_none());
    let at = t.expires_at().unwrap();
    assert!(
        at >= before + Duration::from_secs(599)
            && at <= SystemTime::now() + Duration::from_secs(600)
    );

    // Unknown fields (a later minor addition) are ignored.
    write_private(
        &path,
        r#"{"version":1,"access_token":"x","future_field":{"a":[1]}}"#,
    );
    assert_eq!(access(&store.load().unwrap()).as_deref(), Some("x"));

    // clear removes the file; clearing again is fine.
    store.clear().unwrap();
    assert!(!path.exists());
    store.clear().unwrap();
    assert!(store.load().unwrap().is_none());
    assert!(
        !dir.path("tokens.json.tmp").exists(),
        "no temporary file is left behind"
    );
}

/// Issue 24: the token type is kept in the file. A file written before it was (today's
/// format 1 without `token_type`, byte for byte as that version wrote it) still loads, as
/// Bearer, and its token is presented as such; the next write adds the field, and a type
/// tokengate cannot present is refused like any invalid field.
#[test]
fn a_token_file_without_a_token_type_still_loads_and_the_type_round_trips() {
    let dir = TempDir::new("file_store-token-type");
    let path = dir.path("tokens.json");
    let srv = TokenServer::start();
    let login = srv.login();
    let written_before = format!(
        "{{\n  \"version\": 1,\n  \"access_token\": \"{}\",\n  \"refresh_token\": \"{}\",\n  \"expires_at_unix_ms\": 4102444800000,\n  \"issued_at_unix_ms\": 4102441200000,\n  \"lineage\": \"3f6c0a9e41d27b58\"\n}}\n",
        login.access_token().secret(),
        login.refresh_token().unwrap().secret(),
    );
    write_private(&path, &written_before);
    let store = FileStore::new(&path).unwrap();
    let t = store.load().unwrap().unwrap();
    assert_eq!(t.token_type(), "Bearer");
    assert_eq!(t.lineage().unwrap().to_string(), "3f6c0a9e41d27b58");
    let client = srv
        .client_builder()
        .store(FileStore::new(&path).unwrap())
        .build()
        .unwrap();
    // The test API takes only `Authorization: Bearer <token>`.
    assert_eq!(token_seen_by_api(&client), "at-1");

    // Written again (a refresh), the file says its type, and reads back the same.
    srv.revoke_access_tokens();
    assert_eq!(token_seen_by_api(&client), "at-2");
    let raw: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(raw["token_type"], "Bearer", "{raw}");
    assert_eq!(raw["access_token"], "at-2");
    let t = FileStore::new(&path).unwrap().load().unwrap().unwrap();
    assert_eq!(t.token_type(), "Bearer");
    assert_eq!(t.access_token().secret(), "at-2");

    // Another type is refused, quoting nothing.
    write_private(
        &path,
        r#"{"version":1,"access_token":"SECRET-1","token_type":"mac"}"#,
    );
    let e = FileStore::new(&path).unwrap().load().unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    let text = e.to_string();
    assert!(text.contains("\"token_type\""), "{text}");
    assert!(!text.contains("SECRET"), "{text}");
}

/// Issue 25: the OpenID Connect ID token is kept in the file. A file written before it was
/// (today's format 1 without `id_token`, byte for byte as that version wrote it) still
/// loads, as without one; a login's ID token (~4 KB) round-trips, says who is logged in,
/// and survives a refresh whose response has none.
#[test]
fn a_token_file_without_an_id_token_still_loads_and_the_id_token_round_trips() {
    let dir = TempDir::new("file_store-id-token");
    let path = dir.path("tokens.json");
    let written_before = "{\n  \"version\": 1,\n  \"access_token\": \"at-old\",\n  \"token_type\": \"Bearer\",\n  \"refresh_token\": \"rt-old\",\n  \"expires_at_unix_ms\": 4102444800000,\n  \"issued_at_unix_ms\": 4102441200000,\n  \"scope\": \"openid email\",\n  \"lineage\": \"3f6c0a9e41d27b58\"\n}\n";
    write_private(&path, written_before);
    let t = FileStore::new(&path).unwrap().load().unwrap().unwrap();
    assert!(t.id_token().is_none());
    assert_eq!(t.access_token().secret(), "at-old");
    assert_eq!(t.scope(), Some("openid email"));
    assert_eq!(t.lineage().unwrap().to_string(), "3f6c0a9e41d27b58");
    // Tokens without an ID token are written exactly as before.
    FileStore::new(&path).unwrap().save(&t).unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), written_before);

    // A login with an ID token: saved, and read back by another store.
    let id_token = id_token_of("alice@example.com");
    assert!(
        (3_500..6_000).contains(&id_token.len()),
        "{}",
        id_token.len()
    );
    let srv = TokenServer::start();
    let client = srv
        .client_builder()
        .store(FileStore::new(&path).unwrap())
        .build()
        .unwrap();
    client
        .set_tokens(srv.login().with_id_token(id_token.clone()))
        .unwrap();
    let raw: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(raw["id_token"], id_token.as_str());
    let t = FileStore::new(&path).unwrap().load().unwrap().unwrap();
    let claims = t.id_token().unwrap().unverified_claims().unwrap();
    assert_eq!(claims.email(), Some("alice@example.com"));

    // A refresh (the test server's response has no id_token) keeps it, in memory and on disk.
    srv.revoke_access_tokens();
    assert_eq!(token_seen_by_api(&client), "at-2");
    assert_eq!(srv.refreshes(), 1);
    let raw: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(raw["access_token"], "at-2");
    assert_eq!(raw["id_token"], id_token.as_str());
    let held = client.tokens().unwrap();
    assert_eq!(held.id_token().unwrap().secret(), id_token);
    let t = FileStore::new(&path).unwrap().load().unwrap().unwrap();
    assert_eq!(t.id_token().unwrap().secret(), id_token);
}

#[test]
fn tokens_that_cannot_be_stored_are_refused_and_nothing_is_written() {
    let dir = TempDir::new("file_store-refuse");
    let path = dir.path("tokens.json");
    let store = FileStore::new(&path).unwrap();
    for bad in [
        Tokens::new("has space"),
        Tokens::new(""),
        Tokens::new("ok").with_refresh_token("SECRET\nX-Evil: 1"),
    ] {
        let e = store.save(&bad).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(!e.to_string().contains("SECRET"), "{e}");
        assert!(!path.exists());
    }
    assert!(
        FileStore::new(dir.path("..")).is_err(),
        "a path must name a file"
    );
    let debug = format!("{store:?}");
    assert!(debug.contains("tokens.json"), "{debug}");
}

#[cfg(unix)]
#[test]
fn file_and_lock_file_are_0600_and_a_missing_directory_is_created_0700() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;

    let dir = TempDir::new("file_store-perms");
    let nested = dir.path("a/b");
    let path = nested.join("tokens.json");
    let store = FileStore::new(&path).unwrap();
    assert_eq!(mode(&nested), 0o700);
    assert_eq!(mode(&dir.path("a")), 0o700);
    store.save(&full_tokens(1)).unwrap();
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(store.lock_path()), 0o600);

    // A file that someone made world-readable is replaced by a private one on the next save.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    store.save(&full_tokens(2)).unwrap();
    assert_eq!(mode(&path), 0o600);

    // An existing directory is left as it is.
    let open_dir = dir.path("shared");
    std::fs::create_dir(&open_dir).unwrap();
    std::fs::set_permissions(&open_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    FileStore::new(open_dir.join("t.json"))
        .unwrap()
        .save(&full_tokens(3))
        .unwrap();
    assert_eq!(mode(&open_dir), 0o755);
    assert_eq!(mode(&open_dir.join("t.json")), 0o600);
}

/// Each bad file gives a clear `InvalidData` error naming the file and never the secret
/// values in it, and the file is left exactly as it was.
#[test]
fn corrupt_files_are_clear_errors_without_secrets_and_are_left_alone() {
    let dir = TempDir::new("file_store-corrupt");
    let path = dir.path("tokens.json");
    let big = format!(
        r#"{{"version":1,"access_token":"SECRET","pad":"{}"}}"#,
        "x".repeat(300 * 1024)
    );
    let cases: &[(&str, &str)] = &[
        ("", "ends early"),
        ("{\"version\":1,\"access_token\":\"SECRET-a", "ends early"),
        ("SECRET garbage", "not valid JSON"),
        ("[\"SECRET\"]", "not a JSON object"),
        (r#"{"access_token":"SECRET"}"#, "no \"version\""),
        (
            r#"{"version":2,"access_token":"SECRET"}"#,
            "format version 2",
        ),
        (r#"{"version":"SECRET"}"#, "\"version\" that is not"),
        (
            r#"{"version":1,"refresh_token":"SECRET"}"#,
            "no \"access_token\"",
        ),
        (
            r#"{"version":1,"access_token":5}"#,
            "\"access_token\" that is not a string",
        ),
        (
            r#"{"version":1,"access_token":"SECRET","expires_at_unix_ms":"SECRET-b"}"#,
            "\"expires_at_unix_ms\"",
        ),
        (
            r#"{"version":1,"access_token":"SECRET","expires_at_unix_ms":-1}"#,
            "\"expires_at_unix_ms\"",
        ),
        (
            r#"{"version":1,"access_token":"SECRET","refresh_token":"SECRET two"}"#,
            "invalid refresh token",
        ),
        (
            r#"{"version":1,"access_token":"SECRET\n"}"#,
            "invalid access token",
        ),
        (&big, "larger than"),
    ];
    for (content, expected) in cases {
        write_private(&path, content);
        let store = FileStore::new(&path).unwrap();
        let e = store.load().unwrap_err();
        let msg = e.to_string();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{msg}");
        assert!(msg.contains(expected), "{content:.60}: {msg}");
        assert!(msg.contains("tokens.json"), "{msg}");
        assert!(!msg.contains("SECRET"), "{msg}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), *content);
    }

    // A directory where the file should be.
    std::fs::remove_file(&path).unwrap();
    std::fs::create_dir(&path).unwrap();
    let e = FileStore::new(&path).unwrap().load().unwrap_err();
    assert!(e.to_string().contains("not a regular file"), "{e}");
}

#[test]
fn a_corrupt_file_fails_build_with_a_store_error_and_is_not_overwritten() {
    let srv = TokenServer::start();
    let dir = TempDir::new("file_store-corrupt-build");
    let path = dir.path("tokens.json");
    write_private(&path, "{\"version\":1,\"access_token\":\"SECRET");
    let err = srv
        .client_builder()
        .store(FileStore::new(&path).unwrap())
        .build()
        .unwrap_err();
    let Error::Store(source) = &err else {
        panic!("expected Error::Store, got {err:?}");
    };
    assert_eq!(source.kind(), io::ErrorKind::InvalidData);
    let text = format!("{err}: {source} / {err:?}");
    assert!(!text.contains("SECRET"), "{text}");
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "{\"version\":1,\"access_token\":\"SECRET"
    );
}

#[test]
fn a_file_corrupted_while_running_fails_requests_until_the_user_decides() {
    let srv = TokenServer::start();
    let dir = TempDir::new("file_store-corrupt-running");
    let path = dir.path("tokens.json");
    let client = srv
        .client_builder()
        .store(FileStore::new(&path).unwrap())
        .tokens(srv.login())
        .build()
        .unwrap();
    assert_eq!(token_seen_by_api(&client), "at-1");

    write_private(&path, "not json");
    for _ in 0..2 {
        match client.get("items").call() {
            Err(Error::Store(e)) => assert_eq!(e.kind(), io::ErrorKind::InvalidData),
            other => panic!("expected Error::Store, got {other:?}"),
        }
    }
    // A refresh would need the file: it is not attempted, and the file is not touched.
    srv.revoke_access_tokens();
    assert!(matches!(client.get("items").call(), Err(Error::Store(_))));
    assert_eq!(srv.refreshes(), 0);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "not json");

    // Deleting the bad file is a decision too: no file, no tokens.
    std::fs::remove_file(&path).unwrap();
    assert!(matches!(client.get("items").call(), Err(Error::NoTokens)));

    // So is a new login: it replaces a bad file, and requests work again.
    write_private(&path, "{}");
    assert!(matches!(client.get("items").call(), Err(Error::Store(_))));
    client.set_tokens(srv.login()).unwrap();
    assert_eq!(token_seen_by_api(&client), "at-2");
    assert_eq!(
        access(&FileStore::new(&path).unwrap().load().unwrap()).as_deref(),
        Some("at-2")
    );
}

#[test]
fn a_login_or_logout_by_another_process_is_picked_up_on_the_next_request() {
    let srv = TokenServer::start();
    let dir = TempDir::new("file_store-external");
    let path = dir.path("tokens.json");
    let a = srv
        .client_builder()
        .store(FileStore::new(&path).unwrap())
        .tokens(srv.login())
        .build()
        .unwrap();
    let b = srv
        .client_builder()
        .store(FileStore::new(&path).unwrap())
        .build()
        .unwrap();
    assert_eq!(token_seen_by_api(&b), "at-1", "b loaded a's tokens");

    a.set_tokens(srv.login()).unwrap();
    assert_eq!(token_seen_by_api(&b), "at-2");

    a.clear_tokens().unwrap();
    assert!(!path.exists());
    assert!(matches!(b.get("items").call(), Err(Error::NoTokens)));
    assert!(b.tokens().is_none());

    a.set_tokens(srv.login()).unwrap();
    assert_eq!(token_seen_by_api(&b), "at-3");
    assert_eq!(srv.refreshes(), 0);
}

#[test]
fn a_refresh_by_another_process_is_adopted_instead_of_repeated() {
    let srv = TokenServer::start();
    let dir = TempDir::new("file_store-adopt");
    let path = dir.path("tokens.json");
    let a = srv
        .client_builder()
        .store(FileStore::new(&path).unwrap())
        .tokens(srv.login())
        .build()
        .unwrap();
    let b = srv
        .client_builder()
        .store(FileStore::new(&path).unwrap())
        .build()
        .unwrap();
    // `c` never hears of changes before a request: only the re-read under the refresh lock
    // can save it from refreshing with a refresh token that was already rotated.
    let c = srv.client_builder().store(no_poll(&path)).build().unwrap();
    assert_eq!(token_seen_by_api(&c), "at-1");

    srv.revoke_access_tokens();
    assert_eq!(token_seen_by_api(&a), "at-2", "a refreshed after the 401");
    assert_eq!(srv.refreshes(), 1);
    assert_eq!(
        token_seen_by_api(&b),
        "at-2",
        "b saw the new file before sending"
    );
    assert_eq!(
        token_seen_by_api(&c),
        "at-2",
        "c got a 401, took the lock, found at-2 and adopted it"
    );
    assert_eq!(srv.refreshes(), 1);
    assert_eq!(srv.reuse_detected(), 0);
    assert_eq!(srv.api_401s(), 2, "a's and c's requests with at-1");
}

/// A shared store that forwards everything (its lock too) but never reports external
/// changes: what another process did is first seen under the lock. Like a store of your own
/// that leaves out `poll` and `lock_timeout`.
fn no_poll(path: &Path) -> Forwarding<FileStore> {
    Forwarding::new(FileStore::new(path).unwrap())
        .no_poll()
        .no_lock_timeout()
}

#[test]
fn a_poll_reports_exactly_the_revisions_other_than_the_callers() {
    let dir = TempDir::new("file_store-poll");
    let path = dir.path("tokens.json");
    let mine = FileStore::new(&path).unwrap();
    let other = FileStore::new(&path).unwrap();
    let absent = mine.poll(None).unwrap().expect("the current record");
    assert!(absent.tokens().is_none());
    assert!(mine.poll(Some(absent.revision())).unwrap().is_none());

    let mut seen = absent.revision();
    for n in 1..=20 {
        let mut lock = mine.lock().unwrap().unwrap();
        assert_eq!(
            lock.stored().unwrap().revision(),
            seen,
            "read under the lock"
        );
        seen = lock.write(Some(&full_tokens(n))).unwrap();
        drop(lock);
        assert!(mine.poll(Some(seen)).unwrap().is_none(), "own write {n}");
    }
    other.save(&full_tokens(21)).unwrap();
    let changed = mine.poll(Some(seen)).unwrap().expect("a change");
    assert_eq!(
        access(&changed.tokens().cloned()).as_deref(),
        Some("access-21")
    );
    assert_ne!(changed.revision(), seen);
    assert!(
        mine.poll(Some(changed.revision())).unwrap().is_none(),
        "reported until the caller knows it"
    );
    // The same bytes are the same revision, whoever wrote them.
    assert_eq!(
        other.poll(None).unwrap().unwrap().revision(),
        changed.revision()
    );

    other.clear().unwrap();
    let gone = mine
        .poll(Some(changed.revision()))
        .unwrap()
        .expect("a logout");
    assert!(gone.tokens().is_none());
    assert_eq!(gone.revision(), absent.revision());
}

#[test]
fn lock_waits_for_the_holder_and_reads_the_file_under_the_lock() {
    let dir = TempDir::new("file_store-lock-wait");
    let path = dir.path("tokens.json");
    let first = FileStore::new(&path).unwrap();
    let second = FileStore::new(&path).unwrap();
    first.save(&full_tokens(1)).unwrap();

    let mut held = first.lock().unwrap().unwrap();
    assert_eq!(
        access(&held.stored().unwrap().tokens().cloned()).as_deref(),
        Some("access-1")
    );
    // While it is held, the other store cannot have the lock, however long it is given…
    let impatient = FileStore::new(&path)
        .unwrap()
        .lock_timeout(Duration::from_millis(50));
    assert_eq!(
        impatient.lock().unwrap_err().kind(),
        io::ErrorKind::TimedOut
    );
    let (tx, rx) = mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let lock = second.lock().unwrap().unwrap();
        tx.send(access(&lock.stored().unwrap().tokens().cloned()))
            .unwrap();
    });
    // …and the holder writes its refresh result through its own lock, then releases.
    held.write(Some(&full_tokens(2))).unwrap();
    drop(held);
    let stored = rx.recv_timeout(Duration::from_secs(30)).unwrap();
    assert_eq!(
        stored.as_deref(),
        Some("access-2"),
        "read after the holder's write"
    );
    waiter.join().unwrap();
}

#[test]
fn threads_sharing_one_store_take_its_lock_in_turn() {
    let dir = TempDir::new("file_store-lock-same-store");
    let path = dir.path("tokens.json");
    let store = Arc::new(
        FileStore::new(&path)
            .unwrap()
            .lock_timeout(Duration::from_millis(50)),
    );
    store.save(&full_tokens(1)).unwrap();
    let held = store.lock().unwrap().unwrap();

    // Another thread of this process is refused while the lock is held (bounded, no hang)…
    let s = Arc::clone(&store);
    let refused = std::thread::spawn(move || s.save(&full_tokens(2)).unwrap_err().kind())
        .join()
        .unwrap();
    assert_eq!(refused, io::ErrorKind::TimedOut);
    assert_eq!(access(&store.load().unwrap()).as_deref(), Some("access-1"));
    // …and gets it once it is released.
    drop(held);
    let s = Arc::clone(&store);
    std::thread::spawn(move || s.save(&full_tokens(2)).unwrap())
        .join()
        .unwrap();
    assert_eq!(
        access(&FileStore::new(&path).unwrap().load().unwrap()).as_deref(),
        Some("access-2")
    );
}

#[test]
fn waiting_for_the_lock_is_bounded_by_the_lock_timeout() {
    let dir = TempDir::new("file_store-lock-timeout");
    let path = dir.path("tokens.json");
    let holder = FileStore::new(&path).unwrap();
    holder.save(&full_tokens(1)).unwrap();
    let held = holder.lock().unwrap().unwrap();

    let other = FileStore::new(&path)
        .unwrap()
        .lock_timeout(Duration::from_millis(50));
    let e = other.lock().unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::TimedOut);
    assert!(e.to_string().contains("tokens.json.lock"), "{e}");
    assert_eq!(
        other.save(&full_tokens(9)).unwrap_err().kind(),
        io::ErrorKind::TimedOut
    );
    assert_eq!(other.clear().unwrap_err().kind(), io::ErrorKind::TimedOut);
    drop(held);
    other.save(&full_tokens(9)).unwrap();
    assert_eq!(access(&holder.load().unwrap()).as_deref(), Some("access-9"));
}

#[test]
fn a_leftover_temporary_file_from_a_killed_write_is_ignored_and_replaced() {
    let dir = TempDir::new("file_store-leftover");
    let path = dir.path("tokens.json");
    let store = FileStore::new(&path).unwrap();
    store.save(&full_tokens(1)).unwrap();
    std::fs::write(dir.path("tokens.json.tmp"), "{\"version\":1,\"acc").unwrap();
    assert_eq!(access(&store.load().unwrap()).as_deref(), Some("access-1"));
    store.save(&full_tokens(2)).unwrap();
    assert!(!dir.path("tokens.json.tmp").exists());
    assert_eq!(access(&store.load().unwrap()).as_deref(), Some("access-2"));
}

/// Another process refreshed, but its tokens expired too before anyone refreshed them again
/// (everyone was slow). The client must not adopt and send that dead access token (the retry
/// would draw a second 401 and fail the request): it refreshes with the stored refresh token,
/// which is the newest one, so this is no reuse.
#[test]
fn an_expired_token_found_under_the_refresh_lock_is_refreshed_not_adopted() {
    let srv = TokenServer::start();
    let dir = TempDir::new("file_store-adopt-expired");
    let path = dir.path("tokens.json");
    let first = srv.login(); // at-1 / rt-1
    let c = srv
        .client_builder()
        .store(no_poll(&path))
        .tokens(first)
        .build()
        .unwrap();
    // "Another process" logged in again (rotating rt-1 out) and its at-2 has expired since.
    let second = srv.login();
    let expired = Tokens::new(second.access_token().secret())
        .with_refresh_token(second.refresh_token().unwrap().secret())
        .with_expires_at(SystemTime::now() - Duration::from_secs(1));
    FileStore::new(&path).unwrap().save(&expired).unwrap();
    srv.revoke_access_tokens();

    assert_eq!(token_seen_by_api(&c), "at-3");
    assert_eq!(srv.refreshes(), 1, "one refresh, with rt-2");
    assert_eq!(srv.reuse_detected(), 0);
    assert_eq!(srv.api_401s(), 1, "only the request with at-1");
    assert_eq!(
        access(&FileStore::new(&path).unwrap().load().unwrap()).as_deref(),
        Some("at-3")
    );
}

#[test]
fn a_corrupt_file_replaced_by_another_process_is_read_again_by_the_next_poll() {
    let dir = TempDir::new("file_store-corrupt-replaced");
    let path = dir.path("tokens.json");
    let store = FileStore::new(&path).unwrap();
    write_private(&path, "not json");
    for _ in 0..2 {
        let e = store.poll(None).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
    }
    // Another process (a login) replaces the bad file.
    FileStore::new(&path)
        .unwrap()
        .save(&full_tokens(2))
        .unwrap();
    let stored = store.poll(None).unwrap().unwrap();
    assert_eq!(access(&stored.into_tokens()).as_deref(), Some("access-2"));
}

/// How many of this process's open files are `path` (Linux: through /proc/self/fd).
#[cfg(target_os = "linux")]
fn open_files_at(path: &Path) -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|p| p == path)
        .count()
}

#[cfg(target_os = "linux")]
fn wait_for_open_files_at(path: &Path, n: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while open_files_at(path) != n {
        assert!(
            std::time::Instant::now() < deadline,
            "hang guard: {n} open files"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
#[cfg(target_os = "linux")]
fn a_lock_file_removed_while_a_store_waits_for_it_is_locked_again_where_it_is_now() {
    let dir = TempDir::new("file_store-lock-file-removed");
    let path = dir.path("tokens.json");
    let a = FileStore::new(&path).unwrap();
    let held_a = a.lock().unwrap().unwrap();
    // As /proc shows it: no symlink on the way.
    let lock_path = std::fs::canonicalize(a.lock_path()).unwrap();

    // 1. b waits on the lock file a holds. It is removed (a cleanup) and c makes a new one
    //    and locks it. When a lets go, b's lock is on a file nobody else will ever lock:
    //    it must wait for c's instead (and here gives up, since c keeps it).
    let b = FileStore::new(&path)
        .unwrap()
        .lock_timeout(Duration::from_secs(1));
    let waiting = std::thread::spawn(move || b.lock().map(|held| held.is_some()));
    wait_for_open_files_at(&lock_path, 2); // a's and b's
    std::fs::remove_file(&lock_path).unwrap();
    let held_c = FileStore::new(&path).unwrap().lock().unwrap().unwrap();
    drop(held_a);
    let e = waiting.join().unwrap().unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{e}");

    // 2. d waits on c's lock file, which is removed and not replaced: when c lets go, d
    //    takes the lock on a new lock file at the path.
    let d = FileStore::new(&path).unwrap();
    let waiting = std::thread::spawn(move || d.lock().map(|held| held.is_some()));
    wait_for_open_files_at(&lock_path, 2); // c's and d's
    std::fs::remove_file(&lock_path).unwrap();
    drop(held_c);
    assert!(waiting.join().unwrap().unwrap());
    assert!(lock_path.exists());
}

#[test]
fn the_largest_token_file_read_is_256_kib() {
    // Room for three 16 KiB tokens (access, refresh, ID) several times over; one byte more is
    // not a token file.
    let dir = TempDir::new("file_store-largest-file");
    let path = dir.path("tokens.json");
    let big = Tokens::new("a".repeat(16 * 1024))
        .with_refresh_token("r".repeat(16 * 1024))
        .with_id_token("i".repeat(16 * 1024));
    FileStore::new(&path).unwrap().save(&big).unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.resize(256 * 1024, b' '); // JSON allows trailing white space
    write_private(&path, &bytes);
    let loaded = FileStore::new(&path).unwrap().load().unwrap().unwrap();
    assert_eq!(loaded.access_token().secret().len(), 16 * 1024);
    assert_eq!(loaded.id_token().unwrap().secret().len(), 16 * 1024);

    bytes.push(b' ');
    write_private(&path, &bytes);
    let e = FileStore::new(&path).unwrap().load().unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    assert!(e.to_string().contains("larger than 262144 bytes"), "{e}");
}

#[test]
fn many_threads_taking_one_stores_lock_in_turn_never_give_up_early() {
    // Threads of one process wait for each other on the store's own condition variable; a
    // thread woken while another has just taken the lock goes on waiting (its timeout is far
    // away), it does not report a timeout.
    let dir = TempDir::new("file_store-lock-many-threads");
    let path = dir.path("tokens.json");
    let store = Arc::new(
        FileStore::new(&path)
            .unwrap()
            .lock_timeout(Duration::from_secs(60)),
    );
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                for _ in 0..200 {
                    drop(store.lock().unwrap().unwrap());
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
#[cfg(target_os = "linux")]
fn the_version_of_the_token_file_last_read_is_kept_open() {
    // While a version of the file is the one a poll compares against, it stays open, so its
    // inode number cannot be reused by a later version (which could then look unchanged).
    let dir = TempDir::new("file_store-kept-open");
    let path = dir.path("tokens.json");
    let store = FileStore::new(&path).unwrap();
    store.save(&full_tokens(1)).unwrap();
    let path = std::fs::canonicalize(&path).unwrap();
    assert_eq!(open_files_at(&path), 1, "the version written");
    FileStore::new(&path)
        .unwrap()
        .save(&full_tokens(2))
        .unwrap(); // another process
    let stored = store.poll(None).unwrap().unwrap();
    assert_eq!(access(&stored.into_tokens()).as_deref(), Some("access-2"));
    assert_eq!(
        open_files_at(&path),
        1,
        "the version read, and only that one"
    );
}
