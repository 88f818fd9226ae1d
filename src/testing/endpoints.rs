//! Every endpoint of a [`TestServer`]: requests in, the rules applied, answers out.
//!
//! | path | what |
//! |---|---|
//! | `GET /.well-known/openid-configuration`, `GET /.well-known/oauth-authorization-server` | metadata (RFC 8414) |
//! | `POST /oauth/token` | refresh_token, client_credentials, device_code, authorization_code grants |
//! | `POST /oauth/device` | device authorization (RFC 8628 §3.1) |
//! | `POST /oauth/revoke` | revocation (RFC 7009) |
//! | `GET /oauth/authorize` | authorization (RFC 6749 §4.1, PKCE S256): approves at once, 302 |
//! | `/api/…` | the protected API (RFC 6750) |

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::clients::{authenticate, claimed, Authorization, CLIENT_ID};
use super::error::TestServerError;
use super::faults::{self, Fault};
use super::journal::{
    ApiCall, ClientAuthUsed, DeviceAuthorizationCall, Grant, Outcome, RevocationCall, TokenCall,
};
use super::rules::Rules;
use super::rules::{challenge_shaped, AuthorizeRequest, Issued, RefreshNotes, Refusal};
use super::shared::{Config, Shared, State};
use crate::encoding::{form_body, form_decode};
use crate::http_server::{Limits, Listener, Reply, Request, Stop};
use crate::tokens::Tokens;

/// Log target of the kit: one debug line per call, tokens named by generation only.
const TARGET: &str = "tokengate::testing";

/// Binds 127.0.0.1 and serves `config` and `state` there, until the listener is dropped.
pub(crate) fn serve(config: Config, state: State) -> std::io::Result<(Arc<Shared>, Listener)> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
    let base = format!("http://{}", listener.local_addr()?);
    let shared = Arc::new(Shared {
        base,
        config,
        state: parking_lot::Mutex::new(state),
    });
    let s = shared.clone();
    let listener = Listener::start(
        "tokengate-testing",
        listener,
        Arc::new(move |req: &Request, stop: &Stop| handle(&s, req, stop)),
        Limits::GENEROUS,
    )?;
    Ok((shared, listener))
}

fn handle(shared: &Shared, req: &Request, stop: &Stop) -> Reply {
    match (req.method.as_str(), req.path.as_str()) {
        (
            "GET",
            "/.well-known/openid-configuration" | "/.well-known/oauth-authorization-server",
        ) => Reply::json(200, &document(&shared.base)),
        ("POST", "/oauth/token") => token(shared, req, stop),
        ("POST", "/oauth/device") => device(shared, req),
        ("GET", "/testing/counters") => {
            let s = shared.state.lock();
            let counters = s.journal.counters(s.rules.generations());
            Reply::json(200, &serde_json::to_value(counters).unwrap_or_default())
        }
        ("POST", "/oauth/revoke") => revoke(shared, req, stop),
        ("GET", "/oauth/authorize") => authorize_endpoint(shared, req),
        (_, path) if path.starts_with("/api/") => api(shared, req, stop),
        (_, "/oauth/token" | "/oauth/device" | "/oauth/revoke" | "/oauth/authorize") => {
            Reply::json(405, &serde_json::json!({"error": "invalid_request"}))
        }
        _ => Reply::json(404, &serde_json::json!({"error": "not_found"})),
    }
}

/// The metadata document (RFC 8414 §2) for the issuer `base`.
fn document(base: &str) -> serde_json::Value {
    serde_json::json!({
        "issuer": base,
        "token_endpoint": format!("{base}/oauth/token"),
        "device_authorization_endpoint": format!("{base}/oauth/device"),
        "revocation_endpoint": format!("{base}/oauth/revoke"),
        "authorization_endpoint": format!("{base}/oauth/authorize"),
        "grant_types_supported": [
            "refresh_token", "client_credentials", "authorization_code",
            "urn:ietf:params:oauth:grant-type:device_code"
        ],
        "response_types_supported": ["code"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
    })
}

/// A form's parameters, and whether one was sent twice (an `invalid_request`, RFC 6749
/// §3.2; the first value is kept, for the journal).
fn params(body: &[u8]) -> (HashMap<String, String>, bool) {
    let mut out = HashMap::new();
    let mut twice = false;
    for (k, v) in form_decode(body) {
        match out.entry(k) {
            std::collections::hash_map::Entry::Occupied(_) => twice = true,
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(v);
            }
        }
    }
    (out, twice)
}

const SENT_TWICE: Refusal = Refusal {
    status: 400,
    error: "invalid_request",
    description: "a parameter was sent twice",
};

fn refused(r: Refusal) -> Reply {
    Reply::oauth_error(r.status, r.error, r.description)
}

/// A successful token answer (RFC 6749 §5.1) for what `issued` holds.
fn token_json(issued: &Issued, lifetime: Duration) -> serde_json::Value {
    let lifetime = announced(lifetime);
    let expires_in: serde_json::Value = if lifetime.subsec_nanos() == 0 {
        lifetime.as_secs().into()
    } else {
        lifetime.as_secs_f64().into()
    };
    let mut body = serde_json::json!({
        "access_token": issued.access,
        "token_type": "Bearer",
        "expires_in": expires_in,
    });
    if let Some(refresh) = &issued.refresh {
        body["refresh_token"] = refresh.as_str().into();
    }
    if let Some(scope) = &issued.scope {
        body["scope"] = scope.as_str().into();
    }
    body
}

/// The longest lifetime announced: 10 years. Clients (tokengate among them) refuse a longer
/// `expires_in` as not a sane number; a longer lifetime is still what the server enforces.
const LONGEST_ANNOUNCED: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// The lifetime `lifetime` is announced as.
fn announced(lifetime: Duration) -> Duration {
    lifetime.min(LONGEST_ANNOUNCED)
}

/// The [`Tokens`] a client would hold after receiving `issued`.
pub(crate) fn tokens_of(issued: &Issued, lifetime: Duration) -> Tokens {
    let mut tokens = Tokens::new(issued.access.clone()).with_expires_in(announced(lifetime));
    if let Some(refresh) = &issued.refresh {
        tokens = tokens.with_refresh_token(refresh.clone());
    }
    if let Some(scope) = &issued.scope {
        tokens = tokens.with_scope(scope.clone());
    }
    tokens
}

/// The token endpoint: journaled on arrival; a scripted fault, or the grant (its outcome
/// journaled under the same lock that applies it); then the configured delay.
fn token(shared: &Shared, req: &Request, stop: &Stop) -> Reply {
    let (form, twice) = params(&req.body);
    let auth = Authorization::of(req);
    let (client_id, client_auth) = claimed(&auth, &form);
    let (index, fault) = {
        let mut s = shared.state.lock();
        let presented = form
            .get("refresh_token")
            .and_then(|t| s.rules.refresh_generation(t));
        let fault = s.token_faults.next();
        s.journal.token_calls.push(TokenCall {
            arrived: Instant::now(),
            grant: Grant::of(form.get("grant_type").map(String::as_str)),
            client_id,
            client_auth,
            presented,
            scope: form.get("scope").cloned(),
            presented_twice: false,
            reuse: false,
            outcome: Outcome::InFlight,
            fault: fault.clone(),
        });
        (s.journal.token_calls.len() - 1, fault)
    };
    if let Some(reply) = fault.as_ref().and_then(|f| f.before(stop)) {
        let outcome = Outcome::Faulted(fault.clone().unwrap_or(Fault::Drop));
        settle(shared, index, |call| call.outcome = outcome);
        return reply;
    }
    let reply = if twice {
        settle(shared, index, |call| {
            call.outcome = refused_outcome(SENT_TWICE)
        });
        refused(SENT_TWICE)
    } else {
        apply_grant(shared, &auth, &form, index)
    };
    if !shared.config.token_delay.is_zero() && !stop.sleep(shared.config.token_delay) {
        return Reply::Drop;
    }
    faults::after(fault.as_ref(), reply, stop)
}

/// Completes token call `index` of the journal with `fill`, and logs it.
fn settle(shared: &Shared, index: usize, fill: impl FnOnce(&mut TokenCall)) {
    let mut s = shared.state.lock();
    let call = &mut s.journal.token_calls[index];
    fill(call);
    log_token_call(call);
}

fn log_token_call(call: &TokenCall) {
    log::debug!(
        target: TARGET,
        "token call: {:?} by {:?}, presented rt #{:?}, {:?}",
        call.grant, call.client_id, call.presented, call.outcome
    );
}

/// Authenticates the client and applies the grant of token call `index`, completing its
/// journal entry under the same lock.
fn apply_grant(
    shared: &Shared,
    auth: &Authorization,
    form: &HashMap<String, String>,
    index: usize,
) -> Reply {
    let client = match authenticate(&shared.config.clients, auth, form) {
        Ok(client) => client,
        Err(failure) => {
            settle(shared, index, |call| {
                call.outcome = refused_outcome(failure.refusal);
            });
            return failure.reply();
        }
    };
    let mut s = shared.state.lock();
    let lifetime = s.rules.lifetime();
    let grant = s.journal.token_calls[index].grant.clone();
    let (result, notes) = apply(&shared.config, &mut s, &client, form, &grant);
    let call = &mut s.journal.token_calls[index];
    record(call, &result, notes);
    log_token_call(call);
    match result {
        Ok(issued) => Reply::json(200, &token_json(&issued, lifetime)),
        Err(r) => refused(r),
    }
}

/// A grant's outcome and notes, into its journal entry.
fn record(call: &mut TokenCall, result: &Result<Issued, Refusal>, notes: RefreshNotes) {
    (call.presented_twice, call.reuse) = (notes.presented_twice, notes.reuse);
    call.outcome = match result {
        Ok(issued) => Outcome::Issued(issued.generation),
        Err(r) => refused_outcome(*r),
    };
}

/// `grant`, asked by the authenticated `client`.
fn apply(
    config: &Config,
    s: &mut State,
    client: &str,
    form: &HashMap<String, String>,
    grant: &Grant,
) -> (Result<Issued, Refusal>, RefreshNotes) {
    let param = |name: &str| form.get(name).map(String::as_str);
    let confidential = config
        .clients
        .iter()
        .any(|c| c.id == client && c.secret.is_some());
    let result = match grant {
        Grant::RefreshToken => {
            let presented = param("refresh_token").unwrap_or("");
            return s.rules.refresh(client, presented, param("scope"));
        }
        Grant::ClientCredentials if confidential => Ok(s
            .rules
            .client_credentials(client, param("scope").map(str::to_owned))),
        Grant::ClientCredentials => Err(Refusal {
            status: 400,
            error: "unauthorized_client",
            description: "a public client cannot use client_credentials",
        }),
        Grant::DeviceCode => s
            .rules
            .device_poll(client, param("device_code").unwrap_or("")),
        Grant::AuthorizationCode => s.rules.exchange_code(
            client,
            param("code").unwrap_or(""),
            param("redirect_uri"),
            param("code_verifier"),
        ),
        Grant::Other(_) => Err(Refusal {
            status: 400,
            error: "unsupported_grant_type",
            description: "this server does not support that grant",
        }),
    };
    (result, RefreshNotes::default())
}

fn refused_outcome(r: Refusal) -> Outcome {
    Outcome::Refused {
        status: r.status,
        error: r.error.to_owned(),
    }
}

/// [`TestServer::refresh`]: the refresh_token grant without HTTP, as the client the token
/// was issued to, journaled (and logged) as a call.
pub(crate) fn refresh_directly(
    shared: &Shared,
    presented: &str,
) -> Result<Tokens, TestServerError> {
    let mut s = shared.state.lock();
    let client = s.rules.client_of(presented).unwrap_or(CLIENT_ID).to_owned();
    let mut call = TokenCall {
        arrived: Instant::now(),
        grant: Grant::RefreshToken,
        client_id: Some(client.clone()),
        client_auth: ClientAuthUsed::None,
        presented: s.rules.refresh_generation(presented),
        scope: None,
        presented_twice: false,
        reuse: false,
        outcome: Outcome::InFlight,
        fault: None,
    };
    let (result, notes) = s.rules.refresh(&client, presented, None);
    record(&mut call, &result, notes);
    log_token_call(&call);
    s.journal.token_calls.push(call);
    let lifetime = s.rules.lifetime();
    result
        .map(|issued| tokens_of(&issued, lifetime))
        .map_err(|r| TestServerError::Refused {
            status: r.status,
            error: r.error,
        })
}

/// The device authorization endpoint (RFC 8628 §3.1, §3.2).
fn device(shared: &Shared, req: &Request) -> Reply {
    let (form, twice) = params(&req.body);
    let auth = Authorization::of(req);
    let (client_id, client_auth) = claimed(&auth, &form);
    let scope = form.get("scope").cloned();
    let index = {
        let mut s = shared.state.lock();
        s.journal
            .device_authorizations
            .push(DeviceAuthorizationCall {
                arrived: Instant::now(),
                client_id,
                client_auth,
                scope: scope.clone(),
                user_code: None,
                status: 0,
            });
        s.journal.device_authorizations.len() - 1
    };
    let client = match authenticate(&shared.config.clients, &auth, &form) {
        _ if twice => Err(refused(SENT_TWICE)),
        Err(failure) => Err(failure.reply()),
        Ok(client) => Ok(client),
    };
    let mut s = shared.state.lock();
    let (reply, user_code) = match client {
        Err(reply) => (reply, None),
        Ok(client) => {
            let (device_code, user_code) = s.rules.device_authorize(&client, scope);
            let body = device_answer(shared, &s, &device_code, &user_code);
            (Reply::json(200, &body), Some(user_code))
        }
    };
    let call = &mut s.journal.device_authorizations[index];
    (call.status, call.user_code) = (reply.status(), user_code);
    log::debug!(
        target: TARGET,
        "device authorization by {:?}: {}, user code {:?}",
        call.client_id, call.status, call.user_code
    );
    reply
}

/// The device authorization answer (RFC 8628 §3.2).
fn device_answer(
    shared: &Shared,
    s: &State,
    device_code: &str,
    user_code: &str,
) -> serde_json::Value {
    let base = &shared.base;
    let mut body = serde_json::json!({
        "device_code": device_code,
        "user_code": user_code,
        "verification_uri": format!("{base}/device"),
        "verification_uri_complete": format!("{base}/device?user_code={user_code}"),
        "expires_in": whole_seconds(announced(s.rules.device_lifetime())),
    });
    if let Some(interval) = shared.config.device_interval {
        body["interval"] = interval.into();
    }
    body
}

/// `d` in whole seconds, rounded up (a code that lives 1.5 s is not announced as 1 s).
fn whole_seconds(d: Duration) -> u64 {
    d.as_secs().saturating_add(u64::from(d.subsec_nanos() > 0))
}

/// The revocation endpoint (RFC 7009 §2): journaled on arrival, answered after a fault or
/// the revocation.
fn revoke(shared: &Shared, req: &Request, stop: &Stop) -> Reply {
    let (form, twice) = params(&req.body);
    let auth = Authorization::of(req);
    let (client_id, client_auth) = claimed(&auth, &form);
    let token = form.get("token").cloned().unwrap_or_default();
    let (index, fault) = {
        let mut s = shared.state.lock();
        let fault = s.revocation_faults.next();
        let call = RevocationCall {
            arrived: Instant::now(),
            client_id,
            client_auth,
            generation: s.rules.generation_of(&token),
            refresh_token: token.starts_with("rt-"),
            hint: form.get("token_type_hint").cloned(),
            status: 0,
            fault: fault.clone(),
        };
        s.journal.revocations.push(call);
        (s.journal.revocations.len() - 1, fault)
    };
    let reply = match fault.as_ref().and_then(|f| f.before(stop)) {
        Some(reply) => reply,
        None => match authenticate(&shared.config.clients, &auth, &form) {
            _ if twice => refused(SENT_TWICE),
            Err(failure) => failure.reply(),
            Ok(_) if token.is_empty() => Reply::oauth_error(400, "invalid_request", "no token"),
            Ok(client) => match shared.state.lock().rules.revoke_as(&client, &token) {
                Ok(_) => Reply::Respond {
                    status: 200,
                    headers: Vec::new(),
                    body: Vec::new(),
                },
                Err(r) => refused(r),
            },
        },
    };
    let reply = faults::after(fault.as_ref(), reply, stop);
    let status = reply.status();
    let generation = {
        let mut s = shared.state.lock();
        let call = &mut s.journal.revocations[index];
        call.status = status;
        call.generation
    };
    log::debug!(target: TARGET, "revocation of #{generation:?}: {status}");
    reply
}

/// The protected API (RFC 6750): 200 to a live token, 401 to any other, 403 to a token
/// without the scope its path needs.
fn api(shared: &Shared, req: &Request, stop: &Stop) -> Reply {
    let (index, fault) = {
        let mut s = shared.state.lock();
        let fault = s.api_faults.next();
        s.journal.api_calls.push(ApiCall {
            arrived: Instant::now(),
            method: req.method.clone(),
            path: req.path.clone(),
            status: 0,
            generation: None,
            expired: false,
            request_id: req.header("x-request-id").map(str::to_owned),
            body_len: req.body.len(),
        });
        (s.journal.api_calls.len() - 1, fault)
    };
    let reply = match fault.as_ref().and_then(|f| f.before(stop)) {
        Some(reply) => reply,
        None => protected(shared, req, index),
    };
    let reply = faults::after(fault.as_ref(), reply, stop);
    shared.state.lock().journal.api_calls[index].status = reply.status();
    reply
}

/// The API's answer to a request that no fault replaced; what it carried is journaled under
/// the lock that decides it (its status once it is answered).
fn protected(shared: &Shared, req: &Request, index: usize) -> Reply {
    let token = req.header("authorization").and_then(|v| {
        let (scheme, token) = v.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
    });
    let mut s = shared.state.lock();
    let now = Instant::now();
    let generation = token.and_then(|t| s.rules.access_generation(t));
    let expired = generation
        .and_then(|g| s.rules.issued_at(g))
        .and_then(|at| at.checked_add(s.rules.lifetime()))
        .is_some_and(|end| now >= end);
    let reply = api_answer(&shared.config, &s.rules, req, token, now);
    let call = &mut s.journal.api_calls[index];
    (call.generation, call.expired) = (generation, expired);
    reply
}

fn api_answer(
    config: &Config,
    rules: &Rules,
    req: &Request,
    token: Option<&str>,
    now: Instant,
) -> Reply {
    let challenge = |status: u16, params: String| Reply::Respond {
        status,
        headers: vec![
            (
                "www-authenticate",
                format!("Bearer realm=\"tokengate-testing\"{params}"),
            ),
            ("content-type", "application/json".to_owned()),
        ],
        body: b"{\"error\":\"unauthorized\"}".to_vec(),
    };
    let Some(token) = token else {
        // RFC 6750 §3.1: a request without credentials gets no error code.
        return challenge(401, String::new());
    };
    let Some(scope) = rules.check(token, now) else {
        let why = ", error=\"invalid_token\", error_description=\"expired, revoked or unknown\"";
        return challenge(401, why.to_owned());
    };
    if let Some(needed) = missing_scope(config, &req.path, scope) {
        let why = format!(", error=\"insufficient_scope\", scope=\"{needed}\"");
        return challenge(403, why);
    }
    let status = req
        .path
        .strip_prefix("/api/status/")
        .and_then(|c| c.parse().ok())
        .filter(|c| (200..600).contains(c))
        .unwrap_or(200);
    let body = serde_json::json!({
        "path": req.path,
        "method": req.method,
        "token": token,
        "generation": rules.access_generation(token),
        "body_len": req.body.len(),
    });
    Reply::json(status, &body)
}

/// A scope `path` needs that a token with `scope` lacks, if any: every `require_scope`
/// whose prefix `path` is under (the prefix itself, or below it at a `/`) must be granted.
fn missing_scope<'c>(config: &'c Config, path: &str, scope: Option<&str>) -> Option<&'c str> {
    let granted: Vec<&str> = scope.unwrap_or("").split(' ').collect();
    config
        .scopes
        .iter()
        .filter(|(prefix, _)| under(path, prefix))
        .map(|(_, needed)| needed.as_str())
        .find(|needed| !granted.contains(needed))
}

/// Whether `path` is `prefix` or below it (`/api/admin` covers `/api/admin/x`, not
/// `/api/administrator`).
fn under(path: &str, prefix: &str) -> bool {
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || prefix.ends_with('/') || rest.starts_with('/'),
        None => false,
    }
}

/// The authorization endpoint over HTTP: approves (or denies) and redirects.
fn authorize_endpoint(shared: &Shared, req: &Request) -> Reply {
    let url = format!("{}{}?{}", shared.base, req.path, req.query);
    match authorize(shared, &url) {
        Ok(location) => Reply::Respond {
            status: 302,
            headers: vec![("location", location)],
            body: Vec::new(),
        },
        Err(e) => Reply::Respond {
            status: 400,
            headers: vec![("content-type", "text/plain".to_owned())],
            body: e.to_string().into_bytes(),
        },
    }
}

/// The authorization request in `url` decided: the URL to redirect the browser to.
pub(crate) fn authorize(shared: &Shared, url: &str) -> Result<String, TestServerError> {
    let bad = TestServerError::BadAuthorizationRequest;
    let endpoint = format!("{}/oauth/authorize?", shared.base);
    let query = url
        .strip_prefix(&endpoint)
        .ok_or(bad("not this server's authorization endpoint"))?;
    let mut q = HashMap::new();
    for (k, v) in form_decode(query.as_bytes()) {
        if q.insert(k, v).is_some() {
            return Err(bad("a parameter was sent twice"));
        }
    }
    let client_id = q.get("client_id").ok_or(bad("no client_id"))?;
    if !shared.config.clients.iter().any(|c| c.id == *client_id) {
        return Err(bad("unknown client"));
    }
    let redirect_uri = q.get("redirect_uri").ok_or(bad("no redirect_uri"))?;
    if !redirect_allowed(redirect_uri) {
        return Err(bad("redirect_uri is neither loopback http nor https"));
    }
    let state = q.get("state").map(String::as_str);
    let redirect = |pairs: &[(&str, &str)]| {
        let mut all: Vec<(&str, &str)> = pairs.to_vec();
        all.extend(state.map(|s| ("state", s)));
        let sep = if redirect_uri.contains('?') { '&' } else { '?' };
        format!("{redirect_uri}{sep}{}", form_body(all))
    };
    if let Some((error, why)) = redirected_problem(&q) {
        return Ok(redirect(&[("error", error), ("error_description", why)]));
    }
    let challenge = q.get("code_challenge").cloned().unwrap_or_default();
    let mut s = shared.state.lock();
    if s.denials > 0 {
        s.denials -= 1;
        return Ok(redirect(&[("error", "access_denied")]));
    }
    let code = s.rules.new_code(AuthorizeRequest {
        client_id: client_id.clone(),
        redirect_uri: redirect_uri.clone(),
        challenge: Some(challenge),
        scope: q.get("scope").cloned(),
    });
    log::debug!(target: TARGET, "authorization for {client_id}: code issued");
    Ok(redirect(&[("code", &code)]))
}

/// What is wrong with an authorization request that names a known client and an allowed
/// redirect URI, if anything: the error code and description it is redirected with.
fn redirected_problem(q: &HashMap<String, String>) -> Option<(&'static str, &'static str)> {
    let param = |name: &str| q.get(name).map(String::as_str);
    if param("response_type") != Some("code") {
        return Some(("unsupported_response_type", "response_type must be code"));
    }
    let why = match (param("code_challenge"), param("code_challenge_method")) {
        (None, _) => "PKCE is required: code_challenge",
        (Some(_), method) if method != Some("S256") => "code_challenge_method must be S256",
        (Some(challenge), _) if !challenge_shaped(challenge) => {
            "code_challenge must be 43 base64url characters (RFC 7636 4.2)"
        }
        _ => return None,
    };
    Some(("invalid_request", why))
}

/// A loopback `http` redirect URI (any port, RFC 8252 §7.3) or any `https` one.
fn redirect_allowed(uri: &str) -> bool {
    if uri.starts_with("https://") {
        return true;
    }
    let Some(rest) = uri.strip_prefix("http://") else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = match authority.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    };
    matches!(host, "127.0.0.1" | "[::1]" | "localhost")
}
