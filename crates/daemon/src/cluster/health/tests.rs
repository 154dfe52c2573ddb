use super::PeerState::{Alive, Dead, Joining, Suspect};
use super::*;

const RTT: Duration = Duration::from_millis(3);

fn step(from: PeerState, to: PeerState, dead: bool) -> Step {
    Step {
        transition: Some(Transition { from, to }),
        dead,
    }
}

const NOTHING: Step = Step {
    transition: None,
    dead: false,
};

#[test]
fn a_peer_joins_is_suspected_dies_and_comes_back() {
    let t0 = Instant::now();
    let at = |ms| t0 + Duration::from_millis(ms);
    let mut health = Health::new(t0, 2, 4);
    assert_eq!(health.state(), Joining);
    assert_eq!(
        health.heartbeat_ok(at(10), RTT),
        step(Joining, Alive, false)
    );
    assert_eq!((health.since(), health.rtt()), (at(10), Some(RTT)));
    assert_eq!(health.heartbeat_ok(at(20), RTT), NOTHING);
    assert_eq!(health.since(), at(10), "no change, no new since");
    assert_eq!(health.heartbeat_missed(at(30), true), NOTHING);
    assert_eq!(
        health.heartbeat_missed(at(40), true),
        step(Alive, Suspect, false)
    );
    assert_eq!(health.heartbeat_missed(at(50), true), NOTHING);
    assert_eq!(health.missed(), 3);
    assert_eq!(
        health.heartbeat_missed(at(60), false),
        step(Suspect, Dead, true)
    );
    assert_eq!(health.since(), at(60));
    // Still dead: no new event, but the connection goes and the probe
    // backs off again.
    let again = health.heartbeat_missed(at(70), false);
    assert_eq!(
        again,
        Step {
            transition: None,
            dead: true
        }
    );
    assert_eq!(health.last_seen(), Some(at(20)));
    assert_eq!(health.heartbeat_ok(at(80), RTT), step(Dead, Alive, false));
    assert_eq!(health.missed(), 0);
}

#[test]
fn only_an_alive_peer_becomes_suspect() {
    let t0 = Instant::now();
    let mut health = Health::new(t0, 2, 3);
    // Joining: losing a connection or missing beats never makes it
    // suspect, only dead at dead_after.
    assert_eq!(health.connection_lost(t0), None);
    assert_eq!(health.heartbeat_missed(t0, false), NOTHING);
    assert_eq!(health.heartbeat_missed(t0, false), NOTHING);
    assert_eq!(
        health.heartbeat_missed(t0, false),
        step(Joining, Dead, true)
    );
    assert_eq!(health.connection_lost(t0), None, "dead stays dead");
    assert_eq!(health.heartbeat_ok(t0, RTT), step(Dead, Alive, false));
    assert_eq!(
        health.connection_lost(t0),
        Some(Transition {
            from: Alive,
            to: Suspect
        })
    );
    assert_eq!(health.connection_lost(t0), None);
}

#[test]
fn a_miss_without_a_connection_suspects_at_once() {
    let t0 = Instant::now();
    let mut health = Health::new(t0, 3, 5);
    let _ = health.heartbeat_ok(t0, RTT);
    assert_eq!(
        health.heartbeat_missed(t0, true),
        NOTHING,
        "one miss, connected"
    );
    let mut other = Health::new(t0, 3, 5);
    let _ = other.heartbeat_ok(t0, RTT);
    assert_eq!(
        other.heartbeat_missed(t0, false),
        step(Alive, Suspect, false)
    );
}

#[test]
fn answered_requests_are_signs_of_life() {
    let t0 = Instant::now();
    let mut health = Health::new(t0, 1, 1);
    assert_eq!(health.last_seen(), None);
    health.seen(t0 + RTT);
    assert_eq!(health.last_seen(), Some(t0 + RTT));
    assert_eq!(health.state(), Joining);
}
