//! The kit's HTTP/1.1 server under bad input: a clear 4xx and a closed connection, never a
//! hang or a crash; keep-alive and chunked bodies as clients send them.

use std::io::{Read, Write};
use std::net::TcpStream;

use tokengate::testing::TestServer;

use crate::harness::observe::must_not_block;

/// Sends `bytes` on a new connection and reads until the server closes it.
fn exchange(server: &TestServer, bytes: Vec<u8>) -> String {
    let addr = server.base_url().trim_start_matches("http://").to_owned();
    must_not_block("a raw exchange", move || {
        let mut stream = TcpStream::connect(addr).unwrap();
        // The server may answer (and stop reading) before the whole request is written.
        let _ = stream.write_all(&bytes);
        let mut out = Vec::new();
        let _ = stream.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    })
}

fn status_line(answer: &str) -> &str {
    answer.lines().next().unwrap_or("")
}

#[test]
fn bad_requests_get_a_4xx_and_a_closed_connection() {
    let server = TestServer::start();
    let garbage = exchange(&server, b"NOT HTTP AT ALL\r\n\r\n".to_vec());
    assert!(
        status_line(&garbage).starts_with("HTTP/1.1 400"),
        "{garbage}"
    );
    let huge = format!(
        "GET /api/x HTTP/1.1\r\nx-big: {}\r\n\r\n",
        "a".repeat(70_000)
    );
    assert!(status_line(&exchange(&server, huge.into_bytes())).starts_with("HTTP/1.1 431"));
    let many: String = (0..80).map(|i| format!("x-{i}: y\r\n")).collect();
    let many = format!("GET /api/x HTTP/1.1\r\n{many}\r\n");
    assert!(status_line(&exchange(&server, many.into_bytes())).starts_with("HTTP/1.1 431"));
    let big = "POST /oauth/token HTTP/1.1\r\ncontent-length: 999999999\r\n\r\n";
    assert!(status_line(&exchange(&server, big.into())).starts_with("HTTP/1.1 413"));
    let bad_len = "POST /oauth/token HTTP/1.1\r\ncontent-length: nope\r\n\r\n";
    assert!(status_line(&exchange(&server, bad_len.into())).starts_with("HTTP/1.1 400"));
    let cut = "POST /oauth/token HTTP/1.1\r\ncontent-length: 10\r\n\r\nabc";
    let cut = must_not_block("a cut body", {
        let addr = server.base_url().trim_start_matches("http://").to_owned();
        move || {
            let mut stream = TcpStream::connect(addr).unwrap();
            stream.write_all(cut.as_bytes()).unwrap();
            stream.shutdown(std::net::Shutdown::Write).unwrap();
            let mut out = String::new();
            let _ = stream.read_to_string(&mut out);
            out
        }
    });
    assert!(status_line(&cut).starts_with("HTTP/1.1 400"), "{cut}");
    // And it still serves.
    assert_eq!(crate::post(&server.token_url(), &[]).0, 401);
}

#[test]
fn keep_alive_and_chunked_bodies() {
    let server = TestServer::start();
    let token = server.login();
    let at = token.access_token().secret();
    let requests = format!(
        "GET /api/one HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {at}\r\n\r\n\
         POST /api/two HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {at}\r\n\
         transfer-encoding: chunked\r\nconnection: close\r\n\r\n\
         5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n"
    );
    let answers = exchange(&server, requests.into_bytes());
    assert_eq!(answers.matches("HTTP/1.1 200 OK").count(), 2, "{answers}");
    let calls = server.api_calls();
    let seen: Vec<_> = calls
        .iter()
        .map(|c| (c.method.as_str(), c.path.as_str(), c.body_len))
        .collect();
    assert_eq!(seen, [("GET", "/api/one", 0), ("POST", "/api/two", 11)]);
}

#[test]
fn unknown_paths_and_methods() {
    let server = TestServer::start();
    let get = |path: &str| {
        crate::answer(
            crate::agent()
                .get(&format!("{}{path}", server.base_url()))
                .call(),
        )
        .0
    };
    assert_eq!(get("/nowhere"), 404);
    assert_eq!(get("/oauth/token"), 405);
}

#[test]
fn where_a_body_ends_is_never_ambiguous() {
    let server = TestServer::start();
    let first_status = |raw: &str| {
        let answer = exchange(&server, raw.as_bytes().to_vec());
        status_line(&answer).to_owned()
    };
    let post = "POST /api/x HTTP/1.1\r\nhost: x\r\n";
    for (headers, status) in [
        ("content-length: 0\r\ncontent-length: 5\r\n", "400"),
        ("content-length: 5\r\ntransfer-encoding: chunked\r\n", "400"),
        ("content-length: +5\r\n", "400"),
        ("transfer-encoding: gzip, chunked\r\n", "501"),
        ("transfer-encoding: notchunked\r\n", "501"),
    ] {
        let raw = format!("{post}{headers}\r\nhello");
        let got = first_status(&raw);
        assert!(
            got.starts_with(&format!("HTTP/1.1 {status}")),
            "{headers:?}: {got}"
        );
    }
    let chunked = format!("{post}transfer-encoding: chunked\r\n\r\n");
    let overflow = format!("{chunked}1\r\nA\r\nffffffffffffffff\r\n");
    assert!(first_status(&overflow).starts_with("HTTP/1.1 413"));
    for size in ["+a", " a", "", "0x5"] {
        let signed = format!("{chunked}{size}\r\nhello12345\r\n0\r\n\r\n");
        assert!(
            first_status(&signed).starts_with("HTTP/1.1 400"),
            "{size:?}"
        );
    }
    let no_crlf = format!("{chunked}1\r\nAXY0\r\n\r\n");
    assert!(first_status(&no_crlf).starts_with("HTTP/1.1 400"));
    let endless_trailer = format!("{chunked}0\r\n{}", "t".repeat(70_000));
    assert!(first_status(&endless_trailer).starts_with("HTTP/1.1 400"));
    let many_trailers = format!("{chunked}0\r\n{}\r\n", "t: x\r\n".repeat(20_000));
    assert!(first_status(&many_trailers).starts_with("HTTP/1.1 431"));
    assert_eq!(
        server.api_requests(),
        0,
        "no request was read out of another's body"
    );
}

#[test]
fn head_204_and_304_answers_have_no_body() {
    let server = TestServer::start();
    let at = server.login().access_token().secret().to_owned();
    let requests = format!(
        "HEAD /api/one HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {at}\r\n\r\n\
         GET /api/status/204 HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {at}\r\n\r\n\
         GET /api/status/304 HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {at}\r\n\
         connection: close\r\n\r\n"
    );
    let answers = exchange(&server, requests.into_bytes());
    // Three heads, each followed directly by the next (or the end): no body anywhere.
    let heads: Vec<&str> = answers.split("\r\n\r\n").collect();
    assert_eq!(heads.len(), 4, "{answers:?}");
    assert_eq!(heads[3], "", "{answers:?}");
    assert!(heads[0].starts_with("HTTP/1.1 200") && heads[0].contains("content-length: "));
    assert!(heads[1].starts_with("HTTP/1.1 204") && heads[2].starts_with("HTTP/1.1 304"));
}
