//! The `t` of the `RateLimit` field through the layer, for each algorithm:
//! the time until the quota resets, never past the policy's `w`, never
//! past `Retry-After`, and the same as `X-RateLimit-Reset`.

mod support;

use std::sync::Arc;
use std::time::Duration;

use http::{Response, StatusCode};
use ratelimit_core::{Limiter, ManualClock, Policy, ReferenceLimiter};
use ratelimit_tower::{RateLimitBody, RateLimitLayer};
use support::*;
use tower::{Layer, Service, ServiceExt};

/// A window boundary of every window used here (a multiple of 30 s).
const T0: u64 = 1_800_000_000_000_000;
const S: Duration = Duration::from_secs(1);

/// The fields a client reads, checked for agreement with one another.
#[derive(Debug, PartialEq, Eq)]
struct Fields {
    status: u16,
    r: u64,
    t: u64,
    retry_after: Option<u64>,
}

fn fields(res: &Response<RateLimitBody<Body>>) -> Fields {
    let h = res.headers();
    let ratelimit = header(h, "ratelimit");
    let params = ratelimit
        .strip_prefix(r#""default";r="#)
        .unwrap_or_else(|| panic!("{ratelimit}"));
    let (r, t) = params.split_once(";t=").unwrap();
    let (r, t): (u64, u64) = (r.parse().unwrap(), t.parse().unwrap());
    assert_eq!(
        header(h, "x-ratelimit-reset"),
        t.to_string(),
        "X-RateLimit-Reset is t"
    );
    assert_eq!(header(h, "x-ratelimit-remaining"), r.to_string());
    let w: u64 = header(h, "ratelimit-policy")
        .rsplit_once(";w=")
        .unwrap()
        .1
        .parse()
        .unwrap();
    assert!(t <= w, "t={t} past w={w}");
    let retry_after = h
        .get("retry-after")
        .map(|v| v.to_str().unwrap().parse::<u64>().unwrap());
    if let Some(wait) = retry_after {
        assert!(t <= wait, "Retry-After {wait} before t={t}");
    }
    Fields {
        status: res.status().as_u16(),
        r,
        t,
        retry_after,
    }
}

struct Harness<S> {
    clock: ManualClock,
    svc: S,
}

fn harness(
    policy: Policy,
) -> Harness<
    impl Service<
            http::Request<()>,
            Response = Response<RateLimitBody<Body>>,
            Error = std::convert::Infallible,
        > + Clone,
> {
    let clock = ManualClock::new(T0);
    let limiter: Arc<dyn Limiter> = Arc::new(ReferenceLimiter::with_clock(policy, clock.clone()));
    let svc = RateLimitLayer::new(limiter).layer(counting_service(Arc::default()));
    Harness { clock, svc }
}

impl<Svc> Harness<Svc>
where
    Svc: Service<
            http::Request<()>,
            Response = Response<RateLimitBody<Body>>,
            Error = std::convert::Infallible,
        > + Clone,
{
    async fn at(&self, since_t0: Duration) -> Fields {
        self.clock.set(T0 + since_t0.as_micros() as u64);
        let res = self
            .svc
            .clone()
            .oneshot(request("192.0.2.1:1", &[]))
            .await
            .unwrap();
        fields(&res)
    }
}

fn allowed(r: u64, t: u64) -> Fields {
    Fields {
        status: 200,
        r,
        t,
        retry_after: None,
    }
}

fn denied(t: u64, retry_after: u64) -> Fields {
    Fields {
        status: StatusCode::TOO_MANY_REQUESTS.as_u16(),
        r: 0,
        t,
        retry_after: Some(retry_after),
    }
}

#[tokio::test]
async fn fixed_window_t_is_the_end_of_the_window() {
    let h = harness(Policy::fixed_window(5, 30 * S).unwrap());
    let at = Duration::from_millis(12_300);
    assert_eq!(h.at(at).await, allowed(4, 18), "17.7 s rounds up");
    for r in (0..4).rev() {
        assert_eq!(h.at(at).await, allowed(r, 18));
    }
    assert_eq!(h.at(at).await, denied(18, 18));
    // The window's end is exactly when the whole quota is back.
    assert_eq!(h.at(30 * S).await, allowed(4, 30));
}

#[tokio::test]
async fn sliding_window_t_is_the_end_of_the_current_window() {
    let h = harness(Policy::sliding_window(5, 30 * S).unwrap());
    // Full again only at the end of the next window (58 s away): t is
    // the end of this one.
    assert_eq!(h.at(2 * S).await, allowed(4, 28));
    for r in (0..4).rev() {
        assert_eq!(h.at(2 * S).await, allowed(r, 28));
    }
    // The count decays over the next window: one unit fits 6 s into it.
    assert_eq!(h.at(2 * S).await, denied(28, 34));
    // In the next window the previous one weighs ceil(5 * 29/30) = 5. Its
    // end is 29 s away, but the denied unit fits in 5 s: t is no later.
    assert_eq!(h.at(31 * S).await, denied(5, 5));
    // At 37 s the weight is ceil(5 * 23/30) = 4: one fits, and t is again
    // the end of the current window, at 60 s.
    assert_eq!(h.at(37 * S).await, allowed(0, 23));
}

#[tokio::test]
async fn token_bucket_t_is_the_time_to_a_full_bucket() {
    // 5 tokens, one back every 6 s: w = 30 s to fill an empty bucket.
    let h = harness(Policy::token_bucket(5, 1, 6 * S).unwrap());
    assert_eq!(h.at(Duration::ZERO).await, allowed(4, 6));
    for (r, t) in [(3, 12), (2, 18), (1, 24), (0, 30)] {
        assert_eq!(h.at(Duration::ZERO).await, allowed(r, t));
    }
    // The next token is 6 s away, the full bucket 30 s: on a denial t is
    // no later than Retry-After.
    assert_eq!(h.at(Duration::ZERO).await, denied(6, 6));
    assert_eq!(h.at(Duration::from_millis(4_500)).await, denied(2, 2));
    assert_eq!(
        h.at(6 * S).await,
        allowed(0, 30),
        "the token back at 6 s is taken"
    );
}

/// A deterministic walk of arrivals; every response's fields must agree
/// (checked in `fields`): t within w, within Retry-After, equal to
/// X-RateLimit-Reset.
#[tokio::test]
async fn t_never_passes_w_nor_retry_after() {
    for policy in [
        Policy::fixed_window(5, 30 * S).unwrap(),
        Policy::sliding_window(5, 30 * S).unwrap(),
        Policy::sliding_window(7, Duration::from_millis(1_500)).unwrap(),
        Policy::token_bucket(5, 1, 6 * S).unwrap(),
        Policy::token_bucket(10, 3, Duration::from_millis(700)).unwrap(),
    ] {
        let h = harness(policy);
        let mut now = 0u64;
        let mut seed = 0x9e37_79b9_u64;
        let mut denials = 0;
        for _ in 0..2_000 {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            // Mostly bursts, sometimes a pause of up to 40 s.
            now += match seed >> 60 {
                0..=9 => 0,
                10..=13 => (seed >> 20) % 2_000_000,
                _ => (seed >> 20) % 40_000_000,
            };
            let f = h.at(Duration::from_micros(now)).await;
            denials += usize::from(f.status == 429);
        }
        assert!(
            denials > 20,
            "{policy:?}: the walk must reach denials ({denials})"
        );
    }
}
