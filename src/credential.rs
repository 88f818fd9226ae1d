//! Where the client's credential meets the wire, for the client's own requests (`run.rs`)
//! and the middleware (`middleware.rs`) alike: which requests carry the token
//! ([`sees_token`]), putting it on a request ([`Session::authorize`]), and the one reading of
//! what the answer says about it, with the one counting rule of
//! [`Stats::unauthorized`](crate::Stats::unauthorized) ([`Session::judge`]). The
//! `Authorization` value itself is built from the token's type in one place too, when tokens
//! are stamped (`TokenType::header` in `tokens/`).

use std::sync::Arc;

use ureq::http::{header, HeaderMap, StatusCode, Uri};

use crate::challenge::{classify, Rejection};
use crate::config::Config;
use crate::error::Error;
use crate::event::Event;
use crate::hooks::Tally;
use crate::logging::OriginOf;
use crate::session::Session;

/// Whether a request to `uri` may carry the token: only the base URL's origin (scheme, host
/// and port) sees it. [`BaseUrl::resolve`](crate::url::BaseUrl::resolve) answers the same
/// for the paths it resolves (it compares the origin while building the URL).
pub(crate) fn sees_token(config: &Config, uri: &Uri) -> bool {
    config.base().origin().matches(uri)
}

/// The token a request carried: what its answer is judged by.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Presented {
    generation: u64,
}

/// Which path sent the request whose answer is judged.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Via {
    /// The client's own request; `refreshed`: a refresh was made for it already, so a second
    /// rejection is final.
    Client { refreshed: bool },
    /// The middleware, which cannot replay: a refresh serves the caller's own retry.
    Middleware,
}

/// What the answer to a request that carried the token says about the token.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Nothing the token can change (a 2xx, a 403, a 401 `invalid_request`…): the answer
    /// goes on as it is.
    Pass,
    /// The token was rejected: refresh tokens of this generation (through the gate), for a
    /// replay or the caller's retry.
    Refresh(u64),
    /// The token was rejected and no refresh will help: there is no refresher, or one was
    /// made for this request already.
    Final,
    /// `insufficient_scope` (a 401 or 403): a new token would have the same scopes.
    InsufficientScope {
        /// 401 or 403.
        status: u16,
        /// The scope the resource needs, if the server said.
        scope: Option<String>,
    },
}

impl Session {
    /// Puts the token on a request, replacing any `Authorization` header the caller set, if
    /// `sees_token` (the target has the base URL's origin, see [`sees_token`], and the request
    /// is not sent without auth). Gets the token as every request does
    /// ([`Session::usable_tokens`]): valid now, refreshed first if it has expired. The value
    /// is the one built when the tokens were stamped: cloning it does not allocate.
    ///
    /// # Errors
    /// No usable tokens (none, the session ended, a refresh that failed): nothing is sent.
    pub(crate) fn authorize(
        self: &Arc<Self>,
        sees_token: bool,
        headers: &mut HeaderMap,
    ) -> Result<Option<Presented>, Error> {
        if !sees_token {
            return Ok(None);
        }
        let (current, generation) = self.usable_tokens()?;
        headers.insert(header::AUTHORIZATION, current.header.clone());
        Ok(Some(Presented { generation }))
    }

    /// Reads the answer (`status`, `headers`) to a request to `uri` that carried `presented`,
    /// and counts it: every 401 is one [`Stats::unauthorized`](crate::Stats::unauthorized),
    /// whatever its challenge says. A rejected token is also reported as an
    /// [`Event::Unauthorized`] (which is what counts it). A caller without the answer's
    /// headers (a status the agent turned into an error) passes an empty map: a 401 then
    /// reads as a rejected token. Inline: the common answer (neither 401 nor 403) is decided
    /// without a call.
    #[inline]
    pub(crate) fn judge(
        &self,
        presented: Presented,
        via: Via,
        uri: &Uri,
        status: StatusCode,
        headers: &HeaderMap,
    ) -> Verdict {
        match classify(status, headers) {
            Rejection::None => Verdict::Pass,
            rejection => self.judged(rejection, presented, via, uri),
        }
    }

    /// [`Session::judge`] for a 401 or 403. The counting rule, in one place: each 401 is
    /// counted once, by its event for a rejected token, by a tally otherwise; a 403 is not.
    fn judged(&self, rejection: Rejection, presented: Presented, via: Via, uri: &Uri) -> Verdict {
        match rejection {
            Rejection::None => Verdict::Pass,
            Rejection::Request => {
                self.hooks().tally(Tally::PlainUnauthorized);
                Verdict::Pass
            }
            Rejection::InsufficientScope { status, scope } => {
                if status == 401 {
                    self.hooks().tally(Tally::PlainUnauthorized);
                }
                Verdict::InsufficientScope { status, scope }
            }
            Rejection::Token => self.rejected(presented.generation, via, uri),
        }
    }

    /// A rejected token of `generation`: reported (and so counted), and refreshed unless that
    /// cannot help.
    fn rejected(&self, generation: u64, via: Via, uri: &Uri) -> Verdict {
        let refreshed = matches!(via, Via::Client { refreshed: true });
        let last = refreshed || !self.has_refresher();
        let (through, why) = match via {
            Via::Client { .. } if !last => ("", "refreshing"),
            Via::Client { .. } if refreshed => ("", "final (after a refresh)"),
            Via::Client { .. } => ("", "final (no refresher)"),
            Via::Middleware if !last => (
                " (through the middleware)",
                "refreshing for the caller's retry",
            ),
            Via::Middleware => (" (through the middleware)", "final (no refresher)"),
        };
        let origin = OriginOf(uri);
        self.hooks().report(
            Event::Unauthorized { generation },
            format_args!("401 from {origin} for token generation {generation}{through}: {why}"),
        );
        if last {
            Verdict::Final
        } else {
            Verdict::Refresh(generation)
        }
    }
}
