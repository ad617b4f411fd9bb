//! Policy sets (`SPEC.md` section 5): several named policies checked all or
//! nothing, settled later, with concurrency leases; the pure math every
//! backend applies atomically per key.

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use smallvec::SmallVec;

use crate::few::Few;
use crate::{
    Algorithm, Concurrency, ConfigError, Decision, Error, FailurePolicy, Lease, LeaseId, Mark,
    Policy, PolicyReceipt, RateState, Receipt, SetCheck,
};

/// The most policies one [`PolicySet`] holds.
pub const MAX_SET_LEN: usize = 16;

/// The longest policy name, in bytes.
pub const MAX_NAME_LEN: usize = 64;

/// What one policy of a set limits: a rate, or streams in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Limit {
    /// A rate policy (sections 1–4): fixed window, sliding window or
    /// token bucket.
    Rate(Policy),
    /// At most `N` leases held at once (section 5.3).
    Concurrency(Concurrency),
}

impl Limit {
    /// The limit reported in every decision: the rate policy's limit, or
    /// the most leases held at once.
    #[must_use]
    pub const fn limit(&self) -> u64 {
        match self {
            Self::Rate(p) => p.limit(),
            Self::Concurrency(c) => c.limit(),
        }
    }

    /// The configuration name of the algorithm: one of the rate policies'
    /// names, or `concurrency`.
    #[must_use]
    pub const fn algorithm_name(&self) -> &'static str {
        match self {
            Self::Rate(p) => p.algorithm_name(),
            Self::Concurrency(_) => "concurrency",
        }
    }

    /// The `w` of a `RateLimit-Policy` header: the rate policy's window
    /// (see [`Policy::window`]); `None` for a concurrency policy, which has
    /// no window.
    #[must_use]
    pub fn window(&self) -> Option<Duration> {
        match self {
            Self::Rate(p) => Some(p.window()),
            Self::Concurrency(_) => None,
        }
    }
}

impl From<Policy> for Limit {
    fn from(p: Policy) -> Self {
        Self::Rate(p)
    }
}

impl From<Concurrency> for Limit {
    fn from(c: Concurrency) -> Self {
        Self::Concurrency(c)
    }
}

/// One policy of a set: a name unique in the set, what it limits, and
/// whether its receipts are settled later.
///
/// Names are 1 to 64 bytes of ASCII letters, digits, `_`, `-` and `.`:
/// they appear in HTTP headers (`RateLimit-Policy: "tokens";q=…`), in log
/// lines and in store key names.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use ratelimit_core::{NamedLimit, Policy};
///
/// let tokens = NamedLimit::new("tokens", Policy::token_bucket(20_000, 20_000, Duration::from_secs(60)).unwrap())
///     .unwrap()
///     .settling();
/// assert_eq!(tokens.name(), "tokens");
/// assert!(tokens.settles());
/// assert!(NamedLimit::new("has space", tokens.limit()).is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NamedLimit {
    name: Arc<str>,
    limit: Limit,
    settles: bool,
}

impl NamedLimit {
    /// A policy named `name`.
    ///
    /// # Errors
    ///
    /// When the name is empty, longer than [`MAX_NAME_LEN`] or holds a byte
    /// other than ASCII letters, digits, `_`, `-` and `.`.
    pub fn new(name: &str, limit: impl Into<Limit>) -> Result<Self, ConfigError> {
        validate_name(name)?;
        Ok(Self {
            name: name.into(),
            limit: limit.into(),
            settles: false,
        })
    }

    /// This policy, declared to have its receipts settled later with a
    /// refund (`settle = true` in configuration).
    ///
    /// Only a token bucket stores more for it: 16 bytes per key, the
    /// refund ledger of `SPEC.md` 5.2. A bucket not declared so refunds
    /// nothing at settle (an overshoot is still charged), and the windows
    /// refund exactly either way.
    #[must_use]
    pub fn settling(mut self) -> Self {
        self.settles = true;
        self
    }

    /// The policy's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What it limits.
    #[must_use]
    pub const fn limit(&self) -> Limit {
        self.limit
    }

    /// Whether its receipts are settled later with a refund.
    #[must_use]
    pub const fn settles(&self) -> bool {
        self.settles
    }

    /// Whether this policy keeps a refund ledger: a settling token bucket.
    #[must_use]
    pub const fn keeps_ledger(&self) -> bool {
        self.settles && matches!(self.limit, Limit::Rate(Policy::TokenBucket(_)))
    }
}

pub(crate) fn validate_name(name: &str) -> Result<(), ConfigError> {
    let ok = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.');
    if name.is_empty() || name.len() > MAX_NAME_LEN || !name.bytes().all(ok) {
        return Err(ConfigError::new(
            "name",
            format!(
                "{name:?} is not a policy name; expected 1 to {MAX_NAME_LEN} ASCII letters, \
                 digits, `_`, `-` or `.`"
            ),
        ));
    }
    Ok(())
}

/// An ordered list of named policies checked all or nothing (`SPEC.md`
/// 5.1): a check names one key and one cost per policy; the set allows iff
/// every policy alone would allow its demand `max(cost, 1)`, and then each
/// takes its cost; a denial changes no policy.
///
/// A set is data: it deserializes from a list of tables (see
/// [`NamedLimit`]'s configuration form on [`LimitConfig`](crate::LimitConfig)),
/// so an application declares `[[limits]]` and swaps algorithms per policy
/// without code.
///
/// # Examples
///
/// ```
/// use ratelimit_core::PolicySet;
///
/// #[derive(serde::Deserialize)]
/// struct Config { limits: PolicySet }
///
/// let config: Config = toml::from_str(r#"
///     [[limits]]
///     name = "requests"
///     algorithm = "fixed_window"
///     rate = "5/30s"
///
///     [[limits]]
///     name = "tokens"
///     algorithm = "sliding_window"
///     rate = "20000/1m"
///
///     [[limits]]
///     name = "streams"
///     algorithm = "concurrency"
///     limit = 2
///     lease_ttl = "30s"
/// "#).unwrap();
/// assert_eq!(config.limits.len(), 3);
/// assert_eq!(config.limits.index_of("tokens"), Some(1));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PolicySet {
    limits: Arc<[NamedLimit]>,
}

impl PolicySet {
    /// A set of the given policies, in order.
    ///
    /// # Errors
    ///
    /// When the set is empty, holds more than [`MAX_SET_LEN`] policies, or
    /// two policies share a name.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use ratelimit_core::{Concurrency, NamedLimit, Policy, PolicySet};
    ///
    /// let set = PolicySet::new(vec![
    ///     NamedLimit::new("requests", Policy::fixed_window(5, Duration::from_secs(30)).unwrap()).unwrap(),
    ///     NamedLimit::new("streams", Concurrency::new(2, Duration::from_secs(30)).unwrap()).unwrap(),
    /// ]).unwrap();
    /// assert_eq!(set.names().collect::<Vec<_>>(), ["requests", "streams"]);
    /// ```
    pub fn new(limits: Vec<NamedLimit>) -> Result<Self, ConfigError> {
        if limits.is_empty() || limits.len() > MAX_SET_LEN {
            return Err(ConfigError::new(
                "limits",
                format!(
                    "a set of {} policies; expected 1 to {MAX_SET_LEN}",
                    limits.len()
                ),
            ));
        }
        for (i, l) in limits.iter().enumerate() {
            if limits[..i].iter().any(|other| other.name == l.name) {
                return Err(ConfigError::new(
                    "name",
                    format!("{:?} names two policies of the set", l.name()),
                ));
            }
        }
        Ok(Self {
            limits: limits.into(),
        })
    }

    /// A set of one rate policy named `default`: checks behave exactly as
    /// the policy alone (sections 1–4).
    #[must_use]
    pub fn single(policy: Policy) -> Self {
        let named = NamedLimit {
            name: "default".into(),
            limit: Limit::Rate(policy),
            settles: false,
        };
        Self {
            limits: vec![named].into(),
        }
    }

    /// The policies, in set order.
    #[must_use]
    pub fn limits(&self) -> &[NamedLimit] {
        &self.limits
    }

    /// The number of policies.
    #[must_use]
    pub fn len(&self) -> usize {
        self.limits.len()
    }

    /// Always false: a set holds at least one policy.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.limits.is_empty()
    }

    /// The policies' names, in set order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.limits.iter().map(NamedLimit::name)
    }

    /// The position of the policy named `name`.
    #[must_use]
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.limits.iter().position(|l| l.name() == name)
    }

    /// One cost per policy, from `(name, cost)` pairs; policies not named
    /// cost `default`.
    ///
    /// # Errors
    ///
    /// When a name is not a policy of the set.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use ratelimit_core::{NamedLimit, Policy, PolicySet};
    ///
    /// let minute = Duration::from_secs(60);
    /// let set = PolicySet::new(vec![
    ///     NamedLimit::new("requests", Policy::fixed_window(5, minute).unwrap()).unwrap(),
    ///     NamedLimit::new("tokens", Policy::fixed_window(1000, minute).unwrap()).unwrap(),
    /// ]).unwrap();
    /// assert_eq!(set.costs(1, &[("tokens", 250)]).unwrap(), [1, 250]);
    /// assert!(set.costs(1, &[("token", 250)]).unwrap_err().is_invalid());
    /// ```
    pub fn costs(&self, default: u64, named: &[(&str, u64)]) -> Result<Vec<u64>, Error> {
        let mut costs = vec![default; self.len()];
        for (name, cost) in named {
            let i = self
                .index_of(name)
                .ok_or_else(|| Error::invalid(format!("the set has no policy named {name:?}")))?;
            costs[i] = *cost;
        }
        Ok(costs)
    }

    /// Checks the number of costs and each cost against its policy, as
    /// every check does first: a layer that decides without the store
    /// (a failure policy) must refuse what the store would.
    ///
    /// # Errors
    ///
    /// When the number of costs is not the set's, a cost is above its
    /// policy's limit, or a concurrency policy's cost is above 1; the
    /// error names the policy.
    pub fn validate_costs(&self, costs: &[u64]) -> Result<(), Error> {
        if costs.len() != self.len() {
            return Err(Error::invalid(format!(
                "{} costs for a set of {} policies",
                costs.len(),
                self.len()
            )));
        }
        for (l, &cost) in self.limits.iter().zip(costs) {
            match l.limit {
                Limit::Rate(p) if cost > p.limit() => {
                    return Err(Error::cost_exceeds_limit(cost, p.limit()).in_policy(l.name()));
                }
                Limit::Concurrency(_) if cost > 1 => {
                    return Err(Error::invalid(format!(
                        "cost {cost}: a concurrency policy takes one lease per check \
                         (cost 1) or only gates on a free slot (cost 0)"
                    ))
                    .in_policy(l.name()));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Checks a receipt's parts and the actual amounts match this set, as
    /// every settle does first: a store that settles in its own code must
    /// refuse what [`settle`](Self::settle) would.
    ///
    /// # Errors
    ///
    /// When the parts are not one per policy of the matching kind (the
    /// receipt was issued by another set), or the number of amounts is not
    /// the set's.
    pub fn validate_receipt(&self, parts: &[PolicyReceipt], actual: &[u64]) -> Result<(), Error> {
        let kinds_match = parts.len() == self.len()
            && self.limits.iter().zip(parts).all(|(l, part)| {
                matches!(
                    (l.limit, part.mark),
                    (Limit::Rate(Policy::TokenBucket(_)), Mark::Bucket { .. })
                        | (
                            Limit::Rate(Policy::FixedWindow(_) | Policy::SlidingWindow(_)),
                            Mark::Window(_)
                        )
                        | (Limit::Concurrency(_), Mark::Lease(_))
                )
            });
        if !kinds_match {
            return Err(Error::invalid(
                "the receipt was not issued by a set of these policies",
            ));
        }
        if actual.len() != self.len() {
            return Err(Error::invalid(format!(
                "{} actual amounts for a set of {} policies",
                actual.len(),
                self.len()
            )));
        }
        Ok(())
    }

    /// The pure set check (`SPEC.md` 5.1) on one key's `state` at `now`.
    ///
    /// On an allowed check every policy takes its cost (a concurrency
    /// policy of cost 1 a lease named by `new_lease`) and the receipt parts
    /// are returned, one per policy; on a denial nothing changes but
    /// forgetting expired leases, which no decision can tell apart.
    ///
    /// # Errors
    ///
    /// When the costs do not match the set (their number, a cost above its
    /// policy's limit, a concurrency cost above 1), naming the policy;
    /// nothing is changed.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use ratelimit_core::{LeaseId, NamedLimit, Policy, PolicySet, SetState};
    ///
    /// let minute = Duration::from_secs(60);
    /// let set = PolicySet::new(vec![
    ///     NamedLimit::new("requests", Policy::fixed_window(5, minute).unwrap()).unwrap(),
    ///     NamedLimit::new("tokens", Policy::fixed_window(100, minute).unwrap()).unwrap(),
    /// ]).unwrap();
    /// let mut state = SetState::default();
    /// let mut ids = (0..).map(LeaseId::new);
    /// let (d, receipt) = set.check(b"k", &mut state, 0, &[1, 80], &mut || ids.next().unwrap()).unwrap();
    /// assert!(d.allowed && receipt.is_some());
    /// // 30 tokens do not fit: denied by "tokens", and "requests" keeps its count.
    /// let (d, receipt) = set.check(b"k", &mut state, 0, &[1, 30], &mut || ids.next().unwrap()).unwrap();
    /// assert!(!d.allowed && receipt.is_none());
    /// assert_eq!(d.denied_by().collect::<Vec<_>>(), [1]);
    /// assert_eq!(set.peek(&state, 0).decisions[0].remaining, 4);
    /// ```
    pub fn check(
        &self,
        key: &[u8],
        state: &mut SetState,
        now: u64,
        costs: &[u64],
        new_lease: &mut dyn FnMut() -> LeaseId,
    ) -> Result<(SetDecision, Option<Receipt>), Error> {
        self.check_set(key, state, now, costs, new_lease)
            .map(|check| (check.decision, check.receipt))
    }

    /// [`check`](Self::check), answered as a [`SetCheck`]: what a backend
    /// returns from [`SetLimiter::check_set`](crate::SetLimiter::check_set).
    ///
    /// Every policy is decided first, then, when all allowed, each takes
    /// its cost. For a set of up to four policies both passes are written
    /// out policy by policy and the answer is built whole at the end
    /// (decisions and receipt parts held inline, at their exact number),
    /// so that once inlined it is written once, where the caller receives
    /// it; a longer set takes a loop.
    ///
    /// # Errors
    ///
    /// As [`check`](Self::check).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use ratelimit_core::{LeaseId, NamedLimit, Policy, PolicySet, SetState};
    ///
    /// let set = PolicySet::single(Policy::fixed_window(5, Duration::from_secs(60)).unwrap());
    /// let mut state = SetState::default();
    /// let check = set.check_set(b"k", &mut state, 0, &[2], &mut || LeaseId::new(1)).unwrap();
    /// assert!(check.decision.allowed);
    /// assert_eq!(check.receipt.unwrap().taken(), [2]);
    /// ```
    #[inline(always)]
    pub fn check_set(
        &self,
        key: &[u8],
        state: &mut SetState,
        now: u64,
        costs: &[u64],
        new_lease: &mut dyn FnMut() -> LeaseId,
    ) -> Result<SetCheck, Error> {
        self.check_set_then(key, state, now, costs, new_lease, |_| {})
    }

    /// [`check_set`](Self::check_set), calling `then` with the key's state
    /// once the check has changed it (or found the costs invalid), before
    /// the answer is built: a store's bookkeeping of the state (its expiry)
    /// done there keeps the answer written once, where the caller receives
    /// it, rather than held across the bookkeeping and copied.
    ///
    /// # Errors
    ///
    /// As [`check`](Self::check).
    #[inline(always)]
    pub fn check_set_then(
        &self,
        key: &[u8],
        state: &mut SetState,
        now: u64,
        costs: &[u64],
        new_lease: &mut dyn FnMut() -> LeaseId,
        then: impl FnOnce(&SetState),
    ) -> Result<SetCheck, Error> {
        if let Err(e) = self.validate_costs(costs) {
            then(state);
            return Err(e);
        }
        state.align(self);
        // Sets of up to four policies (the decisions and receipt parts a
        // `SetCheck` holds inline) are checked by a loop of known length,
        // unrolled: every value stays in registers and the answer is
        // written once, where the caller receives it.
        match self.len() {
            1 => self.check_inline::<1>(key, state, now, costs, new_lease, then),
            2 => self.check_inline::<2>(key, state, now, costs, new_lease, then),
            3 => self.check_inline::<3>(key, state, now, costs, new_lease, then),
            4 => self.check_inline::<4>(key, state, now, costs, new_lease, then),
            _ => self.check_any(key, state, now, costs, new_lease, then),
        }
    }

    /// [`check_set`](Self::check_set) of a set of `N` policies, `N` from 1
    /// to 4, on an aligned state and validated costs.
    #[inline(always)]
    fn check_inline<const N: usize>(
        &self,
        key: &[u8],
        state: &mut SetState,
        now: u64,
        costs: &[u64],
        new_lease: &mut dyn FnMut() -> LeaseId,
        then: impl FnOnce(&SetState),
    ) -> Result<SetCheck, Error> {
        let (Ok(limits), Ok(parts), Ok(costs)) = (
            <&[NamedLimit; N]>::try_from(&self.limits[..]),
            <&mut [PartState; N]>::try_from(&mut state.parts[..]),
            <&[u64; N]>::try_from(costs),
        ) else {
            return self.check_any(key, state, now, costs, new_lease, then);
        };
        // Every decision first (a denial changes nothing but forgetting
        // expired leases), then, when all allowed, the costs taken. Both
        // passes are unrolled (see `unrolled`), so that the arrays below
        // stay in registers.
        let mut decisions = [Decision::allowed(0, 0, Duration::ZERO); N];
        let mut marks = [Mark::Lease(None); N];
        let mut nexts = [RateState::default(); N];
        let (mut allowed, mut retry_after) = (true, None);
        let mut failed = None;
        unrolled!(N, |i| {
            let (l, cost) = (&limits[i], costs[i]);
            let d = match (l.limit, &mut parts[i]) {
                (_, _) if failed.is_some() => None,
                (Limit::Rate(p), PartState::Rate(s)) => {
                    match p.check_part(s, now, cost, l.keeps_ledger()) {
                        Ok((d, next, mark)) => {
                            nexts[i] = next;
                            marks[i] = mark;
                            Some(d)
                        }
                        Err(e) => {
                            failed = Some(e.in_policy(l.name()));
                            None
                        }
                    }
                }
                (Limit::Concurrency(c), PartState::Leases(held)) => {
                    c.forget_expired(held, now);
                    Some(if cost == 0 {
                        c.peek(held, now)
                    } else {
                        c.would_acquire(held, now)
                    })
                }
                _ => unreachable!("SetState::align gives every policy a part of its kind"),
            };
            if let Some(d) = d {
                if !d.allowed {
                    allowed = false;
                    retry_after = retry_after.max(d.retry_after);
                }
                decisions[i] = d;
            }
        });
        if let Some(e) = failed {
            then(state);
            return Err(e);
        }
        let receipt = if allowed {
            unrolled!(N, |i| {
                match (limits[i].limit, &mut parts[i]) {
                    (Limit::Rate(_), PartState::Rate(s)) => *s = nexts[i],
                    (Limit::Concurrency(c), PartState::Leases(held)) => {
                        if costs[i] == 1 {
                            let lease =
                                Lease::new(new_lease(), now.saturating_add(c.lease_ttl_micros()));
                            held.push(lease);
                            marks[i] = Mark::Lease(Some(lease));
                        }
                    }
                    _ => unreachable!("SetState::align gives every policy a part of its kind"),
                }
            });
            let parts: [PolicyReceipt; N] =
                std::array::from_fn(|i| PolicyReceipt::new(costs[i], marks[i]));
            Some(Receipt::of_parts(key, &parts))
        } else {
            None
        };
        then(state);
        Ok(SetCheck {
            decision: SetDecision {
                allowed,
                retry_after,
                decisions: Decisions(Few::of_slice(&decisions)),
                degraded: None,
            },
            receipt,
        })
    }

    /// [`check_set`](Self::check_set) of a set of any length, on an aligned
    /// state and validated costs.
    fn check_any(
        &self,
        key: &[u8],
        state: &mut SetState,
        now: u64,
        costs: &[u64],
        new_lease: &mut dyn FnMut() -> LeaseId,
        then: impl FnOnce(&SetState),
    ) -> Result<SetCheck, Error> {
        let mut out = SetCheck::new(SetDecision::allowing(), Some(Receipt::new(key, [])));
        let filled = self.fill_check(&mut out, state, now, costs, new_lease);
        then(state);
        filled.map(|()| out)
    }

    /// The body of [`check_any`](Self::check_any): fills `out` (allowing,
    /// with an empty receipt) for costs already validated.
    fn fill_check(
        &self,
        out: &mut SetCheck,
        state: &mut SetState,
        now: u64,
        costs: &[u64],
        new_lease: &mut dyn FnMut() -> LeaseId,
    ) -> Result<(), Error> {
        let (decision, receipt) = (&mut out.decision, &mut out.receipt);
        let Some(receipt) = receipt.as_mut() else {
            unreachable!("the receipt was just made")
        };
        let mut nexts: SmallVec<[RateState; 4]> = SmallVec::new();
        for ((l, &cost), part) in self.limits.iter().zip(costs).zip(&mut state.parts) {
            let (d, mark) = match (l.limit, part) {
                (Limit::Rate(p), PartState::Rate(s)) => {
                    let (d, next, mark) = p
                        .check_part(s, now, cost, l.keeps_ledger())
                        .map_err(|e| e.in_policy(l.name()))?;
                    nexts.push(next);
                    (d, mark)
                }
                (Limit::Concurrency(c), PartState::Leases(held)) => {
                    c.forget_expired(held, now);
                    let d = if cost == 0 {
                        c.peek(held, now)
                    } else {
                        c.would_acquire(held, now)
                    };
                    (d, Mark::Lease(None))
                }
                _ => unreachable!("SetState::align gives every policy a part of its kind"),
            };
            decision.add(d);
            receipt.push_part(PolicyReceipt::new(cost, mark));
        }
        if !decision.allowed {
            out.receipt = None;
            return Ok(());
        }
        let mut nexts = nexts.iter();
        for ((l, part), r) in self
            .limits
            .iter()
            .zip(&mut state.parts)
            .zip(receipt.parts_mut())
        {
            match (l.limit, part) {
                (Limit::Rate(_), PartState::Rate(s)) => {
                    if let Some(next) = nexts.next() {
                        *s = *next;
                    }
                }
                (Limit::Concurrency(c), PartState::Leases(held)) => {
                    if r.taken == 1 {
                        let lease =
                            Lease::new(new_lease(), now.saturating_add(c.lease_ttl_micros()));
                        held.push(lease);
                        r.mark = Mark::Lease(Some(lease));
                    }
                }
                _ => unreachable!("SetState::align gives every policy a part of its kind"),
            }
        }
        Ok(())
    }

    /// The pure settle (`SPEC.md` 5.2) of one check's receipt `parts` with
    /// the `actual` amount per policy (ignored for concurrency policies,
    /// whose lease is released). Never denies; returns the decision of each
    /// policy after it, as [`peek`](Self::peek) would see it.
    ///
    /// # Errors
    ///
    /// When the receipt or the amounts do not match the set, or an
    /// overshoot would take a counter out of the exact domain: no rate
    /// policy changes, but the receipt's leases are still released (the
    /// holder is done with them).
    pub fn settle(
        &self,
        state: &mut SetState,
        now: u64,
        parts: &[PolicyReceipt],
        actual: &[u64],
    ) -> Result<SetDecision, Error> {
        if let Err(e) = self.validate_receipt(parts, actual) {
            self.release(state, now, parts);
            return Err(e);
        }
        state.align(self);
        let mut nexts: SmallVec<[Option<(Decision, RateState)>; 4]> = SmallVec::new();
        for (((l, part), r), &a) in self.limits.iter().zip(&state.parts).zip(parts).zip(actual) {
            if let (Limit::Rate(p), PartState::Rate(s)) = (l.limit, part) {
                match p.settle_part(s, now, r, a, l.settles()) {
                    Ok(next) => nexts.push(Some(next)),
                    Err(e) => {
                        self.release(state, now, parts);
                        return Err(e.in_policy(l.name()));
                    }
                }
            } else {
                nexts.push(None);
            }
        }
        let mut decisions = Decisions::default();
        for (((l, part), r), next) in self
            .limits
            .iter()
            .zip(&mut state.parts)
            .zip(parts)
            .zip(nexts)
        {
            match (l.limit, part, next) {
                (Limit::Rate(_), PartState::Rate(s), Some((d, next))) => {
                    *s = next;
                    decisions.push(d);
                }
                (Limit::Concurrency(c), PartState::Leases(held), _) => {
                    // A settle forgets the expired leases of every
                    // concurrency policy, whether its receipt holds a lease
                    // there or not, so that a clock gone back sees them on
                    // no backend (docs/semantics.md, "Checks").
                    match r.lease() {
                        Some(lease) => {
                            c.release(held, now, lease.id);
                        }
                        None => c.forget_expired(held, now),
                    }
                    decisions.push(c.peek(held, now));
                }
                _ => unreachable!("one settled state per rate policy"),
            }
        }
        Ok(SetDecision::of(decisions))
    }

    /// Releases the leases of a receipt's `parts` and changes nothing else:
    /// what a dropped [`Reservation`](crate::Reservation) does (the
    /// estimate stays charged). Returns how many leases were still held.
    pub fn release(&self, state: &mut SetState, now: u64, parts: &[PolicyReceipt]) -> usize {
        state.align(self);
        let mut freed = 0;
        for ((l, part), r) in self.limits.iter().zip(&mut state.parts).zip(parts) {
            if let (Limit::Concurrency(c), PartState::Leases(held), Some(lease)) =
                (l.limit, part, r.lease())
            {
                freed += usize::from(c.release(held, now, lease.id));
            }
        }
        freed
    }

    /// Renews the leases of a receipt's `parts` to `now + lease_ttl`,
    /// updating their expiry in `parts`; true when every lease was still
    /// held, false when one was lost (it expired: its slot may be taken).
    pub fn renew(&self, state: &mut SetState, now: u64, parts: &mut [PolicyReceipt]) -> bool {
        if parts.len() != self.len() {
            // A receipt of another set (or a degraded one): nothing of it
            // is held here.
            return false;
        }
        state.align(self);
        let mut all = true;
        for ((l, part), r) in self.limits.iter().zip(&mut state.parts).zip(parts) {
            if let (Limit::Concurrency(c), PartState::Leases(held), Mark::Lease(Some(lease))) =
                (l.limit, part, &mut r.mark)
            {
                match c.renew(held, now, lease.id) {
                    Some(renewed) => *lease = renewed,
                    None => all = false,
                }
            }
        }
        all
    }

    /// Each policy's decision at `now` for a check of cost 0 (one unit or
    /// one lease free), taking nothing.
    #[must_use]
    pub fn peek(&self, state: &SetState, now: u64) -> SetDecision {
        let default;
        let parts = if state.is_aligned(self) {
            &state.parts
        } else {
            default = SetState::aligned(self);
            &default.parts
        };
        let decisions: Decisions = self
            .limits
            .iter()
            .zip(parts)
            .map(|(l, part)| match (l.limit, part) {
                (Limit::Rate(p), PartState::Rate(s)) => p.peek(&s.state, now),
                (Limit::Concurrency(c), PartState::Leases(held)) => c.peek(held, now),
                _ => unreachable!("an aligned state has a part of each policy's kind"),
            })
            .collect();
        SetDecision::of(decisions)
    }

    /// The first instant (µs) from which `state` is equivalent to a key
    /// never seen, if time only moves forward: the latest of the rate
    /// policies' expiries and the leases' expiries.
    #[must_use]
    pub fn expires_at(&self, state: &SetState) -> u64 {
        if !state.is_aligned(self) {
            return 0;
        }
        self.limits
            .iter()
            .zip(&state.parts)
            .map(|(l, part)| match (l.limit, part) {
                (Limit::Rate(p), PartState::Rate(s)) => p.expires_at(&s.state),
                (Limit::Concurrency(_), PartState::Leases(held)) => {
                    held.iter().map(|l| l.expires_at).max().unwrap_or(0)
                }
                _ => 0,
            })
            .max()
            .unwrap_or(0)
    }

    /// Whether `state` is equivalent to a key never seen at `now`.
    #[must_use]
    pub fn is_idle(&self, state: &SetState, now: u64) -> bool {
        now >= self.expires_at(state)
    }
}

/// Runs `$body` with `$i` bound to `0`, …, `$n - 1` (`$n <= 4`, a
/// constant), each run written out: a loop over a set's policies, its body
/// the check of every kind of policy, was too large for the compiler to
/// unroll (and a closure called four times was not inlined), and the
/// arrays it indexed were kept in memory and copied.
macro_rules! unrolled {
    ($n:expr, |$i:ident| $body:block) => {{
        const { assert!($n <= 4) };
        if $n > 0 {
            let $i = 0;
            $body
        }
        if $n > 1 {
            let $i = 1;
            $body
        }
        if $n > 2 {
            let $i = 2;
            $body
        }
        if $n > 3 {
            let $i = 3;
            $body
        }
    }};
}
use unrolled;

impl TryFrom<Vec<NamedLimit>> for PolicySet {
    type Error = ConfigError;

    fn try_from(limits: Vec<NamedLimit>) -> Result<Self, ConfigError> {
        Self::new(limits)
    }
}

impl From<PolicySet> for Vec<NamedLimit> {
    fn from(set: PolicySet) -> Self {
        set.limits.to_vec()
    }
}

/// What one key holds under a [`PolicySet`]: one part per policy, in set
/// order. `Default` is a key never seen.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SetState {
    /// One part per policy; empty for a key never seen.
    pub parts: Vec<PartState>,
}

/// One policy's part of a [`SetState`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartState {
    /// A rate policy's state.
    Rate(RateState),
    /// A concurrency policy's leases (held or not yet forgotten).
    Leases(Vec<Lease>),
}

impl SetState {
    /// The state of a key never seen, with one empty part per policy.
    #[must_use]
    pub fn aligned(set: &PolicySet) -> Self {
        let parts = set
            .limits()
            .iter()
            .map(|l| match l.limit() {
                Limit::Rate(_) => PartState::Rate(RateState::default()),
                Limit::Concurrency(_) => PartState::Leases(Vec::new()),
            })
            .collect();
        Self { parts }
    }

    #[inline]
    fn is_aligned(&self, set: &PolicySet) -> bool {
        self.parts.len() == set.len()
            && set.limits().iter().zip(&self.parts).all(|(l, p)| {
                matches!(
                    (l.limit(), p),
                    (Limit::Rate(_), PartState::Rate(_))
                        | (Limit::Concurrency(_), PartState::Leases(_))
                )
            })
    }

    /// Makes the state one of `set` (a key never seen, or a state of
    /// another set after a configuration change, reads as empty).
    #[inline]
    fn align(&mut self, set: &PolicySet) {
        if !self.is_aligned(set) {
            self.realign(set);
        }
    }

    #[cold]
    #[inline(never)]
    fn realign(&mut self, set: &PolicySet) {
        *self = Self::aligned(set);
    }
}

/// The answer to one check of a [`PolicySet`]: one [`Decision`] per policy
/// in set order (each as that policy alone would answer), the set's
/// `allowed`, and its `retry_after`, the longest wait of the denying
/// policies.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use ratelimit_core::{Decision, SetDecision};
///
/// let d = SetDecision::from_decisions(vec![
///     Decision::allowed(5, 4, Duration::from_secs(30)),
///     Decision::denied(100, 3, Duration::from_secs(60), Duration::from_secs(12)),
/// ]);
/// assert!(!d.allowed);
/// assert_eq!(d.retry_after, Some(Duration::from_secs(12)));
/// assert_eq!(d.first_denied(), Some(1));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct SetDecision {
    /// Whether every policy allowed (and each took its cost).
    pub allowed: bool,
    /// Only when denied: `max(retry_after)` over the denying policies.
    pub retry_after: Option<Duration>,
    /// One decision per policy, in set order.
    pub decisions: Decisions,
    /// `Some` when the store could not decide and a [`FailurePolicy`] did
    /// instead; `None` on every decision a store makes.
    pub degraded: Option<FailurePolicy>,
}

impl SetDecision {
    /// The set's answer from its policies' decisions.
    #[must_use]
    pub fn from_decisions(decisions: impl IntoIterator<Item = Decision>) -> Self {
        Self::of(decisions.into_iter().collect())
    }

    /// An allowing decision of no policy yet, that [`add`](Self::add)
    /// completes policy by policy.
    fn allowing() -> Self {
        Self {
            allowed: true,
            retry_after: None,
            decisions: Decisions::default(),
            degraded: None,
        }
    }

    /// Adds the next policy's decision, as [`of`](Self::of) counts it.
    #[inline]
    fn add(&mut self, d: Decision) {
        if !d.allowed {
            self.allowed = false;
            self.retry_after = self.retry_after.max(d.retry_after);
        }
        self.decisions.push(d);
    }

    fn of(decisions: Decisions) -> Self {
        let allowed = decisions.iter().all(|d| d.allowed);
        let retry_after = decisions.iter().filter_map(|d| d.retry_after).max();
        Self {
            allowed,
            retry_after: if allowed { None } else { retry_after },
            decisions,
            degraded: None,
        }
    }

    /// This decision, marked as made by `policy` while the store could not
    /// decide.
    #[must_use]
    pub fn with_degraded(mut self, policy: FailurePolicy) -> Self {
        self.degraded = Some(policy);
        for d in self.decisions.0.iter_mut() {
            *d = d.with_degraded(policy);
        }
        self
    }

    /// The positions of the policies that denied, in set order.
    pub fn denied_by(&self) -> impl Iterator<Item = usize> + '_ {
        self.decisions
            .iter()
            .enumerate()
            .filter(|(_, d)| !d.allowed)
            .map(|(i, _)| i)
    }

    /// The denying policy with the longest wait (the first of them on a
    /// tie): the one to name to a client.
    #[must_use]
    pub fn first_denied(&self) -> Option<usize> {
        let longest = self.retry_after?;
        self.decisions
            .iter()
            .position(|d| !d.allowed && d.retry_after == Some(longest))
    }
}

/// The decisions of a [`SetDecision`], one per policy in set order: a
/// slice (through `Deref`), held inline for sets of up to four policies so
/// a check allocates nothing for them.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Decisions(Few<Decision>);

impl Decisions {
    #[inline]
    fn push(&mut self, d: Decision) {
        self.0.push(d);
    }
}

impl Deref for Decisions {
    type Target = [Decision];

    fn deref(&self) -> &[Decision] {
        &self.0
    }
}

impl fmt::Debug for Decisions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl FromIterator<Decision> for Decisions {
    fn from_iter<I: IntoIterator<Item = Decision>>(iter: I) -> Self {
        Self(iter.into_iter().collect())
    }
}

impl<'a> IntoIterator for &'a Decisions {
    type Item = &'a Decision;
    type IntoIter = std::slice::Iter<'a, Decision>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl From<Vec<Decision>> for Decisions {
    fn from(v: Vec<Decision>) -> Self {
        Self(Few::from(v))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// One policy of a generated set: its kind and a small limit, so that
    /// sequences reach denials.
    fn named_limit() -> impl Strategy<Value = NamedLimit> {
        (0..5u8, 1..6u64, 1..4u64, any::<bool>()).prop_map(|(kind, limit, secs, settles)| {
            let period = Duration::from_secs(secs);
            let limit: Limit = match kind {
                0 => Policy::fixed_window(limit, period).unwrap().into(),
                1 => Policy::sliding_window(limit, period).unwrap().into(),
                2 | 3 => Policy::token_bucket(limit, limit, period).unwrap().into(),
                _ => Concurrency::new(limit, period).unwrap().into(),
            };
            let named = NamedLimit::new("p", limit).unwrap();
            if settles {
                named.settling()
            } else {
                named
            }
        })
    }

    proptest! {
        /// Sets of one to four policies are checked by the unrolled path;
        /// it answers and changes the state exactly as the loop every
        /// longer set takes, along any sequence of checks (denials, gates,
        /// leases, expiries, invalid costs and a clock going back
        /// included).
        #[test]
        fn the_unrolled_check_is_the_loop(
            limits in prop::collection::vec(named_limit(), 1..=6),
            steps in prop::collection::vec(
                (0..2_500_000u64, any::<bool>(), prop::collection::vec(0..7u64, 6)),
                1..40,
            ),
        ) {
            let limits: Vec<NamedLimit> = limits
                .into_iter()
                .enumerate()
                .map(|(i, l)| {
                    let named = NamedLimit::new(&format!("p{i}"), l.limit()).unwrap();
                    if l.settles() { named.settling() } else { named }
                })
                .collect();
            let set = PolicySet::new(limits).unwrap();
            let (mut unrolled, mut looped) = (SetState::default(), SetState::default());
            let (mut a, mut b) = (0u128, 0u128);
            let mut now = 10_000_000u64;
            for (step, back, costs) in steps {
                now = if back { now.saturating_sub(step) } else { now + step };
                let costs: Vec<u64> = set
                    .limits()
                    .iter()
                    .zip(costs)
                    .map(|(l, c)| match l.limit() {
                        Limit::Concurrency(_) => c % 2,
                        // Mostly within the limit, sometimes one above.
                        Limit::Rate(p) => c % (p.limit() + 2),
                    })
                    .collect();
                let one = set.check_set(b"key", &mut unrolled, now, &costs, &mut || {
                    a += 1;
                    LeaseId::new(a)
                });
                let other = set.validate_costs(&costs).and_then(|()| {
                    looped.align(&set);
                    set.check_any(b"key", &mut looped, now, &costs, &mut || {
                        b += 1;
                        LeaseId::new(b)
                    }, |_| {})
                });
                match (one, other) {
                    (Ok(x), Ok(y)) => {
                        prop_assert_eq!(&x.decision, &y.decision);
                        prop_assert_eq!(&x.receipt, &y.receipt);
                    }
                    (Err(x), Err(y)) => prop_assert_eq!(x.to_string(), y.to_string()),
                    (x, y) => prop_assert!(false, "{:?} against {:?}", x, y),
                }
                prop_assert_eq!(&unrolled, &looped);
            }
        }
    }
}
