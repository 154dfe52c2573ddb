use super::*;

fn config() -> ServerConfig {
    ServerConfig {
        max_pending: 4,
        max_pending_per_ip: 3,
        max_pending_per_prefix: 4,
        handshake_rate_per_ip: 2,
        handshake_rate_per_prefix: 3,
        ..ServerConfig::default()
    }
}

/// Admission with `config`, where a handshake has stalled after 1 ms.
fn admission(config: ServerConfig) -> Arc<Admission> {
    let mut admission = Admission::new(&config);
    admission.limits.stalled_after = Duration::from_millis(1);
    Arc::new(admission)
}

fn ip(text: &str) -> Option<IpAddr> {
    Some(text.parse().unwrap())
}

#[test]
fn the_socket_longest_without_progress_is_evicted_when_full() {
    let admission = admission(config());
    let a = admission.admit(ip("10.0.1.1"));
    let b = admission.admit(ip("10.0.2.1"));
    let c = admission.admit(ip("10.0.3.1"));
    let d = admission.admit(ip("10.0.4.1"));
    a.progress().reached(HandshakeStage::Handshake);
    c.progress().reached(HandshakeStage::Preface);
    // b is the oldest that sent nothing.
    assert_eq!(
        admission.make_room(ip("10.0.5.1")),
        Ok(Some(Eviction::Total))
    );
    let _e = admission.admit(ip("10.0.5.1"));
    let state = admission.lock();
    assert!(state.pending.contains_key(&a.id()));
    assert!(!state.pending.contains_key(&b.id()));
    assert!(state.pending.contains_key(&c.id()));
    assert!(state.pending.contains_key(&d.id()));
    assert_eq!(state.pending.len(), 4);
}

#[test]
fn a_stalled_handshake_goes_before_a_newer_client_past_its_preface() {
    let admission = admission(config());
    let held: Vec<_> = (0..3)
        .map(|i| admission.admit(ip(&format!("10.0.{i}.1"))))
        .collect();
    for ticket in &held {
        ticket.progress().reached(HandshakeStage::Handshake);
    }
    std::thread::sleep(Duration::from_millis(2));
    let newer = admission.admit(ip("10.0.9.1"));
    newer.progress().reached(HandshakeStage::Preface);
    // Half-open handshakes that stalled before the newcomer arrived go
    // first, oldest first, though they are further along.
    assert_eq!(
        admission.make_room(ip("10.0.8.1")),
        Ok(Some(Eviction::Total))
    );
    let _e = admission.admit(ip("10.0.8.1"));
    let state = admission.lock();
    assert!(!state.pending.contains_key(&held[0].id()));
    assert!(state.pending.contains_key(&held[1].id()));
    assert!(state.pending.contains_key(&newer.id()));
}

#[test]
fn a_handshake_that_is_still_progressing_is_not_evicted() {
    // With the real threshold (1 s), handshakes that just progressed
    // are left to finish: the newcomer is refused.
    let admission = Arc::new(Admission::new(&config()));
    let held: Vec<_> = (0..4)
        .map(|i| admission.admit(ip(&format!("10.0.{i}.1"))))
        .collect();
    for ticket in &held {
        ticket.progress().reached(HandshakeStage::Handshake);
    }
    assert!(!admission.evict_one());
    assert_eq!(admission.make_room(ip("10.0.9.1")), Err("max_pending"));
    assert_eq!(admission.pending(), 4);
}

#[test]
fn a_silent_socket_goes_before_any_that_sent_its_preface() {
    let admission = admission(config());
    let past: Vec<_> = (0..3)
        .map(|i| admission.admit(ip(&format!("10.0.{i}.1"))))
        .collect();
    for ticket in &past {
        ticket.progress().reached(HandshakeStage::Preface);
    }
    std::thread::sleep(Duration::from_millis(2));
    // Newer than all of them, but silent.
    let silent = admission.admit(ip("10.0.9.1"));
    assert_eq!(
        admission.make_room(ip("10.0.8.1")),
        Ok(Some(Eviction::Total))
    );
    let _e = admission.admit(ip("10.0.8.1"));
    let state = admission.lock();
    assert!(!state.pending.contains_key(&silent.id()));
    assert!(past.iter().all(|t| state.pending.contains_key(&t.id())));
}

#[test]
fn a_full_address_or_prefix_is_refused_and_evicts_nothing() {
    let admission = admission(ServerConfig {
        max_pending: 100,
        ..config()
    });
    let _held: Vec<_> = (0..3).map(|_| admission.admit(ip("10.0.1.1"))).collect();
    assert_eq!(
        admission.make_room(ip("10.0.1.1")).err(),
        Some("max_pending_per_ip")
    );
    // Its prefix has room for one more, from another address.
    assert_eq!(admission.make_room(ip("10.0.1.2")).err(), None);
    let _fourth = admission.admit(ip("10.0.1.2"));
    assert_eq!(
        admission.make_room(ip("10.0.1.3")).err(),
        Some("max_pending_per_prefix")
    );
    // IPv6 addresses count by their /64.
    let _v6: Vec<_> = (1..=3)
        .map(|i| admission.admit(ip(&format!("2001:db8::{i}"))))
        .collect();
    assert_eq!(admission.make_room(ip("2001:db8::ffff")).err(), None);
    let _one_more = admission.admit(ip("2001:db8::ffff"));
    assert_eq!(
        admission.make_room(ip("2001:db8::1:2")).err(),
        Some("max_pending_per_prefix")
    );
    assert_eq!(admission.make_room(ip("2001:db8:0:1::1")).err(), None);
    assert_eq!(admission.make_room(None).err(), None);
}

#[test]
fn evict_one_takes_a_pending_connection_if_any() {
    let admission = admission(config());
    assert!(!admission.evict_one(), "nothing pending");
    let a = admission.admit(ip("10.0.1.1"));
    let b = admission.admit(ip("10.0.2.1"));
    assert!(admission.evict_one());
    let state = admission.lock();
    assert!(
        !state.pending.contains_key(&a.id()),
        "the oldest silent one"
    );
    assert!(state.pending.contains_key(&b.id()));
}

#[tokio::test]
async fn evicted_tasks_are_aborted_even_when_attached_after() {
    let admission = admission(ServerConfig {
        max_pending: 1,
        ..config()
    });
    let first = admission.admit(ip("10.0.1.1"));
    // Evicted before its task was attached.
    assert_eq!(
        admission.make_room(ip("10.0.2.1")),
        Ok(Some(Eviction::Total))
    );
    let second = admission.admit(ip("10.0.2.1"));
    let late = tokio::spawn(std::future::pending::<()>());
    admission.attach(first.id(), late.abort_handle());
    assert!(late.await.unwrap_err().is_cancelled());
    // Attached first, then evicted.
    let running = tokio::spawn(std::future::pending::<()>());
    admission.attach(second.id(), running.abort_handle());
    assert_eq!(
        admission.make_room(ip("10.0.3.1")),
        Ok(Some(Eviction::Total))
    );
    let _third = admission.admit(ip("10.0.3.1"));
    assert!(running.await.unwrap_err().is_cancelled());
    assert!(admission.lock().unattached_evictions.is_empty());
}

#[test]
fn dropped_and_established_tickets_free_their_place() {
    let admission = admission(config());
    let a = admission.admit(ip("10.0.1.1"));
    let b = admission.admit(ip("10.0.1.1"));
    assert_eq!(admission.pending(), 2);
    drop(a);
    b.established();
    assert_eq!(admission.pending(), 0);
    let state = admission.lock();
    assert!(state.per_ip.is_empty());
    assert!(state.per_prefix.is_empty());
}

#[test]
fn completed_handshakes_are_rate_limited_per_address_and_prefix() {
    let admission = admission(config());
    for _ in 0..2 {
        assert_eq!(admission.rate_limited(ip("10.0.1.1")), None);
        admission.admit(ip("10.0.1.1")).established();
    }
    let (reason, wait) = admission.rate_limited(ip("10.0.1.1")).unwrap();
    assert_eq!(reason, "handshake_rate_per_ip");
    // Two a second: the next token is at most half a second away.
    assert!(
        wait > Duration::ZERO && wait <= Duration::from_millis(500),
        "{wait:?}"
    );
    // A failed handshake costs no token.
    drop(admission.admit(ip("10.0.1.2")));
    assert_eq!(admission.rate_limited(ip("10.0.1.2")), None);
    admission.admit(ip("10.0.1.2")).established();
    assert_eq!(
        admission
            .rate_limited(ip("10.0.1.3"))
            .map(|(reason, _)| reason),
        Some("handshake_rate_per_prefix")
    );
    assert_eq!(admission.rate_limited(ip("10.0.2.1")), None);
}

#[test]
fn prefixes_keep_their_leading_bits() {
    let admission = Admission::new(&ServerConfig {
        ipv4_prefix_len: 20,
        ipv6_prefix_len: 48,
        ..ServerConfig::default()
    });
    let prefix = |text: &str| admission.prefix(text.parse().unwrap()).to_string();
    assert_eq!(prefix("10.1.47.200"), "10.1.32.0");
    assert_eq!(prefix("2001:db8:aaaa:bbbb::1"), "2001:db8:aaaa::");
    let whole = Admission::new(&ServerConfig {
        ipv4_prefix_len: 32,
        ipv6_prefix_len: 128,
        ..ServerConfig::default()
    });
    assert_eq!(
        whole.prefix("10.1.47.200".parse().unwrap()).to_string(),
        "10.1.47.200"
    );
    assert_eq!(
        whole.prefix("2001:db8::7".parse().unwrap()).to_string(),
        "2001:db8::7"
    );
}

#[test]
fn buckets_refill_at_their_rate() {
    let mut buckets = Buckets::new(10.0);
    let key: IpAddr = "10.0.0.1".parse().unwrap();
    let start = Instant::now();
    for _ in 0..10 {
        buckets.take(key, start);
    }
    assert_eq!(buckets.wait(key, start), Duration::from_millis(100));
    assert_eq!(
        buckets.wait(key, start + Duration::from_millis(100)),
        Duration::ZERO
    );
}

#[test]
fn a_connection_moved_to_its_client_address_counts_there() {
    let admission = admission(config());
    // A trusted proxy's connections: admitted without an address.
    let mut first = admission.admit(None);
    let mut second = admission.admit(None);
    let mut third = admission.admit(None);
    assert_eq!(admission.make_room(ip("192.0.2.1")), Ok(None));
    first.rebind("192.0.2.1".parse().unwrap()).unwrap();
    second.rebind("192.0.2.1".parse().unwrap()).unwrap();
    {
        let state = admission.lock();
        assert_eq!(state.per_ip.get(&"192.0.2.1".parse().unwrap()), Some(&2));
        assert_eq!(
            state.per_prefix.get(&"192.0.2.0".parse().unwrap()),
            Some(&2)
        );
        assert_eq!(state.pending[&first.id()].ip, ip("192.0.2.1"));
    }
    // The client address's own budget refuses, as at accept (3 per
    // address here, the third taken by a direct connection).
    let _direct = admission.admit(ip("192.0.2.1"));
    assert_eq!(
        third.rebind("192.0.2.1".parse().unwrap()),
        Err("max_pending_per_ip")
    );
    assert_eq!(admission.lock().pending[&third.id()].ip, None);
    third.rebind("198.51.100.7".parse().unwrap()).unwrap();
    // Established, it takes from its client address's rate; dropped, it
    // frees its client address's place.
    first.established();
    assert!(
        admission
            .lock()
            .rate_ip
            .buckets
            .contains_key(&"192.0.2.1".parse().unwrap())
    );
    drop(second);
    let state = admission.lock();
    assert_eq!(state.per_ip.get(&"192.0.2.1".parse().unwrap()), Some(&1));
    assert_eq!(state.per_ip.get(&"198.51.100.7".parse().unwrap()), Some(&1));
}
