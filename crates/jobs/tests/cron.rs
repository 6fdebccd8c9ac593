//! Cron on both databases: a due tick is taken by exactly one of many racing
//! instances, ticks missed while down run once, and schedulers of two
//! instances running side by side enqueue one job per tick.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Test helpers fail loudly by design.

mod common;

use common::open;

use std::sync::Arc;
use std::time::Duration;

use gatehouse_db::testing::TestDatabase;
use gatehouse_db::{Database, Sql, Statement};
use gatehouse_jobs::Settings;
use gatehouse_jobs::cron::{Schedule, spawn, tick};
use tokio::sync::{Notify, watch};

fn every_second() -> Schedule {
    Schedule::new("pulse", ("* * * * * *", "UTC"), "pulse", "default").unwrap()
}

const KEYS: Sql =
    Sql::both("SELECT unique_key FROM gatehouse_jobs WHERE function = 'pulse' ORDER BY unique_key");

async fn keys(db: &Database) -> Vec<String> {
    let rows = db.query(Statement::new(&KEYS, vec![])).await.unwrap();
    rows.iter()
        .map(|row| row.text(0).unwrap().to_owned())
        .collect()
}

const LONG_AGO: Sql =
    Sql::both("UPDATE gatehouse_cron SET next_at = '2026-01-01T00:00:00.000000Z'");

#[tokio::test]
async fn one_racer_takes_a_due_tick_and_missed_ticks_run_once() {
    for database in TestDatabase::all() {
        let (first, second) = (open(&database).await, open(&database).await);
        let settings = Settings::default();
        let schedule = every_second();
        assert!(
            !tick(&first, &settings, &schedule).await.unwrap(),
            "first sight only records"
        );
        // Every second since New Year was missed while no instance ran.
        first
            .transaction(vec![Statement::new(&LONG_AGO, vec![])])
            .await
            .unwrap();
        let racers = (0..8).map(|n| {
            let db = if n % 2 == 0 {
                first.clone()
            } else {
                second.clone()
            };
            let (settings, schedule) = (settings.clone(), schedule.clone());
            tokio::spawn(async move { tick(&db, &settings, &schedule).await.unwrap() })
        });
        let mut taken = 0;
        for racer in racers {
            taken += usize::from(racer.await.unwrap());
        }
        assert_eq!(taken, 1, "one instance takes the tick");
        assert_eq!(
            keys(&first).await,
            ["cron:pulse:2026-01-01T00:00:00.000000Z"]
        );
        assert!(
            !tick(&second, &settings, &schedule).await.unwrap(),
            "the next tick is in the future, not the next missed second"
        );
    }
}

#[tokio::test]
async fn two_instances_enqueue_one_job_per_tick() {
    for database in TestDatabase::all() {
        let settings = Arc::new(Settings::default());
        let (stop, stopped) = watch::channel(false);
        let mut schedulers = Vec::new();
        for _ in 0..2 {
            let db = open(&database).await;
            schedulers.push(spawn(
                db,
                (vec![every_second()], settings.clone()),
                Arc::new(Notify::new()),
                stopped.clone(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(4_500)).await;
        stop.send(true).unwrap();
        for scheduler in schedulers {
            scheduler.await.unwrap();
        }
        let keys = keys(&open(&database).await).await;
        // The first look records the schedule; each second after is one tick.
        assert!((3..=5).contains(&keys.len()), "{keys:?}");
        let seconds: Vec<&str> = keys.iter().map(|key| &key[..30]).collect();
        let mut distinct = seconds.clone();
        distinct.dedup();
        assert_eq!(distinct, seconds, "one job per tick: {keys:?}");
    }
}
