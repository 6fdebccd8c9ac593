//! Two instances of one deployment on one PostgreSQL database, in one process:
//! broadcasts and presence cross between them, and keep crossing after the
//! database ends the connection an instance listens on.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Test helpers fail loudly by design.

use std::sync::Arc;
use std::time::Duration;

use gatehouse_db::testing::TestDatabase;
use gatehouse_db::{Database, MigrateOptions, PoolOptions, Statement};
use gatehouse_realtime::hub::{Member, Outbox};
use gatehouse_realtime::protocol::{Frame, Payload, Vsn};
use gatehouse_realtime::{Realtime, Sharing};
use serde_json::{Value as Json, json};
use tokio::sync::mpsc;

const TABLES: &str = r#"
[tables.notes]
columns.id = { type = "bigint", primary_key = true }
"#;

const ROOM: (&str, &str) = ("realtime:room", "realtime:room");

async fn instance(test_db: &TestDatabase) -> (Realtime, Database) {
    let db = Database::open(&test_db.location(), PoolOptions::default())
        .await
        .unwrap();
    let schema = gatehouse_schema::Schema::from_toml(TABLES).unwrap();
    db.migrate_schema(&schema, MigrateOptions::default())
        .await
        .unwrap();
    let declaration = gatehouse_schema::declaration::parse(TABLES).unwrap();
    let policies = gatehouse_policy::Policies::compile(&declaration, &schema).unwrap();
    let rest = Arc::new(gatehouse_rest::Rest::new(
        schema,
        policies,
        gatehouse_rest::RestSettings::default(),
    ));
    let realtime = Realtime::start(
        (rest, db.clone()),
        Default::default(),
        Sharing::Postgres,
        (Default::default(), Default::default()),
    );
    (realtime, db)
}

fn member(outbox: Outbox) -> Member {
    Member {
        outbox,
        receives_own: false,
        hears_presence: true,
    }
}

/// The next message on `frames` whose event is `event`, within `wait`.
async fn next_event(
    frames: &mut mpsc::Receiver<Frame>,
    event: &str,
    wait: Duration,
) -> Option<Json> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let frame = tokio::time::timeout_at(deadline, frames.recv())
            .await
            .ok()??;
        if let Frame::Text(text) = frame {
            let message: Json = serde_json::from_str(&text).unwrap();
            if message["event"] == event {
                return Some(message);
            }
        }
    }
}

/// Broadcasts from `from` until `frames` hears one (instances find each other
/// within moments of starting or of listening again).
async fn crosses(from: &Realtime, frames: &mut mpsc::Receiver<Frame>, n: u64) -> bool {
    for _ in 0..50 {
        from.hub
            .broadcast(ROOM.0, None, ("tick", &Payload::Json(json!({ "n": n }))));
        if let Some(message) = next_event(frames, "broadcast", Duration::from_millis(200)).await {
            assert_eq!(message["payload"]["payload"]["n"], n);
            return true;
        }
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcasts_and_presence_cross_instances_and_survive_a_lost_listener() {
    let Some(test_db) = TestDatabase::postgres() else {
        return;
    };
    let (here, db) = instance(&test_db).await;
    let (there, _) = instance(&test_db).await;
    let (outbox, mut frames, _) = Outbox::new(Vsn::V1, 256);
    there.hub.join(ROOM, member(outbox));
    let (local, _local_frames, _) = Outbox::new(Vsn::V1, 256);
    let tracker = here.hub.join(ROOM, member(local));

    assert!(crosses(&here, &mut frames, 1).await, "a broadcast crossed");

    here.hub.track(
        "realtime:room",
        tracker,
        "ada",
        &json!({"status": "online"}),
    );
    let diff = next_event(&mut frames, "presence_diff", Duration::from_secs(5))
        .await
        .expect("the other instance heard the track");
    assert_eq!(
        diff["payload"]["joins"]["ada"]["metas"][0]["status"],
        "online"
    );
    assert!(there.hub.presence_state("realtime:room")["ada"].is_object());

    // The database ends every listening connection: each instance listens again.
    let ended = Statement::compiled(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE datname = current_database() AND query LIKE 'LISTEN %'"
            .into(),
        vec![],
    );
    assert!(db.query(ended).await.unwrap()[0].integer(0).unwrap() >= 2);
    assert!(
        crosses(&here, &mut frames, 2).await,
        "crossing again after the loss"
    );
    // Greeting again, it resent its presence: still known over there.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(there.hub.presence_state("realtime:room")["ada"].is_object());
    while frames.try_recv().is_ok() {}

    here.hub.leave("realtime:room", tracker);
    let left = next_event(&mut frames, "presence_diff", Duration::from_secs(5))
        .await
        .expect("the other instance heard the leave");
    assert!(left["payload"]["leaves"]["ada"].is_object(), "{left}");
    assert_eq!(there.hub.presence_state("realtime:room"), json!({}));
}
