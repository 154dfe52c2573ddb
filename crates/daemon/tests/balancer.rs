//! The client balancer on loopback: three daemons in this process, one of
//! them killed (its task aborted, so its sockets close without a goaway),
//! silenced behind a proxy, or shut down gracefully; endpoints from a
//! static list or from the application's own stream of changes; typed
//! calls balanced over the same endpoints, with the same failover.

// Test code: unwrap and indexing fail the test, which is what they should do.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use daemons::{
    DEAD_AFTER, HEARTBEAT, MARGIN, MAX_RECONNECT_DELAY, SUSPECT_AFTER, Whoami, all_ready,
    balancer_config, daemons, name_of, static_config, temp_dir, who, who_with_id,
};
use futures::StreamExt;
use netproto_daemon::discovery::Change;
use netproto_daemon::service::CallError;
use netproto_daemon::{Balancer, EndpointView, Error, PeerAddress, PeerState};
use tokio::net::TcpListener;
use tower::ServiceExt;

mod daemons;

mod silent_proxy;
use silent_proxy::Proxy;

/// Whole-test limit.
const LIMIT: Duration = Duration::from_secs(30);

/// Waits until the endpoint at `address` satisfies `wanted`; returns how
/// long that took.
async fn wait_state(
    balancer: &Balancer,
    address: &str,
    wanted: fn(&EndpointView) -> bool,
    limit: Duration,
) -> Duration {
    let start = Instant::now();
    balancer
        .wait_until(limit, |endpoints| {
            endpoints.iter().any(|e| e.address == address && wanted(e))
        })
        .await
        .unwrap_or_else(|_| {
            panic!(
                "{address} not as awaited within {limit:?}: {:?}",
                balancer.endpoints()
            )
        });
    start.elapsed()
}

fn out_of_rotation(e: &EndpointView) -> bool {
    e.state != PeerState::Alive
}

fn alive(e: &EndpointView) -> bool {
    e.state == PeerState::Alive
}

/// Requests in flight on each endpoint.
fn loads(balancer: &Balancer) -> Vec<usize> {
    balancer.endpoints().iter().map(|e| e.in_flight).collect()
}

/// Waits until `count` requests are in flight in all.
async fn in_flight(balancer: &Balancer, count: usize) {
    tokio::time::timeout(Duration::from_secs(5), async {
        while loads(balancer).iter().sum::<usize>() < count {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{count} requests not in flight: {:?}", loads(balancer)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_in_flight_on_a_killed_daemon_fail_clearly_or_are_retried() {
    let dir = temp_dir("balancer");
    tokio::time::timeout(LIMIT, async {
        let mut daemons = daemons(&dir, 3).await;
        let balancer = Arc::new(Balancer::connect(static_config(&daemons)).await.unwrap());
        all_ready(&balancer).await;
        // Slow requests, started one by one so that each sees the loads:
        // ids 0-14 idempotent, then 15-29 not. The power of two choices
        // puts some of each kind on every daemon.
        let mut requests = Vec::new();
        for id in 0..30u64 {
            let (sender, idempotent) = (balancer.clone(), id < 15);
            requests.push(tokio::spawn(async move {
                let message = who_with_id(1_500, id);
                if idempotent {
                    sender.request_idempotent(&message).await
                } else {
                    sender.request(&message).await
                }
            }));
            in_flight(&balancer, requests.len()).await;
        }
        let spread = loads(&balancer);
        assert!(spread.iter().all(|&load| load > 0), "{spread:?}");
        // The daemon receives a request only once it is on the wire.
        let victim_got = || daemons[1].received.lock().unwrap().clone();
        tokio::time::timeout(Duration::from_secs(5), async {
            while victim_got().len() < spread[1] {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .unwrap();
        let on_victim: HashSet<u64> = victim_got().into_iter().collect();
        assert!(on_victim.iter().any(|id| *id < 15), "{on_victim:?}");
        assert!(on_victim.iter().any(|id| *id >= 15), "{on_victim:?}");

        daemons[1].kill().await;
        let (mut retried, mut failed) = (0, 0);
        for (id, request) in requests.into_iter().enumerate() {
            let id = id as u64;
            match request.await.unwrap() {
                Ok(answer) => {
                    assert_ne!(name_of(&answer), "d1", "request {id}");
                    assert!(id < 15 || !on_victim.contains(&id), "request {id} sent twice");
                    retried += usize::from(on_victim.contains(&id));
                }
                Err(Error::EndpointDown { endpoint, .. }) => {
                    assert!(id >= 15 && on_victim.contains(&id), "request {id} failed");
                    assert_eq!(endpoint, daemons[1].address);
                    failed += 1;
                }
                Err(error) => panic!("request {id}: {error}"),
            }
        }
        let idempotent_on_victim = on_victim.iter().filter(|id| **id < 15).count();
        assert_eq!(retried, idempotent_on_victim);
        assert_eq!(failed, on_victim.len() - idempotent_on_victim);
        // Each request the killed daemon had reached exactly once, the
        // failed ones never again anywhere.
        for daemon in [&daemons[0], &daemons[2]] {
            let got = daemon.received.lock().unwrap().clone();
            assert!(got.iter().all(|id| *id < 15 || !on_victim.contains(id)), "{got:?}");
        }
        eprintln!(
            "killed daemon had {} requests: {retried} idempotent retried elsewhere, {failed} not idempotent failed",
            on_victim.len()
        );
        // New requests go to the others at once.
        for _ in 0..10 {
            let answer = balancer.request(&who(0)).await.unwrap();
            assert_ne!(name_of(&answer), "d1");
        }
    })
    .await
    .unwrap();
    std::fs::remove_dir_all(dir).unwrap();
}

/// What a load worker saw of one request.
struct Outcome {
    idempotent: bool,
    /// The test phase when the request started and when it ended.
    phases: (u8, u8),
    result: Result<String, Error>,
}

/// All daemons up.
const BEFORE: u8 = 0;
/// From just before the kill until the balancer took it out of rotation.
const KILLED: u8 = 1;
/// Out of rotation, until it is restarted.
const DETECTED: u8 = 2;
/// Restarted, until it is back in rotation.
const RESTARTED: u8 = 3;
/// Back in rotation.
const REJOINED: u8 = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn balancer_moves_load_off_a_killed_daemon_loses_nothing_and_takes_it_back() {
    let dir = temp_dir("balancer");
    tokio::time::timeout(LIMIT, async {
        let mut daemons = daemons(&dir, 3).await;
        let balancer = Arc::new(Balancer::connect(static_config(&daemons)).await.unwrap());
        all_ready(&balancer).await;
        let victim = daemons[1].address.clone();
        let phase = Arc::new(AtomicU8::new(BEFORE));
        let stop = Arc::new(AtomicBool::new(false));
        let outcomes = Arc::new(Mutex::new(Vec::new()));
        let mut workers = Vec::new();
        for worker in 0..6 {
            let (balancer, phase, stop, outcomes) =
                (balancer.clone(), phase.clone(), stop.clone(), outcomes.clone());
            workers.push(tokio::spawn(async move {
                let mut n = 0u64;
                // Bounded by the stop flag and by count.
                while !stop.load(Ordering::Relaxed) && n < 100_000 {
                    n += 1;
                    let idempotent = (worker + n).is_multiple_of(2);
                    let started = phase.load(Ordering::SeqCst);
                    let message = who(3);
                    let result = if idempotent {
                        balancer.request_idempotent(&message).await
                    } else {
                        balancer.request(&message).await
                    };
                    let result = result.map(|answer| name_of(&answer).to_owned());
                    let ended = phase.load(Ordering::SeqCst);
                    outcomes.lock().unwrap().push(Outcome {
                        idempotent,
                        phases: (started, ended),
                        result,
                    });
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        phase.store(KILLED, Ordering::SeqCst);
        daemons[1].kill().await;
        let detected = wait_state(&balancer, &victim, out_of_rotation, MARGIN).await;
        phase.store(DETECTED, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(300)).await;
        phase.store(RESTARTED, Ordering::SeqCst);
        daemons[1].run().await;
        let limit = MAX_RECONNECT_DELAY * 2 + MARGIN;
        let rejoined = wait_state(&balancer, &victim, alive, limit).await;
        phase.store(REJOINED, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(500)).await;
        stop.store(true, Ordering::Relaxed);
        for worker in workers {
            worker.await.unwrap();
        }

        let outcomes = std::mem::take(&mut *outcomes.lock().unwrap());
        let served_by = |name: &str, phases: (u8, u8)| {
            outcomes
                .iter()
                .filter(|o| o.phases == phases)
                .filter(|o| o.result.as_ref().is_ok_and(|n| n == name))
                .count()
        };
        let mut failed = 0;
        for outcome in &outcomes {
            match &outcome.result {
                Ok(_) => {}
                Err(Error::EndpointDown { endpoint, .. }) if !outcome.idempotent => {
                    assert_eq!(*endpoint, victim);
                    assert!(outcome.phases.0 <= KILLED, "{:?}", outcome.phases);
                    failed += 1;
                }
                Err(error) => panic!("idempotent {}: {error}", outcome.idempotent),
            }
        }
        eprintln!(
            "{} requests, {failed} failed (not idempotent, in flight on the killed daemon), out of rotation after {detected:?}, back {rejoined:?} after the restart",
            outcomes.len()
        );
        for name in ["d0", "d1", "d2"] {
            assert!(served_by(name, (BEFORE, BEFORE)) > 0, "{name} before");
            assert!(served_by(name, (REJOINED, REJOINED)) > 0, "{name} after");
        }
        assert_eq!(served_by("d1", (DETECTED, DETECTED)), 0);
        assert!(served_by("d0", (DETECTED, DETECTED)) > 0);
        assert!(served_by("d2", (DETECTED, DETECTED)) > 0);
    })
    .await
    .unwrap();
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_daemon_leaves_the_rotation_then_its_requests_fail_or_move() {
    let dir = temp_dir("balancer");
    tokio::time::timeout(LIMIT, async {
        let daemons = daemons(&dir, 2).await;
        let proxy = Proxy::start(daemons[1].address.clone()).await;
        let mut config = static_config(&daemons);
        config.balancer.endpoints[1] = format!("{}@{}", daemons[1].public_key, proxy.address)
            .parse()
            .unwrap();
        let balancer = Arc::new(Balancer::connect(config).await.unwrap());
        all_ready(&balancer).await;
        // Two idempotent then two non-idempotent slow requests: with two
        // endpoints each goes to the less loaded, so each endpoint has one
        // of each kind.
        let mut requests = Vec::new();
        for idempotent in [true, true, false, false] {
            let sender = balancer.clone();
            requests.push((
                idempotent,
                tokio::spawn(async move {
                    let message = who(2_000);
                    if idempotent {
                        sender.request_idempotent(&message).await
                    } else {
                        sender.request(&message).await
                    }
                }),
            ));
            in_flight(&balancer, requests.len()).await;
        }
        assert_eq!(loads(&balancer), [2, 2]);

        let frozen_at = Instant::now();
        proxy.freeze(true);
        let suspect_bound = HEARTBEAT * (SUSPECT_AFTER + 1) + MARGIN;
        let is_suspect = |e: &EndpointView| e.state == PeerState::Suspect;
        wait_state(&balancer, &proxy.address, is_suspect, suspect_bound).await;
        let suspected = frozen_at.elapsed();
        // Each miss takes a whole interval; the first may have begun
        // before the freeze.
        assert!(suspected >= HEARTBEAT * (SUSPECT_AFTER - 1), "{suspected:?}");
        // Suspect: no new requests go to it.
        for _ in 0..5 {
            let answer = balancer.request(&who(0)).await.unwrap();
            assert_eq!(name_of(&answer), "d0");
        }
        let dead_bound = HEARTBEAT * (DEAD_AFTER + 1) + MARGIN;
        let is_dead = |e: &EndpointView| e.state == PeerState::Dead;
        wait_state(&balancer, &proxy.address, is_dead, dead_bound).await;
        let detected = frozen_at.elapsed();
        eprintln!("silent daemon out of rotation after {suspected:?}, its connection closed after {detected:?}");

        let (mut retried, mut failed) = (0, 0);
        for (idempotent, request) in requests {
            match request.await.unwrap() {
                Ok(answer) => {
                    assert_eq!(name_of(&answer), "d0");
                    retried += usize::from(idempotent);
                }
                Err(Error::EndpointDown { endpoint, .. }) if !idempotent => {
                    assert_eq!(endpoint, proxy.address);
                    failed += 1;
                }
                Err(error) => panic!("idempotent {idempotent}: {error}"),
            }
        }
        assert_eq!((retried, failed), (2, 1));

        // The path heals: reconnected with backoff, the daemon comes back.
        proxy.freeze(false);
        let limit = MAX_RECONNECT_DELAY * 2 + MARGIN;
        wait_state(&balancer, &proxy.address, alive, limit).await;
        let mut names = HashSet::new();
        for _ in 0..50 {
            let answer = balancer.request(&who(0)).await.unwrap();
            names.insert(name_of(&answer).to_owned());
            if names.len() == 2 {
                break;
            }
        }
        assert!(names.contains("d1"), "{names:?}");
    })
    .await
    .unwrap();
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_shut_down_gracefully_loses_no_request_even_if_not_idempotent() {
    let dir = temp_dir("balancer");
    tokio::time::timeout(LIMIT, async {
        let mut daemons = daemons(&dir, 3).await;
        let balancer = Arc::new(Balancer::connect(static_config(&daemons)).await.unwrap());
        all_ready(&balancer).await;
        let stop = Arc::new(AtomicBool::new(false));
        let mut workers = Vec::new();
        for _ in 0..6 {
            let (balancer, stop) = (balancer.clone(), stop.clone());
            workers.push(tokio::spawn(async move {
                let mut served = Vec::new();
                while !stop.load(Ordering::Relaxed) && served.len() < 100_000 {
                    // Not idempotent: only a request the daemon refused
                    // with its goaway may be sent elsewhere.
                    match balancer.request(&who(20)).await {
                        Ok(answer) => served.push(name_of(&answer).to_owned()),
                        Err(error) => panic!("lost a request: {error}"),
                    }
                }
                served
            }));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        daemons[1].shut_down().await;
        let victim = daemons[1].address.clone();
        wait_state(&balancer, &victim, out_of_rotation, MARGIN).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        stop.store(true, Ordering::Relaxed);
        let mut served = Vec::new();
        for worker in workers {
            served.extend(worker.await.unwrap());
        }
        for name in ["d0", "d1", "d2"] {
            assert!(served.iter().any(|n| n == name), "{name} served nothing");
        }
    })
    .await
    .unwrap();
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_calls_are_balanced_over_the_same_endpoints() {
    let dir = temp_dir("balancer");
    tokio::time::timeout(LIMIT, async {
        let mut daemons = daemons(&dir, 3).await;
        let balancer = Balancer::connect(static_config(&daemons)).await.unwrap();
        all_ready(&balancer).await;
        let whoami = balancer.method::<Whoami>();
        let calls: Vec<_> = (0..30)
            .map(|_| tokio::spawn(whoami.clone().oneshot(50)))
            .collect();
        let mut names = HashSet::new();
        for call in calls {
            names.insert(call.await.unwrap().unwrap());
        }
        assert_eq!(names.len(), 3, "{names:?}");

        daemons[1].kill().await;
        wait_state(&balancer, &daemons[1].address, out_of_rotation, MARGIN).await;
        for _ in 0..20 {
            let name = whoami.clone().oneshot(0).await.unwrap();
            assert_ne!(name, "d1");
        }
    })
    .await
    .unwrap();
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_calls_in_flight_on_a_killed_daemon_fail_over_only_when_idempotent() {
    let dir = temp_dir("balancer");
    tokio::time::timeout(LIMIT, async {
        let mut daemons = daemons(&dir, 3).await;
        let balancer = Balancer::connect(static_config(&daemons)).await.unwrap();
        all_ready(&balancer).await;
        let idempotent = balancer.method_with_failover::<Whoami>(true);
        let once = balancer.method_with_failover::<Whoami>(false);
        // Slow calls started one by one, so that each sees the loads: 12
        // idempotent ones, then 12 not.
        let mut calls = Vec::new();
        let mut on_victim = [0; 2];
        for (service, on_victim) in [&idempotent, &once].into_iter().zip(&mut on_victim) {
            let before = loads(&balancer)[1];
            for _ in 0..12 {
                calls.push(tokio::spawn(service.clone().oneshot(1_500)));
                in_flight(&balancer, calls.len()).await;
            }
            *on_victim = loads(&balancer)[1] - before;
        }
        assert!(on_victim.iter().all(|&n| n > 0), "{on_victim:?}");

        daemons[1].kill().await;
        let mut failed = 0;
        for (index, call) in calls.into_iter().enumerate() {
            match call.await.unwrap() {
                Ok(name) => assert_ne!(name, "d1", "call {index}"),
                Err(error) => {
                    assert!(index >= 12, "idempotent call {index} failed: {error}");
                    let error = error.downcast::<CallError>().unwrap();
                    assert!(
                        matches!(&*error, CallError::Connection { source, .. } if source.is_connection_lost()),
                        "call {index}: {error}"
                    );
                    failed += 1;
                }
            }
        }
        // Every non-idempotent call the killed daemon had failed, and was
        // not sent again; every idempotent one was answered elsewhere.
        assert_eq!(failed, on_victim[1]);
        eprintln!(
            "killed daemon had {} typed calls: {} idempotent answered elsewhere, {failed} not idempotent failed",
            on_victim[0] + on_victim[1],
            on_victim[0]
        );
    })
    .await
    .unwrap();
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_follow_a_stream_of_changes_from_the_application() {
    let dir = temp_dir("balancer");
    tokio::time::timeout(LIMIT, async {
        let daemons = daemons(&dir, 3).await;
        let peer = |i: usize| -> PeerAddress { daemons[i].endpoint().parse().unwrap() };
        let (changes, stream) = futures::channel::mpsc::unbounded();
        changes
            .unbounded_send(Change::Insert("a", peer(0)))
            .unwrap();
        let stream = stream.map(Ok::<_, std::convert::Infallible>);
        let balancer = Balancer::with_discovery(balancer_config(), stream)
            .await
            .unwrap();
        let answered = |names: &[&str]| {
            let balancer = &balancer;
            let names: HashSet<String> = names.iter().map(|n| (*n).to_owned()).collect();
            async move {
                let mut seen = HashSet::new();
                for _ in 0..60 {
                    let answer = balancer.request(&who(0)).await.unwrap();
                    seen.insert(name_of(&answer).to_owned());
                }
                assert_eq!(seen, names);
            }
        };
        answered(&["d0"]).await;

        changes
            .unbounded_send(Change::Insert("b", peer(1)))
            .unwrap();
        balancer
            .wait_until(MARGIN, |e| e.len() == 2 && e.iter().all(alive))
            .await
            .unwrap();
        answered(&["d0", "d1"]).await;

        // "a" leaves; "b" is replaced by d2.
        changes.unbounded_send(Change::Remove("a")).unwrap();
        changes
            .unbounded_send(Change::Insert("b", peer(2)))
            .unwrap();
        balancer
            .wait_until(MARGIN, |e| {
                e.len() == 1 && e[0].address == daemons[2].address && alive(&e[0])
            })
            .await
            .unwrap();
        answered(&["d2"]).await;
    })
    .await
    .unwrap();
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn connect_refuses_an_empty_list_and_reports_no_endpoint_answering() {
    let config = balancer_config();
    let error = Balancer::connect(config).await.unwrap_err();
    assert!(
        error.to_string().contains("balancer.endpoints is empty"),
        "{error}"
    );

    // A port that refuses connections.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    drop(listener);
    let mut config = balancer_config();
    config.balancer.endpoints = vec![address.parse().unwrap()];
    config.client.connection_timeout = Duration::from_secs(2);
    let started = Instant::now();
    match Balancer::connect(config).await {
        Err(Error::NoHealthyEndpoint { endpoints }) => assert_eq!(endpoints, 1),
        other => panic!("{other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(2) + MARGIN);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_balancer_whose_runtime_has_shut_down_says_so() {
    let dir = temp_dir("balancer");
    tokio::time::timeout(LIMIT, async {
        let daemons = daemons(&dir, 2).await;
        let config = static_config(&daemons);
        // The balancer's tasks live on a runtime of their own, which then
        // shuts down (dropped on a thread that may block).
        let balancer = tokio::task::spawn_blocking(move || {
            let runtime = tokio::runtime::Runtime::new().unwrap();
            let balancer = runtime.block_on(async {
                let balancer = Balancer::connect(config).await.unwrap();
                all_ready(&balancer).await;
                balancer
            });
            drop(runtime);
            balancer
        })
        .await
        .unwrap();
        match balancer.request(&who(0)).await {
            Err(Error::BalancerStopped) => {}
            other => panic!("{other:?}"),
        }
        let error = balancer.request_idempotent(&who(0)).await.unwrap_err();
        assert!(error.to_string().contains("runtime"), "{error}");
    })
    .await
    .unwrap();
    std::fs::remove_dir_all(dir).unwrap();
}
