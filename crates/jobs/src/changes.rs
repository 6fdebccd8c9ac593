//! Work that follows a table's committed changes: after triggers (declared
//! functions seeing the change) and outbound webhooks. The data API hands
//! every row a write made or removed to [`Changes`], which answers with one
//! job per row and follower, enqueued in the write's own transaction: a
//! rolled-back write leaves no job, a committed one cannot lose it.
//!
//! Each job's payload has the shape of Supabase's database webhooks:
//! `{ type, table, schema, record, old_record }`.

use std::sync::Arc;

use gatehouse_rest::{AfterWrite, Event, Followed, RestError, RowChange};
use serde_json::{Map, Value as Json, json};
use tokio::sync::Notify;

use crate::{Handler, MAX_CHANGE_PAYLOAD_BYTES, NewJob, Settings, enqueue_within};

/// What follows a change.
#[derive(Debug, Clone)]
pub enum Follower {
    /// A declared function, run as an after trigger.
    Trigger { function: String },
    /// An outbound webhook; `columns` limits what its rows carry.
    Webhook {
        name: String,
        columns: Option<Vec<String>>,
    },
}

/// One table's events and what follows them.
#[derive(Debug, Clone)]
pub struct Watch {
    pub table: String,
    pub events: Vec<Event>,
    pub follower: Follower,
    pub queue: String,
}

pub struct Changes {
    watches: Vec<Watch>,
    settings: Settings,
    wake: Arc<Notify>,
}

impl Changes {
    pub fn new(watches: Vec<Watch>, settings: Settings, wake: Arc<Notify>) -> Self {
        Self {
            watches,
            settings,
            wake,
        }
    }

    fn job(watch: &Watch, change: &RowChange<'_>) -> NewJob {
        let (handler, columns) = match &watch.follower {
            Follower::Trigger { function } => (Handler::AfterTrigger(function), None),
            Follower::Webhook { name, columns } => (Handler::Webhook(name), columns.as_deref()),
        };
        let limited = |row: &Option<Map<String, Json>>| match (row, columns) {
            (None, _) => Json::Null,
            (Some(row), None) => Json::Object(row.clone()),
            (Some(row), Some(columns)) => Json::Object(
                row.iter()
                    .filter(|(name, _)| columns.iter().any(|c| c == *name))
                    .map(|(name, value)| (name.clone(), value.clone()))
                    .collect(),
            ),
        };
        let payload = json!({
            "type": change.event.name(),
            "table": change.table,
            "schema": "public",
            "record": limited(&change.new),
            "old_record": limited(&change.old),
        });
        NewJob {
            queue: watch.queue.clone(),
            ..NewJob::new(&handler.column(), payload)
        }
    }
}

impl AfterWrite for Changes {
    fn watches(&self, table: &str, event: Event) -> bool {
        self.watches
            .iter()
            .any(|watch| watch.table == table && watch.events.contains(&event))
    }

    fn after(&self, changes: &[RowChange<'_>]) -> Result<Followed, RestError> {
        let mut statements = Vec::new();
        for change in changes {
            for watch in &self.watches {
                if watch.table != change.table || !watch.events.contains(&change.event) {
                    continue;
                }
                let job = Self::job(watch, change);
                let statement = enqueue_within(&self.settings, &job, MAX_CHANGE_PAYLOAD_BYTES)
                    .map_err(|error| {
                        RestError::TriggerFailed(format!(
                            "the change to {} cannot be queued for {}: {error}",
                            change.table, job.function
                        ))
                    })?;
                statements.push(statement);
            }
        }
        // The workers hear of the jobs once they exist.
        let wake = self.wake.clone();
        let on_commit: Vec<Box<dyn FnOnce() + Send>> = if statements.is_empty() {
            Vec::new()
        } else {
            vec![Box::new(move || wake.notify_waiters())]
        };
        Ok(Followed {
            statements,
            on_commit,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn watch(follower: Follower, events: &[Event]) -> Watch {
        Watch {
            table: "orders".into(),
            events: events.to_vec(),
            follower,
            queue: crate::DEFAULT_QUEUE.into(),
        }
    }

    #[test]
    fn a_change_becomes_a_job_in_supabases_webhook_shape() {
        let hook = watch(
            Follower::Webhook {
                name: "shipping".into(),
                columns: Some(vec!["id".into(), "status".into()]),
            },
            &[Event::Update],
        );
        let row = |status: &str| {
            json!({ "id": 7, "status": status, "secret_note": "x" })
                .as_object()
                .cloned()
        };
        let change = RowChange {
            table: "orders",
            event: Event::Update,
            new: row("paid"),
            old: row("pending"),
        };
        let job = Changes::job(&hook, &change);
        assert_eq!(job.function, "webhook:shipping");
        assert_eq!(
            job.payload,
            json!({
                "type": "UPDATE",
                "table": "orders",
                "schema": "public",
                "record": { "id": 7, "status": "paid" },
                "old_record": { "id": 7, "status": "pending" },
            })
        );
        let trigger = watch(
            Follower::Trigger {
                function: "notify".into(),
            },
            &[Event::Insert],
        );
        let insert = RowChange {
            event: Event::Insert,
            old: None,
            ..change
        };
        let job = Changes::job(&trigger, &insert);
        assert_eq!(job.function, "trigger:notify");
        assert_eq!(job.payload["old_record"], Json::Null);
        assert_eq!(job.payload["record"]["secret_note"], "x");
    }

    #[test]
    fn only_the_watched_events_are_followed() {
        let changes = Changes::new(
            vec![watch(
                Follower::Trigger {
                    function: "notify".into(),
                },
                &[Event::Insert, Event::Delete],
            )],
            Settings::default(),
            Arc::new(Notify::new()),
        );
        assert!(changes.watches("orders", Event::Insert));
        assert!(!changes.watches("orders", Event::Update));
        assert!(!changes.watches("customers", Event::Insert));
        let update = RowChange {
            table: "orders",
            event: Event::Update,
            new: Some(Map::new()),
            old: Some(Map::new()),
        };
        let followed = changes.after(&[update]).unwrap();
        assert!(followed.statements.is_empty() && followed.on_commit.is_empty());
    }
}
