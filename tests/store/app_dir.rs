//! Issue 28: `FileStore::app_dir` and `FileStore::for_app`, a tool's default place for its
//! tokens. Each case runs in a child process whose HOME and XDG_CONFIG_HOME point into a
//! temporary directory (this process's environment is never changed, nor the real home
//! touched); the child checks, the parent checks its exit and what it left on disk.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::harness::fixtures::TempDir;
use crate::harness::observe::{child_test, test_name, ROLE};
use tokengate::{Error, FileStore, TokenStore, Tokens};

const APP: &str = "tokengate-test-cli";

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

/// Runs this file's test `name` as a child in `role`, with HOME `home` and, if given,
/// XDG_CONFIG_HOME `xdg` (else unset), and asserts it succeeded.
fn run_child(name: &str, role: &str, home: &Path, xdg: Option<&Path>) {
    let mut cmd = child_test(name, role);
    // In the temporary directory: a relative path that were wrongly taken lands there.
    cmd.current_dir(home.parent().unwrap())
        .env("HOME", home)
        .env_remove("XDG_CONFIG_HOME");
    if let Some(xdg) = xdg {
        cmd.env("XDG_CONFIG_HOME", xdg);
    }
    finished(cmd, role);
}

/// Runs `cmd` to its end and asserts it succeeded.
fn finished(mut cmd: Command, role: &str) {
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child {role}: {}\n{stdout}",
        out.status
    );
}

/// The child: `for_app` makes the app's directory (0700) where `expected` says, saves tokens
/// there, and a new store of it reads them back.
fn save_and_reload(expected: &Path) {
    let dir = FileStore::app_dir(APP).unwrap();
    assert_eq!(dir, expected.join(APP));
    let store = FileStore::for_app(APP).unwrap();
    assert_eq!(store.path(), dir.join("tokens.json"));
    store
        .save(&Tokens::new("at-app").with_refresh_token("rt-app"))
        .unwrap();
    let again = FileStore::for_app(APP).unwrap().load().unwrap().unwrap();
    assert_eq!(again.access_token().secret(), "at-app");
}

#[test]
fn for_app_keeps_tokens_in_the_users_config_directory() {
    if let Some(role) = std::env::var_os(ROLE) {
        let (home, xdg) = (
            std::env::var_os("HOME"),
            std::env::var_os("XDG_CONFIG_HOME"),
        );
        let expected = match role.to_str() {
            Some("xdg") => PathBuf::from(xdg.unwrap()),
            _ => PathBuf::from(home.unwrap()).join(".config"),
        };
        return save_and_reload(&expected);
    }
    let name = test_name!(for_app_keeps_tokens_in_the_users_config_directory);
    let tmp = TempDir::new("app-dir");
    let (home, xdg) = (tmp.path("home"), tmp.path("xdg"));
    std::fs::create_dir(&home).unwrap();
    // XDG_CONFIG_HOME set and absolute: used, created with its parents.
    run_child(&name, "xdg", &home, Some(&xdg));
    assert_eq!(mode(&xdg.join(APP)), 0o700);
    assert_eq!(mode(&xdg.join(APP).join("tokens.json")), 0o600);
    assert!(!home.join(".config").exists(), "HOME was not used");
    // Unset: $HOME/.config.
    run_child(&name, "home", &home, None);
    assert_eq!(mode(&home.join(".config").join(APP)), 0o700);
    let stored = FileStore::new(home.join(".config").join(APP).join("tokens.json"))
        .unwrap()
        .load()
        .unwrap()
        .unwrap();
    assert_eq!(stored.refresh_token().unwrap().secret(), "rt-app");
    // Relative: ignored, as the XDG specification says.
    std::fs::remove_dir_all(home.join(".config")).unwrap();
    run_child(&name, "home", &home, Some(Path::new("relative/xdg")));
    assert!(home.join(".config").join(APP).join("tokens.json").exists());
    assert!(!tmp.path("relative").exists());
}

#[test]
fn an_app_dir_others_can_write_to_and_a_bad_app_name_are_refused() {
    if std::env::var_os(ROLE).is_some() {
        let dir = PathBuf::from(std::env::var_os("XDG_CONFIG_HOME").unwrap()).join(APP);
        // app_dir uses the existing directory as it is; FileStore refuses it.
        assert_eq!(FileStore::app_dir(APP).unwrap(), dir);
        match FileStore::for_app(APP) {
            Err(Error::Store(e)) => {
                assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied);
                let message = e.to_string();
                assert!(message.contains(&dir.display().to_string()), "{message}");
                assert!(message.contains("0777"), "{message}");
            }
            other => panic!("expected Error::Store, got {other:?}"),
        }
        for bad in [
            "",
            "..",
            ".hidden",
            "a/b",
            "a\\b",
            "nul\0",
            "tab\t",
            &"x".repeat(65),
        ] {
            let e = FileStore::for_app(bad).err();
            assert!(matches!(e, Some(Error::Config(_))), "{bad:?}: {e:?}");
            assert!(matches!(FileStore::app_dir(bad), Err(Error::Config(_))));
        }
        return;
    }
    let tmp = TempDir::new("app-dir-refused");
    let (home, xdg) = (tmp.path("home"), tmp.path("xdg"));
    std::fs::create_dir_all(xdg.join(APP)).unwrap();
    std::fs::set_permissions(xdg.join(APP), std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::create_dir(&home).unwrap();
    let name = test_name!(an_app_dir_others_can_write_to_and_a_bad_app_name_are_refused);
    run_child(&name, "refused", &home, Some(&xdg));
    assert_eq!(mode(&xdg.join(APP)), 0o777, "left as it was");
    assert_eq!(std::fs::read_dir(xdg.join(APP)).unwrap().count(), 0);
    assert_eq!(
        std::fs::read_dir(&home).unwrap().count(),
        0,
        "nothing made for bad names"
    );
    assert_eq!(
        std::fs::read_dir(&xdg).unwrap().count(),
        1,
        "nothing made for bad names"
    );
}

/// No home directory to be found: an error naming HOME, nothing created. (`HOME` set to a
/// relative path: std's `home_dir` returns it, and it counts as none.)
#[test]
fn no_usable_home_is_an_error_naming_home() {
    if std::env::var_os(ROLE).is_some() {
        match FileStore::for_app(APP) {
            Err(Error::Store(e)) => {
                assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
                assert!(e.to_string().contains("set HOME"), "{e}");
            }
            other => panic!("expected Error::Store, got {other:?}"),
        }
        return;
    }
    let tmp = TempDir::new("app-dir-no-home");
    let name = test_name!(no_usable_home_is_an_error_naming_home);
    let mut cmd = child_test(&name, "no-home");
    cmd.current_dir(&tmp.0)
        .env("HOME", "relative-home")
        .env_remove("XDG_CONFIG_HOME");
    finished(cmd, "no-home");
    assert_eq!(std::fs::read_dir(&tmp.0).unwrap().count(), 0);
}
