//! One socket's side of the protocol: heartbeats, joining and leaving
//! channels, broadcasts and presence on them, and row-change subscriptions.
//! The socket's task feeds it each frame; everything it answers goes out
//! through the socket's outbox.
//!
//! Invariants: a channel is reached only after its `phx_join` succeeded on
//! this socket; a private channel is joined, heard, sent and tracked on only
//! as the realtime policies allow (none: deny); a token a join presents is
//! verified before it counts,
//! and a channel's row changes are decided for the caller it names (else the
//! socket's API key) by the data API's own `select` decision.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use gatehouse_core::Identifier;
use gatehouse_db::Value;
use gatehouse_policy::Command;
use gatehouse_rest::{Caller, Event, RestError, Rows, Sight, decide, holds};
use serde_json::{Value as Json, json};

use crate::Realtime;
use crate::feed::{Binding, Filter, Refused, Subscription};
use crate::hub::{Member, MemberId, Outbox, topic_key};
use crate::limits::{Admitted, Rate};
use crate::protocol::{Incoming, Message, Payload};

/// A token a client presented, verified: who it makes the caller, until
/// when, and the session it stands for, if any.
pub struct Verified {
    pub caller: Caller,
    /// Seconds since the epoch.
    pub expires_at: Option<u64>,
    pub session: Option<Arc<dyn Session>>,
}

/// The sign-in session behind a token, checked again while its channels
/// stay open.
pub trait Session: Send + Sync {
    /// Whether it still stands (not signed out, its user neither banned nor deleted).
    fn live(&self) -> Pin<Box<dyn Future<Output = bool> + Send + '_>>;
}

pub type Verifying<'a> = Pin<Box<dyn Future<Output = Result<Verified, String>> + Send + 'a>>;

/// Checks a token a client presents (a join's or a refresh's `access_token`)
/// as every other surface checks it: signature, expiry, and a live session.
pub trait Verify: Send + Sync {
    /// `Err` carries the reason in Realtime's words (`InvalidJWTToken: …`).
    fn verify<'a>(&'a self, token: &'a str) -> Verifying<'a>;
}

struct Joined {
    join_ref: Option<String>,
    member: MemberId,
    ack: bool,
    presence_key: String,
    /// The row-change bindings the join asked for, made again for each token.
    requested: Vec<Json>,
    subscriptions: Vec<Arc<Subscription>>,
    /// The session of the token the channel holds, checked again from time to time.
    session: Option<Arc<dyn Session>>,
    /// The topic's key in the hub (a private channel's differs from a public
    /// one's of the same name).
    key: String,
    rights: Rights,
}

/// What a caller may do on a channel: everything on a public one; on a
/// private one, what the realtime policies allow.
#[derive(Debug, Clone, Copy)]
struct Rights {
    private: bool,
    hear_broadcast: bool,
    hear_presence: bool,
    send: bool,
    track: bool,
}

impl Rights {
    const PUBLIC: Rights = Rights {
        private: false,
        hear_broadcast: true,
        hear_presence: true,
        send: true,
        track: true,
    };

    fn key(&self, topic: &str) -> String {
        topic_key(topic, self.private)
    }
}

/// A join's bindings, by table: what the caller sees of it, and the bindings.
type Wanted = BTreeMap<String, (Sight, Vec<Binding>)>;

/// The socket's own standing: the API key it connected with (a join
/// presenting it, as supabase-js does before sign-in, needs no further
/// check) and the caller that key makes.
pub struct Keyed {
    pub api_key: String,
    pub caller: Caller,
}

pub struct Connection {
    realtime: Arc<Realtime>,
    outbox: Outbox,
    verify: Arc<dyn Verify>,
    keyed: Keyed,
    channels: HashMap<String, Joined>,
    /// The users this socket holds channels for, each counted once.
    users: HashMap<String, Admitted>,
    rate: Rate,
}

fn reply(message: &Message, status: &str, response: Json) -> Message {
    reply_to(
        (&message.join_ref, &message.reference, &message.topic),
        status,
        response,
    )
}

/// The `phx_reply` to the push naming `(join_ref, reference, topic)`.
fn reply_to(
    (join_ref, reference, topic): (&Option<String>, &Option<String>, &str),
    status: &str,
    response: Json,
) -> Message {
    Message {
        join_ref: join_ref.clone(),
        reference: reference.clone(),
        topic: topic.to_owned(),
        event: "phx_reply".into(),
        payload: json!({"status": status, "response": response}),
    }
}

/// `true`, `"true"`: Realtime takes either.
fn flag(value: &Json) -> bool {
    matches!(value, Json::Bool(true)) || value.as_str() == Some("true")
}

/// Row-change bindings one channel may ask for.
const MOST_BINDINGS: usize = 100;

/// The bindings a join asks for, by table, each with its id (its place in
/// the request, from 1), or why they cannot be had.
fn bindings(
    requested: &[Json],
    sight_of: &dyn Fn(&str) -> Result<Sight, Refused>,
    tables: &[&str],
) -> Result<Wanted, Refused> {
    if requested.len() > MOST_BINDINGS {
        return Err(Refused::Invalid(format!(
            "a channel asks for at most {MOST_BINDINGS} row-change bindings"
        )));
    }
    let mut by_table = Wanted::new();
    for (at, request) in requested.iter().enumerate() {
        let event = match request["event"].as_str() {
            Some("*") => None,
            Some("INSERT") => Some(Event::Insert),
            Some("UPDATE") => Some(Event::Update),
            Some("DELETE") => Some(Event::Delete),
            other => {
                return Err(Refused::Invalid(format!(
                    "invalid event: {}",
                    other.unwrap_or("none")
                )));
            }
        };
        if !matches!(request["schema"].as_str(), Some("public" | "*")) {
            return Err(Refused::Invalid(format!(
                "unknown schema: {}",
                request["schema"]
            )));
        }
        let table = request["table"].as_str().filter(|table| *table != "*");
        let every_table = table.is_none();
        let named: Vec<&str> = table.map_or_else(|| tables.to_vec(), |table| vec![table]);
        let filter = request["filter"].as_str().filter(|f| !f.is_empty());
        for table in named {
            let sight = match by_table.get(table) {
                Some((sight, _)) => sight.clone(),
                None => match sight_of(table) {
                    Ok(sight) => sight,
                    // Every table: those the caller may not read are not among them.
                    Err(_) if every_table => continue,
                    Err(reason) => return Err(reason),
                },
            };
            let filter = filter.map(|f| Filter::parse(f, &sight)).transpose()?;
            let entry = by_table
                .entry(table.to_owned())
                .or_insert_with(|| (sight, Vec::new()));
            entry.1.push(Binding {
                id: at as u64 + 1,
                event,
                filter,
            });
        }
    }
    Ok(by_table)
}

/// Why a send or track on a private channel is refused, in Realtime's words.
fn unwritable(topic: &str) -> String {
    format!(
        "Unauthorized: You do not have permissions to write to this Channel topic: {}",
        topic.trim_start_matches("realtime:")
    )
}

/// A join's reason for bindings that cannot be had.
fn unsubscribable(refused: &Refused) -> String {
    format!(
        "Unable to subscribe to changes with given parameters: {}",
        refused.reason()
    )
}

/// The `realtime.messages` row the realtime policies judge.
fn message_row(topic: &str, extension: &str) -> HashMap<Identifier, Value> {
    let column =
        |name: &str| Identifier::new(name).unwrap_or_else(|_| unreachable!("a fixed column name"));
    HashMap::from([
        (column("topic"), Value::Text(topic.to_owned())),
        (column("extension"), Value::Text(extension.to_owned())),
    ])
}

impl Connection {
    pub fn new(
        realtime: Arc<Realtime>,
        outbox: Outbox,
        verify: Arc<dyn Verify>,
        keyed: Keyed,
    ) -> Self {
        Self {
            rate: Rate::new(realtime.limits.messages_per_second),
            realtime,
            outbox,
            verify,
            keyed,
            channels: HashMap::new(),
            users: HashMap::new(),
        }
    }

    pub async fn receive(&mut self, incoming: Incoming) {
        let heartbeat = matches!(&incoming, Incoming::Message(m) if m.topic == "phoenix");
        if !heartbeat && !self.rate.allows() {
            let (join_ref, reference, topic) = match &incoming {
                Incoming::Message(message) => {
                    (&message.join_ref, &message.reference, &message.topic)
                }
                Incoming::Broadcast {
                    join_ref,
                    reference,
                    topic,
                    ..
                } => (join_ref, reference, topic),
            };
            if reference.is_some() {
                self.outbox.message(&reply_to(
                    (join_ref, reference, topic),
                    "error",
                    json!({"reason": "MessagePerSecondRateLimitReached: Too many messages per second"}),
                ));
            }
            return;
        }
        match incoming {
            Incoming::Broadcast {
                join_ref,
                reference,
                topic,
                event,
                payload,
            } => self.broadcast(
                Message {
                    join_ref,
                    reference,
                    topic,
                    event: "broadcast".into(),
                    payload: Json::Null,
                },
                &event,
                &payload,
            ),
            Incoming::Message(message) => self.message(message).await,
        }
    }

    async fn message(&mut self, message: Message) {
        match (message.topic.as_str(), message.event.as_str()) {
            ("phoenix", "heartbeat") => self.outbox.message(&reply(&message, "ok", json!({}))),
            (_, "phx_join") => self.join(message).await,
            (_, "phx_leave") => self.leave(&message),
            (_, "presence") => self.presence(&message),
            (_, "access_token") => self.refresh_token(&message).await,
            _ => self.unmatched(&message),
        }
    }

    fn unmatched(&self, message: &Message) {
        self.outbox.message(&reply(
            message,
            "error",
            json!({"reason": "unmatched topic"}),
        ));
    }

    fn refuse_join(&self, message: &Message, reason: String) {
        self.outbox
            .message(&reply(message, "error", json!({"reason": reason})));
    }

    /// Who a token makes the caller: the socket's key's caller for none (or
    /// the key itself), else the verified token's.
    async fn caller(&self, token: Option<&str>) -> Result<Verified, String> {
        match token {
            Some(token) if token != self.keyed.api_key => self.verify.verify(token).await,
            _ => Ok(Verified {
                caller: self.keyed.caller.clone(),
                expires_at: None,
                session: None,
            }),
        }
    }

    async fn join(&mut self, message: Message) {
        let Some(name) = message
            .topic
            .strip_prefix("realtime:")
            .filter(|name| !name.is_empty())
        else {
            return self.refuse_join(
                &message,
                "TopicNameRequired: You must provide a topic name".into(),
            );
        };
        let config = &message.payload["config"];
        let token = message.payload["access_token"].as_str();
        let verified = match self.caller(token).await {
            Ok(verified) => verified,
            Err(reason) => return self.refuse_join(&message, reason),
        };
        let rights = if flag(&config["private"]) {
            match self.rights(&verified.caller, name).await {
                Ok(rights) if rights.hear_broadcast => rights,
                Ok(_) => {
                    return self.refuse_join(
                        &message,
                        format!(
                            "Unauthorized: You do not have permissions to read from this Channel topic: {name}"
                        ),
                    );
                }
                Err(error) => {
                    tracing::error!(%error, "a private channel's policies could not be decided");
                    return self.refuse_join(
                        &message,
                        "Unauthorized: the channel's policies could not be decided".into(),
                    );
                }
            }
        } else {
            Rights::PUBLIC
        };
        let requested = config["postgres_changes"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let wanted = match self.wanted(&requested, &verified.caller) {
            Ok(wanted) => wanted,
            // Joined on the API key alone (supabase-js may join before its
            // token is at hand): the changes wait for a token that may read them.
            Err(Refused::Denied(_)) if token.is_none_or(|t| t == self.keyed.api_key) => {
                Wanted::new()
            }
            Err(refused) => return self.refuse_join(&message, unsubscribable(&refused)),
        };
        // A join again replaces the earlier one, as Phoenix does.
        if let Some(earlier) = self.channels.remove(&message.topic) {
            self.part(earlier);
        }
        if self.channels.len() >= self.realtime.limits.channels_per_connection {
            return self.refuse_join(
                &message,
                "ChannelRateLimitReached: Too many channels".into(),
            );
        }
        if let Some(user) = verified.caller.user_id()
            && !self.users.contains_key(user)
        {
            let most = self.realtime.limits.connections_per_user;
            let Some(admitted) = self.realtime.admission.user(user, most) else {
                return self.refuse_join(
                    &message,
                    "ConnectionRateLimitReached: Too many connected users".into(),
                );
            };
            self.users.insert(user.to_owned(), admitted);
        }
        let broadcast = &config["broadcast"];
        let key = rights.key(&message.topic);
        let member = self.realtime.hub.join(
            (&key, &message.topic),
            Member {
                outbox: self.outbox.clone(),
                receives_own: flag(&broadcast["self"]),
                hears_presence: rights.hear_presence,
            },
        );
        let presence = &config["presence"];
        let presence_key = presence["key"]
            .as_str()
            .filter(|key| !key.is_empty())
            .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned);
        let subscriptions = self.subscribe(
            (&message.topic, &message.join_ref),
            wanted,
            verified.expires_at,
        );
        if !subscriptions.is_empty() {
            self.realtime.feed.until_announced().await;
        }
        self.channels.insert(
            message.topic.clone(),
            Joined {
                join_ref: message.join_ref.clone(),
                member,
                ack: flag(&broadcast["ack"]),
                presence_key,
                requested: requested.clone(),
                subscriptions,
                session: verified.session,
                key: key.clone(),
                rights,
            },
        );
        // Each requested binding is echoed with its id, in order, as the
        // client matches them.
        let echoed: Vec<Json> = requested
            .iter()
            .enumerate()
            .map(|(at, binding)| {
                let mut binding = binding.clone();
                binding["id"] = json!(at + 1);
                binding
            })
            .collect();
        self.outbox
            .message(&reply(&message, "ok", json!({"postgres_changes": echoed})));
        if !requested.is_empty() {
            self.system(
                (&message.topic, message.join_ref.clone()),
                "postgres_changes",
                ("ok", "Subscribed to PostgreSQL"),
            );
        }
        if flag(&presence["enabled"]) && rights.hear_presence {
            self.outbox.message(&Message {
                join_ref: message.join_ref.clone(),
                reference: None,
                topic: message.topic.clone(),
                event: "presence_state".into(),
                payload: self.realtime.hub.presence_state(&key),
            });
        }
    }

    /// What `caller` may do on the private channel `name`, by the realtime
    /// policies (`select` to hear, `insert` to send or track), decided by the
    /// database for broadcast and for presence.
    async fn rights(&self, caller: &Caller, name: &str) -> Result<Rights, RestError> {
        let policies = Some(&self.realtime.private);
        let hear = decide(caller, policies, Command::Select, Rows::Existing);
        let speak = decide(caller, policies, Command::Insert, Rows::Written);
        let keys = [hear.key(), speak.key()];
        let keys = [keys[0].as_str(), keys[1].as_str()];
        let mut decided = [[false; 2]; 2];
        for (at, extension) in ["broadcast", "presence"].into_iter().enumerate() {
            let values = message_row(name, extension);
            let both = holds(self.realtime.feed.db(), (&[&hear, &speak], &keys), &values).await?;
            decided[at] = [both[0], both[1]];
        }
        Ok(Rights {
            private: true,
            hear_broadcast: decided[0][0],
            send: decided[0][1],
            hear_presence: decided[1][0],
            track: decided[1][1],
        })
    }

    /// The bindings `requested` for `caller`.
    fn wanted(&self, requested: &[Json], caller: &Caller) -> Result<Wanted, Refused> {
        let rest = self.realtime.feed.rest();
        let tables: Vec<&str> = rest.tables().collect();
        let sight_of = |table: &str| rest.sight(caller, table).map_err(Refused::from);
        bindings(requested, &sight_of, &tables)
    }

    fn subscribe(
        &self,
        (topic, join_ref): (&str, &Option<String>),
        wanted: Wanted,
        expires_at: Option<u64>,
    ) -> Vec<Arc<Subscription>> {
        wanted
            .into_iter()
            .map(|(table, (sight, bindings))| {
                self.realtime.feed.subscribe(Subscription {
                    table,
                    topic: topic.to_owned(),
                    join_ref: join_ref.clone(),
                    outbox: self.outbox.clone(),
                    bindings,
                    sight,
                    expires_at,
                })
            })
            .collect()
    }

    fn system(
        &self,
        (topic, join_ref): (&str, Option<String>),
        extension: &str,
        (status, text): (&str, &str),
    ) {
        self.outbox.message(&Message {
            join_ref,
            reference: None,
            topic: topic.to_owned(),
            event: "system".into(),
            payload: json!({
                "extension": extension,
                "status": status,
                "message": text,
                "channel": topic.trim_start_matches("realtime:"),
            }),
        });
    }

    /// Leaves a channel's topic and its row changes.
    fn part(&self, joined: Joined) {
        self.realtime.hub.leave(&joined.key, joined.member);
        for subscription in &joined.subscriptions {
            self.realtime.feed.unsubscribe(subscription);
        }
    }

    fn leave(&mut self, message: &Message) {
        let Some(joined) = self.channels.remove(&message.topic) else {
            return self.unmatched(message);
        };
        let join_ref = joined.join_ref.clone();
        self.part(joined);
        self.outbox.message(&reply(message, "ok", json!({})));
        self.closed(&message.topic, join_ref);
    }

    fn closed(&self, topic: &str, join_ref: Option<String>) {
        self.outbox.message(&Message {
            join_ref: join_ref.clone(),
            reference: join_ref,
            topic: topic.to_owned(),
            event: "phx_close".into(),
            payload: json!({}),
        });
    }

    fn broadcast(&mut self, message: Message, event: &str, payload: &Payload) {
        let Some(joined) = self.channels.get(&message.topic) else {
            return self.unmatched(&message);
        };
        if !joined.rights.send {
            return self.outbox.message(&reply(
                &message,
                "error",
                json!({"reason": unwritable(&message.topic)}),
            ));
        }
        self.realtime
            .hub
            .broadcast(&joined.key, Some(joined.member), (event, payload));
        if joined.ack {
            self.outbox.message(&reply(&message, "ok", json!({})));
        }
    }

    fn presence(&mut self, message: &Message) {
        let Some(joined) = self.channels.get(&message.topic) else {
            return self.unmatched(message);
        };
        match message.payload["event"].as_str() {
            Some("track") if !joined.rights.track => {
                return self.outbox.message(&reply(
                    message,
                    "error",
                    json!({"reason": unwritable(&message.topic)}),
                ));
            }
            Some("track") => {
                let meta = &message.payload["payload"];
                if !meta.is_object() {
                    return self.outbox.message(&reply(
                        message,
                        "error",
                        json!({"reason": "Presence track payload must be a map"}),
                    ));
                }
                self.realtime
                    .hub
                    .track(&joined.key, joined.member, &joined.presence_key, meta);
            }
            Some("untrack") => self.realtime.hub.untrack(&joined.key, joined.member),
            _ => return self.outbox.message(&reply(message, "error", json!({}))),
        }
        self.outbox.message(&reply(message, "ok", json!({})));
    }

    /// A refreshed token for a channel: checked, and the channel's row
    /// changes decided for its caller from then on (resuming delivery a
    /// token's expiry stopped). One that fails, or whose caller may not read
    /// what the channel watches, closes the channel with a `system` message,
    /// as Realtime does. No reply either way.
    async fn refresh_token(&mut self, message: &Message) {
        let Some(token) = message.payload["access_token"].as_str() else {
            return;
        };
        let Some(requested) = self
            .channels
            .get(&message.topic)
            .map(|joined| joined.requested.clone())
        else {
            return;
        };
        let renewed = match self.caller(Some(token)).await {
            Ok(verified) => self
                .wanted(&requested, &verified.caller)
                .map(|wanted| (wanted, verified))
                .map_err(|refused| unsubscribable(&refused)),
            Err(reason) => Err(reason),
        };
        let Some(joined) = self.channels.get_mut(&message.topic) else {
            return;
        };
        match renewed {
            Ok((wanted, verified)) => {
                let earlier = std::mem::take(&mut joined.subscriptions);
                joined.session = verified.session;
                let join_ref = joined.join_ref.clone();
                for subscription in &earlier {
                    self.realtime.feed.unsubscribe(subscription);
                }
                let subscriptions =
                    self.subscribe((&message.topic, &join_ref), wanted, verified.expires_at);
                if let Some(joined) = self.channels.get_mut(&message.topic) {
                    joined.subscriptions = subscriptions;
                }
            }
            Err(reason) => self.close_channel(&message.topic, &reason),
        }
    }

    /// Leaves `topic` for the client, telling it why with a `system` error.
    fn close_channel(&mut self, topic: &str, reason: &str) {
        let Some(joined) = self.channels.remove(topic) else {
            return;
        };
        let join_ref = joined.join_ref.clone();
        self.part(joined);
        self.system((topic, join_ref.clone()), "system", ("error", reason));
        self.closed(topic, join_ref);
    }

    /// Checks again the sessions behind the channels: those whose session
    /// has ended (signed out, the user banned or deleted) are closed.
    pub async fn recheck_sessions(&mut self) {
        let mut ended = Vec::new();
        for (topic, joined) in &self.channels {
            if let Some(session) = &joined.session
                && !session.live().await
            {
                ended.push(topic.clone());
            }
        }
        for topic in ended {
            self.close_channel(&topic, "InvalidJWTToken: the session has ended");
        }
    }

    /// The socket closed: every channel is left.
    pub fn close(&mut self) {
        for joined in std::mem::take(&mut self.channels).into_values() {
            self.part(joined);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use tokio::sync::mpsc;

    use gatehouse_db::testing::TestDatabase;
    use gatehouse_db::{Database, MigrateOptions, PoolOptions};
    use gatehouse_policy::Role;
    use gatehouse_rest::{AfterWrite, RowChange};
    use serde_json::Map;

    use super::*;
    use crate::feed::Feed;
    use crate::hub::Hub;
    use crate::protocol::{Frame, Vsn, decode_binary, decode_text};

    struct Tokens;

    const ADA: &str = "00000000-0000-4000-8000-00000000000a";
    const BO: &str = "00000000-0000-4000-8000-00000000000b";

    impl Verify for Tokens {
        fn verify<'a>(&'a self, token: &'a str) -> Verifying<'a> {
            let user = match token {
                "ada" => Some(ADA),
                "bo" => Some(BO),
                _ => None,
            };
            Box::pin(async move {
                user.map(|id| Verified {
                    caller: Caller::delegated(Role::Authenticated, Some(id.into())),
                    expires_at: None,
                    session: None,
                })
                .ok_or_else(|| "InvalidJWTToken: Token has expired 5 seconds ago".into())
            })
        }
    }

    const TABLES: &str = r#"
[tables.orders]
columns.id = { type = "bigint", primary_key = true }
columns.owner_id = { type = "uuid", not_null = true }
columns.note = { type = "text" }
columns.total = { type = "integer" }
grants.authenticated.select = ["id", "owner_id", "total"]

[[tables.orders.policies]]
name = "own orders"
for = "select"
to = ["authenticated"]
using = "owner_id = auth.uid()"

[tables.secrets]
columns.id = { type = "bigint", primary_key = true }

# Not a table: the realtime policies, read from here by the tests.
[tables.lobby]
columns.id = { type = "bigint", primary_key = true }

[[tables.lobby.policies]]
name = "signed-in users hear the lobby"
for = "select"
to = "authenticated"
using = "topic = 'lobby'"

[[tables.lobby.policies]]
name = "and speak in it, without tracking"
for = "insert"
to = "authenticated"
with_check = "topic = 'lobby' and extension = 'broadcast'"
"#;

    /// A hub and a feed over a fresh SQLite database holding [`TABLES`], and
    /// the realtime policies.
    async fn realtime() -> (Arc<Hub>, Arc<Feed>, TestDatabase) {
        realtime_keeping(&[]).await
    }

    /// [`realtime`], with the old rows of the `full` tables sent whole.
    async fn realtime_keeping(full: &[&str]) -> (Arc<Hub>, Arc<Feed>, TestDatabase) {
        let test_db = TestDatabase::sqlite();
        let db = Database::open(&test_db.location(), PoolOptions::default())
            .await
            .unwrap();
        let (declaration, _) = declared();
        let schema = gatehouse_schema::Schema::from_declaration(&declaration).unwrap();
        db.migrate_schema(&schema, MigrateOptions::default())
            .await
            .unwrap();
        let policies = gatehouse_policy::Policies::compile(&declaration, &schema).unwrap();
        let rest = Arc::new(gatehouse_rest::Rest::new(
            schema,
            policies,
            gatehouse_rest::RestSettings::default(),
        ));
        let full = full.iter().map(|table| (*table).to_owned()).collect();
        let feed = Feed::start((rest, db), full, crate::feed::Publish::Here);
        (Hub::new(), feed, test_db)
    }

    /// The tables, and the lobby's policies apart from them.
    fn declared() -> (
        indexmap::IndexMap<String, gatehouse_schema::declaration::TableDecl>,
        Vec<gatehouse_schema::declaration::PolicyDecl>,
    ) {
        let mut declaration = gatehouse_schema::declaration::parse(TABLES).unwrap();
        let lobby = declaration.shift_remove("lobby").unwrap();
        (declaration, lobby.policies)
    }

    fn private_policies() -> gatehouse_policy::TablePolicies {
        let (declaration, lobby) = declared();
        let schema = gatehouse_schema::Schema::from_declaration(&declaration).unwrap();
        gatehouse_policy::Policies::compile_messages(&lobby, &schema).unwrap()
    }

    /// A connection on `hub` (2.0.0), and what it sends.
    fn connect((hub, feed): (&Arc<Hub>, &Arc<Feed>)) -> (Connection, mpsc::Receiver<Frame>) {
        let (outbox, frames, _cut) = Outbox::new(Vsn::V2, 64);
        let realtime = Arc::new(Realtime {
            hub: hub.clone(),
            feed: feed.clone(),
            admission: crate::limits::Admission::default(),
            limits: crate::limits::Limits::default(),
            private: private_policies(),
        });
        let connection = Connection::new(
            realtime,
            outbox,
            Arc::new(Tokens),
            Keyed {
                api_key: "sb_publishable_x".into(),
                caller: Caller::anon(),
            },
        );
        (connection, frames)
    }

    async fn send(connection: &mut Connection, frame: &str) {
        connection
            .receive(decode_text(Vsn::V2, frame).unwrap())
            .await;
    }

    fn sent(frames: &mut mpsc::Receiver<Frame>) -> Vec<Json> {
        let mut out = Vec::new();
        while let Ok(frame) = frames.try_recv() {
            out.push(match frame {
                Frame::Text(text) => serde_json::from_str(&text).unwrap(),
                Frame::Binary(bytes) => json!({"binary": bytes}),
            });
        }
        out
    }

    type Joined = (Connection, mpsc::Receiver<Frame>);

    /// The reason of the `system` error that closed a channel, followed by its `phx_close`.
    fn closed_with_reason(frames: &mut mpsc::Receiver<Frame>) -> String {
        let out = sent(frames);
        assert_eq!(out[0][3], "system");
        assert_eq!(out[0][4]["status"], "error");
        assert_eq!(out[1][3], "phx_close");
        out[0][4]["message"].as_str().unwrap().to_owned()
    }

    /// Ada and Bo joined to `realtime:room`, what they were sent so far read.
    async fn both_joined(hub: &Arc<Hub>, feed: &Arc<Feed>) -> (Joined, Joined) {
        let (mut ada, mut ada_frames) = connect((hub, feed));
        let (mut bo, mut bo_frames) = connect((hub, feed));
        send(&mut ada, JOIN).await;
        send(&mut bo, &JOIN.replace("\"ada\"", "\"bo\"")).await;
        sent(&mut ada_frames);
        sent(&mut bo_frames);
        ((ada, ada_frames), (bo, bo_frames))
    }

    const JOIN: &str = r#"["1","1","realtime:room","phx_join",{"config":{"broadcast":{"self":false,"ack":true},"presence":{"key":"ada","enabled":true},"postgres_changes":[],"private":false},"access_token":"sb_publishable_x"}]"#;

    #[tokio::test]
    async fn heartbeat_and_join_are_answered_as_realtime_does() {
        let (hub, feed, _db) = realtime().await;
        let (mut ada, mut frames) = connect((&hub, &feed));
        send(&mut ada, r#"[null,"7","phoenix","heartbeat",{}]"#).await;
        send(&mut ada, JOIN).await;
        let out = sent(&mut frames);
        assert_eq!(
            out[0],
            json!([null, "7", "phoenix", "phx_reply", {"status": "ok", "response": {}}])
        );
        assert_eq!(
            out[1],
            json!(["1", "1", "realtime:room", "phx_reply", {"status": "ok", "response": {"postgres_changes": []}}])
        );
        assert_eq!(
            out[2],
            json!(["1", null, "realtime:room", "presence_state", {}])
        );
    }

    #[tokio::test]
    async fn refused_joins_say_why() {
        let (hub, feed, _db) = realtime().await;
        let (mut ada, mut frames) = connect((&hub, &feed));
        send(
            &mut ada,
            r#"["1","1","realtime:secret","phx_join",{"config":{"private":true}}]"#,
        )
        .await;
        send(
            &mut ada,
            r#"["2","2","realtime:room","phx_join",{"config":{},"access_token":"stale"}]"#,
        )
        .await;
        send(
            &mut ada,
            r#"["3","3","realtime:","phx_join",{"config":{}}]"#,
        )
        .await;
        send(
            &mut ada,
            r#"[null,"4","realtime:never","presence",{"type":"presence","event":"track","payload":{}}]"#,
        ).await;
        let reasons: Vec<String> = sent(&mut frames)
            .iter()
            .map(|frame| frame[4]["response"]["reason"].as_str().unwrap().to_owned())
            .collect();
        assert!(reasons[0].starts_with("Unauthorized: "), "{reasons:?}");
        assert!(reasons[1].starts_with("InvalidJWTToken: "));
        assert!(reasons[2].starts_with("TopicNameRequired: "));
        assert_eq!(reasons[3], "unmatched topic");
    }

    #[tokio::test]
    async fn binary_broadcasts_reach_the_others_with_an_ack_to_the_sender() {
        let (hub, feed, _db) = realtime().await;
        let ((mut ada, mut ada_frames), (_bo, mut bo_frames)) = both_joined(&hub, &feed).await;
        let mut push = vec![3, 1, 1, 13, 6, 0, 1];
        push.extend_from_slice(b"12realtime:roomcursor{\"x\":3}");
        ada.receive(decode_binary(&push).unwrap()).await;
        assert_eq!(
            sent(&mut ada_frames),
            vec![json!(["1", "2", "realtime:room", "phx_reply", {"status": "ok", "response": {}}])],
            "the ack, not its own message (self is off)"
        );
        let received = sent(&mut bo_frames);
        let mut expected = vec![4u8, 13, 6, 0, 1];
        expected.extend_from_slice(b"realtime:roomcursor{\"x\":3}");
        assert_eq!(received, vec![json!({"binary": expected})]);
    }

    #[tokio::test]
    async fn presence_and_leaving_reach_the_others() {
        let (hub, feed, _db) = realtime().await;
        let ((mut ada, mut ada_frames), (mut bo, mut bo_frames)) = both_joined(&hub, &feed).await;
        send(
            &mut ada,
            r#"["1","5","realtime:room","presence",{"type":"presence","event":"track","payload":{"online_at":1}}]"#,
        ).await;
        let to_bo = sent(&mut bo_frames);
        let diff = to_bo.last().unwrap();
        assert_eq!(diff[3], "presence_diff");
        assert_eq!(diff[4]["joins"]["ada"]["metas"][0]["online_at"], 1);
        sent(&mut ada_frames);
        send(&mut ada, r#"["1","6","realtime:room","phx_leave",{}]"#).await;
        let to_ada = sent(&mut ada_frames);
        assert_eq!(to_ada[0][4]["status"], "ok");
        assert_eq!(to_ada[1][3], "phx_close");
        assert!(
            sent(&mut bo_frames)[0][4]["leaves"]["ada"].is_object(),
            "leaving untracks"
        );
        // A stale token on a refresh closes the channel with a system message.
        send(
            &mut bo,
            r#"["1","7","realtime:room","access_token",{"access_token":"stale"}]"#,
        )
        .await;
        assert!(closed_with_reason(&mut bo_frames).starts_with("InvalidJWTToken"));
        bo.close();
        assert_eq!(hub.presence_state("realtime:room"), json!({}));
    }

    const WATCH: &str = r#"["1","1","realtime:db","phx_join",{"config":{"postgres_changes":[{"event":"*","schema":"public","table":"orders"},{"event":"DELETE","schema":"public","table":"orders","filter":"total=gte.10"}]},"access_token":"TOKEN"}]"#;

    fn order(id: i64, owner: &str, total: i64) -> Map<String, Json> {
        json!({"id": id, "owner_id": owner, "note": "private", "total": total})
            .as_object()
            .unwrap()
            .clone()
    }

    /// Hands `change` to the feed as a committed write would.
    fn commit(feed: &Feed, change: RowChange<'_>) {
        assert!(feed.watches(change.table, change.event));
        for then in feed.after(&[change]).unwrap().on_commit {
            then();
        }
    }

    /// The next frame within a second.
    async fn next(frames: &mut mpsc::Receiver<Frame>) -> Json {
        let frame = tokio::time::timeout(std::time::Duration::from_secs(1), frames.recv())
            .await
            .expect("a frame arrived")
            .unwrap();
        match frame {
            Frame::Text(text) => serde_json::from_str(&text).unwrap(),
            Frame::Binary(_) => panic!("a text frame"),
        }
    }

    #[tokio::test]
    async fn a_change_reaches_only_subscribers_whose_select_policy_holds() {
        let (hub, feed, _db) = realtime().await;
        let (mut ada, mut ada_frames) = connect((&hub, &feed));
        let (mut bo, mut bo_frames) = connect((&hub, &feed));
        send(&mut ada, &WATCH.replace("TOKEN", "ada")).await;
        send(&mut bo, &WATCH.replace("TOKEN", "bo")).await;
        let joined = sent(&mut ada_frames);
        assert_eq!(
            joined[0][4]["response"]["postgres_changes"][1],
            json!({"event": "DELETE", "schema": "public", "table": "orders", "filter": "total=gte.10", "id": 2})
        );
        assert_eq!(joined[1][3], "system");
        assert_eq!(joined[1][4]["status"], "ok");
        sent(&mut bo_frames);

        commit(
            &feed,
            RowChange {
                table: "orders",
                event: Event::Insert,
                new: Some(order(1, ADA, 5)),
                old: None,
            },
        );
        commit(
            &feed,
            RowChange {
                table: "orders",
                event: Event::Delete,
                new: None,
                old: Some(order(2, BO, 50)),
            },
        );
        let to_ada = next(&mut ada_frames).await;
        assert_eq!(to_ada[3], "postgres_changes");
        let data = &to_ada[4]["data"];
        assert_eq!(to_ada[4]["ids"], json!([1]));
        assert_eq!(data["type"], "INSERT");
        assert_eq!(
            data["record"],
            json!({"id": 1, "owner_id": ADA, "total": 5}),
            "grants trim"
        );
        assert!(
            data["columns"]
                .as_array()
                .unwrap()
                .iter()
                .all(|c| c["name"] != "note")
        );
        // Bo's first delivery is his own delete: Ada's insert never reached him.
        let to_bo = next(&mut bo_frames).await;
        assert_eq!(to_bo[4]["data"]["type"], "DELETE");
        assert_eq!(to_bo[4]["ids"], json!([1, 2]), "both bindings match");
        assert_eq!(
            to_bo[4]["data"]["old_record"],
            json!({"id": 2}),
            "the key alone"
        );
        assert!(sent(&mut ada_frames).is_empty(), "Ada never sees Bo's row");

        // Leaving ends the subscription: the table is no longer watched.
        send(&mut ada, r#"["1","2","realtime:db","phx_leave",{}]"#).await;
        send(&mut bo, r#"["1","2","realtime:db","phx_leave",{}]"#).await;
        assert!(!feed.watches("orders", Event::Insert));
    }

    fn join_to(table: &str, filter: &str, token: &str) -> String {
        format!(
            r#"["1","1","realtime:db","phx_join",{{"config":{{"postgres_changes":[{{"event":"*","schema":"public","table":"{table}","filter":"{filter}"}}]}},"access_token":"{token}"}}]"#
        )
    }

    #[tokio::test]
    async fn joins_on_tables_or_columns_the_caller_may_not_read_are_refused() {
        let (hub, feed, _db) = realtime().await;
        let (mut client, mut frames) = connect((&hub, &feed));
        // Nobody has a policy on secrets; the note column is not granted (a
        // filter on a hidden column is an oracle); nowhere does not exist.
        for (table, filter, token) in [
            ("secrets", "", "ada"),
            ("orders", "note=eq.x", "ada"),
            ("orders", "total=eq.many", "ada"),
            ("nowhere", "", "sb_publishable_x"),
        ] {
            send(&mut client, &join_to(table, filter, token)).await;
            let reply = sent(&mut frames).remove(0);
            assert_eq!(reply[4]["status"], "error", "{table} {filter}");
            assert!(
                reply[4]["response"]["reason"]
                    .as_str()
                    .unwrap()
                    .starts_with("Unable to subscribe to changes with given parameters"),
                "{reply}"
            );
        }
        // Bindings are bounded.
        let binding = r#"{"event":"*","schema":"public","table":"orders"}"#;
        let many = vec![binding; MOST_BINDINGS + 1].join(",");
        send(
            &mut client,
            &format!(
                r#"["1","1","realtime:db","phx_join",{{"config":{{"postgres_changes":[{many}]}},"access_token":"ada"}}]"#
            ),
        )
        .await;
        assert_eq!(sent(&mut frames)[0][4]["status"], "error");
        assert!(!feed.watches("orders", Event::Insert));
    }

    #[tokio::test]
    async fn a_join_on_the_key_alone_waits_for_a_token_that_may_read() {
        let (hub, feed, _db) = realtime().await;
        let (mut client, mut frames) = connect((&hub, &feed));
        send(&mut client, &join_to("orders", "", "sb_publishable_x")).await;
        assert_eq!(sent(&mut frames)[0][4]["status"], "ok");
        assert!(
            !feed.watches("orders", Event::Insert),
            "anon may not read orders"
        );
        send(
            &mut client,
            r#"["1","2","realtime:db","access_token",{"access_token":"ada"}]"#,
        )
        .await;
        assert!(feed.watches("orders", Event::Insert), "Ada may");
        // A token whose caller may not read what the channel watches closes it.
        send(
            &mut client,
            &join_to("secrets", "", "sb_publishable_x").replace("realtime:db", "realtime:vault"),
        )
        .await;
        sent(&mut frames);
        send(
            &mut client,
            r#"["1","3","realtime:vault","access_token",{"access_token":"ada"}]"#,
        )
        .await;
        assert!(closed_with_reason(&mut frames).contains("permission denied for table secrets"));
    }

    #[tokio::test]
    async fn private_channels_follow_the_realtime_policies() {
        let (hub, feed, _db) = realtime().await;
        let (mut anon, mut anon_frames) = connect((&hub, &feed));
        let (mut ada, mut ada_frames) = connect((&hub, &feed));
        let (mut bo, mut bo_frames) = connect((&hub, &feed));
        let private = |topic: &str, token: &str| {
            format!(
                r#"["1","1","realtime:{topic}","phx_join",{{"config":{{"private":true,"broadcast":{{"ack":true}}}},"access_token":"{token}"}}]"#
            )
        };
        send(&mut anon, &private("lobby", "sb_publishable_x")).await;
        send(&mut ada, &private("vault", "ada")).await;
        for frames in [&mut anon_frames, &mut ada_frames] {
            let reply = sent(frames).remove(0);
            assert!(
                reply[4]["response"]["reason"]
                    .as_str()
                    .unwrap()
                    .starts_with("Unauthorized: ")
            );
        }
        send(&mut ada, &private("lobby", "ada")).await;
        assert_eq!(sent(&mut ada_frames)[0][4]["status"], "ok");
        // Bo joins the public channel of the same name: another topic.
        send(
            &mut bo,
            r#"["1","1","realtime:lobby","phx_join",{"config":{}}]"#,
        )
        .await;
        sent(&mut bo_frames);
        send(
            &mut ada,
            r#"["1","2","realtime:lobby","broadcast",{"type":"broadcast","event":"hi","payload":{}}]"#,
        )
        .await;
        assert_eq!(
            sent(&mut ada_frames)[0][4]["status"],
            "ok",
            "sending is allowed"
        );
        assert!(
            sent(&mut bo_frames).is_empty(),
            "the public channel hears nothing"
        );
        send(
            &mut ada,
            r#"["1","3","realtime:lobby","presence",{"type":"presence","event":"track","payload":{}}]"#,
        )
        .await;
        let refused = sent(&mut ada_frames).remove(0);
        assert!(
            refused[4]["response"]["reason"]
                .as_str()
                .unwrap()
                .contains("permissions to write")
        );
    }

    #[tokio::test]
    async fn a_table_keeping_full_old_rows_sends_them_trimmed_by_grants() {
        let (hub, feed, _db) = realtime_keeping(&["orders"]).await;
        let (mut ada, mut frames) = connect((&hub, &feed));
        send(&mut ada, &WATCH.replace("TOKEN", "ada")).await;
        sent(&mut frames);
        commit(
            &feed,
            RowChange {
                table: "orders",
                event: Event::Update,
                new: Some(order(1, ADA, 7)),
                old: Some(order(1, ADA, 5)),
            },
        );
        let data = &next(&mut frames).await[4]["data"];
        assert_eq!(data["type"], "UPDATE");
        assert_eq!(
            data["old_record"],
            json!({"id": 1, "owner_id": ADA, "total": 5})
        );
        assert_eq!(data["record"]["total"], 7);
    }
}
