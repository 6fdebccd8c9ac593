//! Cron: declared schedules that enqueue a job for their function at each
//! tick, once across every instance. Each schedule keeps its next tick in
//! `gatehouse_cron`; an instance that finds the tick due moves it to the next
//! one after now with a conditional update and, in the same transaction,
//! enqueues the job keyed by the tick. Only one instance's update can match,
//! and ticks missed while every instance was down collapse into one run.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use gatehouse_db::{Database, DbError, Sql, Statement, timestamp};
use serde_json::json;
use time::OffsetDateTime;
use tokio::sync::{Notify, watch};

use crate::{NewJob, Settings, enqueue};

/// One `[[cron]]` entry, parsed.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub name: String,
    pub function: String,
    pub queue: String,
    cron: croner::Cron,
    zone: Tz,
}

impl Schedule {
    /// `pattern` is a standard 5-field expression (a sixth, leading field for
    /// seconds is allowed) or a nickname such as `@hourly`; `zone` an IANA
    /// name such as `Europe/Paris`, in which the fields are read.
    pub fn new(
        name: &str,
        (pattern, zone): (&str, &str),
        function: &str,
        queue: &str,
    ) -> Result<Self, String> {
        let cron = croner::Cron::from_str(pattern)
            .map_err(|error| format!("cron {name}: schedule {pattern:?}: {error}"))?;
        let zone = Tz::from_str(zone)
            .map_err(|_| format!("cron {name}: {zone:?} is not an IANA time zone"))?;
        Ok(Self {
            name: name.to_owned(),
            function: function.to_owned(),
            queue: queue.to_owned(),
            cron,
            zone,
        })
    }

    /// The first tick strictly after `now`.
    fn next_after(&self, now: OffsetDateTime) -> Option<OffsetDateTime> {
        let now = DateTime::<Utc>::from_timestamp(now.unix_timestamp(), now.nanosecond())?
            .with_timezone(&self.zone);
        let next = self.cron.find_next_occurrence(&now, false).ok()?;
        let nanos = next.with_timezone(&Utc).timestamp_nanos_opt()?;
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(nanos)).ok()
    }
}

const NEXT: Sql = Sql::both("SELECT next_at FROM gatehouse_cron WHERE name = $1");

const FIRST: Sql = Sql::both(
    "INSERT INTO gatehouse_cron (name, next_at) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
);

/// Moves a due tick on; matches nothing when another instance already did.
const ADVANCE: Sql = Sql::both(
    "UPDATE gatehouse_cron SET next_at = $3 WHERE name = $1 AND next_at = $2 RETURNING name",
);

/// Looks at each schedule every `every` (a second is the finest a schedule
/// can ask for) until `stop`, waking `wake` when it enqueued.
pub fn spawn(
    db: Database,
    (schedules, settings): (Vec<Schedule>, Arc<Settings>),
    wake: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let mut enqueued = false;
            for schedule in &schedules {
                match tick(&db, &settings, schedule).await {
                    Ok(ran) => enqueued |= ran,
                    Err(error) => {
                        tracing::error!(cron = %schedule.name, %error, "a cron tick could not be taken");
                    }
                }
            }
            if enqueued {
                wake.notify_waiters();
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(250)) => {}
                _ = stop.wait_for(|stopped| *stopped) => return,
            }
        }
    })
}

/// Takes `schedule`'s tick if it is due and no other instance took it;
/// returns whether this instance enqueued its job.
pub async fn tick(
    db: &Database,
    settings: &Settings,
    schedule: &Schedule,
) -> Result<bool, DbError> {
    let now = OffsetDateTime::now_utc();
    let Some(next) = schedule.next_after(now) else {
        return Ok(false);
    };
    let rows = db
        .query(Statement::new(&NEXT, vec![schedule.name.as_str().into()]))
        .await?;
    let Some(due) = rows.first() else {
        // First sight of this schedule: its first tick is the next one.
        db.transaction(vec![Statement::new(
            &FIRST,
            vec![schedule.name.as_str().into(), timestamp(next).into()],
        )])
        .await?;
        return Ok(false);
    };
    let due = due.text(0)?.to_owned();
    if due > timestamp(now) {
        return Ok(false);
    }
    let job = NewJob {
        queue: schedule.queue.clone(),
        key: Some(format!("cron:{}:{due}", schedule.name)),
        ..NewJob::new(&schedule.function, json!({}))
    };
    let enqueue = match enqueue(settings, &job) {
        Ok(statement) => statement,
        Err(error) => {
            tracing::error!(cron = %schedule.name, %error, "a cron job cannot be enqueued");
            return Ok(false);
        }
    };
    let advance = Statement::new(
        &ADVANCE,
        vec![
            schedule.name.as_str().into(),
            due.into(),
            timestamp(next).into(),
        ],
    );
    // The job only with the tick: if another instance moved it first, neither.
    let taken = db
        .transaction_if(vec![advance, enqueue], |rows| !rows[0].is_empty())
        .await?;
    Ok(taken.is_some())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use time::macros::datetime;

    #[test]
    fn ticks_are_read_in_the_schedule_s_time_zone() {
        let nine_in_paris =
            Schedule::new("digest", ("0 9 * * *", "Europe/Paris"), "f", "default").unwrap();
        // UTC+1 in winter, UTC+2 in summer.
        assert_eq!(
            nine_in_paris.next_after(datetime!(2026-01-15 00:00 UTC)),
            Some(datetime!(2026-01-15 08:00 UTC))
        );
        assert_eq!(
            nine_in_paris.next_after(datetime!(2026-07-15 00:00 UTC)),
            Some(datetime!(2026-07-15 07:00 UTC))
        );
        let hourly = Schedule::new("h", ("@hourly", "UTC"), "f", "default").unwrap();
        assert_eq!(
            hourly.next_after(datetime!(2026-07-15 10:00 UTC)),
            Some(datetime!(2026-07-15 11:00 UTC)),
            "strictly after: a tick at now is the one just taken"
        );
    }

    #[test]
    fn a_bad_schedule_or_zone_is_named() {
        let bad = Schedule::new("x", ("61 * * * *", "UTC"), "f", "default").unwrap_err();
        assert!(bad.contains("cron x"), "{bad}");
        let zone = Schedule::new("x", ("* * * * *", "Mars/Olympus"), "f", "default").unwrap_err();
        assert!(zone.contains("Mars/Olympus"), "{zone}");
    }
}
