//! A loopback server that speaks HTTPS (rustls, with the certificate in `tls/` next to this
//! file) and plain HTTP on the same port, for tests that need an `https://` origin and an
//! `http://` one on the same host and port: the https → http redirect. It tells the two apart
//! by the first byte a client sends (a TLS handshake starts with 0x16). Every request goes to
//! the handler with `https` true or false, like [`super::raw::RawServer`]; only
//! `Action::Respond` is supported.
//!
//! The certificate is for `127.0.0.1` and `localhost`, signed by a test CA (`ca.pem`), both
//! valid until 2126. [`TlsServer::agent`] builds a ureq agent that trusts only that CA;
//! [`TlsServer::any_host_agent`] one that sends every host name to this server, for
//! `https://` URLs of real hosts served on loopback.

use std::io::{BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokengate::ureq::config::Config;
use tokengate::ureq::http::Uri;
use tokengate::ureq::tls::{Certificate, RootCerts, TlsConfig};
use tokengate::ureq::unversioned::resolver::{ResolvedSocketAddrs, Resolver};
use tokengate::ureq::unversioned::transport::{DefaultConnector, NextTimeout};
use tokengate::ureq::Agent;

use super::raw::{read_request, Action, RawRequest};

const CA: &[u8] = include_bytes!("tls/ca.pem");
const LEAF: &[u8] = include_bytes!("tls/leaf.pem");
const KEY: &[u8] = include_bytes!("tls/leaf.key");

pub struct TlsServer {
    pub port: u16,
    pub requests: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl TlsServer {
    pub fn start(handler: impl Fn(bool, &RawRequest) -> Action + Send + Sync + 'static) -> Self {
        let cert = Certificate::from_pem(LEAF).unwrap();
        let key = tokengate::ureq::tls::PrivateKey::from_pem(KEY).unwrap();
        // The process-wide provider rustls picks from its crate features: ring, the only one
        // enabled (Cargo.toml's dev-dependency; ureq's rustls uses ring too). Not
        // `rustls::crypto::ring::default_provider()`, deprecated since rustls 0.23.48.
        let config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from(cert.der().to_vec())],
                PrivateKeyDer::try_from(key.der().to_vec()).unwrap(),
            )
            .unwrap();
        let config = Arc::new(config);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let handler = Arc::new(handler);
        let requests = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, s) = (requests.clone(), stop.clone());
        thread::spawn(move || {
            for stream in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let (h, r, config) = (handler.clone(), r.clone(), config.clone());
                thread::spawn(move || serve(stream, config, &*h, &r));
            }
        });
        TlsServer {
            port,
            requests,
            stop,
        }
    }

    /// `https://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{}", self.port, path)
    }

    /// `http://127.0.0.1:PORT{path}`: the same host and port, without TLS.
    pub fn plain_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// A ureq agent (no proxy) that trusts the test CA and nothing else.
    pub fn agent() -> Agent {
        let ca = Certificate::from_pem(CA).unwrap();
        Agent::config_builder()
            .proxy(None)
            .tls_config(
                TlsConfig::builder()
                    .root_certs(RootCerts::new_with_certs(&[ca]))
                    .build(),
            )
            .build()
            .into()
    }
}

impl TlsServer {
    /// A ureq agent (no proxy) that connects to this server whatever host and port a URL
    /// names: its resolver answers `127.0.0.1:PORT` for every name and asks no DNS. It does
    /// not verify the server's certificate, which names `127.0.0.1`, not the host asked for.
    /// For `https://login.microsoftonline.com/…` and the like, served on loopback.
    pub fn any_host_agent(&self) -> Agent {
        let config = Agent::config_builder()
            .proxy(None)
            .tls_config(TlsConfig::builder().disable_verification(true).build())
            .build();
        Agent::with_parts(
            config,
            DefaultConnector::new(),
            LoopbackResolver(SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))),
        )
    }
}

/// Resolves every name to one loopback address.
#[derive(Debug)]
struct LoopbackResolver(SocketAddr);

impl Resolver for LoopbackResolver {
    fn resolve(
        &self,
        _uri: &Uri,
        _config: &Config,
        _timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, tokengate::ureq::Error> {
        let mut addrs = self.empty();
        addrs.push(self.0);
        Ok(addrs)
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port)); // wake the accept loop
    }
}

fn serve(
    stream: TcpStream,
    config: Arc<rustls::ServerConfig>,
    handler: &(dyn Fn(bool, &RawRequest) -> Action + Send + Sync),
    n: &AtomicUsize,
) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut first = [0u8; 1];
    if !matches!(stream.peek(&mut first), Ok(1)) {
        return;
    }
    if first[0] == 0x16 {
        let Ok(conn) = rustls::ServerConnection::new(config) else {
            return;
        };
        answer(rustls::StreamOwned::new(conn, stream), true, handler, n);
    } else {
        answer(stream, false, handler, n);
    }
}

fn answer(
    stream: impl Read + Write,
    https: bool,
    handler: &(dyn Fn(bool, &RawRequest) -> Action + Send + Sync),
    n: &AtomicUsize,
) {
    let mut reader = BufReader::new(stream);
    loop {
        let Some(req) = read_request(&mut reader) else {
            return;
        };
        n.fetch_add(1, Ordering::SeqCst);
        let Action::Respond(status, headers, body) = handler(https, &req) else {
            return;
        };
        let mut out =
            format!("HTTP/1.1 {status} X\r\ncontent-length: {}\r\n", body.len()).into_bytes();
        for h in headers {
            out.extend_from_slice(&h);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&body);
        let stream = reader.get_mut();
        if stream
            .write_all(&out)
            .and_then(|()| stream.flush())
            .is_err()
        {
            return;
        }
    }
}
