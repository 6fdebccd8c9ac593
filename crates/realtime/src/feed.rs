//! Row changes, from the commit to each subscriber entitled to them. The data
//! API hands every committed write of a watched table to the [`Feed`] (it is
//! one of rest's [`AfterWrite`] followers); one task delivers them in the
//! order their commits were heard, each to the subscriptions whose bindings
//! and filters match and whose `select` decision holds for the row, evaluated
//! as that subscriber by the database (see `gatehouse_rest::Sight`), with only
//! the columns its grants let it read.
//!
//! Invariants: a change never reaches a subscriber whose read of the row
//! would have come back empty; the old row of an update or delete carries
//! only the primary key unless its table keeps old rows in full; a
//! subscription whose token has expired receives nothing until it is renewed;
//! nothing waits on a socket (each goes through its bounded [`Outbox`]); the
//! queue from commits to the delivering task is bounded, and a change that
//! finds it full is dropped and logged rather than stalling writes.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock, Weak};
use std::time::{SystemTime, UNIX_EPOCH};

use gatehouse_db::Database;
use gatehouse_rest::{
    AfterWrite, Event, Followed, Rest, RestError, RowChange, Sight, text_to_json,
};
use gatehouse_schema::ColumnType;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json, json};
use tokio::sync::{mpsc, watch};

use crate::bus::{News, Peers, Relay};
use crate::hub::Outbox;
use crate::protocol::Message;

/// Changes that may wait between their commits and their delivery.
const QUEUED_CHANGES: usize = 4096;
/// The longest a join waits for the other instances to learn of its table.
const ANNOUNCE_WAIT: std::time::Duration = std::time::Duration::from_secs(1);
/// Values an `in` filter may list (Realtime's own bound).
const MOST_IN_VALUES: usize = 100;

/// One committed change of one row, every column of it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Change {
    table: String,
    #[serde(with = "event_name")]
    event: Event,
    new: Option<Map<String, Json>>,
    old: Option<Map<String, Json>>,
    /// When its commit was heard, as Realtime writes `commit_timestamp`
    /// (empty until it is).
    #[serde(default)]
    committed_at: String,
}

/// An event as PostgreSQL's `TG_OP` names it, between instances.
mod event_name {
    use gatehouse_rest::Event;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(event: &Event, to: S) -> Result<S::Ok, S::Error> {
        to.serialize_str(event.name())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(from: D) -> Result<Event, D::Error> {
        let name = String::deserialize(from)?;
        [Event::Insert, Event::Update, Event::Delete]
            .into_iter()
            .find(|event| event.name() == name)
            .ok_or_else(|| serde::de::Error::custom(format!("no event {name}")))
    }
}

/// How the changes of this instance's writes reach the delivering tasks.
pub enum Publish {
    /// Straight to this instance's own (it is alone).
    Here,
    /// Notified to every instance from inside the write's transaction
    /// (PostgreSQL's NOTIFY: in commit order, never for a rollback).
    InTransaction(Relay),
    /// Relayed to every instance once the write commits (Redis).
    AfterCommit(Relay),
}

/// Why row-change bindings cannot be had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// The caller may not read what they name (another caller may).
    Denied(String),
    /// They name nothing that exists, or are malformed.
    Invalid(String),
}

impl Refused {
    pub fn reason(&self) -> &str {
        match self {
            Refused::Denied(reason) | Refused::Invalid(reason) => reason,
        }
    }
}

impl From<RestError> for Refused {
    fn from(error: RestError) -> Self {
        match error {
            RestError::TableDenied(_) | RestError::ColumnDenied { .. } | RestError::UnknownRole => {
                Refused::Denied(error.to_string())
            }
            other => Refused::Invalid(other.to_string()),
        }
    }
}

/// `column=op.value`, as realtime-js sends a binding's `filter`.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    column: String,
    op: FilterOp,
    values: Vec<Json>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FilterOp {
    Eq,
    Neq,
    Lt,
    Lte,
    Gt,
    Gte,
    In,
}

impl Filter {
    /// Parses `filter` against what `sight` may read: the column must be
    /// readable (a filter on a hidden column would reveal it) and the values
    /// of its type.
    pub fn parse(filter: &str, sight: &Sight) -> Result<Self, Refused> {
        let invalid = || Refused::Invalid(format!("invalid filter: {filter}"));
        let (column, rest) = filter.split_once('=').ok_or_else(invalid)?;
        let (op, value) = rest.split_once('.').ok_or_else(invalid)?;
        let op = match op {
            "eq" => FilterOp::Eq,
            "neq" => FilterOp::Neq,
            "lt" => FilterOp::Lt,
            "lte" => FilterOp::Lte,
            "gt" => FilterOp::Gt,
            "gte" => FilterOp::Gte,
            "in" => FilterOp::In,
            other => {
                return Err(Refused::Invalid(format!(
                    "unsupported filter operator: {other}"
                )));
            }
        };
        let ty = sight
            .type_of(column)
            .ok_or_else(|| Refused::Denied(format!("permission denied for column {column}")))?;
        let texts: Vec<&str> = if op == FilterOp::In {
            let inner = value
                .strip_prefix('(')
                .and_then(|v| v.strip_suffix(')'))
                .ok_or_else(invalid)?;
            inner.split(',').map(str::trim).collect()
        } else {
            vec![value]
        };
        if texts.len() > MOST_IN_VALUES {
            return Err(Refused::Invalid(format!(
                "an in filter lists at most {MOST_IN_VALUES} values"
            )));
        }
        let values = texts
            .into_iter()
            .map(|text| {
                let text = text.trim_matches('"');
                text_to_json(ty, text)
                    .map_err(|problem| Refused::Invalid(format!("invalid filter value: {problem}")))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            column: column.to_owned(),
            op,
            values,
        })
    }

    /// Whether `row` passes. A NULL passes nothing, as in SQL.
    fn passes(&self, row: &Map<String, Json>) -> bool {
        let Some(value) = row.get(&self.column).filter(|value| !value.is_null()) else {
            return false;
        };
        let Some(wanted) = self.values.first() else {
            return false;
        };
        let order = || compare(value, wanted);
        match self.op {
            FilterOp::Eq => value == wanted,
            FilterOp::Neq => value != wanted,
            FilterOp::In => self.values.contains(value),
            FilterOp::Lt => order() == Some(std::cmp::Ordering::Less),
            FilterOp::Lte => order().is_some_and(std::cmp::Ordering::is_le),
            FilterOp::Gt => order() == Some(std::cmp::Ordering::Greater),
            FilterOp::Gte => order().is_some_and(std::cmp::Ordering::is_ge),
        }
    }
}

/// Numbers by value; text (timestamps and dates in their one canonical form
/// included) by its characters.
fn compare(a: &Json, b: &Json) -> Option<std::cmp::Ordering> {
    match (a, b) {
        (Json::Number(a), Json::Number(b)) => a.as_f64()?.partial_cmp(&b.as_f64()?),
        (Json::String(a), Json::String(b)) => Some(a.cmp(b)),
        _ => None,
    }
}

/// One `postgres_changes` binding of a channel: its id in the join reply,
/// the event it wants (`None`: every one) and its filter.
#[derive(Debug, Clone)]
pub struct Binding {
    pub id: u64,
    pub event: Option<Event>,
    pub filter: Option<Filter>,
}

impl Binding {
    fn matches(&self, change: &Change, row: &Map<String, Json>) -> bool {
        self.event.is_none_or(|event| event == change.event)
            && self.filter.as_ref().is_none_or(|filter| filter.passes(row))
    }
}

/// One channel's bindings on one table, delivered as one caller until its
/// token expires (a refreshed token replaces the subscription).
pub struct Subscription {
    pub table: String,
    pub topic: String,
    pub join_ref: Option<String>,
    pub outbox: Outbox,
    pub bindings: Vec<Binding>,
    pub sight: Sight,
    /// Seconds since the epoch from which the token no longer counts.
    pub expires_at: Option<u64>,
}

impl Subscription {
    /// Its sight, unless its token has expired by `now`.
    fn current(&self, now: u64) -> Option<&Sight> {
        self.expires_at
            .is_none_or(|at| now < at)
            .then_some(&self.sight)
    }
}

/// This instance's row-change subscriptions and the task delivering to them.
pub struct Feed {
    rest: Arc<Rest>,
    db: Database,
    /// Tables whose old rows are sent whole (`replica_identity = "full"`).
    full_old_rows: HashSet<String>,
    subscriptions: RwLock<HashMap<String, Vec<Arc<Subscription>>>>,
    queue: mpsc::Sender<Change>,
    publish: Publish,
    /// The other instances, whose subscribers' tables count as watched here.
    peers: Arc<Peers>,
    /// Bumped whenever the set of tables watched here changes (the other
    /// instances acknowledge each count they hear).
    interest: watch::Sender<u64>,
}

impl Feed {
    /// The feed, with its delivering task started on the current runtime; the
    /// task ends when the feed is dropped.
    pub fn start(
        (rest, db): (Arc<Rest>, Database),
        full_old_rows: HashSet<String>,
        publish: Publish,
    ) -> Arc<Self> {
        let (queue, changes) = mpsc::channel(QUEUED_CHANGES);
        let peers = match &publish {
            Publish::Here => Arc::default(),
            Publish::InTransaction(relay) | Publish::AfterCommit(relay) => relay.peers().clone(),
        };
        let feed = Arc::new(Self {
            rest,
            db,
            full_old_rows,
            subscriptions: RwLock::default(),
            queue,
            publish,
            peers,
            interest: watch::Sender::new(0),
        });
        tokio::spawn(deliver_all(Arc::downgrade(&feed), changes));
        feed
    }

    /// The data API, whose decisions the subscriptions are made of.
    pub fn rest(&self) -> &Rest {
        &self.rest
    }

    /// The database the decisions are made by.
    pub fn db(&self) -> &Database {
        &self.db
    }

    pub fn subscribe(&self, subscription: Subscription) -> Arc<Subscription> {
        let subscription = Arc::new(subscription);
        let mut tables = self.write();
        let list = tables.entry(subscription.table.clone()).or_default();
        if list.is_empty() {
            self.interest.send_modify(|count| *count += 1);
        }
        list.push(subscription.clone());
        subscription
    }

    pub fn unsubscribe(&self, subscription: &Arc<Subscription>) {
        let mut tables = self.write();
        if let Some(list) = tables.get_mut(&subscription.table) {
            list.retain(|other| !Arc::ptr_eq(other, subscription));
            if list.is_empty() {
                tables.remove(&subscription.table);
                self.interest.send_modify(|count| *count += 1);
            }
        }
    }

    /// The tables someone here watches.
    pub fn tables(&self) -> Vec<String> {
        self.subscriptions
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .keys()
            .cloned()
            .collect()
    }

    /// Follows changes of the tables watched here.
    pub fn interest(&self) -> watch::Receiver<u64> {
        self.interest.subscribe()
    }

    /// How many times the tables watched here have changed.
    pub fn generation(&self) -> u64 {
        *self.interest.borrow()
    }

    /// Waits (briefly) until every other instance has acknowledged the
    /// tables watched here: from then on each of them publishes their
    /// changes, so a subscriber told it is subscribed hears a write made on
    /// another instance right after.
    pub async fn until_announced(&self) {
        // Alone, no one is known: nothing to wait for.
        let wanted = self.generation();
        let mut acknowledgements = self.peers.acknowledgements();
        let all = async {
            while !self.peers.all_acknowledged(wanted) {
                if acknowledgements.changed().await.is_err() {
                    return;
                }
            }
        };
        if tokio::time::timeout(ANNOUNCE_WAIT, all).await.is_err() {
            tracing::warn!(
                "the other realtime instances did not acknowledge a subscription in time"
            );
        }
    }

    /// A change heard from the bus (this instance's writes' too).
    pub fn hear(&self, mut change: Change) {
        if change.committed_at.is_empty() {
            change.committed_at = timestamp_now();
        }
        enqueue(&self.queue, change);
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Vec<Arc<Subscription>>>> {
        self.subscriptions
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn subscribers(&self, table: &str) -> Vec<Arc<Subscription>> {
        self.subscriptions
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(table)
            .cloned()
            .unwrap_or_default()
    }

    /// Delivers one change to every subscription entitled to it.
    async fn deliver(&self, change: Change) {
        // The row a read would have found: the new one, or the one removed.
        let Some(row) = change.new.as_ref().or(change.old.as_ref()) else {
            return;
        };
        let now = unix_now();
        let subscribers = self.subscribers(&change.table);
        let mut candidates = Vec::new();
        for subscription in &subscribers {
            let ids: Vec<u64> = subscription
                .bindings
                .iter()
                .filter(|binding| binding.matches(&change, row))
                .map(|binding| binding.id)
                .collect();
            if ids.is_empty() {
                continue;
            }
            if let Some(sight) = subscription.current(now) {
                candidates.push((subscription, ids, sight));
            }
        }
        if candidates.is_empty() {
            return;
        }
        let sights: Vec<&Sight> = candidates.iter().map(|(_, _, sight)| *sight).collect();
        let seen = match self
            .rest
            .seen_by(&self.db, &change.table, row, &sights)
            .await
        {
            Ok(seen) => seen,
            Err(error) => {
                tracing::error!(table = %change.table, %error, "a row change could not be delivered");
                return;
            }
        };
        let full_old = self.full_old_rows.contains(&change.table);
        for ((subscription, ids, sight), seen) in candidates.iter().zip(seen) {
            if seen {
                subscription.outbox.message(&message(
                    subscription,
                    &change,
                    (ids, sight),
                    full_old,
                ));
            }
        }
    }
}

/// The `postgres_changes` message for one subscription, in Realtime's shape.
fn message(
    subscription: &Subscription,
    change: &Change,
    (ids, sight): (&[u64], &Sight),
    full_old: bool,
) -> Message {
    let record = change
        .new
        .as_ref()
        .map_or_else(Map::new, |row| sight.trim(row, false));
    let old_record = change
        .old
        .as_ref()
        .map_or_else(Map::new, |row| sight.trim(row, !full_old));
    let columns: Vec<Json> = sight
        .columns()
        .map(|(name, ty)| json!({"name": name, "type": udt_name(ty)}))
        .collect();
    Message {
        join_ref: subscription.join_ref.clone(),
        reference: None,
        topic: subscription.topic.clone(),
        event: "postgres_changes".into(),
        payload: json!({
            "ids": ids,
            "data": {
                "schema": "public",
                "table": change.table,
                "commit_timestamp": change.committed_at,
                "type": change.event.name(),
                "columns": columns,
                "record": record,
                "old_record": old_record,
                "errors": null,
            },
        }),
    }
}

/// PostgreSQL's name for a column type, as Realtime lists `columns` (the
/// client converts values by it).
fn udt_name(ty: ColumnType) -> &'static str {
    use gatehouse_schema::Element;
    match ty {
        ColumnType::Text => "text",
        ColumnType::Integer => "int4",
        ColumnType::Bigint => "int8",
        ColumnType::Numeric => "numeric",
        ColumnType::Boolean => "bool",
        ColumnType::Timestamptz => "timestamptz",
        ColumnType::Date => "date",
        ColumnType::Uuid => "uuid",
        ColumnType::Jsonb => "jsonb",
        ColumnType::Bytea => "bytea",
        ColumnType::Array(Element::Text) => "_text",
        ColumnType::Array(Element::Integer) => "_int4",
        ColumnType::Array(Element::Bigint) => "_int8",
        ColumnType::Array(Element::Uuid) => "_uuid",
    }
}

async fn deliver_all(feed: Weak<Feed>, mut changes: mpsc::Receiver<Change>) {
    while let Some(change) = changes.recv().await {
        let Some(feed) = feed.upgrade() else {
            return;
        };
        feed.deliver(change).await;
    }
}

/// Hands `change` to the delivering task, unless its queue is full.
fn enqueue(queue: &mpsc::Sender<Change>, change: Change) {
    if queue.try_send(change).is_err() {
        tracing::warn!("the realtime queue is full: a row change was not delivered");
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

fn timestamp_now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

impl AfterWrite for Feed {
    fn watches(&self, table: &str, event: Event) -> bool {
        self.peers.want(table) || self.watched_here(table, event)
    }

    fn after(&self, changes: &[RowChange<'_>]) -> Result<Followed, RestError> {
        let changes: Vec<Change> = changes
            .iter()
            .map(|change| Change {
                table: change.table.to_owned(),
                event: change.event,
                new: change.new.clone(),
                old: change.old.clone(),
                committed_at: String::new(),
            })
            .collect();
        let mut followed = Followed::default();
        match &self.publish {
            Publish::Here => {
                let queue = self.queue.clone();
                followed.on_commit.push(Box::new(move || {
                    let committed_at = timestamp_now();
                    for mut change in changes {
                        change.committed_at.clone_from(&committed_at);
                        enqueue(&queue, change);
                    }
                }));
            }
            // One note for the whole write: one statement more in its
            // transaction, however many rows it changed.
            Publish::InTransaction(relay) => {
                followed
                    .statements
                    .extend(relay.notifying(News::Changes { changes }));
            }
            Publish::AfterCommit(relay) => {
                let relay = relay.clone();
                followed
                    .on_commit
                    .push(Box::new(move || relay.tell(News::Changes { changes })));
            }
        }
        Ok(followed)
    }
}

impl Feed {
    fn watched_here(&self, table: &str, event: Event) -> bool {
        self.subscriptions
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(table)
            .is_some_and(|list| {
                list.iter().any(|subscription| {
                    subscription
                        .bindings
                        .iter()
                        .any(|binding| binding.event.is_none_or(|wanted| wanted == event))
                })
            })
    }
}
