//! [`RequestBuilder`]: one request, built up and then sent with a replayable body.

use std::fmt;
use std::sync::Arc;

use ureq::http::{self, HeaderMap, HeaderName, HeaderValue, Method, Response};
use ureq::Body;

use crate::encoding::query_encode_into;
use crate::error::Error;
use crate::handle::Handle;
use crate::run::{self, Payload, RequestOptions};

/// A request being built. Created by [`AuthClient::get`](crate::AuthClient::get) and friends; finished by
/// [`call`](RequestBuilder::call), [`send`](RequestBuilder::send),
/// [`send_json`](RequestBuilder::send_json) or [`send_form`](RequestBuilder::send_form).
///
/// The body is held as bytes, so a request retried after a refresh is re-sent byte for byte.
#[must_use = "a request does nothing until call() or send*()"]
pub struct RequestBuilder {
    client: Arc<Handle>,
    method: Method,
    path: String,
    query: String,
    headers: HeaderMap,
    options: RequestOptions,
    /// The first invalid header given, reported when the request is sent.
    error: Option<Error>,
}

impl RequestBuilder {
    pub(crate) fn new(client: Arc<Handle>, method: Method, path: &str) -> Self {
        RequestBuilder {
            client,
            method,
            path: path.to_owned(),
            query: String::new(),
            headers: HeaderMap::new(),
            options: RequestOptions::default(),
            error: None,
        }
    }

    /// Adds a header. Invalid names or values make the request fail with
    /// [`Error::InvalidHeader`].
    ///
    /// An `Authorization` header set here is **replaced** by the client's token on requests to
    /// the API's origin, and **sent as set** on requests made [`without_auth`](Self::without_auth)
    /// and to other origins (with
    /// [`allow_other_origins`](crate::AuthClientBuilder::allow_other_origins)). It is
    /// **dropped**, like `Cookie`, `Proxy-Authorization` and the headers named with
    /// [`sensitive_header`](crate::AuthClientBuilder::sensitive_header), when a redirect
    /// changes origin. These headers are marked sensitive (`Debug` of the request prints
    /// `Sensitive`), like the token.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        match (HeaderName::try_from(name), HeaderValue::try_from(value)) {
            (Ok(n), Ok(mut v)) => {
                if crate::redirect::is_sensitive(&n, self.client.config.sensitive_headers()) {
                    v.set_sensitive(true);
                }
                self.headers.append(n, v);
            }
            _ => {
                // The value is never quoted: it may be a credential.
                self.error.get_or_insert(Error::InvalidHeader(
                    format!("{name:?}").chars().take(64).collect(),
                ));
            }
        }
        self
    }

    /// Appends a percent-encoded query parameter.
    pub fn query(mut self, key: &str, value: &str) -> Self {
        if !self.query.is_empty() {
            self.query.push('&');
        }
        query_encode_into(&mut self.query, key);
        self.query.push('=');
        query_encode_into(&mut self.query, value);
        self
    }

    /// Retries this request on 502/503/504/429, timeouts and resets even if its method is not
    /// idempotent (POST, PATCH): use it when the server deduplicates (e.g. an idempotency key).
    pub fn retry_non_idempotent(mut self) -> Self {
        self.options.retry_non_idempotent = true;
        self
    }

    /// Sends this request without the token: no token is attached, no refresh is made, and a
    /// 401 is a plain status (an error or the response, per `http_status_as_error`). Works
    /// with no tokens at all and after the session ended; for login, health and public
    /// endpoints on the API's own origin. Everything else (retries, redirects, origin checks)
    /// is as for any request.
    pub fn without_auth(mut self) -> Self {
        self.options.without_auth = true;
        self
    }

    /// Whether a 4xx/5xx final response is returned as [`Error::StatusCode`] (or
    /// [`Error::Unauthorized`]) for this request only. Defaults to the client's setting
    /// ([`AuthClientBuilder::http_status_as_error`](crate::AuthClientBuilder::http_status_as_error)).
    /// A 401 to the client's token still goes through the refresh gate first, and
    /// [`Error::InsufficientScope`] is returned either way.
    pub fn http_status_as_error(mut self, as_error: bool) -> Self {
        self.options.status_as_error = Some(as_error);
        self
    }

    /// Sends the request without a body.
    pub fn call(self) -> Result<Response<Body>, Error> {
        self.run(Payload::None)
    }

    /// Sends the request with `body` as is.
    pub fn send(self, body: impl AsRef<[u8]>) -> Result<Response<Body>, Error> {
        self.run(Payload::Bytes(body.as_ref()))
    }

    /// Streams the body from `reader`. Such a body can be sent only once: the request is never
    /// retried, and if it draws a 401 the token is refreshed (for the next call) but the
    /// request is not replayed; both cases return [`Error::NotReplayable`].
    pub fn send_reader(self, mut reader: impl std::io::Read) -> Result<Response<Body>, Error> {
        self.run(Payload::Reader(Some(&mut reader)))
    }

    /// Serializes `value` as JSON and sends it (`Content-Type: application/json` unless set).
    pub fn send_json<T: serde::Serialize + ?Sized>(
        mut self,
        value: &T,
    ) -> Result<Response<Body>, Error> {
        let bytes = serde_json::to_vec(value).map_err(Error::Json)?;
        self.default_content_type("application/json");
        self.run(Payload::Bytes(&bytes))
    }

    /// Sends `pairs` as an `application/x-www-form-urlencoded` body.
    pub fn send_form<I, K, V>(mut self, pairs: I) -> Result<Response<Body>, Error>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let owned: Vec<(K, V)> = pairs.into_iter().collect();
        let body = crate::encoding::form_body(owned.iter().map(|(k, v)| (k.as_ref(), v.as_ref())));
        self.default_content_type("application/x-www-form-urlencoded");
        self.run(Payload::Bytes(body.as_bytes()))
    }

    fn default_content_type(&mut self, value: &'static str) {
        self.headers
            .entry(http::header::CONTENT_TYPE)
            .or_insert(HeaderValue::from_static(value));
    }

    fn run(self, body: Payload<'_>) -> Result<Response<Body>, Error> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let config = &self.client.config;
        let (uri, base_origin) =
            config
                .base()
                .resolve(&self.path, &self.query, config.allow_other_origins())?;
        let mut request = http::Request::new(());
        *request.method_mut() = self.method;
        *request.uri_mut() = uri;
        *request.headers_mut() = self.headers;
        let (parts, ()) = request.into_parts();
        run::execute(
            config,
            &self.client.session,
            parts,
            base_origin,
            body,
            self.options,
        )
    }
}

impl fmt::Debug for RequestBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestBuilder")
            .field("method", &self.method)
            .field("path", &self.path)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}
