//! Issue 10, item 7: the token file, its temporary file and its lock file are never opened
//! through a symlink and must be regular files (a FIFO is a clear error, never a hang); a
//! token file other users can read or write, and a directory other users can write to, are
//! refused with an error naming the path and its mode (like ssh's StrictModes).
#![cfg(unix)]

use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::process::Command;

use crate::harness::fixtures::TempDir;
use crate::harness::observe::{body_json, must_not_block};
use crate::harness::servers::TokenServer;
use tokengate::{Error, FileStore, TokenStore, Tokens};

fn tokens() -> Tokens {
    Tokens::new("SECRET-access").with_refresh_token("SECRET-refresh")
}

fn mkfifo(path: &Path) {
    let ok = Command::new("mkfifo").arg(path).status().unwrap().success();
    assert!(ok, "mkfifo {}", path.display());
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn a_symlink_at_the_token_path_is_refused_not_followed() {
    let dir = TempDir::new("hygiene-symlink");
    let elsewhere = dir.path("elsewhere.json");
    FileStore::new(&elsewhere).unwrap().save(&tokens()).unwrap();
    let path = dir.path("tokens.json");
    symlink(&elsewhere, &path).unwrap();
    let store = FileStore::new(&path).unwrap();
    let e = store.load().unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput, "{e}");
    assert!(e.to_string().contains("symbolic link: refusing"), "{e}");
    assert!(e.to_string().contains("tokens.json"), "{e}");
    assert!(!e.to_string().contains("SECRET"), "{e}");

    // The client refuses to start on it, and a login replaces the link, not its target.
    let srv = TokenServer::start();
    let built = srv
        .client_builder()
        .store(FileStore::new(&path).unwrap())
        .build();
    assert!(matches!(built, Err(Error::Store(_))), "{built:?}");
    store.save(&Tokens::new("new")).unwrap();
    assert!(!std::fs::symlink_metadata(&path).unwrap().is_symlink());
    let target = FileStore::new(&elsewhere).unwrap().load().unwrap().unwrap();
    assert_eq!(target.access_token().secret(), "SECRET-access");
}

#[test]
fn a_symlink_at_the_lock_or_temporary_path_is_refused() {
    let dir = TempDir::new("hygiene-symlink-lock");
    let path = dir.path("tokens.json");
    let victim = dir.path("victim");
    std::fs::write(&victim, "do not touch").unwrap();
    symlink(&victim, dir.path("tokens.json.lock")).unwrap();
    let e = FileStore::new(&path).unwrap().save(&tokens()).unwrap_err();
    assert!(e.to_string().contains("lock file"), "{e}");
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput, "{e}");
    assert!(e.to_string().contains("symbolic link: refusing"), "{e}");
    std::fs::remove_file(dir.path("tokens.json.lock")).unwrap();

    symlink(&victim, dir.path("tokens.json.tmp")).unwrap();
    // A leftover temporary path is removed (the link itself), never written through.
    FileStore::new(&path).unwrap().save(&tokens()).unwrap();
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "do not touch");
}

#[test]
fn a_fifo_at_the_token_or_lock_path_is_an_error_not_a_hang() {
    let dir = TempDir::new("hygiene-fifo");
    let path = dir.path("tokens.json");
    mkfifo(&path);
    let p = path.clone();
    let e = must_not_block("loading a FIFO", move || {
        FileStore::new(&p).unwrap().load().unwrap_err()
    });
    assert!(e.to_string().contains("not a regular file"), "{e}");

    // A running client whose file is replaced by a FIFO: every request fails at once.
    std::fs::remove_file(&path).unwrap();
    let srv = TokenServer::start();
    let client = srv
        .client_builder()
        .store(FileStore::new(&path).unwrap())
        .tokens(srv.login())
        .build()
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    mkfifo(&path);
    let c = client.clone();
    let err = must_not_block("a request", move || c.get("items").call().unwrap_err());
    assert!(matches!(err, Error::Store(_)), "{err:?}");

    let lock_dir = TempDir::new("hygiene-fifo-lock");
    mkfifo(&lock_dir.path("tokens.json.lock"));
    let p = lock_dir.path("tokens.json");
    let e = must_not_block("saving with a FIFO lock file", move || {
        FileStore::new(&p).unwrap().save(&tokens()).unwrap_err()
    });
    assert!(e.to_string().contains("not a regular file"), "{e}");
}

#[test]
fn a_token_file_other_users_can_read_or_write_is_refused_with_its_path_and_mode() {
    let dir = TempDir::new("hygiene-file-mode");
    let path = dir.path("tokens.json");
    let store = FileStore::new(&path).unwrap();
    store.save(&tokens()).unwrap();
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    for mode in [0o644, 0o640, 0o604, 0o620, 0o602] {
        chmod(&path, mode);
        let e = store.load().unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied, "{mode:o}");
        let msg = e.to_string();
        assert!(msg.contains(&format!("{mode:04o}")), "{msg}");
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(!msg.contains("SECRET"), "{msg}");
    }
    chmod(&path, 0o400); // read-only for its owner is private
    assert!(store.load().unwrap().is_some());
}

#[test]
fn a_directory_other_users_can_write_to_is_refused() {
    for mode in [0o777, 0o775, 0o757, 0o1777] {
        let dir = TempDir::new(&format!("hygiene-dir-{mode:o}"));
        chmod(&dir.0, mode);
        let Err(Error::Store(e)) = FileStore::new(dir.path("tokens.json")) else {
            panic!("{mode:o}: expected Error::Store");
        };
        assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied, "{mode:o}");
        assert!(e.to_string().contains(&format!("{mode:04o}")), "{e}");
        assert!(e.to_string().contains(&dir.0.display().to_string()), "{e}");
    }
    // The usual modes of a config directory are fine.
    for mode in [0o755, 0o750, 0o700] {
        let dir = TempDir::new(&format!("hygiene-dir-ok-{mode:o}"));
        chmod(&dir.0, mode);
        let store = FileStore::new(dir.path("tokens.json")).unwrap();
        store.save(&tokens()).unwrap();
        assert!(store.load().unwrap().is_some());
    }
}

#[test]
fn a_directory_opened_up_after_the_store_was_made_stops_writes() {
    let dir = TempDir::new("hygiene-dir-later");
    let store = FileStore::new(dir.path("tokens.json")).unwrap();
    store.save(&tokens()).unwrap();
    chmod(&dir.0, 0o777);
    let e = store.save(&tokens()).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied);
}

/// A file that appeared while the directory was open to others is not read (it may be
/// theirs): the client keeps its tokens and the request fails with the directory's error;
/// once the directory is private again, the next read adopts the file.
#[test]
fn a_directory_opened_up_after_the_store_was_made_stops_reads() {
    let srv = TokenServer::start();
    let dir = TempDir::new("hygiene-dir-later-read");
    let path = dir.path("tokens.json");
    let client = srv
        .client_builder()
        .store(FileStore::new(&path).unwrap())
        .tokens(srv.login()) // at-1
        .build()
        .unwrap();
    // A new file at the token path (another process's login) while the directory is open.
    FileStore::new(&path).unwrap().save(&srv.login()).unwrap(); // at-2
    chmod(&dir.0, 0o777);
    match FileStore::new(&path) {
        Err(Error::Store(e)) => assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied),
        other => panic!("expected the directory's error, got {other:?}"),
    }
    match client.get("items").call() {
        Err(Error::Store(e)) => {
            assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied);
            assert!(e.to_string().contains("0777"), "{e}");
        }
        other => panic!("expected the directory's error, got {other:?}"),
    }
    assert_eq!(client.tokens().unwrap().access_token().secret(), "at-1");

    chmod(&dir.0, 0o755);
    let mut r = client.get("items").call().unwrap();
    assert_eq!(body_json(&mut r)["token"], "at-2");
}

#[test]
fn a_logout_that_cannot_remove_what_is_at_the_token_path_says_so() {
    // Here a directory, which `unlink` refuses: the logout reports it instead of claiming
    // the tokens are gone.
    let dir = TempDir::new("dir-at-path");
    let path = dir.path("tokens.json");
    std::fs::create_dir(&path).unwrap();
    let e = FileStore::new(&path).unwrap().clear().unwrap_err();
    assert!(e.to_string().contains("could not remove token file"), "{e}");
    assert!(path.is_dir());
}
