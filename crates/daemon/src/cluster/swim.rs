//! SWIM membership as a sans-IO state machine: [`foca`] with the time passed
//! in, and packets and changes of state polled out. No sockets, no clock
//! reads: the cluster's task feeds it in production, a simulated network and
//! clock in the tests (`swim/tests.rs`).
//!
//! Inputs: [`Swim::join`], [`Swim::handle_data`], [`Swim::handle_timeout`],
//! [`Swim::leave`], each with `now`. After each, drain
//! [`Swim::poll_transmit`] (packets to send, in order) and
//! [`Swim::poll_change`] (changes of state, in order), and wake up again at
//! [`Swim::poll_timeout`].

use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::num::{NonZeroU8, NonZeroUsize};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use foca::{
    BroadcastHandler, Codec, Foca, Invalidates, Member, Notification, PeriodicParams,
    PostcardCodec, Runtime, State, Timer,
};
use foca_rand::SeedableRng;
use foca_rand::rngs::SmallRng;
use netproto_transport::sync::lock;
use serde::{Deserialize, Serialize};

use super::PeerState;
use crate::ClusterConfig;

/// The largest SWIM packet sent or accepted.
pub(crate) const MAX_PACKET: usize = 16 * 1024;

/// How long foca remembers a member declared down (our table: for good).
const DOWN_MEMORY: Duration = Duration::from_secs(24 * 60 * 60);

/// Departures remembered (a member that left, not died).
const DEPARTURES: usize = 1024;

/// Pings remembered, for round trips.
const PINGS: usize = 64;

/// Timers handled in one call at most (only bounds a bug).
const TIMERS_PER_CALL: usize = 10_000;

/// A member as SWIM packets name it.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub(crate) struct NodeId {
    /// Where the member takes connections (`host:port` or `unix:/path`):
    /// its identity in the cluster.
    pub(crate) address: Arc<str>,
    /// Its Noise public key, pinned by connections to it.
    pub(crate) key: Option<[u8; 32]>,
    /// Which life of the member: 0 for a configured peer not heard from
    /// yet, then its start time in milliseconds, plus one for each rejoin
    /// after being declared down. The greatest wins.
    pub(crate) generation: u64,
}

impl foca::Identity for NodeId {
    /// Shared, so that foca's many comparisons copy no string.
    type Addr = Arc<str>;

    fn renew(&self) -> Option<Self> {
        let generation = self.generation.checked_add(1)?;
        Some(Self {
            generation,
            ..self.clone()
        })
    }

    fn addr(&self) -> Arc<str> {
        self.address.clone()
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.generation > adversary.generation
    }
}

/// foca's settings from the `[cluster]` section.
pub(crate) fn foca_config(settings: &ClusterConfig) -> foca::Config {
    let period = settings.probe_period;
    let three = NonZeroUsize::MIN.saturating_add(2);
    let mut config = foca::Config::simple();
    config.probe_period = period;
    config.probe_rtt = settings.probe_timeout;
    config.num_indirect_probes =
        NonZeroUsize::new(settings.indirect_probes).unwrap_or(NonZeroUsize::MIN);
    config.max_transmissions = NonZeroU8::MIN.saturating_add(9);
    config.suspect_to_down_after = settings.suspect_timeout;
    config.remove_down_after = Some(DOWN_MEMORY);
    config.max_packet_size = NonZeroUsize::MIN.saturating_add(MAX_PACKET - 1);
    // A member declared down learns it, and rejoins under a new generation.
    config.notify_down_members = true;
    config.periodic_announce = Some(PeriodicParams {
        frequency: period.saturating_mul(10),
        num_members: NonZeroUsize::MIN,
    });
    // Reaches seeds not up yet, and the other side of a healed partition.
    config.periodic_announce_to_down_members = Some(PeriodicParams {
        frequency: period.saturating_mul(5),
        num_members: NonZeroUsize::MIN.saturating_add(1),
    });
    config.periodic_gossip = Some(PeriodicParams {
        frequency: period / 5,
        num_members: three,
    });
    config
}

/// What this member knows of another.
#[derive(Debug, Clone)]
pub(crate) struct Peer {
    /// Its latest identity.
    pub(crate) id: NodeId,
    /// Its state.
    pub(crate) state: PeerState,
    /// Its SWIM incarnation (raised each time it refutes a suspicion).
    pub(crate) incarnation: u16,
    /// When it entered its state.
    pub(crate) since: Instant,
    /// When a packet from it last arrived.
    pub(crate) last_seen: Option<Instant>,
    /// The round trip of its last acknowledged direct probe.
    pub(crate) rtt: Option<Duration>,
}

/// A change of a peer's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Change {
    /// The peer's address.
    pub(crate) address: Arc<str>,
    /// The state left.
    pub(crate) from: PeerState,
    /// The state entered.
    pub(crate) to: PeerState,
}

/// One member's SWIM state machine.
pub(crate) struct Swim {
    foca: Foca<NodeId, PostcardCodec, SmallRng, Departures>,
    io: Io,
    peers: Vec<Peer>,
    /// Where each address is in `peers`.
    index: BTreeMap<Arc<str>, usize>,
    /// For each position in foca's member list, the peer last seen there
    /// (foca's list moves only when a member is added or removed).
    slots: Vec<usize>,
    changes: VecDeque<Change>,
    /// The departures foca's broadcast handler heard of.
    departures: Departures,
    /// The members joined through, announced to again every period while
    /// no other member is active (foca's own timers stop then).
    seeds: Vec<NodeId>,
    rejoin: Option<Instant>,
    period: Duration,
    suspect_timeout: Duration,
    /// When a packet last arrived.
    heard: Instant,
}

impl Swim {
    /// A member that is not in a cluster yet, with foca's random choices
    /// seeded by `seed`.
    pub(crate) fn new(me: NodeId, settings: &ClusterConfig, seed: u64, now: Instant) -> Self {
        let departures = Departures::default();
        let foca = Foca::with_custom_broadcast(
            me,
            foca_config(settings),
            SmallRng::seed_from_u64(seed),
            PostcardCodec,
            departures.clone(),
        );
        Self {
            foca,
            io: Io::new(now),
            peers: Vec::new(),
            index: BTreeMap::new(),
            slots: Vec::new(),
            changes: VecDeque::new(),
            departures,
            seeds: Vec::new(),
            rejoin: None,
            period: settings.probe_period,
            suspect_timeout: settings.suspect_timeout,
            heard: now,
        }
    }

    /// This member's current identity (a rejoin changes its generation).
    pub(crate) fn identity(&self) -> &NodeId {
        self.foca.identity()
    }

    /// Joins through `seeds`: each is remembered (and announced to again
    /// until it answers) and sent an announce now. Seeds at this member's
    /// own address are skipped.
    ///
    /// # Errors
    ///
    /// foca's, when a packet cannot be encoded.
    pub(crate) fn join(&mut self, seeds: Vec<NodeId>, now: Instant) -> Result<(), foca::Error> {
        self.io.now = now;
        let own = self.identity().address.clone();
        self.seeds = seeds.into_iter().filter(|s| s.address != own).collect();
        let result = self
            .foca
            .apply_many(
                self.seeds.iter().cloned().map(Member::down),
                false,
                &mut self.io,
            )
            .and_then(|()| self.announce());
        self.rejoin = Some(now + self.period);
        self.settle(now);
        result
    }

    /// Local health, after Lifeguard: a member that has heard nothing for
    /// a whole period (not even the ack of its own probe) is more likely
    /// cut off itself than the members it would judge, so it puts off its
    /// probes and its declarations of death, a period at a time, for at
    /// most four suspect timeouts of silence. A member whose incoming
    /// traffic stopped then raises no suspicion and declares no one dead,
    /// which the others would believe (a dead state overrides any
    /// incarnation). Returns the timer when it is to run now.
    fn defer(&mut self, timer: Timer<NodeId>, now: Instant) -> Option<Timer<NodeId>> {
        let judging = matches!(
            timer,
            Timer::ProbeRandomMember(_) | Timer::ChangeSuspectToDown { .. }
        );
        let silence = now.saturating_duration_since(self.heard);
        let cut_off = self.period + self.suspect_timeout * 4;
        if judging && silence >= self.period && silence < cut_off {
            self.io.schedule(timer, now + self.period);
            return None;
        }
        Some(timer)
    }

    /// Announces to every seed.
    fn announce(&mut self) -> Result<(), foca::Error> {
        for seed in &self.seeds {
            self.foca.announce(seed.clone(), &mut self.io)?;
        }
        Ok(())
    }

    /// A packet arrived.
    ///
    /// # Errors
    ///
    /// foca's, for a packet that is malformed, too large, from this member
    /// itself, or not for it; nothing changed then.
    pub(crate) fn handle_data(&mut self, data: &[u8], now: Instant) -> Result<(), foca::Error> {
        self.io.now = now;
        self.heard = now;
        let header = Codec::<NodeId>::decode_header(&mut PostcardCodec, data).ok();
        let result = self.foca.handle_data(data, &mut self.io);
        self.settle(now);
        if let (Some(header), Ok(())) = (header, &result) {
            let rtt = match header.message {
                foca::Message::Ack(number) => self.io.take_ping(&header.src.address, number, now),
                _ => None,
            };
            if let Some(&index) = self.index.get(&header.src.address)
                && let Some(peer) = self.peers.get_mut(index)
            {
                peer.last_seen = Some(now);
                peer.rtt = rtt.or(peer.rtt);
            }
        }
        result
    }

    /// Runs the timers due at `now`; errors (such as a probe cycle that a
    /// late wake-up cut short) are returned after all of them ran.
    pub(crate) fn handle_timeout(&mut self, now: Instant) -> Vec<foca::Error> {
        self.io.now = now;
        let mut errors = Vec::new();
        if self.rejoin.is_some_and(|at| at <= now) {
            self.rejoin = Some(now + self.period);
            if self.foca.num_members() == 0 {
                errors.extend(self.announce().err());
            }
        }
        for _ in 0..TIMERS_PER_CALL {
            let Some(timer) = self.io.pop_due(now) else {
                break;
            };
            let Some(timer) = self.defer(timer, now) else {
                continue;
            };
            if let Err(error) = self.foca.handle_timer(timer, &mut self.io) {
                errors.push(error);
            }
        }
        self.settle(now);
        errors
    }

    /// Leaves the cluster: the departure and this member's own down state
    /// go to a few members, who pass them on. Send what
    /// [`poll_transmit`](Self::poll_transmit) returns, then stop.
    ///
    /// # Errors
    ///
    /// foca's, when a packet cannot be encoded.
    pub(crate) fn leave(&mut self, now: Instant) -> Result<(), foca::Error> {
        self.io.now = now;
        let me = self.identity();
        let departure = Departure {
            address: me.address.to_string(),
            generation: me.generation,
        };
        let data = postcard::to_allocvec(&departure).map_err(|e| foca::Error::Encode(e.into()))?;
        self.rejoin = None;
        let result = self
            .foca
            .add_broadcast(&data)
            .and_then(|_| self.foca.leave_cluster(&mut self.io));
        self.settle(now);
        result
    }

    /// When [`handle_timeout`](Self::handle_timeout) is due next.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        let timer = self.io.timers.peek().map(|pending| pending.at);
        match (timer, self.rejoin) {
            (Some(timer), Some(rejoin)) => Some(timer.min(rejoin)),
            (timer, rejoin) => timer.or(rejoin),
        }
    }

    /// The next packet to send, and to whom.
    pub(crate) fn poll_transmit(&mut self) -> Option<(NodeId, Bytes)> {
        self.io.outbox.pop_front().map(|(to, data, _)| (to, data))
    }

    /// The next change of a peer's state.
    pub(crate) fn poll_change(&mut self) -> Option<Change> {
        self.changes.pop_front()
    }

    /// Every peer this member has heard of, by address.
    pub(crate) fn peers(&self) -> impl ExactSizeIterator<Item = &Peer> {
        self.peers.iter()
    }

    /// After each input: drops foca's spurious `TurnUndead`s, logs what
    /// foca said about this member itself, and turns foca's membership into
    /// peer states and changes, in one pass over it.
    fn settle(&mut self, now: Instant) {
        // foca 2.0 sends `TurnUndead` when a suspicion times out even if the
        // member refuted it meanwhile (its `ChangeSuspectToDown` ignores the
        // failed condition), which makes a live member rejoin for nothing.
        // Only a member still down here gets one.
        let foca = &self.foca;
        self.io.outbox.retain(|(to, _, undead)| {
            !*undead
                || !foca
                    .iter_membership_state()
                    .any(|m| m.id() == to && m.state() != State::Down)
        });
        for note in self.io.notes.drain(..) {
            tracing::debug!(note, "membership");
        }
        for (position, member) in foca.iter_membership_state().enumerate() {
            let id = member.id();
            // foca's list moves only when a member is added or removed: the
            // peer last seen at this position is most often the one.
            let slot = self.slots.get(position).copied().filter(|&i| {
                self.peers
                    .get(i)
                    .is_some_and(|peer| peer.id.address == id.address)
            });
            let slot = slot.unwrap_or_else(|| {
                let at = place(&mut self.peers, &mut self.index, id, now);
                if self.slots.len() <= position {
                    self.slots.resize(position + 1, at);
                }
                if let Some(slot) = self.slots.get_mut(position) {
                    *slot = at;
                }
                at
            });
            let Some(peer) = self.peers.get_mut(slot) else {
                continue;
            };
            let state = match member.state() {
                _ if id.generation == 0 => PeerState::Joining,
                State::Alive => PeerState::Alive,
                State::Suspect => PeerState::Suspect,
                State::Down if self.departures.left(id) => PeerState::Left,
                State::Down => PeerState::Dead,
            };
            // A configured address keeps the identity a member gave it.
            if (id.generation > 0 || peer.id.generation == 0) && peer.id != *id {
                peer.id = id.clone();
            }
            if id.generation > 0 {
                peer.incarnation = member.incarnation();
            }
            if peer.state != state && !(id.generation == 0 && peer.id.generation > 0) {
                self.changes.push_back(Change {
                    address: id.address.clone(),
                    from: peer.state,
                    to: state,
                });
                peer.state = state;
                peer.since = now;
            }
        }
    }
}

/// Where the peer at `id`'s address is in `peers`, added if new.
fn place(
    peers: &mut Vec<Peer>,
    index: &mut BTreeMap<Arc<str>, usize>,
    id: &NodeId,
    now: Instant,
) -> usize {
    if let Some(&at) = index.get(&id.address) {
        return at;
    }
    peers.push(Peer {
        id: id.clone(),
        state: PeerState::Joining,
        incarnation: 0,
        since: now,
        last_seen: None,
        rtt: None,
    });
    let at = peers.len() - 1;
    index.insert(id.address.clone(), at);
    at
}

/// What foca asks of its runtime, kept until the caller drains it.
struct Io {
    now: Instant,
    seq: u64,
    timers: BinaryHeap<Pending>,
    /// Packets to send, and whether each is a `TurnUndead`.
    outbox: VecDeque<(NodeId, Bytes, bool)>,
    notes: Vec<&'static str>,
    /// Recent direct pings: address, probe number, when sent.
    pings: VecDeque<(Arc<str>, u8, Instant)>,
}

impl Io {
    fn new(now: Instant) -> Self {
        Self {
            now,
            seq: 0,
            timers: BinaryHeap::new(),
            outbox: VecDeque::new(),
            notes: Vec::new(),
            pings: VecDeque::new(),
        }
    }

    fn schedule(&mut self, timer: Timer<NodeId>, at: Instant) {
        self.seq += 1;
        self.timers.push(Pending {
            at,
            seq: self.seq,
            timer,
        });
    }

    fn take_ping(&mut self, address: &str, number: u8, now: Instant) -> Option<Duration> {
        let index = self
            .pings
            .iter()
            .position(|(to, n, _)| &**to == address && *n == number)?;
        let (_, _, sent) = self.pings.remove(index)?;
        Some(now.saturating_duration_since(sent))
    }

    fn pop_due(&mut self, now: Instant) -> Option<Timer<NodeId>> {
        if self.timers.peek()?.at > now {
            return None;
        }
        self.timers.pop().map(|pending| pending.timer)
    }
}

impl Runtime<NodeId> for Io {
    fn notify(&mut self, notification: Notification<'_, NodeId>) {
        let note = match notification {
            Notification::Active => "active: known to the cluster",
            Notification::Idle => "idle: no other member is active",
            Notification::Defunct => "defunct: declared down by the cluster",
            Notification::Rejoin(_) => "rejoined under a new generation",
            // Changes of peers are read from the membership state.
            _ => return,
        };
        self.notes.push(note);
    }

    fn send_to(&mut self, to: NodeId, data: &[u8]) {
        let message = Codec::<NodeId>::decode_header(&mut PostcardCodec, data).map(|h| h.message);
        if let Ok(foca::Message::Ping(number)) = message {
            if self.pings.len() == PINGS {
                self.pings.pop_front();
            }
            self.pings.push_back((to.address.clone(), number, self.now));
        }
        let undead = matches!(message, Ok(foca::Message::TurnUndead));
        self.outbox
            .push_back((to, Bytes::copy_from_slice(data), undead));
    }

    fn submit_after(&mut self, timer: Timer<NodeId>, after: Duration) {
        self.schedule(timer, self.now + after);
    }
}

/// A timer and when it is due; the heap's top is the earliest.
struct Pending {
    at: Instant,
    seq: u64,
    timer: Timer<NodeId>,
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl Eq for Pending {}

impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Pending {
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

/// A member's notice that it left on purpose, spread as a foca custom
/// broadcast so that the others tell a departure from a failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Departure {
    address: String,
    generation: u64,
}

impl Invalidates for Departure {
    fn invalidates(&self, other: &Self) -> bool {
        self.address == other.address && self.generation >= other.generation
    }
}

/// The departures heard of, most recent last; shared by foca's broadcast
/// handler and the state machine that reads it.
#[derive(Debug, Default, Clone)]
struct Departures(Arc<Mutex<VecDeque<Departure>>>);

impl Departures {
    fn left(&self, id: &NodeId) -> bool {
        lock(&self.0)
            .iter()
            .any(|d| *d.address == *id.address && d.generation == id.generation)
    }
}

impl BroadcastHandler<NodeId> for Departures {
    type Key = Departure;
    type Error = postcard::Error;

    fn receive_item(
        &mut self,
        data: &[u8],
        _sender: Option<&NodeId>,
    ) -> Result<Option<Departure>, postcard::Error> {
        let departure: Departure = postcard::from_bytes(data)?;
        let mut known = lock(&self.0);
        if known.contains(&departure) {
            return Ok(None);
        }
        if known.len() == DEPARTURES {
            known.pop_front();
        }
        known.push_back(departure.clone());
        Ok(Some(departure))
    }
}

#[cfg(test)]
mod tests;
