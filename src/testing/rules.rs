//! The authorization server's rules, without HTTP: token families with rotation and reuse
//! detection, device codes, authorization codes with PKCE, revocation, access-token checks.
//! Everything here runs under `Shared::state`'s lock (see `server.rs`).
//!
//! A *family* is everything one login issued: its refresh token rotates on every refresh
//! (the old one is kept as "rotated"); presenting a rotated one is reuse, which revokes the
//! family (its refresh token and every access token it issued), as RFC 9700 §4.14.2 and
//! certified servers do.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

/// Authorization codes live this long (RFC 6749 §4.1.2 recommends at most 10 minutes).
const CODE_LIFETIME: Duration = Duration::from_secs(600);

/// A refusal, as the token endpoint answers it (RFC 6749 §5.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub status: u16,
    pub error: &'static str,
    pub description: &'static str,
}

const fn refusal(error: &'static str, description: &'static str) -> Refusal {
    Refusal {
        status: 400,
        error,
        description,
    }
}

/// What a grant issued.
#[derive(Clone, Debug)]
pub(crate) struct Issued {
    /// N of `at-N` (and of `rt-N`, when a refresh token was issued).
    pub generation: u64,
    pub access: String,
    pub refresh: Option<String>,
    pub scope: Option<String>,
}

/// One login's tokens.
#[derive(Debug)]
struct Family {
    client: String,
    scope: Option<String>,
    /// The refresh token that works now (`None` once revoked).
    current: Option<String>,
    /// Every access token this family issued.
    access: Vec<String>,
}

#[derive(Debug)]
struct Access {
    /// `None`: a lifetime past the end of `Instant` (never expires).
    expires: Option<Instant>,
    family: u64,
    scope: Option<String>,
}

/// Where a device code stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DeviceState {
    Pending,
    Approved,
    Denied,
    Expired,
    /// Exchanged for tokens: a device code is used once.
    Used,
}

#[derive(Debug)]
struct Device {
    client: String,
    scope: Option<String>,
    user_code: String,
    /// `None`: never expires (a lifetime past the end of `Instant`).
    expires: Option<Instant>,
    state: DeviceState,
}

impl Device {
    /// Its state at `now`: a code not yet exchanged expires with its lifetime, whatever the
    /// user did (RFC 8628 §3.5).
    fn state_at(&self, now: Instant) -> DeviceState {
        let expired = self.expires.is_some_and(|at| now >= at);
        match self.state {
            DeviceState::Pending | DeviceState::Approved | DeviceState::Denied if expired => {
                DeviceState::Expired
            }
            state => state,
        }
    }
}

/// An authorization request, as `/oauth/authorize` received it.
#[derive(Debug)]
pub(crate) struct AuthorizeRequest {
    pub client_id: String,
    pub redirect_uri: String,
    pub challenge: Option<String>,
    pub scope: Option<String>,
}

#[derive(Debug)]
struct Code {
    request: AuthorizeRequest,
    expires: Instant,
    /// The family its exchange issued: revoked should the code come back (RFC 6749 §4.1.2).
    family: Option<u64>,
}

/// The server's whole state of grants and tokens.
#[derive(Debug)]
pub(crate) struct Rules {
    lifetime: Duration,
    device_lifetime: Duration,
    /// Issuances so far: the N of the last `at-N`.
    generations: u64,
    /// When each generation was issued: `issued[N - 1]`.
    issued: Vec<Instant>,
    access: HashMap<String, Access>,
    families: Vec<Family>,
    /// Every refresh token ever issued (current or rotated), to its family.
    refresh: HashMap<String, u64>,
    devices: HashMap<String, Device>,
    codes: HashMap<String, Code>,
    /// Refresh tokens presented so far (to count a token presented twice).
    presented: HashSet<String>,
}

/// How a refresh went, beyond its result: for the journal's counters.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct RefreshNotes {
    /// The token had been presented before (whatever the outcome).
    pub presented_twice: bool,
    /// The token was a rotated one: the family is revoked.
    pub reuse: bool,
}

impl Rules {
    pub fn new(lifetime: Duration, device_lifetime: Duration) -> Rules {
        Rules {
            lifetime,
            device_lifetime,
            generations: 0,
            issued: Vec::new(),
            access: HashMap::new(),
            families: Vec::new(),
            refresh: HashMap::new(),
            devices: HashMap::new(),
            codes: HashMap::new(),
            presented: HashSet::new(),
        }
    }

    /// Issuances so far: the N of the last `at-N`.
    pub fn generations(&self) -> u64 {
        self.generations
    }

    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    pub fn issued_at(&self, generation: u64) -> Option<Instant> {
        let i = usize::try_from(generation).ok()?.checked_sub(1)?;
        self.issued.get(i).copied()
    }

    /// N of an `at-N` or `rt-N` this server issued.
    pub fn generation_of(&self, token: &str) -> Option<u64> {
        let digits = token
            .strip_prefix("at-")
            .or_else(|| token.strip_prefix("rt-"))?;
        // Exactly as issued: digits, no sign, no leading zero.
        if digits.starts_with('0') || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let n: u64 = digits.parse().ok()?;
        (n >= 1 && n <= self.generations).then_some(n)
    }

    /// N of an `rt-N` this server issued.
    pub fn refresh_generation(&self, token: &str) -> Option<u64> {
        self.generation_of(token)
            .filter(|_| token.starts_with("rt-"))
    }

    /// N of an `at-N` this server issued.
    pub fn access_generation(&self, token: &str) -> Option<u64> {
        self.generation_of(token)
            .filter(|_| token.starts_with("at-"))
    }

    /// A new login (a new family) for `client`: access and refresh token.
    pub fn login(&mut self, client: &str, scope: Option<String>) -> Issued {
        let family = self.new_family(client, scope);
        self.issue(family, true)
    }

    /// A new family for `client`, with nothing issued yet: its index.
    fn new_family(&mut self, client: &str, scope: Option<String>) -> u64 {
        self.families.push(Family {
            client: client.to_owned(),
            scope,
            current: None,
            access: Vec::new(),
        });
        self.families.len() as u64 - 1
    }

    /// Issues the next generation in `family`: an access token and, if `with_refresh`, a
    /// refresh token that replaces the family's current one.
    fn issue(&mut self, family: u64, with_refresh: bool) -> Issued {
        let scope = self.families[family as usize].scope.clone();
        self.issue_scoped(family, with_refresh, scope)
    }

    /// [`issue`](Self::issue) with an access token for `scope` (a refresh may narrow it,
    /// RFC 6749 §6; the family keeps its own).
    fn issue_scoped(&mut self, family: u64, with_refresh: bool, scope: Option<String>) -> Issued {
        self.generations += 1;
        let n = self.generations;
        let now = Instant::now();
        self.issued.push(now);
        let f = &mut self.families[family as usize];
        let access = format!("at-{n}");
        f.access.push(access.clone());
        let refresh = with_refresh.then(|| {
            let token = format!("rt-{n}");
            f.current = Some(token.clone());
            token
        });
        if let Some(token) = &refresh {
            self.refresh.insert(token.clone(), family);
        }
        let expires = now.checked_add(self.lifetime);
        let grant = Access {
            expires,
            family,
            scope: scope.clone(),
        };
        self.access.insert(access.clone(), grant);
        Issued {
            generation: n,
            access,
            refresh,
            scope,
        }
    }

    /// The refresh_token grant (RFC 6749 §6) with rotation and reuse detection.
    pub fn refresh(
        &mut self,
        client: &str,
        presented: &str,
        scope: Option<&str>,
    ) -> (Result<Issued, Refusal>, RefreshNotes) {
        let notes = RefreshNotes {
            presented_twice: !presented.is_empty() && !self.presented.insert(presented.to_owned()),
            reuse: false,
        };
        let unknown = refusal("invalid_grant", "unknown, revoked or rotated refresh token");
        let Some(&family) = self.refresh.get(presented) else {
            return (Err(unknown), notes);
        };
        let f = &self.families[family as usize];
        if f.client != client {
            let other = refusal("invalid_grant", "refresh token issued to another client");
            return (Err(other), notes);
        }
        if f.current.as_deref() != Some(presented) {
            let reuse = f.current.is_some();
            self.revoke_family(family);
            return (Err(unknown), RefreshNotes { reuse, ..notes });
        }
        let narrowed = match scope.filter(|s| !s.trim().is_empty()) {
            Some(asked) if !within(asked, f.scope.as_deref()) => {
                let wider = refusal("invalid_scope", "scope wider than the original grant");
                return (Err(wider), notes);
            }
            Some(asked) => Some(asked.to_owned()),
            None => f.scope.clone(),
        };
        (Ok(self.issue_scoped(family, true, narrowed)), notes)
    }

    /// The client a refresh token (current or rotated) was issued to.
    pub fn client_of(&self, refresh_token: &str) -> Option<&str> {
        let family = *self.refresh.get(refresh_token)?;
        Some(self.families[family as usize].client.as_str())
    }

    /// Revokes a family: its refresh token stops working, every access token it issued too.
    fn revoke_family(&mut self, family: u64) {
        let f = &mut self.families[family as usize];
        f.current = None;
        for token in f.access.drain(..) {
            self.access.remove(&token);
        }
    }

    /// The client_credentials grant (RFC 6749 §4.4): an access token, no refresh token.
    pub fn client_credentials(&mut self, client: &str, scope: Option<String>) -> Issued {
        let family = self.new_family(client, scope);
        self.issue(family, false)
    }

    /// Revocation (RFC 7009 §2.1) by `client`: a refresh token (current or rotated) ends its
    /// family; an access token ends itself. Unknown tokens are ignored (`Ok(false)`); a token
    /// issued to another client is refused and revokes nothing.
    pub fn revoke_as(&mut self, client: &str, token: &str) -> Result<bool, Refusal> {
        let family = self
            .refresh
            .get(token)
            .or_else(|| self.access.get(token).map(|a| &a.family));
        match family {
            Some(&f) if self.families[f as usize].client != client => Err(refusal(
                "unauthorized_client",
                "the token was issued to another client",
            )),
            Some(_) => Ok(self.revoke(token)),
            None => Ok(false),
        }
    }

    /// Revokes `token` whoever it was issued to (see [`Rules::revoke_as`]). Returns whether
    /// it was known.
    pub fn revoke(&mut self, token: &str) -> bool {
        if let Some(&family) = self.refresh.get(token) {
            self.revoke_family(family);
            return true;
        }
        self.access.remove(token).is_some()
    }

    /// Ends every family: no token this server issued works any more.
    pub fn revoke_all(&mut self) {
        for family in 0..self.families.len() as u64 {
            self.revoke_family(family);
        }
    }

    /// Ends every live access token; refresh tokens keep working.
    pub fn revoke_access_tokens(&mut self) {
        self.access.clear();
        for f in &mut self.families {
            f.access.clear();
        }
    }

    /// Whether `token` is a live access token now, and its scope.
    pub fn check(&self, token: &str, now: Instant) -> Option<Option<&str>> {
        let a = self.access.get(token)?;
        a.expires
            .is_none_or(|at| at > now)
            .then_some(a.scope.as_deref())
    }

    /// Whether `token` works now: a live access token, or the current refresh token of a
    /// login that was not revoked.
    pub fn is_active(&self, token: &str, now: Instant) -> bool {
        if self.check(token, now).is_some() {
            return true;
        }
        self.refresh
            .get(token)
            .is_some_and(|&family| self.families[family as usize].current.as_deref() == Some(token))
    }

    /// Device authorization (RFC 8628 §3.2): a new device code and user code.
    pub fn device_authorize(&mut self, client: &str, scope: Option<String>) -> (String, String) {
        let n = self.devices.len() as u64 + 1;
        let device_code = format!("dc-{n}");
        let user_code = user_code(n);
        self.devices.insert(
            device_code.clone(),
            Device {
                client: client.to_owned(),
                scope,
                user_code: user_code.clone(),
                expires: Instant::now().checked_add(self.device_lifetime),
                state: DeviceState::Pending,
            },
        );
        (device_code, user_code)
    }

    pub fn device_lifetime(&self) -> Duration {
        self.device_lifetime
    }

    /// The test's side of a device login: moves the device code with `user_code` from
    /// pending to `to`. Returns false if no pending device code has that user code (an
    /// expired one is not pending).
    pub fn decide(&mut self, user_code: &str, to: DeviceState) -> bool {
        let now = Instant::now();
        let device = self.devices.values_mut().find(|d| d.user_code == user_code);
        match device {
            Some(d) if d.state_at(now) == DeviceState::Pending => {
                d.state = to;
                true
            }
            _ => false,
        }
    }

    /// The device_code grant (RFC 8628 §3.4, §3.5).
    pub fn device_poll(&mut self, client: &str, code: &str) -> Result<Issued, Refusal> {
        let now = Instant::now();
        let unknown = refusal("invalid_grant", "unknown or used device code");
        let Some(d) = self.devices.get_mut(code) else {
            return Err(unknown);
        };
        if d.client != client {
            return Err(unknown);
        }
        d.state = d.state_at(now);
        let pending = refusal("authorization_pending", "the user has not answered yet");
        match d.state {
            DeviceState::Pending => Err(pending),
            DeviceState::Denied => Err(refusal("access_denied", "the user denied the request")),
            DeviceState::Expired => Err(refusal("expired_token", "the device code expired")),
            DeviceState::Used => Err(unknown),
            DeviceState::Approved => {
                d.state = DeviceState::Used;
                let (client, scope) = (d.client.clone(), d.scope.clone());
                Ok(self.login(&client, scope))
            }
        }
    }

    /// The authorization endpoint's decision (RFC 6749 §4.1.2): a new code for `request`.
    pub fn new_code(&mut self, request: AuthorizeRequest) -> String {
        let code = format!("code-{}", self.codes.len() + 1);
        let expires = Instant::now() + CODE_LIFETIME; // 10 minutes: cannot overflow
        let entry = Code {
            request,
            expires,
            family: None,
        };
        self.codes.insert(code.clone(), entry);
        code
    }

    /// The authorization_code grant (RFC 6749 §4.1.3) with PKCE (RFC 7636 §4.6).
    pub fn exchange_code(
        &mut self,
        client: &str,
        code: &str,
        redirect_uri: Option<&str>,
        verifier: Option<&str>,
    ) -> Result<Issued, Refusal> {
        let bad = refusal(
            "invalid_grant",
            "unknown, used or expired authorization code",
        );
        let Some(c) = self.codes.get_mut(code) else {
            return Err(bad);
        };
        if let Some(family) = c.family {
            // A code presented twice: revoke what the first exchange issued.
            self.revoke_family(family);
            return Err(bad);
        }
        if c.request.client_id != client || Instant::now() >= c.expires {
            return Err(bad);
        }
        if redirect_uri != Some(c.request.redirect_uri.as_str()) {
            return Err(refusal(
                "invalid_grant",
                "redirect_uri differs from the authorization request",
            ));
        }
        match (&c.request.challenge, verifier) {
            (_, Some(v)) if !pkce_shaped(v) => {
                let why = "code_verifier must be 43 to 128 unreserved characters";
                return Err(refusal("invalid_grant", why));
            }
            (Some(challenge), Some(v)) if crate::login::challenge_s256(v) == *challenge => {}
            (Some(_), _) => return Err(refusal("invalid_grant", "PKCE verification failed")),
            (None, Some(_)) => return Err(refusal("invalid_grant", "no code_challenge was sent")),
            (None, None) => {}
        }
        let (client, scope) = (c.request.client_id.clone(), c.request.scope.clone());
        let family = self.new_family(&client, scope);
        if let Some(c) = self.codes.get_mut(code) {
            c.family = Some(family);
        }
        Ok(self.issue(family, true))
    }
}

/// Whether `value` has the shape RFC 7636 §4.1 gives a `code_verifier`: 43 to 128
/// characters `[A-Za-z0-9-._~]`.
pub(crate) fn pkce_shaped(value: &str) -> bool {
    (43..=128).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// Whether `value` has the shape of an S256 `code_challenge` (RFC 7636 §4.2): a SHA-256 in
/// unpadded base64url, 43 characters `[A-Za-z0-9_-]`.
pub(crate) fn challenge_shaped(value: &str) -> bool {
    value.len() == 43
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
}

/// Whether every scope in `asked` is in `granted` (space-separated, RFC 6749 §3.3).
fn within(asked: &str, granted: Option<&str>) -> bool {
    let granted: HashSet<&str> = granted.unwrap_or("").split(' ').collect();
    asked
        .split(' ')
        .filter(|s| !s.is_empty())
        .all(|s| granted.contains(s))
}

/// The user code of the n-th device code: eight letters from RFC 8628 §6.1's consonant-only
/// alphabet, `XXXX-XXXX`.
fn user_code(n: u64) -> String {
    const LETTERS: &[u8; 20] = b"BCDFGHJKLMNPQRSTVWXZ";
    let mut x = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5DEE_CE66;
    let mut code = String::with_capacity(9);
    for i in 0..8 {
        if i == 4 {
            code.push('-');
        }
        code.push(char::from(LETTERS[(x % 20) as usize]));
        x /= 20;
    }
    code
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> Rules {
        Rules::new(Duration::from_secs(60), Duration::from_secs(60))
    }

    #[test]
    fn rotation_and_reuse_revoke_the_family_only() {
        let mut r = rules();
        let a = r.login("app", None);
        let b = r.login("app", None);
        let a2 = r.refresh("app", "rt-1", None).0.unwrap();
        assert_eq!(
            (a2.access.as_str(), a2.refresh.as_deref()),
            ("at-3", Some("rt-3"))
        );
        let (again, notes) = r.refresh("app", "rt-1", None);
        assert_eq!(again.unwrap_err().error, "invalid_grant");
        assert!(notes.reuse && notes.presented_twice);
        let now = Instant::now();
        assert!(r.check(&a.access, now).is_none() && r.check(&a2.access, now).is_none());
        assert!(
            r.refresh("app", "rt-3", None).0.is_err(),
            "the family is revoked"
        );
        assert!(
            r.check(&b.access, now).is_some(),
            "another login is untouched"
        );
        let (ok, notes) = r.refresh("app", "rt-2", None);
        assert!(ok.is_ok() && !notes.reuse && !notes.presented_twice);
    }

    #[test]
    fn refresh_checks_client_and_scope() {
        let mut r = rules();
        r.login("app", Some("read write".into()));
        assert_eq!(
            r.refresh("other", "rt-1", None).0.unwrap_err().error,
            "invalid_grant"
        );
        let wider = r.refresh("app", "rt-1", Some("read admin")).0.unwrap_err();
        assert_eq!(wider.error, "invalid_scope");
        let ok = r.refresh("app", "rt-1", Some("read")).0.unwrap();
        assert_eq!(
            ok.scope.as_deref(),
            Some("read"),
            "the access token is narrowed"
        );
        let next = r.refresh("app", "rt-2", None).0.unwrap();
        assert_eq!(
            next.scope.as_deref(),
            Some("read write"),
            "the login keeps its scope"
        );
    }

    #[test]
    fn device_codes_follow_the_user() {
        let mut r = rules();
        let (code, user) = r.device_authorize("tv", None);
        assert_eq!(
            r.device_poll("tv", &code).unwrap_err().error,
            "authorization_pending"
        );
        assert_eq!(
            r.device_poll("other", &code).unwrap_err().error,
            "invalid_grant"
        );
        assert!(!r.decide("NOPE-NOPE", DeviceState::Approved));
        assert!(r.decide(&user, DeviceState::Approved));
        assert_eq!(r.device_poll("tv", &code).unwrap().access, "at-1");
        assert_eq!(
            r.device_poll("tv", &code).unwrap_err().error,
            "invalid_grant"
        );
        let (code, user) = r.device_authorize("tv", None);
        assert!(r.decide(&user, DeviceState::Denied));
        assert_eq!(
            r.device_poll("tv", &code).unwrap_err().error,
            "access_denied"
        );
        let (code, user) = r.device_authorize("tv", None);
        assert!(r.decide(&user, DeviceState::Expired));
        assert_eq!(
            r.device_poll("tv", &code).unwrap_err().error,
            "expired_token"
        );
        assert_ne!(user_code(1), user_code(2));
    }

    #[test]
    fn codes_need_the_verifier_and_work_once() {
        // RFC 7636 Appendix B.
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        assert_eq!(
            crate::login::challenge_s256(verifier),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        let mut r = rules();
        let request = || AuthorizeRequest {
            client_id: "cli".into(),
            redirect_uri: "http://127.0.0.1:9/cb".into(),
            challenge: Some(crate::login::challenge_s256(verifier)),
            scope: None,
        };
        let code = r.new_code(request());
        let uri = Some("http://127.0.0.1:9/cb");
        let short = r
            .exchange_code("cli", &code, uri, Some("wrong"))
            .unwrap_err();
        assert!(short.description.contains("43 to 128"), "{short:?}");
        let wrong = "wrong-but-shaped-wrong-but-shaped-wrong-but-shaped";
        let wrong = r.exchange_code("cli", &code, uri, Some(wrong)).unwrap_err();
        assert_eq!(wrong.description, "PKCE verification failed");
        let other_uri = r.exchange_code("cli", &code, Some("http://x/"), Some(verifier));
        assert!(other_uri.is_err());
        let issued = r.exchange_code("cli", &code, uri, Some(verifier)).unwrap();
        assert!(r.check(&issued.access, Instant::now()).is_some());
        assert!(r.exchange_code("cli", &code, uri, Some(verifier)).is_err());
        assert!(
            r.check(&issued.access, Instant::now()).is_none(),
            "a replayed code revokes"
        );
    }
}
