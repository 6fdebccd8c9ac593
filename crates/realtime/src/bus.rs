//! The instances of one deployment telling each other what their sockets must
//! hear: row changes, broadcasts, presence, and which tables anyone watches.
//! On PostgreSQL the notes travel by `LISTEN`/`NOTIFY` on the deployment's
//! own database; with `GATEHOUSE_REDIS_URL` set, by Redis pub/sub.
//!
//! Invariants: every instance hears row changes only from the bus, its own
//! included, so all of them deliver one table's changes in one order (on
//! PostgreSQL the notification is part of the write's transaction: the order
//! of the commits, and nothing for a write rolled back). Broadcasts and
//! presence are delivered on their own instance at once and relayed to the
//! others, which ignore their own. An instance not heard from for
//! [`PEER_LIFETIME`] is gone: its presences leave. Nothing waits on another
//! instance: the relay is a bounded queue, and a note that finds it full is
//! dropped and logged.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use gatehouse_db::{Database, Sql, Statement, Value};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use tokio::sync::{mpsc, watch};

use crate::feed::{Change, Feed};
use crate::hub::Hub;

/// The channel every instance listens on (PostgreSQL's are the database's own).
const CHANNEL: &str = "gatehouse_realtime";
/// How often an instance says it is alive (and which tables it watches).
const HEARTBEAT: Duration = Duration::from_secs(5);
/// Silence after which an instance is taken to be gone.
const PEER_LIFETIME: Duration = Duration::from_secs(15);
/// Notes waiting to be sent to the other instances.
const RELAYED_AHEAD: usize = 4096;
/// The longest note NOTIFY carries itself (PostgreSQL refuses 8,000 bytes);
/// a longer one is stored and the notification names it.
const LONGEST_NOTIFIED: usize = 7000;
/// How long a stored note is kept for the instances to read.
const STORED_NOTE_LIFETIME: time::Duration = time::Duration::minutes(5);
/// How often stored notes past their lifetime are swept.
const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// Waits between attempts to listen again after the bus was lost.
const RECONNECT_AFTER: Duration = Duration::from_secs(1);

// pg_notify answers `void`, which no row reader takes: count it instead.
const NOTIFY: Sql = Sql::both("SELECT count(*) FROM (SELECT pg_notify($1, $2)) AS notified");
const STORE_NOTE: Sql =
    Sql::both("INSERT INTO gatehouse_realtime_notes (id, note, created_at) VALUES ($1, $2, $3)");
const STORED_NOTE: Sql = Sql::both("SELECT note FROM gatehouse_realtime_notes WHERE id = $1");
const SWEEP_NOTES: Sql = Sql::both("DELETE FROM gatehouse_realtime_notes WHERE created_at < $1");

/// What one instance tells the others.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Note {
    /// The instance it comes from.
    pub from: String,
    /// Its place among that instance's notes (PostgreSQL folds identical
    /// notifications of one transaction into one: no two notes are identical).
    #[serde(default)]
    pub serial: u64,
    pub news: News,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum News {
    /// The committed changes of one write (every instance delivers them, its
    /// writer's too).
    Changes { changes: Vec<Change> },
    /// A broadcast on the topic keyed `topic` (see `hub::topic_key`; each
    /// instance names it to its sockets as they joined it).
    Broadcast {
        topic: String,
        event: String,
        payload: Json,
        /// The payload is binary, written as base64 in `payload`.
        #[serde(default)]
        binary: bool,
    },
    /// A change of the sender's presences on a topic.
    Presence {
        topic: String,
        joins: Json,
        leaves: Json,
    },
    /// All the sender's presences on a topic, replacing what was known.
    PresenceState { topic: String, state: Json },
    /// The sender lives and watches these tables, as of the `generation`th
    /// change of what it watches.
    Alive {
        tables: Vec<String>,
        generation: u64,
    },
    /// `to` is told its `generation` of watched tables has been heard.
    Heard { to: String, generation: u64 },
    /// The sender has just started listening: the others tell it what they hold.
    Hello,
    /// The note is stored under `id` (it was too long to notify).
    Stored { id: String },
}

/// This instance's side of the bus: its name and its way out.
#[derive(Clone)]
pub struct Relay {
    instance: Arc<str>,
    outgoing: mpsc::Sender<News>,
    serial: Arc<std::sync::atomic::AtomicU64>,
    /// The other instances as heard.
    peers: Arc<Peers>,
}

impl Relay {
    /// A relay under a fresh instance name, and the queue the bus drains.
    pub fn new() -> (Self, mpsc::Receiver<News>) {
        let (outgoing, queue) = mpsc::channel(RELAYED_AHEAD);
        let instance = uuid::Uuid::new_v4().simple().to_string()[..12].into();
        let (serial, peers) = (Arc::default(), Arc::default());
        (
            Self {
                instance,
                outgoing,
                serial,
                peers,
            },
            queue,
        )
    }

    pub fn instance(&self) -> &str {
        &self.instance
    }

    pub fn peers(&self) -> &Arc<Peers> {
        &self.peers
    }

    /// Sends what this instance's sockets did (a broadcast, a presence
    /// change) to the other instances, when there are any: one alone does
    /// not spend the bus on them (a newcomer is sent the presence whole).
    pub fn share(&self, news: impl FnOnce() -> News) {
        if !self.peers.read().is_empty() {
            self.tell(news());
        }
    }

    /// Sends `news` to the other instances, unless the queue is full.
    pub fn tell(&self, news: News) {
        if self.outgoing.try_send(news).is_err() {
            tracing::warn!("the realtime relay is full: a note to the other instances was dropped");
        }
    }

    fn note(&self, news: News) -> Note {
        Note {
            from: self.instance.to_string(),
            serial: self
                .serial
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            news,
        }
    }

    /// The statements that notify the others of `news` from inside a
    /// transaction (PostgreSQL): delivered once it commits, in commit order.
    pub fn notifying(&self, news: News) -> Vec<Statement> {
        notify_statements(&self.note(news))
    }
}

fn notify_statements(note: &Note) -> Vec<Statement> {
    // Every note is plain data; were one not to serialise, nothing is sent
    // (an empty notification would only be dropped by every listener).
    let text = match serde_json::to_string(note) {
        Ok(text) => text,
        Err(error) => {
            tracing::error!(%error, "a realtime note could not be written");
            return Vec::new();
        }
    };
    if text.len() <= LONGEST_NOTIFIED {
        return vec![Statement::new(&NOTIFY, vec![CHANNEL.into(), text.into()])];
    }
    let id = uuid::Uuid::new_v4().to_string();
    let pointer = Note {
        from: note.from.clone(),
        serial: note.serial,
        news: News::Stored { id: id.clone() },
    };
    let pointer = serde_json::to_string(&pointer).unwrap_or_default();
    debug_assert!(!pointer.is_empty(), "a stored note's pointer is plain data");
    let now = gatehouse_db::timestamp(time::OffsetDateTime::now_utc());
    vec![
        Statement::new(&STORE_NOTE, vec![id.into(), text.into(), now.into()]),
        Statement::new(&NOTIFY, vec![CHANNEL.into(), pointer.into()]),
    ]
}

/// How notes travel between instances.
pub enum Transport {
    /// `LISTEN`/`NOTIFY` on the deployment's PostgreSQL database.
    Postgres(Database),
    /// Redis pub/sub on the named channel.
    Redis(redis::Client, String),
}

impl Transport {
    async fn publish(&self, note: &Note, redis: &mut Option<redis::aio::MultiplexedConnection>) {
        let sent = match self {
            Transport::Postgres(db) => db
                .transaction(notify_statements(note))
                .await
                .map(drop)
                .map_err(|error| error.to_string()),
            Transport::Redis(client, channel) => {
                publish_redis((client, channel), redis, note).await
            }
        };
        if let Err(error) = sent {
            tracing::warn!(%error, "a note to the other realtime instances was not sent");
        }
    }
}

async fn publish_redis(
    (client, channel): (&redis::Client, &str),
    connection: &mut Option<redis::aio::MultiplexedConnection>,
    note: &Note,
) -> Result<(), String> {
    if connection.is_none() {
        *connection = Some(
            client
                .get_multiplexed_async_connection()
                .await
                .map_err(|error| error.to_string())?,
        );
    }
    let Some(open) = connection.as_mut() else {
        return Err("no connection".into());
    };
    let text = serde_json::to_string(note).map_err(|error| error.to_string())?;
    let sent: redis::RedisResult<()> = redis::cmd("PUBLISH")
        .arg(channel)
        .arg(text)
        .query_async(open)
        .await;
    sent.map_err(|error| {
        // Connect again on the next note.
        *connection = None;
        error.to_string()
    })
}

/// The other instances as heard: when last, which tables they watch, and
/// how much of what this one watches they have acknowledged.
pub struct Peers {
    known: RwLock<HashMap<String, Peer>>,
    /// Signalled when a peer acknowledges, or goes.
    acknowledged: watch::Sender<()>,
}

impl Default for Peers {
    fn default() -> Self {
        Self {
            known: RwLock::default(),
            acknowledged: watch::Sender::new(()),
        }
    }
}

#[derive(Default)]
struct Peer {
    seen: Option<Instant>,
    tables: HashSet<String>,
    /// The last generation of its watched tables heard from it.
    generation: u64,
    /// The last generation of this instance's watched tables it acknowledged.
    acknowledged: u64,
}

impl Peers {
    /// Whether another instance watches `table`.
    pub fn want(&self, table: &str) -> bool {
        self.read().values().any(|peer| peer.tables.contains(table))
    }

    /// Whether every instance known has acknowledged `generation` of the
    /// tables watched here.
    pub fn all_acknowledged(&self, generation: u64) -> bool {
        self.read()
            .values()
            .all(|peer| peer.acknowledged >= generation)
    }

    pub fn acknowledgements(&self) -> watch::Receiver<()> {
        self.acknowledged.subscribe()
    }

    /// Notes that `from` spoke; answers whether it was not known.
    pub(crate) fn saw(&self, from: &str) -> bool {
        let mut peers = self.write();
        let peer = peers.entry(from.to_owned()).or_default();
        let new = peer.seen.is_none();
        peer.seen = Some(Instant::now());
        new
    }

    /// `from` watches `tables` as of its `generation`; answers whether that
    /// generation is news (to be acknowledged).
    fn watches(&self, from: &str, tables: Vec<String>, generation: u64) -> bool {
        let mut peers = self.write();
        let peer = peers.entry(from.to_owned()).or_default();
        peer.tables = tables.into_iter().collect();
        let news = generation > peer.generation;
        peer.generation = peer.generation.max(generation);
        news
    }

    fn acknowledge(&self, from: &str, generation: u64) {
        if let Some(peer) = self.write().get_mut(from) {
            peer.acknowledged = peer.acknowledged.max(generation);
        }
        self.acknowledged.send_replace(());
    }

    /// Takes out the instances silent for longer than [`PEER_LIFETIME`].
    fn gone(&self) -> Vec<String> {
        let mut peers = self.write();
        let gone: Vec<String> = peers
            .iter()
            .filter(|(_, peer)| peer.seen.is_none_or(|seen| seen.elapsed() > PEER_LIFETIME))
            .map(|(name, _)| name.clone())
            .collect();
        for name in &gone {
            peers.remove(name);
        }
        drop(peers);
        if !gone.is_empty() {
            self.acknowledged.send_replace(());
        }
        gone
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Peer>> {
        self.known
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Peer>> {
        self.known
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Starts the bus's two tasks on the current runtime: one sends this
/// instance's notes (and says it is alive), one hears the others'.
pub fn start(
    transport: Transport,
    (relay, outgoing): (Relay, mpsc::Receiver<News>),
    hub: Arc<Hub>,
    feed: Arc<Feed>,
) {
    let transport = Arc::new(transport);
    tokio::spawn(send_all(
        transport.clone(),
        relay.clone(),
        outgoing,
        feed.clone(),
    ));
    tokio::spawn(hear_all(transport, relay, hub, feed));
}

async fn send_all(
    transport: Arc<Transport>,
    relay: Relay,
    mut outgoing: mpsc::Receiver<News>,
    feed: Arc<Feed>,
) {
    let mut redis = None;
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    let mut sweep = tokio::time::interval(SWEEP_EVERY);
    let mut interest = feed.interest();
    loop {
        let news = tokio::select! {
            news = outgoing.recv() => match news {
                Some(news) => news,
                None => return,
            },
            _ = heartbeat.tick() => {
                News::Alive { tables: feed.tables(), generation: *interest.borrow() }
            }
            _ = sweep.tick() => {
                if let Transport::Postgres(db) = &*transport {
                    sweep_stored_notes(db).await;
                }
                continue;
            }
            // What is watched here changed: the others hear of it at once
            // (and a join waits for their acknowledgements).
            changed = interest.changed() => {
                if changed.is_err() {
                    return;
                }
                let generation = *interest.borrow_and_update();
                News::Alive { tables: feed.tables(), generation }
            }
        };
        transport.publish(&relay.note(news), &mut redis).await;
    }
}

async fn sweep_stored_notes(db: &Database) {
    let before = gatehouse_db::timestamp(time::OffsetDateTime::now_utc() - STORED_NOTE_LIFETIME);
    if let Err(error) = db
        .transaction(vec![Statement::new(&SWEEP_NOTES, vec![before.into()])])
        .await
    {
        tracing::warn!(%error, "stored realtime notes could not be swept");
    }
}

/// Hears the bus for as long as the instance runs, listening again whenever
/// it is lost (and saying hello again: what was missed meanwhile is gone,
/// but presence is resent whole).
async fn hear_all(transport: Arc<Transport>, relay: Relay, hub: Arc<Hub>, feed: Arc<Feed>) {
    loop {
        let heard = match &*transport {
            Transport::Postgres(db) => hear_postgres(db, &relay, (&hub, &feed)).await,
            Transport::Redis(client, channel) => {
                hear_redis((client, channel), &relay, (&hub, &feed)).await
            }
        };
        if let Err(error) = heard {
            tracing::warn!(%error, "the realtime bus was lost; listening again");
        }
        tokio::time::sleep(RECONNECT_AFTER).await;
    }
}

type Listeners<'a> = (&'a Arc<Hub>, &'a Arc<Feed>);

async fn hear_postgres(db: &Database, relay: &Relay, to: Listeners<'_>) -> Result<(), String> {
    let Some(listener) = db.listen(CHANNEL).await.map_err(|e| e.to_string())? else {
        return Err("this database carries no notifications".into());
    };
    let notes = futures_util::stream::unfold(listener, move |mut listener| async move {
        let text = listener.next().await?;
        Some((read_note(db, &text).await, listener))
    });
    hear(notes, relay, to).await
}

async fn hear_redis(
    (client, channel): (&redis::Client, &str),
    relay: &Relay,
    to: Listeners<'_>,
) -> Result<(), String> {
    let mut pubsub = client
        .get_async_pubsub()
        .await
        .map_err(|error| error.to_string())?;
    pubsub
        .subscribe(channel)
        .await
        .map_err(|error| error.to_string())?;
    let notes = pubsub.on_message().map(|message| {
        let text: String = message.get_payload().ok()?;
        serde_json::from_str(&text)
            .map_err(|error| tracing::warn!(%error, "an unreadable realtime note"))
            .ok()
    });
    hear(notes, relay, to).await
}

/// Hears `notes` until they end, or until this instance stops hearing its
/// own (a connection gone deaf, or a transaction pooler between Gatehouse
/// and PostgreSQL, which drops notifications): either way it listens again.
async fn hear(
    notes: impl futures_util::Stream<Item = Option<Note>>,
    relay: &Relay,
    to: Listeners<'_>,
) -> Result<(), String> {
    greet(relay, to.0);
    let greeted = Instant::now();
    let mut notes = std::pin::pin!(notes);
    let mut sweep = tokio::time::interval(HEARTBEAT);
    sweep.tick().await;
    let mut own_heard = Instant::now();
    loop {
        tokio::select! {
            note = notes.next() => match note {
                Some(Some(note)) => {
                    if note.from == relay.instance() {
                        own_heard = Instant::now();
                    }
                    // Instances first heard soon after the greeting are
                    // answering it; one first heard later was taken for gone.
                    let asking = greeted.elapsed() > PEER_LIFETIME;
                    heard(note, (relay, asking), to);
                }
                Some(None) => {}
                None => return Err("the listening connection ended".into()),
            },
            _ = sweep.tick() => {
                forget_gone(relay, to.0);
                if own_heard.elapsed() > PEER_LIFETIME {
                    return Err(format!(
                        "this instance has not heard its own notes for {} s (is a transaction \
                         pooler between it and PostgreSQL?)",
                        PEER_LIFETIME.as_secs()
                    ));
                }
            }
        }
    }
}

/// Says hello on a new listen, asking the others for what they hold, and
/// tells them what this instance holds: either side may have missed notes
/// while this one was not listening.
fn greet(relay: &Relay, hub: &Hub) {
    // Leaves missed meanwhile would never be heard: the others' presence is
    // known again from what they send in answer.
    hub.forget_all();
    relay.tell(News::Hello);
    share_presence(relay, hub);
}

fn share_presence(relay: &Relay, hub: &Hub) {
    for state in hub.presence_held() {
        relay.tell(state);
    }
}

/// The note `text` names: itself, or the one it says is stored.
async fn read_note(db: &Database, text: &str) -> Option<Note> {
    let note: Note = serde_json::from_str(text)
        .map_err(|error| tracing::warn!(%error, "an unreadable realtime note"))
        .ok()?;
    let News::Stored { id } = &note.news else {
        return Some(note);
    };
    let rows = db
        .query(Statement::new(&STORED_NOTE, vec![Value::from(id.as_str())]))
        .await
        .map_err(|error| tracing::warn!(%error, "a stored realtime note could not be read"))
        .ok()?;
    let text = rows.first()?.text(0).ok()?;
    serde_json::from_str(text)
        .map_err(|error| tracing::warn!(%error, "an unreadable stored realtime note"))
        .ok()
}

fn heard(note: Note, (relay, asking): (&Relay, bool), (hub, feed): Listeners<'_>) {
    let peers = relay.peers();
    if let News::Changes { changes } = note.news {
        // Row changes come only this way, this instance's own included.
        for change in changes {
            feed.hear(change);
        }
        return;
    }
    if note.from == relay.instance() {
        return;
    }
    if peers.saw(&note.from) && asking && !matches!(note.news, News::Hello) {
        // An instance taken for gone while it was only slow: everyone's
        // whole presence is sent again, its included.
        relay.tell(News::Hello);
        share_presence(relay, hub);
    }
    match note.news {
        News::Alive { tables, generation } => {
            if peers.watches(&note.from, tables, generation) {
                relay.tell(News::Heard {
                    to: note.from,
                    generation,
                });
            }
        }
        News::Heard { to, generation } => {
            if to == relay.instance() {
                peers.acknowledge(&note.from, generation);
            }
        }
        News::Hello => {
            // What was known of it may be stale (it was not listening): it
            // sends its whole presence after this.
            hub.forget(&note.from);
            relay.tell(News::Alive {
                tables: feed.tables(),
                generation: feed.generation(),
            });
            share_presence(relay, hub);
        }
        other => hub.hear(&note.from, other),
    }
}

fn forget_gone(relay: &Relay, hub: &Hub) {
    for peer in relay.peers().gone() {
        tracing::info!(%peer, "a realtime instance went silent; its presences leave");
        hub.forget(&peer);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn every_kind_of_note_reads_back_as_written() {
        let change: Change = serde_json::from_value(serde_json::json!({
            "table": "orders", "event": "INSERT", "new": {"id": 1}, "old": null,
        }))
        .unwrap();
        let topic = || "realtime:room".to_owned();
        let all = [
            News::Changes {
                changes: vec![change.clone(), change],
            },
            News::Broadcast {
                topic: topic(),
                event: "tick".into(),
                payload: serde_json::json!({"x": 1}),
                binary: false,
            },
            News::Presence {
                topic: topic(),
                joins: serde_json::json!({}),
                leaves: serde_json::json!({}),
            },
            News::PresenceState {
                topic: topic(),
                state: serde_json::json!({}),
            },
            News::Alive {
                tables: vec!["orders".into()],
                generation: 3,
            },
            News::Heard {
                to: "a".into(),
                generation: 3,
            },
            News::Hello,
            News::Stored { id: "x".into() },
        ];
        let (relay, _queue) = Relay::new();
        for news in all {
            let written = serde_json::to_string(&relay.note(news.clone())).unwrap();
            let read: Note = serde_json::from_str(&written).unwrap();
            assert_eq!(format!("{:?}", read.news), format!("{news:?}"));
        }
    }

    #[test]
    fn a_note_too_long_to_notify_is_stored_and_named() {
        let (relay, _queue) = Relay::new();
        let short = relay.notifying(News::Alive {
            tables: vec!["orders".into()],
            generation: 1,
        });
        assert_eq!(short.len(), 1, "a short note is notified whole");
        let long = relay.notifying(News::Alive {
            tables: vec!["t".repeat(100); 100],
            generation: 1,
        });
        assert_eq!(long.len(), 2, "stored, then named by the notification");
    }

    #[test]
    fn peers_are_known_by_what_they_watch_until_they_go_silent() {
        let peers = Peers::default();
        assert!(peers.saw("a"), "a new instance");
        assert!(
            peers.watches("a", vec!["orders".into()], 1),
            "news: acknowledged"
        );
        assert!(
            !peers.watches("a", vec!["orders".into()], 1),
            "heard before"
        );
        assert!(peers.want("orders"));
        assert!(!peers.want("items"));
        assert!(!peers.all_acknowledged(1));
        peers.acknowledge("a", 1);
        assert!(peers.all_acknowledged(1));
        assert!(!peers.saw("a"), "known");
        assert!(peers.gone().is_empty());
        peers.write().get_mut("a").unwrap().seen = Instant::now().checked_sub(PEER_LIFETIME * 2);
        assert_eq!(peers.gone(), vec!["a".to_owned()]);
        assert!(!peers.want("orders"));
        assert!(peers.all_acknowledged(5), "no one left to wait for");
    }
}
