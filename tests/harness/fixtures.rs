//! What tests build: temporary directories, tokens and JWTs, refreshers, sleepers and
//! clocks, stores that fail on purpose or forward to a real one, agents and addresses.

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokengate::store::{LockedWrite, Revision, StoreLock, Stored};
use tokengate::time::{Clock, ManualClock, Sleeper};
use tokengate::ureq::Agent;
use tokengate::{RefreshError, TokenStore, Tokens};

use super::observe::{wait_until, HANG_GUARD};
use super::servers::Api;

/// A closure refresher that mints `new-1`, `new-2`, … (accepted by `api`) and counts its calls.
pub fn minting_refresher(
    api: &Api,
    calls: Arc<AtomicUsize>,
) -> impl Fn(&Agent, &Tokens) -> Result<Tokens, RefreshError> + Send + Sync + 'static {
    let acc = api.accepted.clone();
    move |_: &Agent, _: &Tokens| {
        let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
        let access = format!("new-{n}");
        acc.lock().unwrap().insert(access.clone());
        Ok(Tokens::new(access).with_refresh_token(format!("rt-new-{n}")))
    }
}

/// A loopback address nothing listens on (connection refused).
pub fn refused_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    addr
}

/// A loopback server that accepts one connection and never answers (for timeouts).
pub struct Silent {
    pub addr: SocketAddr,
    stop: Option<mpsc::Sender<()>>,
}

impl Silent {
    pub fn start() -> Silent {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let (tx, rx) = mpsc::channel::<()>();
        std::thread::spawn(move || {
            if let Ok((conn, _)) = l.accept() {
                let _ = rx.recv_timeout(HANG_GUARD);
                drop(conn);
            }
        });
        Silent {
            addr,
            stop: Some(tx),
        }
    }
}

impl Drop for Silent {
    fn drop(&mut self) {
        drop(self.stop.take());
        // Unblocks the accept if nothing ever connected.
        let _ = TcpStream::connect(self.addr);
    }
}

/// Standard base64 with padding.
pub fn base64(input: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in input.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// An unsigned JWT with the given claims (tokengate reads `exp`/`iat` without verifying).
pub fn jwt(claims: &serde_json::Value) -> String {
    let url = |s: &str| {
        base64(s.as_bytes())
            .trim_end_matches('=')
            .replace('+', "-")
            .replace('/', "_")
    };
    format!(
        "{}.{}.c2ln",
        url(r#"{"alg":"none","typ":"JWT"}"#),
        url(&claims.to_string())
    )
}

/// An OpenID Connect ID token for `email` (an unsigned JWT), about 4 KB like a large real
/// one (it carries 125 group names).
pub fn id_token_of(email: &str) -> String {
    let groups: Vec<String> = (0..125)
        .map(|i| format!("group-{i:03}-of-the-org"))
        .collect();
    jwt(&serde_json::json!({
        "iss": "https://auth.example.com",
        "sub": "248289761001",
        "aud": "my-app",
        "email": email,
        "groups": groups,
    }))
}

/// Whole seconds since the Unix epoch.
pub fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// Lets a refresher closure, given to the builder before the client exists, ask the client
/// how many threads wait on its refresh (`AuthClient::refresh_waiters`).
#[derive(Clone, Default)]
pub struct ClientSlot(Arc<Mutex<Option<tokengate::AuthClient>>>);

impl ClientSlot {
    pub fn set(&self, c: &tokengate::AuthClient) {
        *self.0.lock().unwrap() = Some(c.clone());
    }

    pub fn waiters(&self) -> usize {
        self.0
            .lock()
            .unwrap()
            .as_ref()
            .map_or(0, |c| c.refresh_waiters())
    }

    /// Blocks until `n` threads wait on the running refresh (bounded by [`HANG_GUARD`]).
    pub fn wait_for_waiters(&self, n: usize) {
        wait_until(&format!("{n} threads waiting on the refresh"), || {
            self.waiters() == n
        });
    }

    /// Breaks the client → refresher → slot → client cycle.
    pub fn clear(&self) {
        self.0.lock().unwrap().take();
    }

    /// Takes the client's handle out of the slot (e.g. for a refresher to close it).
    pub fn take(&self) -> Option<tokengate::AuthClient> {
        self.0.lock().unwrap().take()
    }
}

/// A fresh, empty directory for one test under Cargo's scratch space for integration tests
/// (`CARGO_TARGET_TMPDIR`, or the system's temporary directory where Cargo gives none),
/// removed on drop.
///
/// Its name is `name`, the process id and a number unique in the process: the tests of an
/// area share a process, and two of them giving the same `name` still get two directories.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let root =
            option_env!("CARGO_TARGET_TMPDIR").map_or_else(std::env::temp_dir, PathBuf::from);
        let dir = root.join(format!("{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    /// `name` inside the directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A shared store (`FileStore`, `RedisStore`) whose writes under its lock can be made to
/// fail, as on a full disk or a read-only mount: while `fail` is set, a locked write returns
/// an error and changes nothing. Taking the lock, reading and polling are the real store's.
pub struct FailingWrites<S> {
    pub store: S,
    pub fail: Arc<AtomicBool>,
}

impl<S: TokenStore> FailingWrites<S> {
    /// Wraps `store`; returns it with its switch (writes succeed until it is set).
    pub fn new(store: S) -> (Self, Arc<AtomicBool>) {
        let fail = Arc::new(AtomicBool::new(false));
        let wrapped = FailingWrites {
            store,
            fail: Arc::clone(&fail),
        };
        (wrapped, fail)
    }
}

struct FailingWrite {
    lock: StoreLock,
    fail: Arc<AtomicBool>,
}

impl LockedWrite for FailingWrite {
    fn write(&mut self, tokens: Option<&Tokens>) -> io::Result<Revision> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(io::Error::other("No space left on device"));
        }
        self.lock.write(tokens)
    }
    fn reread(&mut self) -> io::Result<Option<Stored>> {
        self.lock.reread().map(|s| s.cloned())
    }
    fn still_held(&mut self) -> io::Result<bool> {
        self.lock.still_held()
    }
    fn lost(&self) -> bool {
        self.lock.lost()
    }
    fn before_call(
        &mut self,
        presenting: Option<&tokengate::RefreshToken>,
        bound: Duration,
    ) -> io::Result<bool> {
        self.lock.before_call(presenting, bound)
    }
}

impl<S: TokenStore> TokenStore for FailingWrites<S> {
    fn load(&self) -> io::Result<Option<Tokens>> {
        self.store.load()
    }
    fn save(&self, tokens: &Tokens) -> io::Result<()> {
        self.lock()?.unwrap().write(Some(tokens)).map(drop)
    }
    fn clear(&self) -> io::Result<()> {
        self.lock()?.unwrap().write(None).map(drop)
    }
    fn is_shared(&self) -> bool {
        self.store.is_shared()
    }
    fn lock(&self) -> io::Result<Option<StoreLock>> {
        let lock = self.store.lock()?.expect("a shared store");
        let stored = lock.stored().cloned();
        let writer = FailingWrite {
            lock,
            fail: Arc::clone(&self.fail),
        };
        Ok(Some(match stored {
            Ok(stored) => StoreLock::new(stored, writer),
            Err(e) => StoreLock::unreadable(&e, writer),
        }))
    }
    fn poll(&self, since: Option<Revision>) -> io::Result<Option<Stored>> {
        self.store.poll(since)
    }
    fn lock_timeout(&self) -> Duration {
        self.store.lock_timeout()
    }
}

/// What a [`Forwarding`] store's replaced `lock` does, given the inner store.
type LockWith<S> = Box<dyn Fn(&S) -> io::Result<Option<StoreLock>> + Send + Sync>;
/// What a [`Forwarding`] store's replaced `poll` does, given the inner store and `since`.
type PollWith<S> = Box<dyn Fn(&S, Option<Revision>) -> io::Result<Option<Stored>> + Send + Sync>;

/// A store of a test's own around a shared one (`FileStore`, `RedisStore`): every method
/// forwards to `inner`, except those the test replaces. `lock` runs a function of the inner
/// store ([`Forwarding::lock_with`]: to panic, to wrap the lock's writes, to lose the lease),
/// and so does `poll` ([`Forwarding::poll_with`]: to hold a poll up, or hide what it would
/// report); `poll` and `lock_timeout`, which a store of your own may leave out, can be left
/// to the trait's defaults ([`Forwarding::no_poll`]: never reports a change;
/// [`Forwarding::no_lock_timeout`]: zero), and `lock_timeout` can declare another value
/// ([`Forwarding::lock_timeout`]).
pub struct Forwarding<S> {
    pub inner: S,
    lock: Option<LockWith<S>>,
    poll: Option<PollWith<S>>,
    lock_timeout: Option<Duration>,
}

impl<S: TokenStore> Forwarding<S> {
    /// Forwards every method to `inner`.
    pub fn new(inner: S) -> Self {
        Forwarding {
            inner,
            lock: None,
            poll: None,
            lock_timeout: None,
        }
    }

    /// `lock` is `f(&inner)`.
    pub fn lock_with(
        mut self,
        f: impl Fn(&S) -> io::Result<Option<StoreLock>> + Send + Sync + 'static,
    ) -> Self {
        self.lock = Some(Box::new(f));
        self
    }

    /// `poll` is `f(&inner, since)`.
    pub fn poll_with(
        mut self,
        f: impl Fn(&S, Option<Revision>) -> io::Result<Option<Stored>> + Send + Sync + 'static,
    ) -> Self {
        self.poll = Some(Box::new(f));
        self
    }

    /// `poll` is the trait's default: nothing ever changes behind the client's back.
    pub fn no_poll(self) -> Self {
        self.poll_with(|_, since| TraitDefaults.poll(since))
    }

    /// `lock_timeout` is the trait's default (zero): the store declares none.
    pub fn no_lock_timeout(self) -> Self {
        let zero = TokenStore::lock_timeout(&TraitDefaults);
        self.lock_timeout(zero)
    }

    /// `lock_timeout` declares `timeout` (whatever the inner store's lock waits).
    pub fn lock_timeout(mut self, timeout: Duration) -> Self {
        self.lock_timeout = Some(timeout);
        self
    }
}

impl<S: TokenStore> TokenStore for Forwarding<S> {
    fn load(&self) -> io::Result<Option<Tokens>> {
        self.inner.load()
    }
    fn save(&self, tokens: &Tokens) -> io::Result<()> {
        self.inner.save(tokens)
    }
    fn clear(&self) -> io::Result<()> {
        self.inner.clear()
    }
    fn is_shared(&self) -> bool {
        self.inner.is_shared()
    }
    fn lock(&self) -> io::Result<Option<StoreLock>> {
        match &self.lock {
            Some(f) => f(&self.inner),
            None => self.inner.lock(),
        }
    }
    fn poll(&self, since: Option<Revision>) -> io::Result<Option<Stored>> {
        match &self.poll {
            Some(f) => f(&self.inner, since),
            None => self.inner.poll(since),
        }
    }
    fn lock_timeout(&self) -> Duration {
        self.lock_timeout
            .unwrap_or_else(|| TokenStore::lock_timeout(&self.inner))
    }
}

/// A store that leaves out every method it may: the trait's defaults, for a [`Forwarding`]
/// store that leaves a method out. Never loaded, saved or cleared.
struct TraitDefaults;

impl TokenStore for TraitDefaults {
    fn load(&self) -> io::Result<Option<Tokens>> {
        unreachable!("only the trait's defaults are asked")
    }
    fn save(&self, _: &Tokens) -> io::Result<()> {
        unreachable!("only the trait's defaults are asked")
    }
    fn clear(&self) -> io::Result<()> {
        unreachable!("only the trait's defaults are asked")
    }
}

/// A `Sleeper` that records every wait instead of sleeping, and can run a hook on each
/// (e.g. to change the tokens "while" the client backs off).
#[derive(Default)]
pub struct RecordingSleeper {
    pub sleeps: parking_lot::Mutex<Vec<Duration>>,
    pub hook: parking_lot::Mutex<Option<Box<dyn FnMut() + Send>>>,
}

impl RecordingSleeper {
    pub fn sleeps(&self) -> Vec<Duration> {
        self.sleeps.lock().clone()
    }
}

impl Sleeper for RecordingSleeper {
    fn sleep(&self, d: Duration) {
        self.sleeps.lock().push(d);
        if let Some(hook) = self.hook.lock().as_mut() {
            hook();
        }
    }
}

/// A clock that sleeping advances, recording each sleep: the device flow's time, exactly.
pub struct TestTime {
    pub clock: ManualClock,
    pub sleeps: parking_lot::Mutex<Vec<Duration>>,
}

impl TestTime {
    pub fn new() -> Arc<Self> {
        Arc::new(TestTime {
            clock: ManualClock::new(),
            sleeps: parking_lot::Mutex::new(Vec::new()),
        })
    }

    pub fn sleeps(&self) -> Vec<Duration> {
        self.sleeps.lock().clone()
    }
}

impl Clock for TestTime {
    fn now(&self) -> SystemTime {
        self.clock.now()
    }
}

impl Sleeper for TestTime {
    fn sleep(&self, d: Duration) {
        self.sleeps.lock().push(d);
        self.clock.advance(d);
    }
}

/// An agent that ignores environment proxies (tests talk to loopback only).
pub fn no_proxy_agent() -> Agent {
    Agent::config_builder().proxy(None).build().into()
}
