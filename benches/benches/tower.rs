//! ratelimit-tower's overhead per request: the same trivial service with
//! and without the layer, driven in process with `oneshot` (no socket, no
//! runtime: every future here is ready at its first poll).
//!
//! Run with: `cargo bench -p ratelimit-benches --bench tower`

use std::convert::Infallible;
use std::future::Future;
use std::hint::black_box;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use criterion::{criterion_main, Criterion};
use http::{Request, Response};
use ratelimit_core::{Limiter, ManualClock, Policy};
use ratelimit_memory::MemoryLimiter;
use ratelimit_tower::{ClientIp, PeerAddr, RateLimitLayer};
use tower::{service_fn, Layer, ServiceExt};

/// Polls a future that needs no I/O to completion.
fn run<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
    }
}

fn request(peer: SocketAddr, xff: Option<&'static str>) -> Request<()> {
    let mut req = Request::new(());
    req.extensions_mut().insert(PeerAddr::new(peer));
    if let Some(xff) = xff {
        req.headers_mut()
            .insert("x-forwarded-for", http::HeaderValue::from_static(xff));
    }
    req
}

fn limiter(limit: u64) -> Arc<dyn Limiter> {
    // A clock that stands still: the window never rolls, so "allowed"
    // stays allowed (a huge limit) and "denied" stays denied (limit 1).
    let policy = Policy::fixed_window(limit, Duration::from_secs(30)).expect("valid policy");
    Arc::new(MemoryLimiter::with_clock(
        policy,
        ManualClock::new(1_800_000_000_000_000),
    ))
}

fn overhead(c: &mut Criterion) {
    let inner = service_fn(|_req: Request<()>| async {
        Ok::<_, Infallible>(Response::new(String::from("hello")))
    });
    let peer: SocketAddr = "203.0.113.7:50000".parse().expect("valid address");
    let mut group = c.benchmark_group("tower");
    // Short runs: two cores shared with other builds.
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(3));

    group.bench_function("without_layer", |b| {
        b.iter(|| black_box(run(inner.oneshot(request(peer, None))).unwrap()));
    });

    // The check timeout needs a Tokio timer; these futures never wait, so
    // it is off here but in the case that measures it.
    let allowed = RateLimitLayer::new(limiter(u64::from(u32::MAX)))
        .with_check_timeout(None)
        .layer(inner);
    group.bench_function("with_layer_allowed", |b| {
        b.iter(|| black_box(run(allowed.clone().oneshot(request(peer, None))).unwrap()));
    });

    // The layer's defaults, one-second check timeout included: the timer
    // needs a Tokio runtime's handle, entered here; the futures are still
    // polled by `run`.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a current-thread runtime");
    let defaults = RateLimitLayer::new(limiter(u64::from(u32::MAX))).layer(inner);
    group.bench_function("with_layer_allowed_check_timeout", |b| {
        let _runtime = runtime.enter();
        b.iter(|| black_box(run(defaults.clone().oneshot(request(peer, None))).unwrap()));
    });

    let denied = RateLimitLayer::new(limiter(1))
        .with_check_timeout(None)
        .layer(inner);
    run(denied.clone().oneshot(request(peer, None))).unwrap();
    group.bench_function("with_layer_denied_429", |b| {
        b.iter(|| black_box(run(denied.clone().oneshot(request(peer, None))).unwrap()));
    });

    let behind_proxy = RateLimitLayer::new(limiter(u64::from(u32::MAX)))
        .with_check_timeout(None)
        .with_key_extractor(
            ClientIp::new().with_trusted_proxies(["10.0.0.0/8".parse().expect("valid CIDR")]),
        )
        .layer(inner);
    let proxy: SocketAddr = "10.0.0.1:50000".parse().expect("valid address");
    group.bench_function("with_layer_allowed_xff_3_hops", |b| {
        b.iter(|| {
            let req = request(proxy, Some("198.51.100.1, 203.0.113.9, 10.0.0.2"));
            black_box(run(behind_proxy.clone().oneshot(req)).unwrap())
        });
    });
    group.finish();
}

// In a private module, so the generated `pub fn` needs no doc comment.
mod group {
    criterion::criterion_group!(benches, super::overhead);
}
criterion_main!(group::benches);
