//! Opening the user's browser at the authorization URL, for the browser login.
//!
//! Two parts: a pure decision ([`Surroundings`], read once from the environment, and
//! [`open_commands`], the commands to try in order), and the side effect ([`open_url`], which
//! runs them). Opening never fails the login: the caller always prints the URL too, so a user
//! can open it by hand, and [`OpenFailure`] only says why no browser came up.
//!
//! The commands, in order (no shell anywhere: each is a program and its arguments, and the
//! URL is always one whole argument):
//!
//! | where | commands |
//! |---|---|
//! | `$BROWSER` set | its commands (see [`open_commands`]), then the platform's below |
//! | WSL, not over SSH | `wslview URL`, `powershell.exe … Start-Process 'URL'`, `xdg-open URL` |
//! | Linux, BSD, … with `$DISPLAY` or `$WAYLAND_DISPLAY` | `xdg-open URL` |
//! | macOS, not over SSH | `open URL` |
//! | Windows, not over SSH | `rundll32 url.dll,FileProtocolHandler URL` |
//!
//! The URL carries the login's `state` and PKCE challenge: it is passed only as an argument,
//! never logged, and never part of an [`OpenFailure`] (which names programs only).

use std::fmt;
use std::io;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::logging::TARGET;

/// How often [`open_url`] looks whether a started opener has exited.
const POLL: Duration = Duration::from_millis(20);

/// The operating system the login runs on, as far as opening a browser goes.
// `MacOs` ends with the enum's name: the platform's name, kept as the browser login spells it.
#[allow(clippy::enum_variant_names)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum Os {
    /// Linux (WSL included: see [`Surroundings::wsl`]).
    Linux,
    /// macOS.
    MacOs,
    /// Windows.
    Windows,
    /// Anything else (the BSDs, …): treated as a Unix desktop with `xdg-open`. The default.
    #[default]
    Other,
}

impl Os {
    /// The system this crate was compiled for (`cfg!(target_os)`).
    pub fn current() -> Os {
        if cfg!(target_os = "linux") {
            Os::Linux
        } else if cfg!(target_os = "macos") {
            Os::MacOs
        } else if cfg!(target_os = "windows") {
            Os::Windows
        } else {
            Os::Other
        }
    }

    /// What separates the commands in `$BROWSER`: `;` on Windows (where `:` is in paths),
    /// `:` elsewhere, as Python's `webbrowser` (`os.pathsep`) and xdg-utils read it.
    fn browser_separator(self) -> char {
        match self {
            Os::Windows => ';',
            _ => ':',
        }
    }
}

/// Where the login runs, read once from the environment (tests build it by hand). Every
/// variable counts as set only when it is set and not empty. The default is a machine where
/// nothing opens a browser.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Surroundings {
    /// `$BROWSER`, if it names at least one command (not empty, not only separators and
    /// whitespace).
    pub browser_var: Option<String>,
    /// Linux, BSD, …: `$DISPLAY` or `$WAYLAND_DISPLAY` is set (an X11 or Wayland session,
    /// also one forwarded over SSH). macOS and Windows: true unless over SSH.
    pub display: bool,
    /// `$SSH_CONNECTION`, `$SSH_CLIENT` or `$SSH_TTY` is set: the user sits at another
    /// machine, so a browser opened here (without a forwarded display) would not be theirs.
    pub ssh: bool,
    /// Windows Subsystem for Linux: Linux, and `/proc/sys/kernel/osrelease` (or
    /// `/proc/version`) contains "microsoft" in any case, or `$WSL_DISTRO_NAME` is set.
    pub wsl: bool,
    /// The operating system.
    pub os: Os,
}

impl Surroundings {
    /// The surroundings of this process: its environment ([`std::env::var_os`]; a value that
    /// is not UTF-8 is read lossily), its [`Os::current`], and on Linux the kernel's release
    /// string for WSL.
    pub fn from_env() -> Surroundings {
        let os = Os::current();
        let kernel = if os == Os::Linux {
            std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .or_else(|_| std::fs::read_to_string("/proc/version"))
                .ok()
        } else {
            None
        };
        let get = |name: &str| std::env::var_os(name).map(|v| v.to_string_lossy().into_owned());
        Surroundings::from_vars(get, os, kernel.as_deref())
    }

    /// The surroundings that the environment `get` reads (a variable's value, or `None`),
    /// on `os`, with `wsl_file` the contents of `/proc/sys/kernel/osrelease` or
    /// `/proc/version` if they could be read. Pure: [`Surroundings::from_env`] calls it.
    pub fn from_vars(
        get: impl Fn(&str) -> Option<String>,
        os: Os,
        wsl_file: Option<&str>,
    ) -> Surroundings {
        let set = |name: &str| get(name).filter(|v| !v.is_empty());
        let ssh = ["SSH_CONNECTION", "SSH_CLIENT", "SSH_TTY"]
            .iter()
            .any(|name| set(name).is_some());
        let display = match os {
            Os::MacOs | Os::Windows => !ssh,
            Os::Linux | Os::Other => set("DISPLAY").is_some() || set("WAYLAND_DISPLAY").is_some(),
        };
        let microsoft = wsl_file.is_some_and(|f| f.to_ascii_lowercase().contains("microsoft"));
        let wsl = os == Os::Linux && (microsoft || set("WSL_DISTRO_NAME").is_some());
        let browser_var = set("BROWSER").filter(|v| {
            v.split(os.browser_separator())
                .any(|entry| entry.split_ascii_whitespace().next().is_some())
        });
        Surroundings {
            browser_var,
            display,
            ssh,
            wsl,
            os,
        }
    }

    /// True when a browser can be opened on this machine: `$BROWSER` is set, or there is a
    /// display (WSL counts as one unless over SSH, like macOS and Windows). Exactly when
    /// [`open_commands`] has a command to try.
    pub fn can_open_browser(&self) -> bool {
        self.browser_var.is_some() || self.display || self.wsl_desktop()
    }

    /// True when a browser opened here shows on the user's screen, so the browser login is
    /// the one to pick: [`can_open_browser`](Self::can_open_browser), and over SSH only with a
    /// forwarded display (a `$BROWSER` set in a remote shell's profile opens nothing the
    /// user sees, or a text browser inside the session).
    pub fn browser_is_here(&self) -> bool {
        self.can_open_browser() && (!self.ssh || self.display)
    }

    /// WSL with the user at its Windows desktop (not over SSH): `wslview` and PowerShell
    /// open the Windows browser there. (WSL is a Linux; `wsl` on another `os` is ignored.)
    fn wsl_desktop(&self) -> bool {
        self.wsl && !self.ssh && matches!(self.os, Os::Linux | Os::Other)
    }
}

/// The commands to try, in order, to open `url`: each is a program and its arguments (no
/// shell; `url` is always one whole argument, or part of one where `$BROWSER` says `%s`).
/// Empty when nothing can open a browser here ([`Surroundings::can_open_browser`] is false).
///
/// First `$BROWSER`'s, read as Python's `webbrowser` and xdg-utils do: a list of commands
/// separated by `:` (`;` on Windows), empty ones skipped; each split at ASCII whitespace (no
/// quoting: a program path with a space cannot be given). In each argument after the program,
/// `%s` is replaced by the URL and `%%` by `%`; if no argument has a `%s`, the URL is
/// appended as the last argument. The program itself is taken as written, so the URL is
/// never in a program name. Then the platform's, as the module's table says.
pub(crate) fn open_commands(url: &str, s: &Surroundings) -> Vec<Vec<String>> {
    let mut commands: Vec<Vec<String>> = match &s.browser_var {
        Some(var) => var
            .split(s.os.browser_separator())
            .filter_map(|entry| browser_command(entry, url))
            .collect(),
        None => Vec::new(),
    };
    let words = |w: &[&str]| w.iter().map(|w| (*w).to_owned()).collect::<Vec<String>>();
    let with_url = |w: &[&str]| {
        let mut command = words(w);
        command.push(url.to_owned());
        command
    };
    match s.os {
        Os::Linux | Os::Other if s.wsl_desktop() => {
            commands.push(with_url(&["wslview"]));
            let script = format!("Start-Process '{}'", powershell_quoted(url));
            let mut powershell = words(&["powershell.exe", "-NoProfile", "-NonInteractive"]);
            powershell.extend(["-Command".to_owned(), script]);
            commands.push(powershell);
            commands.push(with_url(&["xdg-open"]));
        }
        Os::Linux | Os::Other if s.display => commands.push(with_url(&["xdg-open"])),
        Os::MacOs if s.display => commands.push(with_url(&["open"])),
        // Not `cmd /c start URL`: cmd.exe parses the line, so a URL's `&` would end the
        // command there (the rest of the query, `state` included, run as a second command),
        // and `start` takes a first quoted argument as a window title. rundll32 passes the
        // rest of its command line to the URL handler as it is.
        Os::Windows if s.display => {
            commands.push(with_url(&["rundll32", "url.dll,FileProtocolHandler"]));
        }
        _ => {}
    }
    commands
}

/// One `$BROWSER` entry as a command for `url`, or `None` for an empty entry.
fn browser_command(entry: &str, url: &str) -> Option<Vec<String>> {
    let mut words = entry.split_ascii_whitespace();
    let mut command = vec![words.next()?.to_owned()];
    let mut placed = false;
    for word in words {
        let (arg, has_url) = substitute(word, url);
        placed |= has_url;
        command.push(arg);
    }
    if !placed {
        command.push(url.to_owned());
    }
    Some(command)
}

/// `word` with `%s` replaced by `url` and `%%` by `%` (any other `%` kept), and whether it
/// held a `%s`.
fn substitute(word: &str, url: &str) -> (String, bool) {
    let mut out = String::with_capacity(word.len());
    let mut placed = false;
    let mut chars = word.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, chars.peek()) {
            ('%', Some('s')) => {
                chars.next();
                out.push_str(url);
                placed = true;
            }
            ('%', Some('%')) => {
                chars.next();
                out.push('%');
            }
            _ => out.push(c),
        }
    }
    (out, placed)
}

/// `text` for the inside of a PowerShell single-quoted string: each quote doubled, the
/// ASCII `'` and the typographic ones PowerShell also reads as quotes (U+2018 to U+201B).
fn powershell_quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    for c in text.chars() {
        if matches!(c, '\'' | '\u{2018}' | '\u{2019}' | '\u{201A}' | '\u{201B}') {
            out.push(c);
        }
        out.push(c);
    }
    out
}

/// Why [`open_url`] opened no browser. Names programs and what happened to them, never the
/// URL.
#[derive(Debug)]
pub(crate) enum OpenFailure {
    /// Nothing to try: no `$BROWSER`, and no display (or over SSH).
    NoCommand,
    /// Every command was tried and none opened it: for each, in order, its program and what
    /// happened (`"xdg-open: not found"`, `"wslview: exit status 3"`).
    AllFailed(Vec<String>),
}

impl fmt::Display for OpenFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpenFailure::NoCommand => f.write_str(
                "no browser to open here: $BROWSER is not set and there is no display \
                 (or the session is over SSH)",
            ),
            OpenFailure::AllFailed(tries) => {
                write!(f, "could not open a browser: {}", tries.join("; "))
            }
        }
    }
}

/// Tries [`open_commands`] in order: spawns each (stdin, stdout, stderr null), and takes the
/// first that spawns and exits with status 0 within `patience` (the caller's default is 2 s:
/// `xdg-open` and `open` return at once), or is still running after `patience` (a browser
/// started in the foreground, e.g. `$BROWSER=firefox`, or a headless chromium): that counts
/// as opened too, and a detached thread waits for it, so no zombie stays. Whether the page
/// then came up is not known: the caller prints the URL anyway.
///
/// Logs at debug level, target `tokengate`, which program opened the browser or what
/// happened to each; never the URL.
///
/// # Errors
/// [`OpenFailure::NoCommand`] when there is nothing to try; [`OpenFailure::AllFailed`] when
/// every command failed to start or exited with another status within `patience`. Never
/// panics.
pub(crate) fn open_url(
    url: &str,
    s: &Surroundings,
    patience: Duration,
) -> Result<String, OpenFailure> {
    let commands = open_commands(url, s);
    let mut failures = Vec::new();
    for command in &commands {
        let Some((program, args)) = command.split_first() else {
            continue;
        };
        match run(program, args, patience) {
            Ok(()) => {
                log::debug!(target: TARGET, "browser login: opened the browser with {program}");
                return Ok(program.clone());
            }
            Err(why) => {
                log::debug!(target: TARGET, "browser login: {program} did not open the browser: {why}");
                failures.push(format!("{program}: {why}"));
            }
        }
    }
    if failures.is_empty() {
        Err(OpenFailure::NoCommand)
    } else {
        Err(OpenFailure::AllFailed(failures))
    }
}

/// Runs `program` with `args` as [`open_url`] describes: `Ok` when it exits with status 0
/// within `patience` or is still running then, else what happened (without the arguments).
fn run(program: &str, args: &[String], patience: Duration) -> Result<(), String> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => "not found".to_owned(),
            // The kind only: an io::Error's text is the OS's, but the kind's is certain to
            // hold no argument.
            kind => format!("could not start ({kind})"),
        })?;
    let deadline = Instant::now().checked_add(patience);
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => {
                return Err(match status.code() {
                    Some(code) => format!("exit status {code}"),
                    None => status.to_string(),
                })
            }
            Ok(None) => {}
            Err(e) => {
                reap(child);
                return Err(format!("could not wait for it ({})", e.kind()));
            }
        }
        let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        if left == Some(Duration::ZERO) {
            reap(child);
            return Ok(());
        }
        std::thread::sleep(left.map_or(POLL, |left| left.min(POLL)));
    }
}

/// Waits for `child` on a detached thread, so it leaves no zombie when it ends. If no thread
/// can be started, the child is left to end on its own (and is reaped when this process
/// ends).
fn reap(mut child: Child) {
    let waiter = std::thread::Builder::new()
        .name("tokengate-browser".to_owned())
        .spawn(move || {
            let _ = child.wait();
        });
    if let Err(e) = waiter {
        log::debug!(target: TARGET, "browser login: no thread to wait for the browser ({e})");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const URL: &str = "https://as.example.com/authorize?client_id=cli&state=a'b&x=%41";

    /// An environment of `vars` (name, value).
    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    /// `words` as an owned command.
    fn cmd(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| (*w).to_owned()).collect()
    }

    /// Surroundings with only `$BROWSER` set, on a system with no display.
    fn only_browser(var: &str) -> Surroundings {
        Surroundings {
            browser_var: Some(var.to_owned()),
            ..Surroundings::default()
        }
    }

    #[test]
    fn from_vars_reads_display_ssh_and_browser_only_when_set_and_not_empty() {
        let s = Surroundings::from_vars(env(&[]), Os::Linux, None);
        assert_eq!(
            s,
            Surroundings {
                os: Os::Linux,
                ..Surroundings::default()
            }
        );
        let empty = [
            ("DISPLAY", ""),
            ("WAYLAND_DISPLAY", ""),
            ("SSH_TTY", ""),
            ("BROWSER", ""),
        ];
        let s = Surroundings::from_vars(env(&empty), Os::Linux, None);
        assert_eq!(
            s,
            Surroundings {
                os: Os::Linux,
                ..Surroundings::default()
            }
        );
        for var in ["DISPLAY", "WAYLAND_DISPLAY"] {
            let s = Surroundings::from_vars(env(&[(var, ":0")]), Os::Other, None);
            assert!(s.display && !s.ssh && !s.wsl, "{var}: {s:?}");
        }
        for var in ["SSH_CONNECTION", "SSH_CLIENT", "SSH_TTY"] {
            let s = Surroundings::from_vars(env(&[(var, "x"), ("DISPLAY", ":0")]), Os::Linux, None);
            assert!(
                s.ssh && s.display,
                "{var}: X11 forwarded over SSH is a display: {s:?}"
            );
        }
        let s = Surroundings::from_vars(env(&[("BROWSER", "firefox")]), Os::Linux, None);
        assert_eq!(s.browser_var.as_deref(), Some("firefox"));
        for nothing in [" ", ":", " : \t:"] {
            let s = Surroundings::from_vars(env(&[("BROWSER", nothing)]), Os::Linux, None);
            assert_eq!(s.browser_var, None, "{nothing:?} names no command");
        }
        let s = Surroundings::from_vars(env(&[("BROWSER", ";")]), Os::Linux, None);
        assert_eq!(
            s.browser_var.as_deref(),
            Some(";"),
            "';' separates on Windows only"
        );
        let s = Surroundings::from_vars(env(&[("BROWSER", ";")]), Os::Windows, None);
        assert_eq!(s.browser_var, None);
    }

    #[test]
    fn from_vars_counts_macos_and_windows_as_a_display_unless_over_ssh() {
        for os in [Os::MacOs, Os::Windows] {
            let s = Surroundings::from_vars(env(&[]), os, None);
            assert!(s.display && !s.ssh && !s.wsl, "{os:?}: {s:?}");
            let s = Surroundings::from_vars(env(&[("SSH_CONNECTION", "1 2 3 4")]), os, None);
            assert!(!s.display && s.ssh, "{os:?}: {s:?}");
        }
    }

    #[test]
    fn from_vars_finds_wsl_on_linux_only() {
        let wsl2 = "5.15.153.1-microsoft-standard-WSL2\n";
        let wsl1 = "Linux version 4.4.0-19041-Microsoft (Microsoft@Microsoft.com)";
        for file in [wsl2, wsl1] {
            assert!(
                Surroundings::from_vars(env(&[]), Os::Linux, Some(file)).wsl,
                "{file}"
            );
            assert!(
                !Surroundings::from_vars(env(&[]), Os::Other, Some(file)).wsl,
                "{file}"
            );
        }
        let distro = [("WSL_DISTRO_NAME", "Ubuntu")];
        assert!(Surroundings::from_vars(env(&distro), Os::Linux, None).wsl);
        assert!(!Surroundings::from_vars(env(&distro), Os::Windows, None).wsl);
        let plain = "6.8.0-45-generic\n";
        assert!(!Surroundings::from_vars(env(&[]), Os::Linux, Some(plain)).wsl);
        assert!(!Surroundings::from_vars(env(&[("WSL_DISTRO_NAME", "")]), Os::Linux, None).wsl);
    }

    #[test]
    fn can_open_browser_with_browser_or_a_display_or_wsl_not_over_ssh() {
        let none = Surroundings::default();
        assert!(!none.can_open_browser());
        assert!(only_browser("firefox").can_open_browser());
        let over_ssh = Surroundings {
            ssh: true,
            ..only_browser("w3m")
        };
        assert!(
            over_ssh.can_open_browser(),
            "$BROWSER is the user's word, also over SSH"
        );
        let display = Surroundings {
            display: true,
            ..Surroundings::default()
        };
        assert!(display.can_open_browser());
        let wsl = Surroundings {
            wsl: true,
            os: Os::Linux,
            ..Surroundings::default()
        };
        assert!(wsl.can_open_browser());
        assert!(!Surroundings { ssh: true, ..wsl }.can_open_browser());
        for os in [Os::MacOs, Os::Windows] {
            let desktop = Surroundings::from_vars(env(&[]), os, None);
            assert!(desktop.can_open_browser(), "{os:?}");
            let ssh = Surroundings::from_vars(env(&[("SSH_CLIENT", "1 2 3")]), os, None);
            assert!(!ssh.can_open_browser(), "{os:?} over SSH");
        }
    }

    #[test]
    fn the_browser_is_here_unless_over_ssh_without_a_forwarded_display() {
        let over_ssh = Surroundings {
            ssh: true,
            ..only_browser("w3m")
        };
        assert!(over_ssh.can_open_browser() && !over_ssh.browser_is_here());
        let forwarded = Surroundings {
            display: true,
            ..over_ssh.clone()
        };
        assert!(forwarded.browser_is_here());
        assert!(only_browser("firefox").browser_is_here());
        assert!(!Surroundings::default().browser_is_here());
        for os in [Os::MacOs, Os::Windows] {
            assert!(Surroundings::from_vars(env(&[]), os, None).browser_is_here());
            let ssh = Surroundings::from_vars(env(&[("SSH_TTY", "/dev/pts/1")]), os, None);
            assert!(!ssh.browser_is_here(), "{os:?} over SSH");
        }
    }

    /// Every combination of the fields: `can_open_browser` is exactly "there is a command".
    #[test]
    fn can_open_browser_is_exactly_open_commands_not_empty() {
        let mut seen = 0;
        for os in [Os::Linux, Os::MacOs, Os::Windows, Os::Other] {
            for bits in 0..16u8 {
                let s = Surroundings {
                    browser_var: (bits & 1 != 0).then(|| "b".to_owned()),
                    display: bits & 2 != 0,
                    ssh: bits & 4 != 0,
                    wsl: bits & 8 != 0,
                    os,
                };
                assert_eq!(
                    s.can_open_browser(),
                    !open_commands(URL, &s).is_empty(),
                    "{s:?}"
                );
                seen += 1;
            }
        }
        assert_eq!(seen, 64);
    }

    #[test]
    fn the_platforms_openers_take_the_url_as_one_argument() {
        let linux = Surroundings {
            display: true,
            os: Os::Linux,
            ..Surroundings::default()
        };
        assert_eq!(open_commands(URL, &linux), [cmd(&["xdg-open", URL])]);
        let bsd = Surroundings {
            os: Os::Other,
            ..linux.clone()
        };
        assert_eq!(open_commands(URL, &bsd), [cmd(&["xdg-open", URL])]);
        let headless = Surroundings {
            display: false,
            ..linux.clone()
        };
        assert_eq!(open_commands(URL, &headless), Vec::<Vec<String>>::new());
        let mac = Surroundings::from_vars(env(&[]), Os::MacOs, None);
        assert_eq!(open_commands(URL, &mac), [cmd(&["open", URL])]);
        let windows = Surroundings::from_vars(env(&[]), Os::Windows, None);
        assert_eq!(
            open_commands(URL, &windows),
            [cmd(&["rundll32", "url.dll,FileProtocolHandler", URL])]
        );
        for os in [Os::MacOs, Os::Windows] {
            let ssh = Surroundings::from_vars(env(&[("SSH_TTY", "/dev/pts/0")]), os, None);
            assert_eq!(
                open_commands(URL, &ssh),
                Vec::<Vec<String>>::new(),
                "{os:?}"
            );
        }
    }

    #[test]
    fn wsl_tries_wslview_then_powershell_with_quotes_doubled_then_xdg_open() {
        let wsl = Surroundings::from_vars(env(&[]), Os::Linux, Some("5.15-microsoft-standard"));
        let quoted = "https://as.example.com/authorize?client_id=cli&state=a''b&x=%41";
        assert_eq!(
            open_commands(URL, &wsl),
            [
                cmd(&["wslview", URL]),
                cmd(&[
                    "powershell.exe",
                    "-NoProfile",
                    "-NonInteractive",
                    "-Command",
                    &format!("Start-Process '{quoted}'"),
                ]),
                cmd(&["xdg-open", URL]),
            ]
        );
        assert_eq!(
            powershell_quoted("a'b\u{2019}c''"),
            "a''b\u{2019}\u{2019}c''''"
        );
        let over_ssh = Surroundings {
            ssh: true,
            ..wsl.clone()
        };
        assert_eq!(open_commands(URL, &over_ssh), Vec::<Vec<String>>::new());
        let forwarded = Surroundings {
            display: true,
            ..over_ssh
        };
        assert_eq!(open_commands(URL, &forwarded), [cmd(&["xdg-open", URL])]);
    }

    #[test]
    fn browser_commands_come_first_split_at_colons_with_the_url_appended() {
        let s = Surroundings {
            display: true,
            os: Os::Linux,
            ..only_browser("firefox")
        };
        assert_eq!(
            open_commands(URL, &s),
            [cmd(&["firefox", URL]), cmd(&["xdg-open", URL])]
        );
        let list = only_browser(":firefox --new-window::\t/usr/bin/w3m  -o  x=1 : ");
        assert_eq!(
            open_commands(URL, &list),
            [
                cmd(&["firefox", "--new-window", URL]),
                cmd(&["/usr/bin/w3m", "-o", "x=1", URL]),
            ]
        );
        let windows = Surroundings {
            os: Os::Windows,
            ..only_browser(r"C:\bin\chrome.exe --incognito;C:\bin\edge.exe")
        };
        assert_eq!(
            open_commands(URL, &windows),
            [
                cmd(&[r"C:\bin\chrome.exe", "--incognito", URL]),
                cmd(&[r"C:\bin\edge.exe", URL])
            ]
        );
    }

    #[test]
    fn percent_s_in_browser_arguments_is_the_url_and_percent_percent_a_percent() {
        let s = only_browser("chromium --app=%s --x %s:echo %%s 100%% %d %:b --u=<%s>%%");
        assert_eq!(
            open_commands(URL, &s),
            [
                cmd(&["chromium", &format!("--app={URL}"), "--x", URL]),
                cmd(&["echo", "%s", "100%", "%d", "%", URL]),
                cmd(&["b", &format!("--u=<{URL}>%")]),
            ]
        );
        // The program is taken as written: the URL is never in a program name.
        let odd = only_browser("%s --flag");
        assert_eq!(open_commands(URL, &odd), [cmd(&["%s", "--flag", URL])]);
        // A URL with %s or %% in it is not read again.
        let url = "https://a.example/?q=%s%%";
        assert_eq!(
            open_commands(url, &only_browser("b x%sy")),
            [cmd(&["b", &format!("x{url}y")])]
        );
    }

    /// The URL reaches each program as written, whatever a shell would make of it, and no
    /// command is a shell.
    #[test]
    fn nothing_goes_through_a_shell() {
        let url = "https://as.example/a?x=1&y='2'&z=$(touch /tmp/p)`id`;|>\"%24 *";
        let wsl = Surroundings {
            wsl: true,
            display: true,
            os: Os::Linux,
            ..only_browser("b")
        };
        let everywhere = [
            wsl,
            Surroundings::from_vars(env(&[("BROWSER", "b")]), Os::MacOs, None),
            Surroundings::from_vars(env(&[("BROWSER", "b")]), Os::Windows, None),
        ];
        let mut commands = 0;
        for s in &everywhere {
            for command in open_commands(url, s) {
                let program = command[0].to_ascii_lowercase();
                let shells = ["sh", "bash", "/bin/sh", "cmd", "cmd.exe", "start", "eval"];
                assert!(!shells.contains(&program.as_str()), "{command:?}");
                assert!(!command
                    .iter()
                    .any(|a| a == "-c" || a.eq_ignore_ascii_case("/c")));
                let last = command.last().unwrap();
                if program == "powershell.exe" {
                    assert_eq!(
                        *last,
                        format!("Start-Process '{}'", url.replace('\'', "''"))
                    );
                } else {
                    assert_eq!(last, url, "{command:?}");
                }
                commands += 1;
            }
        }
        assert_eq!(
            commands, 8,
            "b, wslview, powershell.exe, xdg-open; b, open; b, rundll32"
        );
    }

    #[test]
    fn failures_read_as_one_line_without_the_url() {
        let none = OpenFailure::NoCommand.to_string();
        assert!(
            none.starts_with("no browser to open here") && !none.contains('\n'),
            "{none}"
        );
        let all = OpenFailure::AllFailed(vec![
            "xdg-open: not found".to_owned(),
            "wslview: exit status 3".to_owned(),
        ]);
        assert_eq!(
            all.to_string(),
            "could not open a browser: xdg-open: not found; wslview: exit status 3"
        );
    }

    #[cfg(unix)]
    mod running {
        //! `open_url` with real programs. The scripts are run as `sh SCRIPT` (the user's
        //! `$BROWSER` may name any program with arguments), not executed themselves: a file
        //! written and then executed at once can fail with ETXTBSY while another test thread
        //! forks (the child holds the written file open until its exec).

        use std::path::{Path, PathBuf};

        use super::*;

        /// A fresh directory for one test, under the system's temporary directory.
        fn scratch(test: &str) -> PathBuf {
            let dir = std::env::temp_dir().join(format!(
                "tokengate-browser-open-{}-{test}",
                std::process::id()
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            let text = dir.to_str().unwrap();
            assert!(
                !text.contains(|c: char| c == ':' || c.is_ascii_whitespace()),
                "a $BROWSER cannot name {text}: set TMPDIR to a path without ':' or spaces"
            );
            dir
        }

        /// Writes the shell script `body` as `name` in `dir`; its path.
        fn script(dir: &Path, name: &str, body: &str) -> String {
            let path = dir.join(name);
            std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
            path.to_str().unwrap().to_owned()
        }

        /// Surroundings with only `browser` as `$BROWSER`: no display, so no platform opener
        /// (nothing opens a real browser).
        fn browser(browser: String) -> Surroundings {
            let s = only_browser(&browser);
            assert_eq!(open_commands(URL, &s).len(), browser.split(':').count());
            s
        }

        #[test]
        fn a_failing_command_is_skipped_and_the_next_gets_the_url_byte_for_byte() {
            let dir = scratch("next");
            let ran = dir.join("failing-ran");
            let argv = dir.join("argv");
            let failing = script(
                &dir,
                "fail.sh",
                &format!("touch '{}'; exit 1", ran.display()),
            );
            let record = format!(
                "for a in \"$@\"; do printf '%s\\0' \"$a\"; done > '{}'",
                argv.display()
            );
            let recorder = script(&dir, "record.sh", &record);
            let s = browser(format!("sh {failing}:/bin/sh {recorder} --new-window %s"));
            // Patience far beyond what the scripts need: each has ended when it is read.
            let opened = open_url(URL, &s, Duration::from_secs(120));
            assert_eq!(opened.unwrap(), "/bin/sh", "the second command opened it");
            assert!(ran.exists(), "the failing command ran first");
            let expected = format!("--new-window\0{URL}\0");
            assert_eq!(std::fs::read(&argv).unwrap(), expected.as_bytes());
            let _ = std::fs::remove_dir_all(&dir);
        }

        #[test]
        fn a_missing_program_and_a_failing_one_are_all_failed_without_the_url() {
            let dir = scratch("missing");
            let missing = dir.join("no-such-browser").to_str().unwrap().to_owned();
            let failing = script(&dir, "fail.sh", "exit 3");
            let s = browser(format!("{missing}:sh {failing}"));
            let failure = open_url(URL, &s, Duration::from_secs(120)).unwrap_err();
            let OpenFailure::AllFailed(tries) = &failure else {
                panic!("{failure:?}");
            };
            assert_eq!(
                *tries,
                [
                    format!("{missing}: not found"),
                    "sh: exit status 3".to_owned()
                ]
            );
            assert!(
                !failure.to_string().contains("state=")
                    && !format!("{failure:?}").contains("state=")
            );
            let _ = std::fs::remove_dir_all(&dir);
        }

        #[test]
        fn nothing_to_try_is_no_command() {
            let failure = open_url(URL, &Surroundings::default(), Duration::ZERO).unwrap_err();
            assert!(matches!(failure, OpenFailure::NoCommand), "{failure:?}");
        }

        /// A browser started in the foreground is still running after the patience: that is
        /// opened, and the next command is not tried. (The reaper thread waits for it.)
        #[test]
        fn a_command_still_running_after_the_patience_counts_as_opened() {
            let dir = scratch("running");
            let next_ran = dir.join("next-ran");
            let sleeper = script(&dir, "sleep.sh", "exec sleep 30");
            let next = script(&dir, "next.sh", &format!("touch '{}'", next_ran.display()));
            let s = browser(format!("sh {sleeper}:/bin/sh {next}"));
            let opened = open_url(URL, &s, Duration::from_millis(200));
            assert_eq!(opened.unwrap(), "sh");
            assert!(!next_ran.exists(), "the next command was not started");
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}
