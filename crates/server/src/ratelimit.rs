//! Limits on the requests that change state, per token and per
//! organisation (a GCRA each, `governor`), so that no tenant's flood of
//! submissions slows the control plane for the others. Admins and
//! operators are not limited: they are the platform's own.

use std::num::NonZeroU32;

use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

use crate::auth::Principal;
use crate::error::ApiError;

type Keyed = RateLimiter<i64, DefaultKeyedStateStore<i64>, DefaultClock>;

/// Sustained requests a second that change state; a burst of this many
/// seconds' worth is allowed. 0: no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteRates {
    pub per_token: u32,
    pub per_org: u32,
}

impl Default for WriteRates {
    fn default() -> Self {
        WriteRates {
            per_token: 20,
            per_org: 100,
        }
    }
}

/// Seconds' worth of requests allowed at once.
const BURST_S: u32 = 5;

/// The limiters of one server.
pub struct RateLimits {
    tokens: Option<Keyed>,
    orgs: Option<Keyed>,
    clock: DefaultClock,
}

impl std::fmt::Debug for RateLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimits")
            .field("tokens", &self.tokens.is_some())
            .field("orgs", &self.orgs.is_some())
            .finish()
    }
}

fn keyed(per_s: u32) -> Option<Keyed> {
    let rate = NonZeroU32::new(per_s)?;
    let burst = NonZeroU32::new(per_s.saturating_mul(BURST_S)).unwrap_or(rate);
    Some(RateLimiter::keyed(
        Quota::per_second(rate).allow_burst(burst),
    ))
}

impl RateLimits {
    pub fn new(rates: WriteRates) -> RateLimits {
        RateLimits {
            tokens: keyed(rates.per_token),
            orgs: keyed(rates.per_org),
            clock: DefaultClock::default(),
        }
    }

    /// Takes one request of `who` that changes state: `429 rate_limited`
    /// with the seconds to wait when its token or its organisation is past
    /// its rate. The organisation is charged only when the token may go.
    pub fn check(&self, who: &Principal) -> Result<(), ApiError> {
        if who.global() {
            return Ok(());
        }
        let refuse = |what: &str, wait: std::time::Duration| {
            let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
            ApiError::rate_limited(
                secs,
                format!("too many requests that change state from this {what}; retry in {secs} s"),
            )
        };
        if let Some(t) = &self.tokens
            && let Err(n) = t.check_key(&who.token_id)
        {
            return Err(refuse("token", n.wait_time_from(self.clock.now())));
        }
        if let (Some(o), Some(org)) = (&self.orgs, who.org_id)
            && let Err(n) = o.check_key(&org)
        {
            return Err(refuse("organisation", n.wait_time_from(self.clock.now())));
        }
        Ok(())
    }

    /// Forgets the keys that are back to a full burst (memory stays bounded
    /// by the tokens in use).
    pub fn prune(&self) {
        for l in [&self.tokens, &self.orgs].into_iter().flatten() {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }
}
