//! Memory stays bounded: idle keys are forgotten during normal calls, and
//! a key cap holds while keys rotate. Assertions are on entry counts and
//! allocated bytes, never on timings.

use std::num::NonZeroUsize;
use std::time::Duration;

use ratelimit_core::{ManualClock, Policy};
use ratelimit_memory::{MemoryLimiter, MemoryLimiterOptions, WhenFull};

const START: u64 = 1_700_000_000_000_000;
const MILLION: u64 = 1_000_000;

fn key(i: u64) -> [u8; 8] {
    i.to_le_bytes()
}

/// A limiter of 10 per one-second fixed window with `options`, on a
/// manual clock at `START`.
fn one_second_windows(options: MemoryLimiterOptions) -> (MemoryLimiter<ManualClock>, ManualClock) {
    let clock = ManualClock::new(START);
    let policy = Policy::fixed_window(10, Duration::from_secs(1)).unwrap();
    let limiter = MemoryLimiter::with_options(policy, clock.clone(), options);
    (limiter, clock)
}

/// [`one_second_windows`] over `shards` shards.
fn one_second_windows_on(shards: usize) -> (MemoryLimiter<ManualClock>, ManualClock) {
    one_second_windows(
        MemoryLimiterOptions::default().with_shards(NonZeroUsize::new(shards).unwrap()),
    )
}

/// Keys and bytes stored after a million keys' checks (`full`), then after
/// a million new keys' once the first ones' windows are over (`rotated`).
struct Rotation {
    full: usize,
    full_bytes: usize,
    rotated: usize,
    rotated_bytes: usize,
}

/// Checks a million keys on `limiter` (each once, on a one-second window),
/// lets their windows end, then checks a million new keys: a client
/// rotating through new keys, which must reuse the room of the old ones
/// (at most 10% more keys stored after the rotation).
fn fill_then_rotate(limiter: &MemoryLimiter<ManualClock>, clock: &ManualClock) -> Rotation {
    for i in 0..MILLION {
        assert!(limiter.check_sync(&key(i), 1).unwrap().allowed);
    }
    let (full, full_bytes) = (limiter.len(), limiter.allocated_bytes());
    clock.advance(Duration::from_secs(2));
    for i in MILLION..2 * MILLION {
        assert!(limiter.check_sync(&key(i), 1).unwrap().allowed);
    }
    let (rotated, rotated_bytes) = (limiter.len(), limiter.allocated_bytes());
    assert!(
        rotated <= MILLION as usize * 11 / 10,
        "{rotated} keys stored after rotation"
    );
    Rotation {
        full,
        full_bytes,
        rotated,
        rotated_bytes,
    }
}

#[test]
fn a_million_keys_are_forgotten_once_their_windows_end() {
    let (limiter, clock) = one_second_windows(MemoryLimiterOptions::default());

    let rotation = fill_then_rotate(&limiter, &clock);
    assert_eq!(
        rotation.full, MILLION as usize,
        "live counters are never forgotten"
    );
    let (full, full_bytes) = (rotation.full, rotation.full_bytes);
    let (rotated, rotated_bytes) = (rotation.rotated, rotation.rotated_bytes);

    // Those windows end too; a million checks on a thousand keys alone
    // sweep the rest away and the tables give their memory back.
    clock.advance(Duration::from_secs(2));
    for _ in 0..1_000 {
        for i in 0..1_000 {
            limiter.check_sync(&key(i), 1).unwrap();
        }
    }
    let after = limiter.len();
    let after_bytes = limiter.allocated_bytes();
    eprintln!(
        "1M keys: {full} stored, {full_bytes} bytes; after rotating 1M new keys: \
         {rotated} stored, {rotated_bytes} bytes; after 1M checks on 1k keys: \
         {after} stored, {after_bytes} bytes"
    );
    assert!(after <= 1_000 + 1_000, "{after} keys still stored");
    assert!(
        after_bytes < full_bytes / 20,
        "{after_bytes} bytes still allocated (from {full_bytes})"
    );
}

/// With the default 512 shards, a shard holds ~1,953 of a million keys,
/// give or take 2% from one million keys to the next: a shard whose first
/// million fit in 2,048 slots (at most 1,792 keys, 7/8) may need 4,096 for
/// the second and rightly double, so there the table's bytes may grow by a
/// shard's worth whatever the sweeper does (one run in ten did). With 16
/// shards of ~62,500 keys, ±0.4%, no shard comes near its growth point:
/// the table must not grow.
#[test]
fn rotating_keys_reuse_the_room_of_idle_ones() {
    let (limiter, clock) = one_second_windows_on(16);
    let rotation = fill_then_rotate(&limiter, &clock);
    assert!(
        rotation.rotated_bytes <= rotation.full_bytes,
        "the table grew from {} to {} bytes",
        rotation.full_bytes,
        rotation.rotated_bytes
    );
}

#[test]
fn shards_no_call_reaches_are_swept_by_the_others() {
    let (limiter, clock) = one_second_windows_on(64);
    let empty_bytes = limiter.allocated_bytes();
    for i in 0..10_000 {
        limiter.check_sync(&key(i), 1).unwrap();
    }
    let full_bytes = limiter.allocated_bytes();
    // Every window is over, and from now on calls reach one shard only:
    // the 63 others hold idle keys that only lent turns can sweep.
    clock.advance(Duration::from_secs(2));
    for _ in 0..10_000 {
        limiter.check_sync(&key(0), 1).unwrap();
    }
    assert_eq!(limiter.len(), 1, "idle keys left in shards no call reached");
    let after_bytes = limiter.allocated_bytes();
    assert!(
        after_bytes < full_bytes / 4,
        "{after_bytes} bytes still allocated (from {full_bytes}; {empty_bytes} empty)"
    );
}

#[test]
fn a_capped_limiter_stays_bounded_while_keys_rotate() {
    let cap = 10_000usize;
    let clock = ManualClock::new(START);
    let policy = Policy::token_bucket(5, 5, Duration::from_secs(1)).unwrap();
    let options = MemoryLimiterOptions::default().with_max_keys(NonZeroUsize::new(cap).unwrap());
    let limiter = MemoryLimiter::with_options(policy, clock.clone(), options);

    let mut peak_bytes = 0;
    let mut next = 0u64;
    // 200 rounds of 5,000 new keys, each round 1 s apart: every bucket is
    // full again by the next round, so its key may be forgotten.
    for _ in 0..200 {
        for _ in 0..5_000 {
            assert!(limiter.check_sync(&key(next), 1).unwrap().allowed);
            next += 1;
        }
        assert!(
            limiter.len() <= cap,
            "{} keys over a cap of {cap}",
            limiter.len()
        );
        peak_bytes = peak_bytes.max(limiter.allocated_bytes());
        clock.advance(Duration::from_secs(1));
    }
    eprintln!(
        "cap {cap}: 1M rotating keys, at most {peak_bytes} bytes, {} stored at the end",
        limiter.len()
    );
    // Per-shard tables round up to powers of two; 32 entries of 24 bytes
    // each per key is a generous ceiling that a leak would break at once.
    assert!(
        peak_bytes <= cap * 32 * 4,
        "{peak_bytes} bytes for {cap} keys"
    );
}

#[test]
fn when_full_of_live_keys_new_keys_follow_the_policy() {
    let cap = 1_000usize;
    let policy = Policy::fixed_window(3, Duration::from_secs(10)).unwrap();
    for when_full in [WhenFull::DenyNewKeys, WhenFull::AllowUnlimited] {
        let clock = ManualClock::new(START);
        let options = MemoryLimiterOptions::default()
            .with_max_keys(NonZeroUsize::new(cap).unwrap())
            .with_when_full(when_full);
        let limiter = MemoryLimiter::with_options(policy, clock.clone(), options);

        let mut refused = 0;
        let mut stored = Vec::new();
        for i in 0..3 * cap as u64 {
            let d = limiter.check_sync(&key(i), 1).unwrap();
            if d.allowed && d.remaining == 2 && limiter.peek_sync(&key(i)).remaining == 2 {
                stored.push(i);
            }
            if !d.allowed {
                refused += 1;
                assert_eq!(d.remaining, 0);
                assert!(d.retry_after.unwrap() > Duration::ZERO);
            }
        }
        assert!(limiter.len() <= cap);
        assert!(!stored.is_empty());
        match when_full {
            WhenFull::DenyNewKeys => assert!(refused > 0, "a full table refused nothing"),
            _ => assert_eq!(refused, 0, "allow-unlimited refused a new key"),
        }
        // Stored keys keep their counters: two more fit, the third does not.
        for &i in &stored {
            assert!(limiter.check_sync(&key(i), 2).unwrap().allowed);
            assert!(!limiter.check_sync(&key(i), 1).unwrap().allowed);
        }
        // Once the window is over the idle keys make room again.
        clock.advance(Duration::from_secs(10));
        assert!(limiter.check_sync(b"late", 1).unwrap().allowed);
        assert_eq!(
            limiter.peek_sync(b"late").remaining,
            2,
            "{when_full:?}: stored"
        );
    }
}
