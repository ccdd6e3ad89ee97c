//! Per-upstream concurrency limits: in flight, queued, refused — and a saturated
//! upstream never holds up another.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};
use http::StatusCode;
use tokio::io::AsyncWriteExt;

use crate::support::{
    eventually, metric, metrics_text, url, within, Backend, Client, Gateway, Upstream,
};

/// Upstream `slow` (`held`, with `limited`'s limits) under `/slow`, and upstream `fast`
/// (`other`) under `/fast`.
async fn two_upstreams(
    held: &Backend,
    other: &Backend,
    limited: impl FnOnce(Upstream) -> Upstream,
) -> portcullis::RunningGateway {
    Gateway::new()
        .admin()
        .upstream("slow", limited(Upstream::new(held)))
        .upstream("fast", other)
        .route("/slow", "slow")
        .route("/fast", "fast")
        .start()
        .await
}

#[tokio::test]
async fn in_flight_and_queue_are_bounded_and_the_rest_is_refused_at_once() {
    let held = Backend::holding().await;
    let other = Backend::echo().await;
    let gw = two_upstreams(&held, &other, |u| {
        u.max_in_flight(4)
            .max_queue(2)
            .queue_timeout(Duration::from_secs(60))
    })
    .await;
    let client = Client::new();

    let mut requests: FuturesUnordered<_> = (0..10)
        .map(|_| {
            let client = client.clone();
            let u = url(&gw, "/slow");
            tokio::spawn(async move { client.get(&u).await })
        })
        .collect();

    // 4 in flight + 2 queued leaves 4 to be refused while the backend still holds
    // everything: the first four answers must be those refusals.
    for _ in 0..4 {
        let refused = within("a refusal", requests.next())
            .await
            .expect("a request")
            .expect("joins");
        assert_eq!(
            refused.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{}",
            refused.text()
        );
        assert_eq!(refused.header("retry-after"), Some("1"));
        assert_eq!(refused.json()["error"], "upstream_overloaded");
    }
    eventually("4 requests reach the backend", async || {
        held.state.arrived() == 4
    })
    .await;
    let text = metrics_text(&gw).await;
    assert_eq!(
        metric(&text, "portcullis_upstream_in_flight{upstream=\"slow\"}"),
        Some(4.0)
    );
    assert_eq!(
        metric(&text, "portcullis_upstream_queue_depth{upstream=\"slow\"}"),
        Some(2.0)
    );
    assert_eq!(
        metric(
            &text,
            "portcullis_upstream_rejected_total{reason=\"queue_full\",upstream=\"slow\"}"
        ),
        Some(4.0)
    );

    // The bulkhead: another upstream answers while this one is saturated.
    let fast = within("the other upstream", client.get(&url(&gw, "/fast"))).await;
    assert_eq!(fast.status, StatusCode::OK);

    assert_eq!(
        held.state.arrived(),
        4,
        "the queued requests are still waiting"
    );
    held.state.release(6);
    for _ in 0..6 {
        let served = within("a served request", requests.next())
            .await
            .expect("a request")
            .expect("joins");
        assert_eq!(served.status, StatusCode::OK);
    }
    assert_eq!(
        held.state.arrived(),
        6,
        "exactly the admitted requests reached the backend"
    );
    let text = metrics_text(&gw).await;
    assert_eq!(
        metric(&text, "portcullis_upstream_in_flight{upstream=\"slow\"}"),
        Some(0.0)
    );
    assert_eq!(
        metric(&text, "portcullis_upstream_queue_depth{upstream=\"slow\"}"),
        Some(0.0)
    );
}

#[tokio::test]
async fn a_request_that_waits_too_long_in_the_queue_gets_503() {
    let held = Backend::holding().await;
    let other = Backend::echo().await;
    let gw = two_upstreams(&held, &other, |u| {
        u.max_in_flight(1)
            .max_queue(1)
            .queue_timeout(Duration::from_millis(50))
    })
    .await;
    let client = Client::new();

    let first = {
        let client = client.clone();
        let u = url(&gw, "/slow");
        tokio::spawn(async move { client.get(&u).await })
    };
    eventually("the first request holds the permit", async || {
        held.state.arrived() == 1
    })
    .await;
    let second = within("the queued request", client.get(&url(&gw, "/slow"))).await;
    assert_eq!(second.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        second.json()["message"]
            .as_str()
            .unwrap_or_default()
            .contains("queue timeout"),
        "{}",
        second.text()
    );
    let text = metrics_text(&gw).await;
    assert_eq!(
        metric(
            &text,
            "portcullis_upstream_rejected_total{reason=\"queue_timeout\",upstream=\"slow\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &text,
            "portcullis_upstream_queue_wait_seconds_count{upstream=\"slow\"}"
        ),
        Some(1.0)
    );

    held.state.release(1);
    assert_eq!(
        within("the first request", first)
            .await
            .expect("joins")
            .status,
        StatusCode::OK
    );
    assert_eq!(held.state.arrived(), 1);
}

#[tokio::test]
async fn a_client_that_goes_away_cancels_the_upstream_call_and_frees_its_permit() {
    let held = Backend::holding().await;
    let other = Backend::echo().await;
    let gw = two_upstreams(&held, &other, |u| u.max_in_flight(1).max_queue(0)).await;
    let addr = gw.listener_addr("public").expect("listener");

    let mut client_socket = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connects");
    client_socket
        .write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("writes");
    eventually("the request reaches the backend", async || {
        held.state.arrived() == 1
    })
    .await;
    drop(client_socket);

    eventually("the gateway cancels the upstream request", async || {
        held.state.cancelled.load(Ordering::SeqCst) == 1
    })
    .await;
    let text = metrics_text(&gw).await;
    assert_eq!(
        metric(&text, "portcullis_upstream_in_flight{upstream=\"slow\"}"),
        Some(0.0)
    );
    assert_eq!(
        metric(
            &text,
            "portcullis_http_requests_total{listener=\"public\",method=\"GET\",route=\"slow\",status=\"499\"}"
        ),
        Some(1.0)
    );

    // The permit is free again: the next request is admitted, not refused.
    held.state.release(1);
    let next = within("the next request", Client::new().get(&url(&gw, "/slow"))).await;
    assert_eq!(next.status, StatusCode::OK);
}

#[tokio::test]
async fn the_permit_is_held_until_the_response_body_has_been_sent() {
    use bytes::Bytes;
    use http_body_util::BodyExt;
    let streaming = Backend::start(|_, state| async move {
        let (sender, receiver) = tokio::sync::mpsc::channel::<Bytes>(1);
        tokio::spawn(async move {
            let _ = sender.send(Bytes::from_static(b"first part;")).await;
            state.hold().await;
            let _ = sender.send(Bytes::from_static(b"last part")).await;
        });
        let frames = futures_util::stream::unfold(receiver, |mut receiver| async move {
            receiver.recv().await.map(|chunk| {
                (
                    Ok::<_, std::io::Error>(http_body::Frame::data(chunk)),
                    receiver,
                )
            })
        });
        http::Response::new(BodyExt::boxed(http_body_util::StreamBody::new(frames)))
    })
    .await;
    let other = Backend::echo().await;
    let gw = two_upstreams(&streaming, &other, |u| u.max_in_flight(1).max_queue(0)).await;
    let client = Client::new();

    let request = http::Request::get(url(&gw, "/slow"))
        .body(
            http_body_util::Empty::new()
                .map_err(|never| match never {})
                .boxed(),
        )
        .expect("request");
    let response = within("response headers", client.stream(request)).await;
    assert_eq!(response.status(), StatusCode::OK);
    // Headers are in, the body is not finished: the permit is still taken.
    let refused = within("a second request", client.get(&url(&gw, "/slow"))).await;
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);

    streaming.state.release(1);
    let body = within("the body", response.into_body().collect())
        .await
        .expect("body")
        .to_bytes();
    assert_eq!(&body[..], b"first part;last part");
    eventually("the permit is released", async || {
        streaming.state.arrived() == 1
    })
    .await;
    streaming.state.release(1);
    let after = within("the next request", client.get(&url(&gw, "/slow"))).await;
    assert_eq!(after.status, StatusCode::OK, "{}", after.text());
}

/// A backend's concurrency as it saw it: how many requests it held at each arrival, in
/// the order they arrived, and how many it holds now.
#[derive(Default)]
struct Concurrency {
    at_arrival: Mutex<Vec<usize>>,
    now: AtomicUsize,
}

impl Concurrency {
    fn arrive(&self) -> usize {
        let mut at_arrival = self.at_arrival.lock().expect("lock");
        let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        at_arrival.push(now);
        now
    }

    fn leave(&self) {
        self.now.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The controller moves the limit on the latency it measures (wall-clock), so the test
/// is built to hold on a loaded machine: the work is a fixed number of requests, the
/// assertions are on what the backend counted at each arrival and on the limit the
/// gateway reports at the end, never on how long anything took. Two of them follow from
/// the controller's arithmetic alone (the first window at the minimum; growth from 2 to
/// at least 4). The others (6 to 20) need only that the upstream's own latency, 20 ms
/// and up (it was 5 ms), outweighs on average what the gateway and the clients add, and
/// that the fastest of the 640 answers was not slowed by more than that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_adaptive_limit_settles_near_the_upstream_s_knee() {
    const KNEE: usize = 8;
    const CLIENTS: usize = 4 * KNEE;
    const REQUESTS_EACH: usize = 20;
    // Answers in 20 ms up to the knee; beyond, latency grows in proportion (the backend
    // queues), like a service past its capacity.
    let concurrency = Arc::new(Concurrency::default());
    let backend = {
        let concurrency = concurrency.clone();
        Backend::start(move |_, _| {
            let concurrency = concurrency.clone();
            async move {
                let now = concurrency.arrive();
                let latency = Duration::from_millis(20) * now.max(KNEE) as u32 / KNEE as u32;
                tokio::time::sleep(latency).await;
                concurrency.leave();
                crate::support::Reply::ok("ok")
            }
        })
        .await
    };
    let gw = Gateway::new()
        .admin()
        .upstream(
            "u",
            Upstream::new(&backend)
                .adaptive_max_in_flight(2, 64)
                .max_queue(1000)
                .queue_timeout(Duration::from_secs(30)),
        )
        .route("/", "u")
        .start()
        .await;
    let limit_series = "portcullis_upstream_concurrency_limit{upstream=\"u\"}";
    assert_eq!(
        metric(&metrics_text(&gw).await, limit_series),
        Some(2.0),
        "starts at min"
    );

    // Four times as many clients as the knee, each with a fixed number of requests.
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let target = url(&gw, "/x");
            tokio::spawn(async move {
                let client = Client::new();
                for _ in 0..REQUESTS_EACH {
                    assert_eq!(client.get(&target).await.status, StatusCode::OK);
                }
            })
        })
        .collect();
    for client in clients {
        within("a client loop", client).await.expect("joins");
    }
    let at_arrival = concurrency.at_arrival.lock().expect("lock").clone();
    assert_eq!(at_arrival.len(), CLIENTS * REQUESTS_EACH);
    assert_eq!(concurrency.now.load(Ordering::SeqCst), 0);

    // The limit holds from the first request: it can move only once a window of ten
    // answers has been measured, so the first ten requests found at most 2 in flight.
    assert!(
        at_arrival[..10].iter().all(|&n| n <= 2),
        "the first requests exceeded the minimum: {:?}",
        &at_arrival[..10]
    );
    // It grew past the minimum (from 2, the controller's own arithmetic takes it to at
    // least 4 whatever the latencies) and never went far past the knee: the backend
    // never held as many as the clients sent.
    let most = at_arrival.iter().copied().max().unwrap_or_default();
    assert!(most > 2, "the backend never held more than {most} at once");
    assert!(
        most <= 20,
        "the backend held {most} at once; the knee is {KNEE}, the demand {CLIENTS}"
    );
    let settled = metric(&metrics_text(&gw).await, limit_series).expect("the limit gauge");
    // Vegas keeps 3 to 6 requests queued upstream: with the knee at 8 that is 11 to 14.
    assert!(
        (6.0..=20.0).contains(&settled),
        "settled at {settled}; the knee is {KNEE}"
    );
}
