//! A server starts, is found by discovery, stops on drop (threads joined, port closed, a
//! scripted delay cut short) and runs side by side with many others.

use std::net::TcpStream;
use std::time::Duration;

use tokengate::login::Discovery;
use tokengate::testing::{Fault, TestServer};
use tokengate::AuthServer;

use crate::harness::observe::{child_test, must_not_block, test_name, wait_until, ROLE};

#[test]
fn discovery_finds_every_endpoint() {
    let server = TestServer::start();
    assert!(server.base_url().starts_with("http://127.0.0.1:"));
    let metadata = Discovery::new(server.issuer())
        .allow_insecure_http(true)
        .fetch()
        .unwrap();
    assert_eq!(metadata.issuer(), server.issuer());
    assert_eq!(metadata.token_endpoint(), server.token_url());
    let device = server.device_authorization_url();
    assert_eq!(
        metadata.device_authorization_endpoint(),
        Some(device.as_str())
    );
    let revocation = server.revocation_url();
    assert_eq!(metadata.revocation_endpoint(), Some(revocation.as_str()));
    // The RFC 8414 location answers the same document.
    let (status, _, doc) = crate::answer(
        crate::agent()
            .get(&format!(
                "{}/.well-known/oauth-authorization-server",
                server.issuer()
            ))
            .call(),
    );
    assert_eq!(status, 200);
    assert_eq!(
        doc["authorization_endpoint"],
        server.authorization_url().as_str()
    );
    assert_eq!(
        doc["code_challenge_methods_supported"],
        serde_json::json!(["S256"])
    );
    // And discovery over loopback http works in one call, as users write it.
    let found = AuthServer::discover(server.issuer()).unwrap();
    let tokens = found
        .client_id(tokengate::testing::CLIENT_ID)
        .client_secret(tokengate::testing::CLIENT_SECRET)
        .client_credentials();
    let client = tokengate::AuthClient::builder(server.api_url())
        .refresher(tokens)
        .build()
        .unwrap();
    assert_eq!(client.get("x").call().unwrap().status(), 200);
}

/// Threads of this process, from /proc.
fn threads() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("Threads:")).unwrap();
    line["Threads:".len()..].trim().parse().unwrap()
}

/// Child: starts a server, keeps connections open in an agent's pool, drops the server, and
/// checks the thread count went back to where it was and the port refuses connections.
#[test]
fn drop_joins_every_thread_and_closes_the_port() {
    if std::env::var(ROLE).as_deref() != Ok("drop") {
        let status = child_test(
            &test_name!(drop_joins_every_thread_and_closes_the_port),
            "drop",
        )
        .status()
        .unwrap();
        assert!(status.success(), "the child failed: {status}");
        return;
    }
    let before = threads();
    let server = TestServer::start();
    let agent = crate::agent();
    let client = crate::logged_in(&server);
    // Three connections held open at once (kept alive in the pools afterwards).
    std::thread::scope(|s| {
        for _ in 0..3 {
            s.spawn(|| client.get("a").call().unwrap());
        }
    });
    crate::refresh(&server.token_url(), "rt-1");
    assert!(threads() > before, "the server runs threads");
    let addr = server.base_url().trim_start_matches("http://").to_owned();
    drop(server);
    assert_eq!(threads(), before, "every thread of the server was joined");
    let refused = TcpStream::connect(&addr).unwrap_err();
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
    drop((agent, client));
    println!("child ok");
}

#[test]
fn drop_cuts_a_scripted_delay_short() {
    let server = TestServer::start();
    server.login();
    server.fault_next_token_calls(1, Fault::DelayAfter(Duration::from_secs(3600)));
    let url = server.token_url();
    let caller = std::thread::spawn(move || {
        crate::agent()
            .post(&url)
            .send_form([
                ("grant_type", "refresh_token"),
                ("refresh_token", "rt-1"),
                ("client_id", tokengate::testing::CLIENT_ID),
                ("client_secret", tokengate::testing::CLIENT_SECRET),
            ])
            .map(|r| r.status().as_u16())
    });
    wait_until("the call was handled", || server.token_calls().len() == 1);
    assert!(server.is_active("rt-2"), "rotated before the delay");
    must_not_block("dropping a server inside an hour's delay", move || {
        drop(server)
    });
    let answered = must_not_block("the caller", move || caller.join().unwrap());
    assert!(
        answered.is_err(),
        "the connection closed unanswered: {answered:?}"
    );
}

#[test]
fn a_hundred_servers_side_by_side() {
    let servers: Vec<TestServer> = (0..100).map(|_| TestServer::start()).collect();
    let agent = crate::agent();
    for server in &servers {
        let tokens = server.login();
        let status = agent
            .get(&format!("{}me", server.api_url()))
            .header(
                "authorization",
                format!("Bearer {}", tokens.access_token().secret()),
            )
            .call()
            .unwrap()
            .status();
        assert_eq!(status, 200);
    }
    for server in &servers {
        assert_eq!((server.api_requests(), server.issued()), (1, 1));
    }
    let mut ports: Vec<&str> = servers.iter().map(|s| s.base_url()).collect();
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), 100);
}
