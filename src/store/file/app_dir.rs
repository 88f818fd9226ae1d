//! A tool's default place for its tokens: [`FileStore::app_dir`] and [`FileStore::for_app`].
//! Which directory is chosen is [`dir_for`], a pure function of the environment and the
//! platform (so every platform's rule is tested on any); creating it is [`create`].

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{fsio, FileStore};
use crate::error::Error;

/// The conventions [`dir_for`] knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Platform {
    /// Linux and every other Unix but macOS: the XDG Base Directory specification.
    Xdg,
    /// macOS: `~/Library/Application Support`.
    MacOs,
    /// Windows: `%APPDATA%` (the roaming application data folder).
    Windows,
}

impl Platform {
    /// The platform this was built for.
    const CURRENT: Platform = if cfg!(windows) {
        Platform::Windows
    } else if cfg!(target_os = "macos") {
        Platform::MacOs
    } else {
        Platform::Xdg
    };
}

/// The longest app name [`FileStore::app_dir`] takes, in bytes.
const MAX_APP_NAME: usize = 64;

impl FileStore {
    /// The per-user directory of the tool `app`, where it keeps its tokens (and anything else
    /// it likes), created if missing. `app` names the directory: e.g. `my-cli`.
    ///
    /// | platform | directory |
    /// |---|---|
    /// | Linux and other Unix | `$XDG_CONFIG_HOME/{app}` when `XDG_CONFIG_HOME` is an absolute path (a relative or empty one is ignored, as the XDG Base Directory specification says), else `$HOME/.config/{app}` (where `gh` keeps `~/.config/gh`, `gcloud` `~/.config/gcloud`) |
    /// | macOS | `$HOME/Library/Application Support/{app}` |
    /// | Windows | `%APPDATA%\{app}` (e.g. `C:\Users\me\AppData\Roaming\my-cli`) |
    ///
    /// The home directory is [`std::env::home_dir`]'s (`$HOME`, else the user's entry in the
    /// password database); an empty or relative one counts as none, and so does a relative
    /// `%APPDATA%`.
    ///
    /// A missing directory is created with its missing parents (those with the default mode,
    /// as `mkdir -p`); the app's own directory with mode `0700` on Unix. An existing one is
    /// used as it is: [`FileStore::new`] then refuses it if other users can write to it, like
    /// any token directory. Nothing else is written.
    ///
    /// ```no_run
    /// use tokengate::FileStore;
    /// # fn main() -> Result<(), tokengate::Error> {
    /// let dir = FileStore::app_dir("my-cli")?;   // e.g. /home/me/.config/my-cli
    /// let store = FileStore::new(dir.join("tokens.json"))?;   // what FileStore::for_app does
    /// # let _ = store; Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::Config`] for an unusable `app`: empty, over 64 bytes, starting with `.` (so
    /// also `.` and `..`), holding `/`, `\`, NUL or another control character, or what
    /// Windows refuses in a file name (`: * ? " < > |`, a trailing `.` or space), so a name
    /// works on every platform (Windows' reserved device names, such as `CON`, are not
    /// checked).
    /// [`Error::Store`] with an [`io::ErrorKind::NotFound`] error naming the variable to set
    /// when there is no home directory (or `%APPDATA%` on Windows); with the error of creating
    /// the directory, naming it, if that fails.
    pub fn app_dir(app: &str) -> Result<PathBuf, Error> {
        let dir = dir_for(
            app,
            Platform::CURRENT,
            |name| std::env::var_os(name),
            std::env::home_dir(),
        )?;
        create(&dir).map_err(|e| Error::Store(Arc::new(e)))?;
        Ok(dir)
    }

    /// The store of the tool `app`: `tokens.json` in its directory,
    /// [`FileStore::app_dir`]`(app)`, which is created if missing (see there for where it is).
    ///
    /// ```no_run
    /// use tokengate::{AuthClient, AuthServer, FileStore};
    /// # fn main() -> Result<(), tokengate::Error> {
    /// let client = AuthClient::builder("https://api.example.com/v1/")
    ///     .refresher(AuthServer::new("https://auth.example.com/oauth/token").client_id("my-cli").refresh_grant())
    ///     .store(FileStore::for_app("my-cli")?)   // ~/.config/my-cli/tokens.json on Linux
    ///     .build()?;
    /// # let _ = client; Ok(()) }
    /// ```
    ///
    /// # Errors
    /// Those of [`FileStore::app_dir`] and [`FileStore::new`] (a directory other users can
    /// write to is [`Error::Store`] naming it and its mode).
    pub fn for_app(app: &str) -> Result<FileStore, Error> {
        FileStore::new(Self::app_dir(app)?.join("tokens.json"))
    }
}

/// The directory of `app` on `platform`, given the environment (`var`) and the user's home
/// directory (`home`), by the rules documented on [`FileStore::app_dir`]. Creates nothing.
fn dir_for(
    app: &str,
    platform: Platform,
    var: impl Fn(&str) -> Option<OsString>,
    home: Option<PathBuf>,
) -> Result<PathBuf, Error> {
    check_app_name(app)?;
    let absolute = |p: OsString| is_absolute(&p, platform).then_some(p);
    let var = |name: &str| var(name).and_then(absolute);
    let home = || {
        home.map(PathBuf::into_os_string)
            .and_then(absolute)
            .ok_or_else(|| not_found("no home directory: set HOME to an absolute path"))
    };
    let (base, parts): (OsString, &[&str]) = match platform {
        Platform::Xdg => match var("XDG_CONFIG_HOME") {
            Some(config) => (config, &[]),
            None => (home()?, &[".config"]),
        },
        Platform::MacOs => (home()?, &["Library", "Application Support"]),
        Platform::Windows => {
            let appdata = var("APPDATA").ok_or_else(|| {
                not_found("no application data directory: set APPDATA to an absolute path")
            })?;
            (appdata, &[])
        }
    };
    let dir = parts
        .iter()
        .chain([&app])
        .fold(base, |dir, part| join(dir, part, platform));
    Ok(PathBuf::from(dir))
}

/// Refuses an app name that is not one plain directory name on every platform.
fn check_app_name(app: &str) -> Result<(), Error> {
    if app.is_empty() || app.len() > MAX_APP_NAME {
        return Err(Error::Config("the app name must be 1 to 64 bytes"));
    }
    if app.starts_with('.') {
        return Err(Error::Config("the app name must not start with '.'"));
    }
    if app.chars().any(|c| c == '/' || c == '\\' || c.is_control()) {
        return Err(Error::Config(
            "the app name must not hold '/', '\\', NUL or other control characters",
        ));
    }
    // Windows refuses these in a file name, and drops a trailing dot or space: a name that
    // works on one platform works on all.
    if app.contains([':', '*', '?', '"', '<', '>', '|']) || app.ends_with(['.', ' ']) {
        return Err(Error::Config(
            "the app name must not hold : * ? \" < > | nor end with '.' or a space",
        ));
    }
    Ok(())
}

/// True for an absolute path on `platform` (not the platform this runs on: the rules of
/// each are tested everywhere). Windows: `C:\…` (or `C:/…`) and UNC paths `\\server\…`.
fn is_absolute(path: &OsString, platform: Platform) -> bool {
    let path = path.to_string_lossy();
    match platform {
        Platform::Xdg | Platform::MacOs => path.starts_with('/'),
        Platform::Windows => {
            let b = path.as_bytes();
            path.starts_with(r"\\")
                || (b.len() >= 3
                    && b[0].is_ascii_alphabetic()
                    && b[1] == b':'
                    && matches!(b[2], b'\\' | b'/'))
        }
    }
}

/// `dir` and `part` joined with `platform`'s separator (as [`Path::join`] does on it).
fn join(mut dir: OsString, part: &str, platform: Platform) -> OsString {
    let (sep, seps): (&str, &[char]) = match platform {
        Platform::Windows => ("\\", &['\\', '/']),
        Platform::Xdg | Platform::MacOs => ("/", &['/']),
    };
    if !dir.to_string_lossy().ends_with(seps) {
        dir.push(sep);
    }
    dir.push(part);
    dir
}

fn not_found(message: &'static str) -> Error {
    Error::Store(Arc::new(io::Error::new(io::ErrorKind::NotFound, message)))
}

/// Creates `dir` if missing: its parents with the default mode, itself with mode `0700` on
/// Unix. An existing directory is left as it is.
fn create(dir: &Path) -> io::Result<()> {
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| fsio::context(e, "could not create directory", parent))?;
    }
    let mut builder = std::fs::DirBuilder::new();
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    match builder.create(dir) {
        Err(e) if !(e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir()) => {
            Err(fsio::context(e, "could not create directory", dir))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An environment of `vars`, and `home`.
    fn dir(
        app: &str,
        platform: Platform,
        vars: &[(&str, &str)],
        home: Option<&str>,
    ) -> Result<PathBuf, Error> {
        let vars: Vec<(String, OsString)> = vars
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect();
        let var = |name: &str| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        dir_for(app, platform, var, home.map(PathBuf::from))
    }

    fn ok(app: &str, platform: Platform, vars: &[(&str, &str)], home: Option<&str>) -> String {
        dir(app, platform, vars, home)
            .unwrap()
            .into_os_string()
            .into_string()
            .unwrap()
    }

    /// The message of an `Error::Store` of kind NotFound.
    fn not_found(e: Result<PathBuf, Error>) -> String {
        match e {
            Err(Error::Store(e)) if e.kind() == io::ErrorKind::NotFound => e.to_string(),
            other => panic!("expected a NotFound store error, got {other:?}"),
        }
    }

    #[test]
    fn xdg_config_home_when_absolute_else_home_dot_config() {
        let home = Some("/home/u");
        let xdg = Platform::Xdg;
        assert_eq!(
            ok("cli", xdg, &[("XDG_CONFIG_HOME", "/xdg")], home),
            "/xdg/cli"
        );
        assert_eq!(
            ok("cli", xdg, &[("XDG_CONFIG_HOME", "/xdg/")], home),
            "/xdg/cli"
        );
        // No HOME needed when XDG_CONFIG_HOME is usable.
        assert_eq!(ok("cli", xdg, &[("XDG_CONFIG_HOME", "/x")], None), "/x/cli");
        assert_eq!(ok("cli", xdg, &[], home), "/home/u/.config/cli");
        assert_eq!(ok("cli", xdg, &[], Some("/")), "/.config/cli");
        // Relative and empty values are ignored, as the XDG specification says.
        for ignored in ["", "xdg", "./xdg", "~/.config"] {
            let vars = [("XDG_CONFIG_HOME", ignored)];
            assert_eq!(
                ok("cli", xdg, &vars, home),
                "/home/u/.config/cli",
                "{ignored:?}"
            );
        }
        // Other platforms' variables are not looked at.
        assert_eq!(
            ok("cli", xdg, &[("APPDATA", "/a")], home),
            "/home/u/.config/cli"
        );
    }

    #[test]
    fn macos_uses_library_application_support() {
        let vars = [("XDG_CONFIG_HOME", "/xdg"), ("APPDATA", "/a")];
        assert_eq!(
            ok("cli", Platform::MacOs, &vars, Some("/Users/u")),
            "/Users/u/Library/Application Support/cli"
        );
    }

    #[test]
    fn windows_uses_appdata() {
        let win = Platform::Windows;
        let home = Some("C:\\Users\\u");
        let appdata = r"C:\Users\u\AppData\Roaming";
        assert_eq!(
            ok("cli", win, &[("APPDATA", appdata)], home),
            r"C:\Users\u\AppData\Roaming\cli"
        );
        assert_eq!(ok("cli", win, &[("APPDATA", r"D:\")], home), r"D:\cli");
        assert_eq!(
            ok("cli", win, &[("APPDATA", r"\\srv\p")], home),
            r"\\srv\p\cli"
        );
        // Missing, empty or relative: an error naming the variable, not the home directory.
        for bad in [
            None,
            Some(""),
            Some("AppData"),
            Some(r"\AppData"),
            Some("C:AppData"),
        ] {
            let vars: Vec<_> = bad.map(|v| ("APPDATA", v)).into_iter().collect();
            let e = not_found(dir("cli", win, &vars, home));
            assert!(e.contains("set APPDATA"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn no_usable_home_is_an_error_naming_home() {
        for platform in [Platform::Xdg, Platform::MacOs] {
            for home in [None, Some(""), Some("home/u")] {
                let e = not_found(dir("cli", platform, &[("XDG_CONFIG_HOME", "x")], home));
                assert!(e.contains("set HOME"), "{platform:?} {home:?}: {e}");
            }
        }
    }

    #[test]
    fn unusable_app_names_are_config_errors() {
        let long = "a".repeat(65);
        let bad = [
            "", ".", "..", ".cli", "a/b", "/abs", "a\\b", "a\0b", "a\nb", "a\u{7f}", &long,
            "c:cli", "a*", "a?", "a\"b", "a<b", "a>b", "a|b", "cli.", "cli ",
        ];
        for platform in [Platform::Xdg, Platform::MacOs, Platform::Windows] {
            for app in bad {
                let e = dir(app, platform, &[("APPDATA", "C:\\a")], Some("/home/u"));
                assert!(matches!(e, Err(Error::Config(_))), "{app:?}: {e:?}");
            }
        }
        let fine = [
            "a".repeat(64),
            "my-cli".into(),
            "My App 2".into(),
            "cli.d".into(),
        ];
        for app in &fine {
            assert_eq!(
                ok(app, Platform::Xdg, &[], Some("/h")),
                format!("/h/.config/{app}")
            );
        }
    }
}
