//! Custom JSON refresh endpoints (the classic mobile-backend pattern).

use ureq::Agent;

use super::{expires_in_field, json_object, string_field, tokens_from, Refresh};
use crate::error::RefreshError;
use crate::tokens::Tokens;
use crate::transport::{post_token_request, TokenResponse};
use crate::url::GivenUrl;

/// A non-OAuth refresh endpoint: POST `{"refreshToken": "…"}`, answer
/// `{"accessToken": "…", "refreshToken": "…", "expiresIn": 3600}`. Field names are configurable.
///
/// A 400, 401 or 403 from the endpoint means the refresh token is dead: the session ends.
/// 5xx, 429 and network failures keep the session.
///
/// ```
/// use tokengate::JsonRefresh;
/// let r = JsonRefresh::new("https://api.example.com/auth/refresh")
///     .request_field("refresh_token")
///     .access_token_field("token")
///     .refresh_token_field("refresh_token")
///     .expires_in_field("ttl");
/// # let _ = r;
/// ```
#[derive(Clone, Debug)]
pub struct JsonRefresh {
    url: GivenUrl,
    request_field: String,
    access_field: String,
    refresh_field: String,
    expires_in_field: String,
}

impl JsonRefresh {
    /// A refresher POSTing JSON to `url`. The URL is checked by `build()`.
    pub fn new(url: impl Into<String>) -> Self {
        JsonRefresh {
            url: GivenUrl::new(url),
            request_field: "refreshToken".into(),
            access_field: "accessToken".into(),
            refresh_field: "refreshToken".into(),
            expires_in_field: "expiresIn".into(),
        }
    }

    /// The request's field carrying the refresh token. Defaults to `refreshToken`.
    #[must_use]
    pub fn request_field(mut self, name: impl Into<String>) -> Self {
        self.request_field = name.into();
        self
    }

    /// The response's access-token field. Defaults to `accessToken`.
    #[must_use]
    pub fn access_token_field(mut self, name: impl Into<String>) -> Self {
        self.access_field = name.into();
        self
    }

    /// The response's refresh-token field (optional in the response). Defaults to `refreshToken`.
    #[must_use]
    pub fn refresh_token_field(mut self, name: impl Into<String>) -> Self {
        self.refresh_field = name.into();
        self
    }

    /// The response's lifetime field in seconds (optional in the response). Defaults to `expiresIn`.
    #[must_use]
    pub fn expires_in_field(mut self, name: impl Into<String>) -> Self {
        self.expires_in_field = name.into();
        self
    }
}

impl Refresh for JsonRefresh {
    fn refresh(&self, agent: &Agent, current: &Tokens) -> Result<Tokens, RefreshError> {
        let rt = current
            .refresh_token()
            .ok_or(RefreshError::NoRefreshToken)?;
        let mut req = serde_json::Map::new();
        req.insert(self.request_field.clone(), rt.secret().into());
        let body = serde_json::to_vec(&req).expect("a map of strings always serializes");
        let resp = post_token_request(
            agent,
            self.url.as_str(),
            "application/json",
            None,
            &body,
            None,
        )?;
        self.parse(&resp, current)
    }

    fn can_refresh(&self, current: &Tokens) -> bool {
        current.refresh_token().is_some()
    }

    fn endpoint(&self) -> Option<&str> {
        Some(self.url.as_str())
    }
}

impl JsonRefresh {
    /// Interprets the endpoint's answer.
    pub(crate) fn parse(
        &self,
        resp: &TokenResponse,
        current: &Tokens,
    ) -> Result<Tokens, RefreshError> {
        match resp.status {
            200..=299 => {
                let map = json_object(&resp.body)?;
                let access = string_field(
                    &map,
                    &self.access_field,
                    "access token field is not a string",
                )?
                .ok_or(RefreshError::InvalidResponse("missing access token field"))?;
                let refresh = string_field(
                    &map,
                    &self.refresh_field,
                    "refresh token field is not a string",
                )?;
                let expires_in = expires_in_field(&map, &self.expires_in_field)?;
                tokens_from(access, refresh, None, expires_in, None, current)
            }
            400 | 401 | 403 => Err(RefreshError::InvalidGrant {
                status: resp.status,
                error: None,
                description: None,
            }),
            _ => Err(resp.unexpected()),
        }
    }
}
