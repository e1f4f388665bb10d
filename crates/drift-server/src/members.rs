//! Membership: who is in the cluster, how to reach them, and whether they are up.
//!
//! Every node dials every member it knows (bootstrap addresses, peers learnt
//! through peer exchange, and members remembered from earlier runs). When two
//! nodes dial each other at once, both keep the connection dialed by the node
//! with the smaller id, so each pair ends with one connection. A peer whose
//! connection drops is *down* and redialed with exponential backoff; after
//! `lost_after` it is *lost*, leaves placement, and its replicas are re-created
//! elsewhere. It rejoins placement as soon as it connects again. The member
//! list is saved with when each member went down, so a restart goes on
//! counting toward `lost_after`: a node gone for good stays lost.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use drift_p2p::{Connection, Event, Events, PeerId, Role};
use drift_store::NameIndex;

use crate::config::NodeConfig;
use crate::node::Shared;
use crate::proto::{Msg, PeerAddr};
use crate::status::{PeerState, PeerStatus, Unreached};

/// The member list of earlier releases: (id, address) pairs.
const META_MEMBERS_V1: &str = "members";
/// The member list: a postcard list of [`Saved`].
const META_MEMBERS: &str = "members.v2";

/// A member as saved. A restart goes on counting toward `lost_after` from
/// when it went down, so a node gone for good stays lost instead of coming
/// back as down, and a replica target, for `lost_after` after every restart.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Saved {
    pub id: [u8; 32],
    pub addr: SocketAddr,
    /// When it went down, in Unix seconds; `None` if it was up.
    pub went_down: Option<u64>,
    /// Whether it was lost: down for `lost_after`, or replaced by another
    /// node at its address.
    pub lost: bool,
}

/// Why a node with another's id is refused.
const ID_CLASH: &str = "two nodes at different addresses have the same node id: \
     was one's data directory copied from the other's? Start it on a fresh data directory";

/// One other node.
pub(crate) struct Member {
    pub addr: SocketAddr,
    pub conn: Option<Connection<Msg>>,
    pub state: PeerState,
    pub since: Instant,
    /// When it went down, by the wall clock (kept across restarts); `None` while up.
    went_down: Option<SystemTime>,
    redial: Redial,
    /// The address of another node with this member's id, last warned of.
    clash_warned: Option<SocketAddr>,
}

/// When to dial an address next: exponential backoff between attempts, and
/// at most one attempt at a time. Members and bootstrap addresses (nodes we
/// have not met yet) both use it.
struct Redial {
    backoff: Duration,
    next_dial: Instant,
    dialing: bool,
    /// Dials that failed in a row.
    failures: u32,
    /// Why the last dial failed.
    last_error: Option<String>,
}

impl Redial {
    /// Due at `first`, then after `backoff`, doubling up to the table's maximum.
    fn new(backoff: Duration, first: Instant) -> Self {
        Redial {
            backoff,
            next_dial: first,
            dialing: false,
            failures: 0,
            last_error: None,
        }
    }

    /// If a dial is due, marks it started and schedules the next one.
    fn start_if_due(&mut self, now: Instant, max: Duration) -> bool {
        if self.dialing || self.next_dial > now {
            return false;
        }
        self.dialing = true;
        self.next_dial = now + self.backoff;
        self.backoff = (self.backoff * 2).min(max);
        true
    }
}

/// The membership table.
pub(crate) struct Members {
    me: PeerId,
    my_addr: SocketAddr,
    min_backoff: Duration,
    max_backoff: Duration,
    lost_after: Duration,
    replicas: usize,
    pub by_id: HashMap<PeerId, Member>,
    bootstrap: HashMap<SocketAddr, Redial>,
}

impl Members {
    pub fn new(me: PeerId, config: &NodeConfig) -> Self {
        Self {
            me,
            my_addr: config.listen,
            min_backoff: config.min_backoff,
            max_backoff: config.max_backoff,
            lost_after: config.lost_after,
            replicas: config.replicas.max(1),
            by_id: HashMap::new(),
            bootstrap: HashMap::new(),
        }
    }

    /// Records a member we heard of; returns true if it is new.
    pub fn learn(&mut self, id: PeerId, addr: SocketAddr) -> bool {
        // Another id at this node's own address is this node's former
        // identity (its data directory was replaced): it will not return.
        if id == self.me || addr == self.my_addr {
            return false;
        }
        if let Some(m) = self.by_id.get_mut(&id) {
            if m.conn.is_none() {
                m.addr = addr;
            }
            return false;
        }
        self.bootstrap.remove(&addr);
        let now = Instant::now();
        self.by_id.insert(
            id,
            Member {
                addr,
                conn: None,
                state: PeerState::Down,
                since: now,
                went_down: Some(SystemTime::now()),
                redial: Redial::new(self.min_backoff, now),
                clash_warned: None,
            },
        );
        true
    }

    /// Records a member remembered from an earlier run: down since it went
    /// down (from now, if it was up when saved), or lost if it was lost or
    /// has been down for `lost_after` since.
    pub fn restore(&mut self, saved: Saved) {
        let (id, addr) = (PeerId(saved.id), saved.addr);
        if !self.learn(id, addr) {
            return;
        }
        let Some(m) = self.by_id.get_mut(&id) else {
            return;
        };
        // Up when saved: down from now (`learn` set that), and saved so at
        // start, so restarts that follow go on counting from here.
        let Some(secs) = saved.went_down else {
            return;
        };
        let now = SystemTime::now();
        let at = UNIX_EPOCH
            .checked_add(Duration::from_secs(secs))
            .unwrap_or(now);
        let down_for = now.duration_since(at).unwrap_or_default();
        m.went_down = Some(at);
        if saved.lost || down_for >= self.lost_after {
            m.state = PeerState::Lost;
            tracing::info!(peer = %id.short(), %addr, "peer still lost: down for {} s", down_for.as_secs());
        } else if let Some(since) = Instant::now().checked_sub(down_for) {
            m.since = since;
        }
    }

    /// Marks lost every member that is not connected and was last seen at
    /// `addr`, where `by` now answers: a node restarted on a fresh data
    /// directory (a replaced disk) comes back under a new id, and its old
    /// id will not return. Its copies are re-created at once instead of
    /// after `lost_after`. Returns the members marked.
    fn replaced_at(&mut self, addr: SocketAddr, by: PeerId) -> Vec<PeerId> {
        let now = Instant::now();
        let mut marked = Vec::new();
        for (id, m) in &mut self.by_id {
            if *id != by && m.addr == addr && m.conn.is_none() && m.state == PeerState::Down {
                m.state = PeerState::Lost;
                m.since = now;
                m.went_down.get_or_insert_with(SystemTime::now);
                marked.push(*id);
            }
        }
        marked
    }

    pub fn add_bootstrap(&mut self, addr: SocketAddr) {
        if self.by_id.values().any(|m| m.addr == addr) {
            return;
        }
        self.bootstrap
            .insert(addr, Redial::new(self.min_backoff, Instant::now()));
    }

    /// The nodes chunks may be placed on: this node and every member not lost.
    pub fn placement_nodes(&self) -> Vec<PeerId> {
        let mut nodes: Vec<PeerId> = self
            .by_id
            .iter()
            .filter(|(_, m)| m.state != PeerState::Lost)
            .map(|(id, _)| *id)
            .collect();
        nodes.push(self.me);
        nodes
    }

    /// R in force: the configured factor capped by the number of placement nodes.
    pub fn effective_replicas(&self) -> usize {
        self.replicas.min(self.placement_nodes().len())
    }

    /// The live connection to `id`, if it is up.
    pub fn conn(&self, id: &PeerId) -> Option<Connection<Msg>> {
        self.by_id
            .get(id)
            .and_then(|m| m.conn.clone())
            .filter(|c| !c.is_closed())
    }

    /// Connections to every member that is up.
    pub fn up_conns(&self) -> Vec<Connection<Msg>> {
        self.by_id
            .values()
            .filter_map(|m| m.conn.clone())
            .filter(|c| !c.is_closed())
            .collect()
    }

    pub fn peer_addrs(&self) -> Vec<PeerAddr> {
        self.by_id
            .iter()
            .filter(|(_, m)| m.state != PeerState::Lost)
            .map(|(id, m)| PeerAddr {
                id: id.0,
                addr: m.addr,
            })
            .collect()
    }

    pub fn statuses(&self) -> Vec<PeerStatus> {
        let mut out: Vec<PeerStatus> = self
            .by_id
            .iter()
            .map(|(id, m)| PeerStatus {
                id: id.to_string(),
                addr: m.addr,
                state: m.state,
                since_secs: m.since.elapsed().as_secs(),
            })
            .collect();
        out.sort_by_key(|p| p.addr);
        out
    }

    /// Bootstrap addresses not reached yet whose dials have failed.
    pub fn unreached(&self) -> Vec<Unreached> {
        let mut out: Vec<Unreached> = self
            .bootstrap
            .iter()
            .filter_map(|(addr, r)| {
                Some(Unreached {
                    addr: *addr,
                    failures: r.failures,
                    error: r.last_error.clone()?,
                })
            })
            .collect();
        out.sort_by_key(|u| u.addr);
        out
    }

    pub fn remembered(&self) -> Vec<Saved> {
        let secs = |t: SystemTime| t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        self.by_id
            .iter()
            .map(|(id, m)| Saved {
                id: id.0,
                addr: m.addr,
                went_down: m.went_down.map(secs),
                lost: m.state == PeerState::Lost,
            })
            .collect()
    }

    /// Marks members down longer than `lost_after` as lost; true if any changed.
    fn expire(&mut self, now: Instant) -> bool {
        let mut changed = false;
        for m in self.by_id.values_mut() {
            if m.state == PeerState::Down && now.duration_since(m.since) >= self.lost_after {
                tracing::info!(
                    %m.addr,
                    "peer lost: down for {} s; its copies are re-created elsewhere",
                    now.duration_since(m.since).as_secs()
                );
                m.state = PeerState::Lost;
                m.since = now;
                changed = true;
            }
        }
        changed
    }
}

/// The members remembered from an earlier run (an earlier release's list
/// has them all up when saved).
pub(crate) fn load(index: &NameIndex) -> Result<Vec<Saved>, String> {
    let malformed = |e: postcard::Error| format!("remembered member list is malformed: {e}");
    if let Some(bytes) = index.get_meta(META_MEMBERS).map_err(|e| e.to_string())? {
        return postcard::from_bytes(&bytes).map_err(malformed);
    }
    let Some(bytes) = index.get_meta(META_MEMBERS_V1).map_err(|e| e.to_string())? else {
        return Ok(Vec::new());
    };
    let list: Vec<([u8; 32], SocketAddr)> = postcard::from_bytes(&bytes).map_err(malformed)?;
    Ok(list
        .into_iter()
        .map(|(id, addr)| Saved {
            id,
            addr,
            went_down: None,
            lost: false,
        })
        .collect())
}

/// Saves the member list: at start, as restored (see [`Members::restore`]),
/// and after changes (see [`remember`]).
pub(crate) fn save(index: &NameIndex, list: &[Saved]) -> Result<(), String> {
    let bytes = postcard::to_allocvec(list).map_err(|e| e.to_string())?;
    index
        .set_meta(META_MEMBERS, &bytes)
        .map_err(|e| e.to_string())
}

/// Saves the member list as it is when the save runs. Saves run one at a
/// time, so an older list never lands after a newer one.
async fn remember(shared: &Arc<Shared>) {
    let s = shared.clone();
    let res = crate::node::blocking(move || {
        let _one_at_a_time = s
            .members_saving
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let list = s.members().remembered();
        save(&s.index, &list)
    })
    .await;
    if let Err(e) | Ok(Err(e)) = res {
        tracing::warn!("cannot save the member list: {e}");
    }
}

/// A client's request being answered, counted until it is dropped (see
/// `Node::shutdown`).
struct ClientRequest(Arc<Shared>);

impl ClientRequest {
    fn new(shared: &Arc<Shared>) -> Self {
        shared.client_requests.fetch_add(1, Ordering::SeqCst);
        ClientRequest(shared.clone())
    }
}

impl Drop for ClientRequest {
    fn drop(&mut self) {
        if self.0.client_requests.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.client_requests_done.notify_waiters();
        }
    }
}

/// Handles the transport's events until shutdown.
pub(crate) async fn run_events(shared: Arc<Shared>, mut events: Events<Msg>) {
    let mut handlers = tokio::task::JoinSet::new();
    loop {
        let event = tokio::select! {
            _ = shared.cancel.cancelled() => break,
            ev = events.recv() => match ev { Some(ev) => ev, None => break },
        };
        while handlers.try_join_next().is_some() {}
        match event {
            Event::Connected(conn) => on_connected(&shared, conn, &mut handlers),
            Event::Disconnected { conn, reason } => {
                if on_disconnected(&shared, &conn, &reason) {
                    let shared = shared.clone();
                    handlers.spawn(async move { remember(&shared).await });
                }
            }
            Event::Stream { conn, stream } => {
                let shared = shared.clone();
                let client = (conn.role() == Role::Client).then(|| ClientRequest::new(&shared));
                handlers.spawn(async move {
                    crate::serve::handle(shared, conn, stream).await;
                    drop(client);
                });
            }
        }
    }
    handlers.abort_all();
    while handlers.join_next().await.is_some() {}
}

fn on_connected(
    shared: &Arc<Shared>,
    conn: Connection<Msg>,
    handlers: &mut tokio::task::JoinSet<()>,
) {
    if conn.role() != Role::Node {
        return;
    }
    let peer = conn.peer_id();
    if peer == shared.me {
        match conn.listen_addr().filter(|a| *a != shared.config.listen) {
            Some(other) => {
                tracing::warn!(%other, "{ID_CLASH}");
                conn.close(ID_CLASH);
            }
            None => conn.close("connected to itself"),
        }
        return;
    }
    let addr = reachable_addr(conn.listen_addr(), conn.remote_addr());
    let is_new;
    let came_up;
    let replaced;
    {
        let mut table = shared.members();
        is_new = table.learn(peer, addr);
        let min_backoff = table.min_backoff;
        let Some(m) = table.by_id.get_mut(&peer) else {
            return;
        };
        if let Some(old) = m
            .conn
            .as_ref()
            .filter(|c| !c.is_closed() && c.id() != conn.id())
        {
            // Two nodes listening apart with one id: a data directory copied
            // from another node's. The one connected first stays; the other
            // is told why it is refused, and never takes its place.
            if let (Some(first), Some(other)) = (old.listen_addr(), conn.listen_addr())
                && first != other
            {
                if m.clash_warned != Some(other) {
                    tracing::warn!(peer = %peer.short(), %first, %other, "{ID_CLASH}");
                    m.clash_warned = Some(other);
                }
                conn.close(ID_CLASH);
                return;
            }
            // Two connections for one pair: both sides keep the one dialed by
            // the smaller id, so they agree without talking.
            let preferred_dialer = shared.me.min(peer);
            let dialer = |c: &Connection<Msg>| if c.is_outbound() { shared.me } else { peer };
            let keep_new = dialer(&conn) == preferred_dialer && dialer(old) != preferred_dialer;
            if !keep_new {
                conn.close("duplicate connection");
                return;
            }
            old.close("duplicate connection");
        }
        m.addr = addr;
        m.conn = Some(conn.clone());
        came_up = m.state != PeerState::Up;
        if came_up {
            m.state = PeerState::Up;
            m.since = Instant::now();
            m.went_down = None;
        }
        m.redial.backoff = min_backoff;
        replaced = table.replaced_at(addr, peer);
    }
    for old in &replaced {
        tracing::info!(peer = %old.short(), %addr, by = %peer.short(), "peer replaced: another node now answers at its address; its copies are re-created elsewhere");
    }
    // Both sides dialing at once brings up two connections, and the one
    // kept may come second: the peer came up once.
    if came_up {
        tracing::info!(peer = %peer.short(), %addr, "peer up");
    } else {
        tracing::debug!(peer = %peer.short(), %addr, "peer's connection replaced");
    }
    shared.wake_repair.notify_one();
    let shared = shared.clone();
    handlers.spawn(async move {
        exchange_peers(&shared, &conn).await;
        crate::sync::sync_with(&shared, &conn).await;
        if is_new || came_up || !replaced.is_empty() {
            remember(&shared).await;
        }
    });
}

/// Marks the peer down if `conn` was its connection; true if it was.
fn on_disconnected(shared: &Arc<Shared>, conn: &Connection<Msg>, reason: &str) -> bool {
    let peer = conn.peer_id();
    let mut table = shared.members();
    // Refused for an id clash, this node would be refused again at once:
    // it retries at the slowest pace instead of handshaking all the time.
    let backoff = if reason.contains(ID_CLASH) {
        table.max_backoff
    } else {
        table.min_backoff
    };
    let Some(m) = table.by_id.get_mut(&peer) else {
        return false;
    };
    if m.conn.as_ref().is_none_or(|c| c.id() != conn.id()) {
        return false;
    }
    m.conn = None;
    m.state = PeerState::Down;
    m.since = Instant::now();
    m.went_down = Some(SystemTime::now());
    m.redial.backoff = backoff;
    m.redial.next_dial = Instant::now() + backoff;
    tracing::info!(peer = %peer.short(), reason, "peer down");
    shared.wake_dialer.notify_one();
    // A repair pass counts the chunks left with fewer live copies now, for
    // `status`, instead of at the next period (30 s by default).
    shared.wake_repair.notify_one();
    true
}

/// Where to reach a node: the address it listens on, as it told us, with
/// the address its connection came from filling in what it could not know.
/// A node listening on every interface (`--listen 0.0.0.0:3000`) announces
/// `0.0.0.0:3000`, which means "this host" to whoever dials it: kept as is,
/// peers on other machines would redial themselves after a disconnect.
fn reachable_addr(listen: Option<SocketAddr>, remote: SocketAddr) -> SocketAddr {
    match listen {
        Some(a) if a.ip().is_unspecified() => SocketAddr::new(remote.ip(), a.port()),
        Some(a) => a,
        None => remote,
    }
}

/// Asks a peer for the members it knows and dials the new ones.
pub(crate) async fn exchange_peers(shared: &Arc<Shared>, conn: &Connection<Msg>) {
    let Ok(Msg::PeerList { peers }) = conn.request(Msg::Peers).await else {
        return;
    };
    let mut learnt = false;
    {
        let mut table = shared.members();
        for p in peers.into_iter().take(1024) {
            learnt |= table.learn(PeerId(p.id), p.addr);
        }
    }
    if learnt {
        shared.wake_dialer.notify_one();
        remember(shared).await;
    }
}

/// Dials members and bootstrap addresses that have no connection, with
/// backoff, and declares long-down members lost.
pub(crate) async fn run_dialer(shared: Arc<Shared>) {
    let tick = shared
        .config
        .min_backoff
        .clamp(Duration::from_millis(20), Duration::from_millis(500));
    let mut dials = tokio::task::JoinSet::new();
    loop {
        while dials.try_join_next().is_some() {}
        let now = Instant::now();
        let mut due = Vec::new();
        let lost_changed;
        {
            let mut table = shared.members();
            lost_changed = table.expire(now);
            let max = table.max_backoff;
            for (id, m) in table.by_id.iter_mut() {
                if m.conn.as_ref().is_none_or(|c| c.is_closed()) && m.redial.start_if_due(now, max)
                {
                    due.push((Some(*id), m.addr));
                }
            }
            for (addr, b) in table.bootstrap.iter_mut() {
                if b.start_if_due(now, max) {
                    due.push((None, *addr));
                }
            }
        }
        if lost_changed {
            shared.wake_repair.notify_one();
        }
        for (id, addr) in due {
            let shared = shared.clone();
            dials.spawn(async move {
                let result = shared.endpoint.connect(addr).await;
                let mut table = shared.members();
                let redial = match id {
                    Some(id) => table.by_id.get_mut(&id).map(|m| &mut m.redial),
                    None => table.bootstrap.get_mut(&addr),
                };
                let mut first_failure = false;
                if let Some(r) = redial {
                    r.dialing = false;
                    r.failures = if result.is_ok() { 0 } else { r.failures.saturating_add(1) };
                    r.last_error = result.as_ref().err().map(ToString::to_string);
                    first_failure = r.failures == 1;
                }
                match result {
                    // The transport announces the connection as an event, where it is registered.
                    Ok(conn) => {
                        if id.is_none() {
                            table.bootstrap.remove(&addr);
                        }
                        if conn.peer_id() == shared.me {
                            conn.close("connected to itself");
                        }
                    }
                    // A bootstrap address that fails is worth a word: an
                    // unreachable one, or one with another cluster secret,
                    // leaves the node alone without it.
                    Err(e) if id.is_none() && first_failure => {
                        tracing::warn!(%addr, "cannot reach bootstrap peer, retrying with backoff: {e}");
                    }
                    Err(e) => tracing::debug!(%addr, "dial failed: {e}"),
                }
            });
        }
        tokio::select! {
            _ = shared.cancel.cancelled() => break,
            _ = shared.wake_dialer.notified() => {}
            _ = tokio::time::sleep(tick) => {}
        }
    }
    dials.abort_all();
    while dials.join_next().await.is_some() {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn another_id_at_this_nodes_own_address_is_never_a_member() {
        let me_at: SocketAddr = "127.0.0.1:3000".parse().unwrap();
        let secret = drift_crypto::ClusterSecret::from_bytes([3; 32]);
        let config = NodeConfig::new(me_at, "/nonexistent", secret);
        let mut table = Members::new(PeerId([1; 32]), &config);
        // This node's former identity, from a peer that still knows it.
        assert!(!table.learn(PeerId([2; 32]), me_at));
        assert!(table.learn(PeerId([3; 32]), "127.0.0.1:7000".parse().unwrap()));
        assert_eq!(table.by_id.len(), 1);
    }

    #[test]
    fn restored_members_are_down_from_when_they_went_down_or_lost() {
        let config = NodeConfig::new(
            "127.0.0.1:3000".parse().unwrap(),
            "/nonexistent",
            drift_crypto::ClusterSecret::from_bytes([3; 32]),
        );
        let mut table = Members::new(PeerId([1; 32]), &config);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let saved = |id: u8, went_down: Option<u64>, lost: bool| Saved {
            id: [id; 32],
            addr: format!("127.0.0.1:{}", 7000 + u16::from(id))
                .parse()
                .unwrap(),
            went_down,
            lost,
        };
        let lost_after = config.lost_after.as_secs();
        table.restore(saved(2, None, false));
        table.restore(saved(3, Some(now - 20), false));
        table.restore(saved(4, Some(now - lost_after), false));
        table.restore(saved(5, Some(now), true));
        // A time no clock can hold (a damaged list) is taken as now, not a panic.
        table.restore(saved(6, Some(u64::MAX), false));
        let state = |id: u8| table.by_id[&PeerId([id; 32])].state;
        assert_eq!(state(6), PeerState::Down);
        assert_eq!(
            [state(2), state(3), state(4), state(5)],
            [
                PeerState::Down,
                PeerState::Down,
                PeerState::Lost,
                PeerState::Lost
            ]
        );
        assert!(table.by_id[&PeerId([3; 32])].since.elapsed() >= Duration::from_secs(20));
        // Saved again, the one that was up is down from this start on.
        let again: HashMap<[u8; 32], Saved> =
            table.remembered().into_iter().map(|s| (s.id, s)).collect();
        assert!(again[&[2; 32]].went_down.is_some_and(|t| t + 5 >= now));
        assert_eq!(again[&[3; 32]].went_down, Some(now - 20));
        assert!(again[&[4; 32]].lost && again[&[5; 32]].lost && !again[&[3; 32]].lost);
    }

    #[test]
    fn member_lists_of_earlier_releases_still_load() {
        let dir = tempfile::tempdir().unwrap();
        let keys = drift_crypto::ClusterSecret::from_bytes([3; 32]).keys();
        let index = NameIndex::open(dir.path(), &keys).unwrap();
        let addr: SocketAddr = "127.0.0.1:3000".parse().unwrap();
        assert_eq!(load(&index).unwrap(), []);
        let v1 = postcard::to_allocvec(&vec![([7u8; 32], addr)]).unwrap();
        index.set_meta(META_MEMBERS_V1, &v1).unwrap();
        let up = |id: u8| Saved {
            id: [id; 32],
            addr,
            went_down: None,
            lost: false,
        };
        assert_eq!(load(&index).unwrap(), [up(7)]);
        // The current list wins once it is saved.
        let lost = Saved {
            went_down: Some(1_700_000_000),
            lost: true,
            ..up(7)
        };
        let v2 = vec![lost.clone(), up(8)];
        index
            .set_meta(META_MEMBERS, &postcard::to_allocvec(&v2).unwrap())
            .unwrap();
        assert_eq!(load(&index).unwrap(), v2);
    }

    #[test]
    fn a_node_listening_on_every_interface_is_reached_where_it_connected_from() {
        let addr = |s: &str| s.parse::<SocketAddr>().unwrap();
        // Announced 0.0.0.0 or ::, the port is its own, the host is where its
        // connection came from (inbound: its source; outbound: where we dialed).
        assert_eq!(
            reachable_addr(Some(addr("0.0.0.0:3000")), addr("10.0.0.7:41234")),
            addr("10.0.0.7:3000")
        );
        assert_eq!(
            reachable_addr(Some(addr("[::]:3000")), addr("[fd00::7]:41234")),
            addr("[fd00::7]:3000")
        );
        // A specific address is kept, even where the connection came from elsewhere.
        assert_eq!(
            reachable_addr(Some(addr("192.168.1.5:3000")), addr("10.0.0.7:41234")),
            addr("192.168.1.5:3000")
        );
        assert_eq!(
            reachable_addr(None, addr("10.0.0.7:3000")),
            addr("10.0.0.7:3000")
        );
    }
}
