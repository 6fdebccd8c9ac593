//! Gatehouse's own tables, created and upgraded at open. Each migration runs in
//! one transaction that records its version first, so a failure leaves the
//! database as it was, and an instance racing another to the same version fails
//! on that record before touching the schema, then finds the work done. On
//! PostgreSQL an advisory lock also serialises the instances.

use crate::{Database, DbError, Result, Sql, Statement, Value};

struct Migration {
    version: i64,
    name: &'static str,
    steps: &'static [Sql],
}

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "meta",
        steps: &[Sql {
            sqlite: "CREATE TABLE IF NOT EXISTS gatehouse_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
            postgres: "CREATE TABLE IF NOT EXISTS gatehouse_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        }],
    },
    Migration {
        version: 2,
        name: "schema_versions",
        steps: &[Sql {
            sqlite: "CREATE TABLE IF NOT EXISTS gatehouse_schema_versions (version INTEGER PRIMARY KEY, \
                     applied_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP, declaration TEXT NOT NULL, \
                     statements TEXT NOT NULL)",
            postgres: "CREATE TABLE IF NOT EXISTS gatehouse_schema_versions (version BIGINT PRIMARY KEY, \
                       applied_at TIMESTAMPTZ NOT NULL DEFAULT now(), declaration TEXT NOT NULL, \
                       statements TEXT NOT NULL)",
        }],
    },
    Migration {
        version: 3,
        name: "auth",
        steps: &[
            Sql {
                sqlite: "CREATE TABLE IF NOT EXISTS gatehouse_users (id TEXT PRIMARY KEY, email TEXT UNIQUE, \
                         password_hash TEXT, email_confirmed_at TEXT, is_anonymous INTEGER NOT NULL DEFAULT 0, \
                         banned_until TEXT, user_metadata TEXT NOT NULL DEFAULT '{}', \
                         app_metadata TEXT NOT NULL DEFAULT '{}', created_at TEXT NOT NULL, \
                         updated_at TEXT NOT NULL, last_sign_in_at TEXT)",
                postgres: "CREATE TABLE IF NOT EXISTS gatehouse_users (id TEXT PRIMARY KEY, email TEXT UNIQUE, \
                           password_hash TEXT, email_confirmed_at TEXT, is_anonymous BOOLEAN NOT NULL DEFAULT FALSE, \
                           banned_until TEXT, user_metadata TEXT NOT NULL DEFAULT '{}', \
                           app_metadata TEXT NOT NULL DEFAULT '{}', created_at TEXT NOT NULL, \
                           updated_at TEXT NOT NULL, last_sign_in_at TEXT)",
            },
            Sql {
                sqlite: "CREATE TABLE IF NOT EXISTS gatehouse_sessions (id TEXT PRIMARY KEY, \
                         user_id TEXT NOT NULL REFERENCES gatehouse_users (id) ON DELETE CASCADE, \
                         created_at TEXT NOT NULL, refreshed_at TEXT, not_after TEXT NOT NULL, \
                         user_agent TEXT, ip TEXT)",
                postgres: "CREATE TABLE IF NOT EXISTS gatehouse_sessions (id TEXT PRIMARY KEY, \
                           user_id TEXT NOT NULL REFERENCES gatehouse_users (id) ON DELETE CASCADE, \
                           created_at TEXT NOT NULL, refreshed_at TEXT, not_after TEXT NOT NULL, \
                           user_agent TEXT, ip TEXT)",
            },
            Sql {
                sqlite: "CREATE INDEX IF NOT EXISTS gatehouse_sessions_user ON gatehouse_sessions (user_id)",
                postgres: "CREATE INDEX IF NOT EXISTS gatehouse_sessions_user ON gatehouse_sessions (user_id)",
            },
            Sql {
                sqlite: "CREATE TABLE IF NOT EXISTS gatehouse_refresh_tokens (token_hash TEXT PRIMARY KEY, \
                         session_id TEXT NOT NULL REFERENCES gatehouse_sessions (id) ON DELETE CASCADE, \
                         created_at TEXT NOT NULL, used_at TEXT)",
                postgres: "CREATE TABLE IF NOT EXISTS gatehouse_refresh_tokens (token_hash TEXT PRIMARY KEY, \
                           session_id TEXT NOT NULL REFERENCES gatehouse_sessions (id) ON DELETE CASCADE, \
                           created_at TEXT NOT NULL, used_at TEXT)",
            },
            Sql {
                sqlite: "CREATE INDEX IF NOT EXISTS gatehouse_refresh_tokens_session ON gatehouse_refresh_tokens (session_id)",
                postgres: "CREATE INDEX IF NOT EXISTS gatehouse_refresh_tokens_session ON gatehouse_refresh_tokens (session_id)",
            },
        ],
    },
    Migration {
        version: 4,
        name: "mail_and_one_time_tokens",
        steps: &[
            Sql {
                sqlite: "CREATE TABLE IF NOT EXISTS gatehouse_outbox (id TEXT PRIMARY KEY, recipient TEXT NOT NULL, \
                         subject TEXT NOT NULL, text_body TEXT NOT NULL, html_body TEXT NOT NULL, \
                         created_at TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, \
                         next_attempt_at TEXT NOT NULL, sent_at TEXT, last_error TEXT)",
                postgres: "CREATE TABLE IF NOT EXISTS gatehouse_outbox (id TEXT PRIMARY KEY, recipient TEXT NOT NULL, \
                           subject TEXT NOT NULL, text_body TEXT NOT NULL, html_body TEXT NOT NULL, \
                           created_at TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, \
                           next_attempt_at TEXT NOT NULL, sent_at TEXT, last_error TEXT)",
            },
            Sql {
                sqlite: "CREATE INDEX IF NOT EXISTS gatehouse_outbox_due ON gatehouse_outbox (sent_at, next_attempt_at)",
                postgres: "CREATE INDEX IF NOT EXISTS gatehouse_outbox_due ON gatehouse_outbox (sent_at, next_attempt_at)",
            },
            Sql {
                sqlite: "CREATE TABLE IF NOT EXISTS gatehouse_one_time_tokens (token_hash TEXT PRIMARY KEY, \
                         code_hash TEXT NOT NULL, user_id TEXT NOT NULL REFERENCES gatehouse_users (id) ON DELETE CASCADE, \
                         kind TEXT NOT NULL, email TEXT NOT NULL, redirect_to TEXT, created_at TEXT NOT NULL, \
                         expires_at TEXT NOT NULL, used_at TEXT)",
                postgres: "CREATE TABLE IF NOT EXISTS gatehouse_one_time_tokens (token_hash TEXT PRIMARY KEY, \
                           code_hash TEXT NOT NULL, user_id TEXT NOT NULL REFERENCES gatehouse_users (id) ON DELETE CASCADE, \
                           kind TEXT NOT NULL, email TEXT NOT NULL, redirect_to TEXT, created_at TEXT NOT NULL, \
                           expires_at TEXT NOT NULL, used_at TEXT)",
            },
            Sql {
                sqlite: "CREATE INDEX IF NOT EXISTS gatehouse_one_time_tokens_code ON gatehouse_one_time_tokens (email, code_hash)",
                postgres: "CREATE INDEX IF NOT EXISTS gatehouse_one_time_tokens_code ON gatehouse_one_time_tokens (email, code_hash)",
            },
        ],
    },
    Migration {
        version: 5,
        name: "cookie_sessions",
        steps: &[
            Sql {
                sqlite: "ALTER TABLE gatehouse_sessions ADD COLUMN cookie_hash TEXT",
                postgres: "ALTER TABLE gatehouse_sessions ADD COLUMN IF NOT EXISTS cookie_hash TEXT",
            },
            Sql {
                sqlite: "ALTER TABLE gatehouse_sessions ADD COLUMN csrf_hash TEXT",
                postgres: "ALTER TABLE gatehouse_sessions ADD COLUMN IF NOT EXISTS csrf_hash TEXT",
            },
            Sql {
                sqlite: "ALTER TABLE gatehouse_sessions ADD COLUMN last_seen_at TEXT",
                postgres: "ALTER TABLE gatehouse_sessions ADD COLUMN IF NOT EXISTS last_seen_at TEXT",
            },
            Sql {
                sqlite: "CREATE UNIQUE INDEX IF NOT EXISTS gatehouse_sessions_cookie ON gatehouse_sessions (cookie_hash)",
                postgres: "CREATE UNIQUE INDEX IF NOT EXISTS gatehouse_sessions_cookie ON gatehouse_sessions (cookie_hash)",
            },
        ],
    },
    Migration {
        version: 6,
        name: "sign_in_throttle_and_audit_log",
        steps: &[
            Sql {
                sqlite: "CREATE TABLE IF NOT EXISTS gatehouse_sign_in_throttle (key TEXT PRIMARY KEY, \
                         failures INTEGER NOT NULL, window_started_at TEXT NOT NULL, locked_until TEXT, \
                         locks INTEGER NOT NULL DEFAULT 0)",
                postgres: "CREATE TABLE IF NOT EXISTS gatehouse_sign_in_throttle (key TEXT PRIMARY KEY, \
                           failures BIGINT NOT NULL, window_started_at TEXT NOT NULL, locked_until TEXT, \
                           locks BIGINT NOT NULL DEFAULT 0)",
            },
            Sql {
                sqlite: "CREATE TABLE IF NOT EXISTS gatehouse_audit_log (id INTEGER PRIMARY KEY AUTOINCREMENT, \
                         at TEXT NOT NULL, actor TEXT, ip TEXT, user_agent TEXT, action TEXT NOT NULL, \
                         outcome TEXT NOT NULL, request_id TEXT, detail TEXT NOT NULL DEFAULT '{}')",
                postgres: "CREATE TABLE IF NOT EXISTS gatehouse_audit_log (id BIGSERIAL PRIMARY KEY, \
                           at TEXT NOT NULL, actor TEXT, ip TEXT, user_agent TEXT, action TEXT NOT NULL, \
                           outcome TEXT NOT NULL, request_id TEXT, detail TEXT NOT NULL DEFAULT '{}')",
            },
            Sql {
                sqlite: "CREATE INDEX IF NOT EXISTS gatehouse_audit_log_action ON gatehouse_audit_log (action, id)",
                postgres: "CREATE INDEX IF NOT EXISTS gatehouse_audit_log_action ON gatehouse_audit_log (action, id)",
            },
        ],
    },
    Migration {
        version: 7,
        name: "idempotency_keys",
        steps: &[
            Sql {
                sqlite: "CREATE TABLE IF NOT EXISTS gatehouse_idempotency (caller TEXT NOT NULL, key TEXT NOT NULL, \
                         fingerprint TEXT NOT NULL, status INTEGER, headers TEXT, body BLOB, created_at TEXT NOT NULL, \
                         PRIMARY KEY (caller, key))",
                postgres: "CREATE TABLE IF NOT EXISTS gatehouse_idempotency (caller TEXT NOT NULL, key TEXT NOT NULL, \
                           fingerprint TEXT NOT NULL, status BIGINT, headers TEXT, body BYTEA, created_at TEXT NOT NULL, \
                           PRIMARY KEY (caller, key))",
            },
            Sql {
                sqlite: "CREATE INDEX IF NOT EXISTS gatehouse_idempotency_created ON gatehouse_idempotency (created_at)",
                postgres: "CREATE INDEX IF NOT EXISTS gatehouse_idempotency_created ON gatehouse_idempotency (created_at)",
            },
        ],
    },
    Migration {
        version: 8,
        name: "storage",
        steps: &[
            Sql {
                sqlite: "CREATE TABLE IF NOT EXISTS gatehouse_buckets (id TEXT PRIMARY KEY, public INTEGER NOT NULL, \
                         file_size_limit INTEGER, allowed_mime_types TEXT, created_at TEXT NOT NULL, \
                         updated_at TEXT NOT NULL)",
                postgres: "CREATE TABLE IF NOT EXISTS gatehouse_buckets (id TEXT PRIMARY KEY, public BOOLEAN NOT NULL, \
                           file_size_limit BIGINT, allowed_mime_types TEXT, created_at TEXT NOT NULL, \
                           updated_at TEXT NOT NULL)",
            },
            Sql {
                sqlite: "CREATE TABLE IF NOT EXISTS gatehouse_objects (id TEXT PRIMARY KEY, \
                         bucket_id TEXT NOT NULL REFERENCES gatehouse_buckets (id), name TEXT NOT NULL, owner TEXT, \
                         size INTEGER NOT NULL, content_type TEXT NOT NULL, checksum TEXT NOT NULL, \
                         metadata TEXT NOT NULL DEFAULT '{}', created_at TEXT NOT NULL, updated_at TEXT NOT NULL, \
                         UNIQUE (bucket_id, name))",
                postgres: "CREATE TABLE IF NOT EXISTS gatehouse_objects (id TEXT PRIMARY KEY, \
                           bucket_id TEXT NOT NULL REFERENCES gatehouse_buckets (id), name TEXT NOT NULL, owner TEXT, \
                           size BIGINT NOT NULL, content_type TEXT NOT NULL, checksum TEXT NOT NULL, \
                           metadata TEXT NOT NULL DEFAULT '{}', created_at TEXT NOT NULL, updated_at TEXT NOT NULL, \
                           UNIQUE (bucket_id, name))",
            },
        ],
    },
    Migration {
        version: 9,
        name: "storage objects",
        steps: &[
            // The blob holding the current bytes: a fresh key per upload, so a
            // replacement becomes visible only when its row commits.
            Sql {
                sqlite: "ALTER TABLE gatehouse_objects ADD COLUMN version TEXT NOT NULL DEFAULT ''",
                postgres: "ALTER TABLE gatehouse_objects ADD COLUMN version TEXT NOT NULL DEFAULT ''",
            },
            Sql {
                sqlite: "ALTER TABLE gatehouse_objects ADD COLUMN cache_control TEXT",
                postgres: "ALTER TABLE gatehouse_objects ADD COLUMN cache_control TEXT",
            },
            Sql {
                sqlite: "CREATE INDEX IF NOT EXISTS gatehouse_objects_version ON gatehouse_objects (version)",
                postgres: "CREATE INDEX IF NOT EXISTS gatehouse_objects_version ON gatehouse_objects (version)",
            },
            // Listings compare names bytewise ("C") whatever the database's
            // collation; this index serves their range and order on PostgreSQL.
            Sql {
                sqlite: "SELECT 1",
                postgres: "CREATE INDEX IF NOT EXISTS gatehouse_objects_listing \
                           ON gatehouse_objects (bucket_id, name COLLATE \"C\")",
            },
            // Blobs being written: recorded before the first byte, removed in the
            // transaction that names the blob, so the sweep never takes a live one.
            Sql {
                sqlite: "CREATE TABLE IF NOT EXISTS gatehouse_object_uploads (version TEXT PRIMARY KEY, \
                         started_at INTEGER NOT NULL)",
                postgres: "CREATE TABLE IF NOT EXISTS gatehouse_object_uploads (version TEXT PRIMARY KEY, \
                           started_at BIGINT NOT NULL)",
            },
            // Storage policies' path functions; SQLite registers the same names
            // per connection (`path_parts.rs`).
            Sql {
                sqlite: "SELECT 1",
                postgres: "CREATE OR REPLACE FUNCTION gatehouse_foldername(path text, n integer) RETURNS text \
                           LANGUAGE sql IMMUTABLE STRICT AS $f$ SELECT CASE WHEN n >= 1 \
                           AND n < cardinality(string_to_array(path, '/')) THEN (string_to_array(path, '/'))[n] END $f$",
            },
            Sql {
                sqlite: "SELECT 1",
                postgres: "CREATE OR REPLACE FUNCTION gatehouse_filename(path text) RETURNS text \
                           LANGUAGE sql IMMUTABLE STRICT AS $f$ SELECT (regexp_match(path, '[^/]*$'))[1] $f$",
            },
            Sql {
                sqlite: "SELECT 1",
                postgres: "CREATE OR REPLACE FUNCTION gatehouse_extension(path text) RETURNS text \
                           LANGUAGE sql IMMUTABLE STRICT AS $f$ SELECT (regexp_match(path, '\\.([^./]*)$'))[1] $f$",
            },
        ],
    },
    Migration {
        version: 10,
        name: "account protection",
        steps: &[
            // Where an account signed in with its password lately: a lock earned
            // by strangers' failures does not apply there.
            Sql {
                sqlite: "CREATE TABLE IF NOT EXISTS gatehouse_sign_in_known (key TEXT PRIMARY KEY, \
                         last_success_at TEXT NOT NULL)",
                postgres: "CREATE TABLE IF NOT EXISTS gatehouse_sign_in_known (key TEXT PRIMARY KEY, \
                           last_success_at TEXT NOT NULL)",
            },
            // An email change waiting for both addresses to confirm it.
            Sql {
                sqlite: "CREATE TABLE IF NOT EXISTS gatehouse_email_changes (user_id TEXT PRIMARY KEY \
                         REFERENCES gatehouse_users (id) ON DELETE CASCADE, new_email TEXT NOT NULL, \
                         requested_at TEXT NOT NULL, expires_at TEXT NOT NULL, current_confirmed_at TEXT, \
                         new_confirmed_at TEXT)",
                postgres: "CREATE TABLE IF NOT EXISTS gatehouse_email_changes (user_id TEXT PRIMARY KEY \
                           REFERENCES gatehouse_users (id) ON DELETE CASCADE, new_email TEXT NOT NULL, \
                           requested_at TEXT NOT NULL, expires_at TEXT NOT NULL, current_confirmed_at TEXT, \
                           new_confirmed_at TEXT)",
            },
        ],
    },
    Migration {
        version: 11,
        name: "resumable uploads",
        steps: &[
            // A TUS upload in progress: where it goes, who may continue it
            // (`holder`), and how many of its bytes are safely stored.
            Sql {
                sqlite: "CREATE TABLE IF NOT EXISTS gatehouse_resumable_uploads (id TEXT PRIMARY KEY, \
                         holder TEXT NOT NULL, bucket_id TEXT NOT NULL, name TEXT NOT NULL, \
                         content_type TEXT, cache_control TEXT, upsert INTEGER NOT NULL, \
                         length INTEGER NOT NULL, received INTEGER NOT NULL, \
                         expires_at INTEGER NOT NULL)",
                postgres: "CREATE TABLE IF NOT EXISTS gatehouse_resumable_uploads (id TEXT PRIMARY KEY, \
                           holder TEXT NOT NULL, bucket_id TEXT NOT NULL, name TEXT NOT NULL, \
                           content_type TEXT, cache_control TEXT, upsert BIGINT NOT NULL, \
                           length BIGINT NOT NULL, received BIGINT NOT NULL, \
                           expires_at BIGINT NOT NULL)",
            },
            // Its bytes so far, one blob per request that delivered some, in order.
            Sql {
                sqlite: "CREATE TABLE IF NOT EXISTS gatehouse_resumable_parts (upload_id TEXT NOT NULL \
                         REFERENCES gatehouse_resumable_uploads (id) ON DELETE CASCADE, \
                         start INTEGER NOT NULL, size INTEGER NOT NULL, version TEXT NOT NULL UNIQUE, \
                         PRIMARY KEY (upload_id, start))",
                postgres: "CREATE TABLE IF NOT EXISTS gatehouse_resumable_parts (upload_id TEXT NOT NULL \
                           REFERENCES gatehouse_resumable_uploads (id) ON DELETE CASCADE, \
                           start BIGINT NOT NULL, size BIGINT NOT NULL, version TEXT NOT NULL UNIQUE, \
                           PRIMARY KEY (upload_id, start))",
            },
        ],
    },
    Migration {
        version: 12,
        name: "jobs",
        steps: &[
            // A background job: which declared function runs it, with what, when,
            // and where it stands. `unique_key` makes enqueueing idempotent per
            // function. A running job's `lease_id` names the worker holding it and
            // its `run_at` is when the lease ends and another worker may take it;
            // `started_at` is when its latest attempt began.
            Sql {
                sqlite: "CREATE TABLE IF NOT EXISTS gatehouse_jobs (id TEXT PRIMARY KEY, \
                         queue TEXT NOT NULL, function TEXT NOT NULL, payload TEXT NOT NULL, \
                         unique_key TEXT, state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, \
                         max_attempts INTEGER NOT NULL, run_at TEXT NOT NULL, lease_id TEXT, \
                         last_error TEXT, created_at TEXT NOT NULL, started_at TEXT, finished_at TEXT, \
                         UNIQUE (function, unique_key))",
                postgres: "CREATE TABLE IF NOT EXISTS gatehouse_jobs (id TEXT PRIMARY KEY, \
                           queue TEXT NOT NULL, function TEXT NOT NULL, payload TEXT NOT NULL, \
                           unique_key TEXT, state TEXT NOT NULL, attempts BIGINT NOT NULL DEFAULT 0, \
                           max_attempts BIGINT NOT NULL, run_at TEXT NOT NULL, lease_id TEXT, \
                           last_error TEXT, created_at TEXT NOT NULL, started_at TEXT, finished_at TEXT, \
                           UNIQUE (function, unique_key))",
            },
            // What a worker looks for: the due jobs of one queue, oldest first.
            Sql::both(
                "CREATE INDEX IF NOT EXISTS gatehouse_jobs_due ON gatehouse_jobs (queue, state, run_at)",
            ),
            // Each cron schedule's next tick, moved on by the instance that takes it.
            Sql::both(
                "CREATE TABLE IF NOT EXISTS gatehouse_cron (name TEXT PRIMARY KEY, next_at TEXT NOT NULL)",
            ),
        ],
    },
    Migration {
        version: 13,
        name: "job attempts",
        steps: &[
            // Each finished attempt of a job, with its error, kept for
            // `[jobs] keep_finished_hours` after it ended.
            Sql {
                sqlite: "CREATE TABLE IF NOT EXISTS gatehouse_job_attempts (id TEXT PRIMARY KEY, \
                         job_id TEXT NOT NULL, attempt INTEGER NOT NULL, started_at TEXT, \
                         finished_at TEXT NOT NULL, outcome TEXT NOT NULL, error TEXT)",
                postgres: "CREATE TABLE IF NOT EXISTS gatehouse_job_attempts (id TEXT PRIMARY KEY, \
                           job_id TEXT NOT NULL, attempt BIGINT NOT NULL, started_at TEXT, \
                           finished_at TEXT NOT NULL, outcome TEXT NOT NULL, error TEXT)",
            },
            Sql::both(
                "CREATE INDEX IF NOT EXISTS gatehouse_job_attempts_job ON gatehouse_job_attempts (job_id)",
            ),
            Sql::both(
                "CREATE INDEX IF NOT EXISTS gatehouse_job_attempts_finished ON gatehouse_job_attempts (finished_at)",
            ),
        ],
    },
    Migration {
        version: 14,
        name: "outbox into the job queue",
        steps: &[
            // Auth's emails are jobs now (`gatehouse:email` on the
            // `gatehouse_email` queue): the unsent ones move, due at once with
            // fresh attempts; `gatehouse_outbox` stays as the record of what
            // was sent before.
            Sql {
                sqlite: "INSERT INTO gatehouse_jobs (id, queue, function, payload, state, attempts, \
                         max_attempts, run_at, created_at) SELECT id, 'gatehouse_email', 'gatehouse:email', \
                         json_object('to', recipient, 'subject', subject, 'text', text_body, 'html', html_body), \
                         'waiting', 0, 10, created_at, created_at FROM gatehouse_outbox WHERE sent_at IS NULL",
                postgres: "INSERT INTO gatehouse_jobs (id, queue, function, payload, state, attempts, \
                           max_attempts, run_at, created_at) SELECT id, 'gatehouse_email', 'gatehouse:email', \
                           json_build_object('to', recipient, 'subject', subject, 'text', text_body, 'html', html_body)::text, \
                           'waiting', 0, 10, created_at, created_at FROM gatehouse_outbox WHERE sent_at IS NULL",
            },
            Sql::both(
                "UPDATE gatehouse_outbox SET sent_at = 'moved to gatehouse_jobs' WHERE sent_at IS NULL",
            ),
        ],
    },
    Migration {
        version: 15,
        name: "who queued a job",
        // `{ role, user_id }` of the verified caller whose code queued the job,
        // for handlers declared to run with their rights.
        steps: &[Sql::both(
            "ALTER TABLE gatehouse_jobs ADD COLUMN enqueued_by TEXT",
        )],
    },
    Migration {
        version: 16,
        name: "expiry indexes",
        // The upkeep removes sessions and one-time links by their end every
        // minute: found by index, not by reading the tables.
        steps: &[
            Sql::both(
                "CREATE INDEX IF NOT EXISTS gatehouse_sessions_not_after ON gatehouse_sessions (not_after)",
            ),
            Sql::both(
                "CREATE INDEX IF NOT EXISTS gatehouse_one_time_tokens_expires_at ON gatehouse_one_time_tokens (expires_at)",
            ),
        ],
    },
    Migration {
        version: 17,
        name: "session assurance",
        // A session's assurance level and how it was authenticated (the
        // access token's `aal` and `amr`), kept so refreshing keeps them.
        steps: &[
            Sql::both("ALTER TABLE gatehouse_sessions ADD COLUMN aal TEXT"),
            Sql::both("ALTER TABLE gatehouse_sessions ADD COLUMN amr TEXT"),
        ],
    },
    Migration {
        version: 18,
        name: "second factors",
        // TOTP factors (the secret sealed under the operator's key, bound to
        // the row; the last step a code was accepted for, so each code works
        // once) and their challenges, each bound to the address that asked.
        steps: &[
            Sql {
                sqlite: "CREATE TABLE IF NOT EXISTS gatehouse_mfa_factors (id TEXT PRIMARY KEY, \
                         user_id TEXT NOT NULL REFERENCES gatehouse_users (id) ON DELETE CASCADE, \
                         friendly_name TEXT, factor_type TEXT NOT NULL, status TEXT NOT NULL, \
                         secret TEXT NOT NULL, last_step INTEGER, last_challenged_at TEXT, \
                         created_at TEXT NOT NULL, updated_at TEXT NOT NULL)",
                postgres: "CREATE TABLE IF NOT EXISTS gatehouse_mfa_factors (id TEXT PRIMARY KEY, \
                           user_id TEXT NOT NULL REFERENCES gatehouse_users (id) ON DELETE CASCADE, \
                           friendly_name TEXT, factor_type TEXT NOT NULL, status TEXT NOT NULL, \
                           secret TEXT NOT NULL, last_step BIGINT, last_challenged_at TEXT, \
                           created_at TEXT NOT NULL, updated_at TEXT NOT NULL)",
            },
            Sql::both(
                "CREATE INDEX IF NOT EXISTS gatehouse_mfa_factors_user ON gatehouse_mfa_factors (user_id)",
            ),
            Sql::both(
                "CREATE UNIQUE INDEX IF NOT EXISTS gatehouse_mfa_factors_name ON gatehouse_mfa_factors \
                 (user_id, friendly_name) WHERE friendly_name IS NOT NULL",
            ),
            Sql::both(
                "CREATE TABLE IF NOT EXISTS gatehouse_mfa_challenges (id TEXT PRIMARY KEY, \
                 factor_id TEXT NOT NULL REFERENCES gatehouse_mfa_factors (id) ON DELETE CASCADE, \
                 ip TEXT, created_at TEXT NOT NULL, expires_at TEXT NOT NULL, verified_at TEXT)",
            ),
            Sql::both(
                "CREATE INDEX IF NOT EXISTS gatehouse_mfa_challenges_factor ON gatehouse_mfa_challenges (factor_id)",
            ),
            Sql::both(
                "CREATE INDEX IF NOT EXISTS gatehouse_mfa_challenges_expires_at ON gatehouse_mfa_challenges (expires_at)",
            ),
        ],
    },
    Migration {
        version: 19,
        name: "identities and provider sign-in",
        // Accounts at other providers linked to users (one per provider
        // account), the flows under way to a provider (keyed by the state's
        // hash, spent once, bound to the browser that began them), and the
        // codes a PKCE client exchanges for its session.
        steps: &[
            Sql::both(
                "CREATE TABLE IF NOT EXISTS gatehouse_identities (id TEXT PRIMARY KEY, \
                 user_id TEXT NOT NULL REFERENCES gatehouse_users (id) ON DELETE CASCADE, \
                 provider TEXT NOT NULL, provider_id TEXT NOT NULL, email TEXT, \
                 identity_data TEXT NOT NULL, created_at TEXT NOT NULL, updated_at TEXT NOT NULL, \
                 last_sign_in_at TEXT, UNIQUE (provider, provider_id))",
            ),
            Sql::both(
                "CREATE INDEX IF NOT EXISTS gatehouse_identities_user ON gatehouse_identities (user_id)",
            ),
            Sql::both(
                "CREATE TABLE IF NOT EXISTS gatehouse_oauth_flows (state_hash TEXT PRIMARY KEY, \
                 provider TEXT NOT NULL, browser_hash TEXT, redirect_to TEXT NOT NULL, \
                 pkce_verifier TEXT NOT NULL, nonce TEXT NOT NULL, code_challenge TEXT, \
                 code_challenge_method TEXT, link_user_id TEXT, created_at TEXT NOT NULL, \
                 expires_at TEXT NOT NULL)",
            ),
            Sql::both(
                "CREATE INDEX IF NOT EXISTS gatehouse_oauth_flows_expires_at ON gatehouse_oauth_flows (expires_at)",
            ),
            Sql::both(
                "CREATE TABLE IF NOT EXISTS gatehouse_auth_codes (code_hash TEXT PRIMARY KEY, \
                 user_id TEXT NOT NULL REFERENCES gatehouse_users (id) ON DELETE CASCADE, \
                 method TEXT NOT NULL, code_challenge TEXT NOT NULL, code_challenge_method TEXT NOT NULL, \
                 provider_token TEXT, provider_refresh_token TEXT, \
                 created_at TEXT NOT NULL, expires_at TEXT NOT NULL)",
            ),
            Sql::both(
                "CREATE INDEX IF NOT EXISTS gatehouse_auth_codes_expires_at ON gatehouse_auth_codes (expires_at)",
            ),
        ],
    },
    Migration {
        version: 20,
        name: "realtime notes too long to notify",
        // What one instance tells the others through PostgreSQL's NOTIFY is
        // bounded (8,000 bytes); a longer note is stored here, in the same
        // transaction, and the notification names it. Swept after minutes.
        steps: &[
            Sql::both(
                "CREATE TABLE IF NOT EXISTS gatehouse_realtime_notes (id TEXT PRIMARY KEY, \
                 note TEXT NOT NULL, created_at TEXT NOT NULL)",
            ),
            Sql::both(
                "CREATE INDEX IF NOT EXISTS gatehouse_realtime_notes_created_at ON gatehouse_realtime_notes (created_at)",
            ),
        ],
    },
];

const CREATE_LEDGER: Sql = Sql {
    sqlite: "CREATE TABLE IF NOT EXISTS gatehouse_migrations \
             (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP)",
    postgres: "CREATE TABLE IF NOT EXISTS gatehouse_migrations \
               (version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
};

/// SQLite's `BEGIN IMMEDIATE` already serialises writers; PostgreSQL needs the lock.
pub(crate) const LOCK: Sql = Sql {
    sqlite: "SELECT 1",
    postgres: "SELECT 1 FROM (SELECT pg_advisory_xact_lock(7306010412)) AS locked",
};

const CURRENT_VERSION: Sql = Sql {
    sqlite: "SELECT COALESCE(MAX(version), 0) FROM gatehouse_migrations",
    postgres: "SELECT COALESCE(MAX(version), 0)::BIGINT FROM gatehouse_migrations",
};

/// Recorded before the steps: a second instance applying the same version fails
/// on the key here, before touching the schema.
const RECORD: Sql = Sql::both("INSERT INTO gatehouse_migrations (version, name) VALUES ($1, $2)");

pub(crate) const GET_META: Sql = Sql::both("SELECT value FROM gatehouse_meta WHERE key = $1");

pub(crate) const SET_META: Sql = Sql::both(
    "INSERT INTO gatehouse_meta (key, value) VALUES ($1, $2) \
     ON CONFLICT (key) DO UPDATE SET value = excluded.value",
);

pub(crate) async fn current_version(db: &Database) -> Result<i64> {
    db.query(Statement::new(&CURRENT_VERSION, vec![])).await?[0].integer(0)
}

pub(crate) async fn apply(db: &Database) -> Result<()> {
    db.transaction(vec![
        Statement::new(&LOCK, vec![]),
        Statement::new(&CREATE_LEDGER, vec![]),
    ])
    .await?;
    let applied = current_version(db).await?;
    let newest = MIGRATIONS.last().map_or(0, |m| m.version);
    if applied > newest {
        return Err(DbError::NewerSchema(applied));
    }
    for migration in MIGRATIONS.iter().filter(|m| m.version > applied) {
        let mut statements = vec![
            Statement::new(&LOCK, vec![]),
            Statement::new(
                &RECORD,
                vec![Value::Integer(migration.version), migration.name.into()],
            ),
        ];
        statements.extend(
            migration
                .steps
                .iter()
                .map(|step| Statement::new(step, vec![])),
        );
        match db.transaction(statements).await {
            Ok(_) => tracing::info!(
                version = migration.version,
                name = migration.name,
                "applied migration"
            ),
            // Another instance applied it since we looked: nothing left to do.
            Err(_) if current_version(db).await? >= migration.version => {}
            Err(source) => {
                return Err(DbError::Migration {
                    version: migration.version,
                    name: migration.name,
                    source: Box::new(source),
                });
            }
        }
    }
    Ok(())
}
