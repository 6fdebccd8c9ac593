//! Realtime as supabase-js's `channel()` speaks it (the Phoenix channel
//! protocol of Supabase Realtime): the frames, this instance's topics, one
//! socket's side (joins, broadcast, presence), row changes delivered under
//! each subscriber's own `select` decision, private channels under the
//! realtime policies, and the bus that makes several instances one.

pub mod bus;
pub mod connection;
pub mod feed;
pub mod hub;
pub mod limits;
pub mod protocol;

use std::collections::HashSet;
use std::sync::Arc;

use gatehouse_db::Database;
use gatehouse_rest::Rest;

/// One instance's realtime: its topics, its row-change feed, who holds its
/// sockets, its bounds, and the policies of its private channels.
pub struct Realtime {
    pub hub: Arc<hub::Hub>,
    pub feed: Arc<feed::Feed>,
    pub admission: limits::Admission,
    pub limits: limits::Limits,
    /// `[[realtime.policies]]`, over `realtime.messages`: none, none joins.
    pub private: gatehouse_policy::TablePolicies,
}

/// How an instance finds the others.
pub enum Sharing {
    /// It is alone (SQLite, one instance).
    Alone,
    /// Through the deployment's PostgreSQL database (`LISTEN`/`NOTIFY`).
    Postgres,
    /// Through Redis pub/sub, on a channel of the deployment's own.
    Redis(redis::Client, String),
}

impl Sharing {
    /// Through the Redis at `url` (connected when first used), on the
    /// channel of the deployment named `deployment`: one Redis may serve
    /// several deployments, and none hears another's rows.
    pub fn redis(url: &secrecy::SecretString, deployment: &str) -> Result<Self, String> {
        use secrecy::ExposeSecret;
        // The parser's message could quote the URL, password included.
        let client = redis::Client::open(url.expose_secret())
            .map_err(|_| "GATEHOUSE_REDIS_URL is not a valid redis:// URL".to_owned())?;
        Ok(Sharing::Redis(
            client,
            format!("gatehouse_realtime:{deployment}"),
        ))
    }
}

impl Realtime {
    /// Realtime over `rest` and `db`, its tasks started on the current
    /// runtime, shared with the other instances as `sharing` says.
    pub fn start(
        (rest, db): (Arc<Rest>, Database),
        full_old_rows: HashSet<String>,
        sharing: Sharing,
        (limits, private): (limits::Limits, gatehouse_policy::TablePolicies),
    ) -> Self {
        let (hub, feed) = match sharing {
            Sharing::Alone => (
                hub::Hub::new(),
                feed::Feed::start((rest, db), full_old_rows, feed::Publish::Here),
            ),
            Sharing::Postgres | Sharing::Redis(..) => {
                let (relay, outgoing) = bus::Relay::new();
                let (transport, publish) = match sharing {
                    Sharing::Redis(client, channel) => (
                        bus::Transport::Redis(client, channel),
                        feed::Publish::AfterCommit(relay.clone()),
                    ),
                    _ => (
                        bus::Transport::Postgres(db.clone()),
                        feed::Publish::InTransaction(relay.clone()),
                    ),
                };
                let hub = hub::Hub::relaying(relay.clone());
                let feed = feed::Feed::start((rest, db), full_old_rows, publish);
                bus::start(transport, (relay, outgoing), hub.clone(), feed.clone());
                (hub, feed)
            }
        };
        Self {
            hub,
            feed,
            admission: limits::Admission::default(),
            limits,
            private,
        }
    }
}
