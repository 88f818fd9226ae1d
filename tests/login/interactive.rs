//! `AuthServer::interactive_login`: one call that logs a tool in the browser, the device
//! flow or a paste, forced or picked from the surroundings (`LoginMethod::Auto`, read from
//! the environment: checked in child processes, which alone may have one of their own).
//!
//! The person at the terminal is a `Watcher` on what `run` prints: it answers each line as
//! it is written (opens the address, approves the code, pastes the redirect), before `run`
//! waits, so nothing here depends on timing.

use std::cell::Cell;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokengate::login::LoginMethod;
use tokengate::testing::{Fault, Grant, TestServer};
use tokengate::{AuthServer, Error};

use crate::browser::{one_code_exchange, ChannelReader, Watcher};
use crate::harness::fixtures::{no_proxy_agent, TestTime};
use crate::harness::observe::{child_test, test_name, ROLE};

/// `Paste`: the address is printed (no browser opened), the person opens it elsewhere and
/// pastes where the browser ended.
#[test]
fn paste_prints_the_address_and_reads_the_redirect_pasted() {
    let srv = TestServer::start();
    let (typing, reader) = ChannelReader::new();
    let pasted = Cell::new(0);
    let mut out = Watcher::new(|line| {
        let line = line.trim();
        if line.starts_with(&srv.authorization_url()) {
            let redirect = srv.authorize(line).unwrap();
            typing.send(format!("{redirect}\n")).unwrap();
            pasted.set(pasted.get() + 1);
        }
    });
    let tokens = srv
        .auth_server()
        .agent(no_proxy_agent())
        .interactive_login()
        .method(LoginMethod::Paste)
        .scope("api")
        .run(&mut out, reader)
        .unwrap();
    assert_eq!(pasted.get(), 1);
    assert_eq!(tokens.scope(), Some("api"));
    one_code_exchange(&srv, 1);
    let text = out.text();
    assert!(text.contains("paste here the address"), "{text}");
    assert!(
        !text.contains("Opened it") && !text.contains("Could not open"),
        "{text}"
    );
}

/// `Device`: the verification URI and the user code are printed; the person approves; the
/// flow polls on its own clock (no real sleep).
#[test]
fn device_prints_the_code_and_polls_until_approved() {
    let srv = TestServer::start();
    let time = TestTime::new();
    let approved = Cell::new(0);
    let mut out = Watcher::new(|line| {
        if let Some((_, code)) = line.split_once("and enter the code ") {
            srv.approve(code.trim()).unwrap();
            approved.set(approved.get() + 1);
        }
    });
    let tokens = srv
        .auth_server()
        .agent(no_proxy_agent())
        .interactive_login()
        .method(LoginMethod::Device)
        .scope("api")
        .device(|f| f.clock(time.clone()).sleeper(time.clone()))
        .run(&mut out, io::empty())
        .unwrap();
    assert_eq!(approved.get(), 1);
    assert_eq!(tokens.scope(), Some("api"));
    assert_eq!(time.sleeps(), vec![std::time::Duration::from_secs(5)]);
    let calls = srv.token_calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].grant, Grant::DeviceCode);
    assert_eq!(srv.device_authorizations().len(), 1);
    let text = out.text();
    assert!(
        text.contains(&format!("To log in, open {}/device", srv.base_url())),
        "{text}"
    );
    assert!(text.contains("(or open "), "{text}");
}

/// `Device`: a line when the server says `slow_down` and one per failed poll; none for a
/// plain pending poll.
#[test]
fn device_says_when_polling_slows_down_or_fails() {
    let srv = TestServer::start();
    let time = TestTime::new();
    for fault in [
        Fault::AuthorizationPending,
        Fault::SlowDown,
        Fault::Unavailable { retry_after: None },
    ] {
        srv.fault_next_token_calls(1, fault);
    }
    let mut out = Watcher::new(|line| {
        if let Some((_, code)) = line.split_once("and enter the code ") {
            srv.approve(code.trim()).unwrap();
        }
    });
    srv.auth_server()
        .agent(no_proxy_agent())
        .interactive_login()
        .method(LoginMethod::Device)
        .device(|f| f.clock(time.clone()).sleeper(time.clone()))
        .run(&mut out, io::empty())
        .unwrap();
    let s = std::time::Duration::from_secs;
    assert_eq!(time.sleeps(), vec![s(5), s(5), s(10), s(20)]);
    assert_eq!(srv.token_calls().len(), 4);
    let text = out.text();
    let after_code: Vec<&str> = text.lines().skip(2).collect();
    assert_eq!(
        after_code,
        [
            "the server asked to poll less often: every 10 s",
            "a poll failed (1 in a row); trying again in 20 s",
        ],
        "{text}"
    );
}

/// `Browser`: the address is printed, then opened with the flow's opener (here a hook
/// that is the browser); a hook that fails is said on the output and the login goes on.
#[test]
fn browser_opens_the_address_with_the_flows_opener() {
    let srv = Arc::new(TestServer::start());
    for hook_fails in [false, true] {
        let opened = Arc::new(AtomicUsize::new(0));
        let (browser, count) = (srv.clone(), opened.clone());
        let mut out = Vec::new();
        let tokens = srv
            .auth_server()
            .agent(no_proxy_agent())
            .interactive_login()
            .method(LoginMethod::Browser)
            .browser(move |f| {
                f.open_with(move |url| {
                    count.fetch_add(1, Ordering::SeqCst);
                    let status = browser.open_in_browser(url).map_err(io::Error::other)?;
                    assert_eq!(status, 200);
                    match hook_fails {
                        true => Err(io::Error::other("the hook says no")),
                        false => Ok(()),
                    }
                })
            })
            .run(&mut out, io::empty())
            .unwrap();
        assert_eq!(opened.load(Ordering::SeqCst), 1);
        assert!(tokens.access_token().secret().starts_with("at-"));
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("To log in, open this address"), "{text}");
        let said = match hook_fails {
            // The hook's message is not repeated (it could quote the URL): its kind is.
            true => "Could not open it (the opener failed: other error)",
            // A hook is the program's own opener, maybe no browser: not called one.
            false => "Opened it; waiting for the login",
        };
        assert!(text.contains(said), "{text}");
        // No browser opened: the paste prompt is open too (the input here is empty).
        let prompt = "If your browser is on another machine";
        assert_eq!(text.contains(prompt), hook_fails, "{text}");
    }
    let calls = srv.token_calls();
    assert_eq!(calls.len(), 2);
    assert!(calls.iter().all(|c| c.grant == Grant::AuthorizationCode));
}

/// A forced method needs its endpoint, and `Auto` one of them: `Config` errors, whatever
/// the environment.
#[test]
fn a_method_without_its_endpoint_is_a_config_error() {
    let token = "http://127.0.0.1:9/token";
    let neither = AuthServer::new(token).client_id("cli");
    let browser_only = neither
        .clone()
        .authorization_url("http://127.0.0.1:9/authorize");
    let device_only = neither
        .clone()
        .device_authorization_url("http://127.0.0.1:9/device");
    for (server, method) in [
        (&device_only, LoginMethod::Browser),
        (&device_only, LoginMethod::Paste),
        (&browser_only, LoginMethod::Device),
        (&neither, LoginMethod::Auto),
    ] {
        let login = server.interactive_login().method(method);
        assert!(
            matches!(login.chosen(), Err(Error::Config(_))),
            "{method:?}"
        );
        assert!(
            matches!(
                login.run(&mut Vec::new(), io::empty()),
                Err(Error::Config(_))
            ),
            "{method:?}"
        );
    }
    for method in [
        LoginMethod::Browser,
        LoginMethod::Paste,
        LoginMethod::Device,
    ] {
        let both = browser_only
            .clone()
            .device_authorization_url("http://127.0.0.1:9/device");
        assert_eq!(
            both.interactive_login().method(method).chosen().unwrap(),
            method
        );
    }
}

/// What `Auto` picks from the environment, each case in a child process of its own
/// (its role names the case): over SSH without a display the device flow, also with a
/// `$BROWSER` (set by a remote profile, it opens nothing the user sees); over SSH with a
/// forwarded display the browser; `$BROWSER` set the browser; nothing and no device endpoint
/// a paste; nothing with one the device flow.
#[test]
fn auto_picks_from_the_environment() {
    if let Ok(role) = std::env::var(ROLE) {
        return auto_in_child(&role);
    }
    let ssh = ("SSH_CONNECTION", "10.0.0.1 50000 10.0.0.2 22");
    let cases: [(&[(&str, &str)], &str); 6] = [
        (&[ssh], "device Device"),
        (&[ssh, ("BROWSER", "true")], "device Device"),
        (&[ssh, ("DISPLAY", "localhost:10.0")], "device Browser"),
        (&[("BROWSER", "true")], "device Browser"),
        (&[], "no-device Paste"),
        (&[], "device Device"),
    ];
    for (env, role) in cases {
        let mut child = child_test(&test_name!(auto_picks_from_the_environment), role);
        for var in [
            "BROWSER",
            "DISPLAY",
            "WAYLAND_DISPLAY",
            "SSH_CONNECTION",
            "SSH_CLIENT",
            "SSH_TTY",
            "WSL_DISTRO_NAME",
        ] {
            child.env_remove(var);
        }
        for (name, value) in env {
            child.env(name, value);
        }
        let out = child.output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{role}: {stdout}");
        assert!(
            stdout.contains("1 passed"),
            "{role}: the child ran no test: {stdout}"
        );
    }
}

/// The child of [`auto_picks_from_the_environment`]: `role` is "device|no-device Expected".
fn auto_in_child(role: &str) {
    let (device, expected) = role.split_once(' ').unwrap();
    let mut server = AuthServer::new("http://127.0.0.1:9/token")
        .authorization_url("http://127.0.0.1:9/authorize")
        .client_id("cli");
    if device == "device" {
        server = server.device_authorization_url("http://127.0.0.1:9/device");
    }
    let chosen = server.interactive_login().chosen().unwrap();
    assert_eq!(format!("{chosen:?}"), expected, "{role}");
}
