//! A deterministic simulation of the production SWIM state machine
//! ([`Swim`], foca inside): 60 members, a simulated clock and a simulated
//! network with loss, delay and partitions, all seeded. No sockets, no
//! tokio, no sleeping: about 250 protocol periods of 60 members (some
//! 130,000 packets) take some 10 s of CPU in the unoptimized test build
//! (about 40 ms per simulated period; a build with `opt-level = 2` takes
//! under 3 s), the same way every time.
//!
//! The settings are the `[cluster]` defaults: probe period P = 1 s, probe
//! timeout 400 ms, 3 indirect probes, suspect timeout 4 s = 4 P. Packets
//! take 1 to 100 ms. The bounds checked, in protocol periods:
//!
//! - [`JOIN_BOUND`]: 60 members joining through two seeds, with 10% loss,
//!   all have the full view (every other member alive) within 10 P.
//! - [`QUIET_PERIODS`]: then, over 60 P more of 10% loss, no live member is
//!   ever declared dead (or left) by any member, and a suspicion open at
//!   the end is refuted within [`REFUTE_BOUND`] = 5 P.
//! - [`KILL_BOUND`]: a member that stops answering is dead in the view of
//!   every live member within 12 P (the suspect timeout is 4 P of it), and
//!   no other member is declared dead.
//! - [`HEAL_BOUND`]: after a partition into two halves of 30 members for
//!   20 P (each side declares the other dead), every member has the full
//!   view again within 25 P of the heal.
//! - [`LEAVE_BOUND`]: a member that leaves is [`Left`](PeerState::Left) in
//!   every view within 5 P.
//!
//! Measured (seeds below): joined in 0.9 and 1.8 P; a killed member dead
//! everywhere after 6.1 and 6.9 P; the full view 15.3 P after the heal.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{NodeId, PeerState, Swim};
use crate::ClusterConfig;

const MEMBERS: usize = 60;
const PERIOD: Duration = Duration::from_secs(1);
const JOIN_BOUND: u32 = 10;
const QUIET_PERIODS: u32 = 60;
const KILL_BOUND: u32 = 12;
const REFUTE_BOUND: u32 = 5;
const PARTITION_PERIODS: u32 = 20;
const HEAL_BOUND: u32 = 25;
const LEAVE_BOUND: u32 = 5;
/// Events handled per run at most: bounds every loop of the simulation.
const MAX_EVENTS: u64 = 20_000_000;

fn address(index: usize) -> String {
    format!("10.0.{}.{}:9000", index / 250, index % 250 + 1)
}

/// A packet on its way, ordered by arrival time (then sending order).
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Flight {
    at: Instant,
    seq: u64,
    to: usize,
    data: Bytes,
}

/// Members, clock and network.
struct Sim {
    now: Instant,
    start: Instant,
    members: Vec<Option<Swim>>,
    network: BinaryHeap<Reverse<Flight>>,
    /// When each member wants to be woken up, as of its last input; an
    /// entry that no longer matches the member's `poll_timeout` is stale.
    timers: BinaryHeap<Reverse<(Instant, usize)>>,
    rng: StdRng,
    loss: f64,
    /// Each member's side while partitioned.
    sides: Option<Vec<bool>>,
    seq: u64,
    events: u64,
    packets: u64,
    /// Every change to dead or left: who saw it, about whom, when.
    deaths: Vec<(usize, String, Instant)>,
}

impl Sim {
    /// `count` members joining through members 0 and 1, with `loss`.
    fn new(count: usize, loss: f64, seed: u64) -> Self {
        let start = Instant::now();
        let settings = ClusterConfig::default();
        assert_eq!(settings.probe_period, PERIOD);
        let seeds = [0, 1].map(|i| NodeId {
            address: address(i).into(),
            key: None,
            generation: 0,
        });
        let mut sim = Self {
            now: start,
            start,
            members: Vec::new(),
            network: BinaryHeap::new(),
            timers: BinaryHeap::new(),
            rng: StdRng::seed_from_u64(seed),
            loss,
            sides: None,
            seq: 0,
            events: 0,
            packets: 0,
            deaths: Vec::new(),
        };
        for index in 0..count {
            let me = NodeId {
                address: address(index).into(),
                key: None,
                generation: 1000,
            };
            let mut swim = Swim::new(me, &settings, seed ^ index as u64, start);
            swim.join(seeds.to_vec(), start).unwrap();
            sim.members.push(Some(swim));
            sim.drain(index);
        }
        sim
    }

    fn periods(&self) -> f64 {
        (self.now - self.start).as_secs_f64() / PERIOD.as_secs_f64()
    }

    /// Sends what member `index` has to send, and notes its changes.
    fn drain(&mut self, index: usize) {
        let Some(swim) = self.members[index].as_mut() else {
            return;
        };
        let mut out = Vec::new();
        while let Some((to, data)) = swim.poll_transmit() {
            out.push((to, data));
        }
        while let Some(change) = swim.poll_change() {
            if matches!(change.to, PeerState::Dead | PeerState::Left) {
                self.deaths
                    .push((index, change.address.to_string(), self.now));
            }
        }
        if let Some(at) = swim.poll_timeout() {
            self.timers.push(Reverse((at, index)));
        }
        for (to, data) in out {
            self.packets += 1;
            let to = self.index_of(&to.address);
            let cut = self.sides.as_ref().is_some_and(|s| s[index] != s[to]);
            if cut || self.rng.gen_bool(self.loss) {
                continue;
            }
            let delay = Duration::from_millis(self.rng.gen_range(1..=100));
            self.seq += 1;
            self.network.push(Reverse(Flight {
                at: self.now + delay,
                seq: self.seq,
                to,
                data,
            }));
        }
    }

    fn index_of(&self, address: &str) -> usize {
        let (_, rest) = address.split_once('.').unwrap();
        let (_, rest) = rest.split_once('.').unwrap();
        let (high, rest) = rest.split_once('.').unwrap();
        let (low, _) = rest.split_once(':').unwrap();
        high.parse::<usize>().unwrap() * 250 + low.parse::<usize>().unwrap() - 1
    }

    /// Runs every packet arrival and timer up to `until`.
    fn run_until(&mut self, until: Instant) {
        loop {
            self.events += 1;
            assert!(self.events < MAX_EVENTS, "runaway simulation");
            while let Some(&Reverse((at, index))) = self.timers.peek() {
                let wanted = self.members[index].as_ref().and_then(Swim::poll_timeout);
                if wanted == Some(at) {
                    break;
                }
                self.timers.pop();
            }
            let packet = self.network.peek().map(|Reverse(f)| f.at);
            let timer = self.timers.peek().map(|Reverse(timer)| *timer);
            let next = match (packet, timer) {
                (Some(p), Some((t, _))) => p.min(t),
                (Some(p), None) => p,
                (None, Some((t, _))) => t,
                (None, None) => break,
            };
            if next > until {
                break;
            }
            self.now = next;
            if packet == Some(next) {
                let Reverse(flight) = self.network.pop().unwrap();
                if let Some(swim) = self.members[flight.to].as_mut() {
                    // Errors are packets from members declared down and
                    // the like: SWIM's business, not the simulation's.
                    let _ = swim.handle_data(&flight.data, next);
                    self.drain(flight.to);
                }
            } else if let Some((_, index)) = timer {
                self.timers.pop();
                let swim = self.members[index].as_mut().unwrap();
                let _ = swim.handle_timeout(next);
                self.drain(index);
            }
        }
        self.now = until;
    }

    fn run_periods(&mut self, periods: u32) {
        self.run_until(self.now + PERIOD * periods);
    }

    /// The live members.
    fn live(&self) -> BTreeSet<String> {
        (0..self.members.len())
            .filter(|&i| self.members[i].is_some())
            .map(address)
            .collect()
    }

    /// Whether every live member sees exactly the live members alive.
    fn converged(&self) -> bool {
        let live = self.live();
        self.members.iter().flatten().all(|swim| {
            let mut view: BTreeSet<String> = swim
                .peers()
                .filter(|p| p.state == PeerState::Alive)
                .map(|p| p.id.address.to_string())
                .collect();
            view.insert(swim.identity().address.to_string());
            view == live
        })
    }

    /// Runs until converged, one tenth of a period at a time, for at most
    /// `bound` periods; returns the periods it took.
    fn converge_within(&mut self, bound: u32) -> f64 {
        let from = self.now;
        while !self.converged() {
            assert!(
                self.now - from <= PERIOD * bound,
                "not converged within {bound} periods"
            );
            self.run_until(self.now + PERIOD / 10);
        }
        (self.now - from).as_secs_f64() / PERIOD.as_secs_f64()
    }

    /// Deaths reported about members that are alive.
    fn false_deaths(&self) -> Vec<&(usize, String, Instant)> {
        let live = self.live();
        self.deaths
            .iter()
            .filter(|(_, about, _)| live.contains(about))
            .collect()
    }
}

#[test]
fn sixty_members_join_under_ten_percent_loss_and_no_live_member_is_declared_dead() {
    for seed in [1, 2] {
        let mut sim = Sim::new(MEMBERS, 0.10, seed);
        let joined = sim.converge_within(JOIN_BOUND);
        sim.run_periods(QUIET_PERIODS);
        // A suspicion may be open at this instant: it is refuted in time.
        sim.converge_within(REFUTE_BOUND);
        assert!(
            sim.false_deaths().is_empty(),
            "seed {seed}: {:?}",
            sim.false_deaths()
        );
        eprintln!(
            "seed {seed}: joined in {joined:.1} periods; {} packets in {:.0} periods",
            sim.packets,
            sim.periods()
        );
    }
}

#[test]
fn a_killed_member_is_declared_dead_by_every_live_member_in_bounded_periods() {
    for seed in [4, 5] {
        let mut sim = Sim::new(MEMBERS, 0.10, seed);
        sim.converge_within(JOIN_BOUND);
        sim.run_periods(5);
        let victim = 17;
        sim.members[victim] = None;
        let killed = sim.now;
        let dead_everywhere = |sim: &Sim| {
            sim.members.iter().flatten().all(|swim| {
                swim.peers()
                    .any(|p| *p.id.address == *address(victim) && p.state == PeerState::Dead)
            })
        };
        while !dead_everywhere(&sim) {
            assert!(
                sim.now - killed <= PERIOD * KILL_BOUND,
                "seed {seed}: not dead everywhere within {KILL_BOUND} periods"
            );
            sim.run_until(sim.now + PERIOD / 10);
        }
        let took = (sim.now - killed).as_secs_f64();
        assert!(sim.false_deaths().is_empty(), "{:?}", sim.false_deaths());
        // Dead for good: the view holds.
        sim.run_periods(10);
        assert!(dead_everywhere(&sim), "seed {seed}: came back");
        sim.converge_within(REFUTE_BOUND);
        eprintln!("seed {seed}: killed member dead everywhere after {took:.1} periods");
    }
}

#[test]
fn a_partition_into_halves_heals_and_every_member_sees_all_again() {
    let seed = 7;
    let mut sim = Sim::new(MEMBERS, 0.01, seed);
    sim.converge_within(JOIN_BOUND);
    sim.sides = Some((0..MEMBERS).map(|i| i < MEMBERS / 2).collect());
    sim.run_periods(PARTITION_PERIODS);
    // The partition was real: each side declared the other dead.
    let first = sim.members[0].as_ref().unwrap();
    let far = first.peers().filter(|p| p.state == PeerState::Dead).count();
    assert_eq!(far, MEMBERS / 2, "seed {seed}");
    sim.sides = None;
    let healed = sim.converge_within(HEAL_BOUND);
    eprintln!("seed {seed}: full view {healed:.1} periods after the heal");
}

#[test]
fn a_member_that_leaves_is_seen_left_not_dead() {
    let mut sim = Sim::new(MEMBERS, 0.10, 10);
    sim.converge_within(JOIN_BOUND);
    let leaver = 23;
    let now = sim.now;
    sim.members[leaver].as_mut().unwrap().leave(now).unwrap();
    sim.drain(leaver);
    sim.members[leaver] = None;
    let left_everywhere = |sim: &Sim| {
        sim.members.iter().flatten().all(|swim| {
            swim.peers()
                .any(|p| *p.id.address == *address(leaver) && p.state == PeerState::Left)
        })
    };
    while !left_everywhere(&sim) {
        assert!(
            sim.now - now <= PERIOD * LEAVE_BOUND,
            "not left everywhere within {LEAVE_BOUND} periods"
        );
        sim.run_until(sim.now + PERIOD / 10);
    }
    assert!(sim.converged());
}

#[test]
fn the_simulation_is_deterministic() {
    let run = || {
        let mut sim = Sim::new(MEMBERS, 0.10, 42);
        sim.run_periods(10);
        let views: Vec<Vec<(String, PeerState, u16)>> = sim
            .members
            .iter()
            .flatten()
            .map(|s| {
                s.peers()
                    .map(|p| (p.id.address.to_string(), p.state, p.incarnation))
                    .collect()
            })
            .collect();
        (sim.packets, sim.events, views)
    };
    assert_eq!(run(), run());
}

// The membership packets of PROTOCOL.md Part IV §4, byte for byte: each
// hex string must appear in PROTOCOL.md as it is here.
const PROTOCOL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/PROTOCOL.md");

/// A (`127.0.0.1:7001`, a key, generation 1764806400000) announces itself
/// to B (`127.0.0.1:7000`, no key, generation 1).
const ANNOUNCE: &str = "0e3132372e302e302e313a3730303101abababababababababababababababababababababababababababababababab80b0a2b5ae33000e3132372e302e302e313a37303030000106";

/// B pings A (probe 7, B's incarnation 3) and piggybacks one update, C
/// (`127.0.0.1:7002`, generation 9) down, then C's departure.
const PING: &str = "0e3132372e302e302e313a373030300001030e3132372e302e302e313a3730303101abababababababababababababababababababababababababababababababab80b0a2b5ae33000700010e3132372e302e302e313a373030320009000200100e3132372e302e302e313a3730303209";

fn member_a() -> NodeId {
    NodeId {
        address: "127.0.0.1:7001".into(),
        key: Some([0xab; 32]),
        generation: 1_764_806_400_000,
    }
}

fn member_b() -> NodeId {
    NodeId {
        address: "127.0.0.1:7000".into(),
        key: None,
        generation: 1,
    }
}

fn member_c() -> NodeId {
    NodeId {
        address: "127.0.0.1:7002".into(),
        key: None,
        generation: 9,
    }
}

fn header(data: &[u8]) -> foca::Header<NodeId> {
    use foca::Codec;
    let mut data = data;
    foca::PostcardCodec.decode_header(&mut data).unwrap()
}

#[test]
fn membership_packets_are_the_bytes_protocol_md_gives() {
    use foca::{Codec, Header, Member, Message, PostcardCodec, State};
    let mut codec = PostcardCodec;
    let mut announce = Vec::new();
    let header_a = Header {
        src: member_a(),
        src_incarnation: 0,
        dst: member_b(),
        message: Message::Announce,
    };
    codec.encode_header(&header_a, &mut announce).unwrap();
    assert_eq!(hex::encode(&announce), ANNOUNCE);

    let mut ping = Vec::new();
    let header_b = Header {
        src: member_b(),
        src_incarnation: 3,
        dst: member_a(),
        message: Message::Ping(7),
    };
    codec.encode_header(&header_b, &mut ping).unwrap();
    ping.extend_from_slice(&1u16.to_be_bytes());
    codec
        .encode_member(&Member::new(member_c(), 0, State::Down), &mut ping)
        .unwrap();
    let departure = postcard::to_allocvec(&super::Departure {
        address: "127.0.0.1:7002".into(),
        generation: 9,
    })
    .unwrap();
    ping.extend_from_slice(&u16::try_from(departure.len()).unwrap().to_be_bytes());
    ping.extend_from_slice(&departure);
    assert_eq!(hex::encode(&ping), PING);

    let protocol = std::fs::read_to_string(PROTOCOL).unwrap();
    for vector in [ANNOUNCE, PING] {
        assert!(protocol.contains(vector), "PROTOCOL.md lacks {vector}");
    }
}

#[test]
fn an_announce_is_answered_with_a_feed_and_a_ping_with_an_ack() {
    use foca::Message;
    let now = Instant::now();
    let settings = ClusterConfig::default();

    // B takes A's announce, knows A and feeds it the members.
    let mut b = Swim::new(member_b(), &settings, 1, now);
    b.handle_data(&hex::decode(ANNOUNCE).unwrap(), now).unwrap();
    let (to, data) = b.poll_transmit().expect("an answer to the announce");
    assert_eq!(to, member_a());
    assert_eq!(header(&data).message, Message::Feed);
    assert!(
        b.peers()
            .any(|p| p.id == member_a() && p.state == PeerState::Alive)
    );

    // A takes B's ping: acks probe 7, and learns that C left.
    let mut a = Swim::new(member_a(), &settings, 2, now);
    a.handle_data(&hex::decode(PING).unwrap(), now).unwrap();
    let (to, data) = a.poll_transmit().expect("an answer to the ping");
    assert_eq!(to, member_b());
    let answer = header(&data);
    assert_eq!(answer.message, Message::Ack(7));
    assert_eq!(answer.dst, member_b());
    let states: Vec<_> = a
        .peers()
        .map(|p| (p.id.address.to_string(), p.state))
        .collect();
    assert_eq!(
        states,
        [
            ("127.0.0.1:7000".to_owned(), PeerState::Alive),
            ("127.0.0.1:7002".to_owned(), PeerState::Left),
        ]
    );
}
