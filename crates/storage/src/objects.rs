//! Objects: upload, download, list, move, copy, remove, under the storage
//! policies (`[[storage.policies]]`), which render into every statement exactly
//! as table policies do: `select` decides what a caller can read, list and sign;
//! `insert` what it can create; `update` what it can replace or move (and where
//! to); `delete` what it can remove. No policy, no access; the secret key
//! bypasses them; a signed download URL is a capability for one object, a
//! signed upload URL acts as its signer.
//!
//! Here: the types, policy gates, reads, listing, removal and moves;
//! `writing` holds uploads, copies and the sweep; `signing` the signed URLs.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::Stream;
use gatehouse_db::{Database, Row, Value};
use gatehouse_policy::{Command, TablePolicies};
use gatehouse_rest::{Caller, Decided, Decision, Rows, StatementBuilder, decide};

mod resumable;
mod signing;
mod writing;

pub use resumable::{NewResumable, Resumable};

pub use signing::CheckedUpload;

use writing::UploadSlots;

use crate::blobs::Blobs;
use crate::signed::{Purpose, UrlSigner};
use crate::{Bucket, Buckets, Result, StorageError, content, name};

/// Bounds and defaults of the object API.
#[derive(Debug, Clone)]
pub struct ObjectSettings {
    /// The largest object any bucket takes (a bucket may say less).
    pub max_object_bytes: u64,
    /// Objects one listing looks through under its prefix.
    pub list_scan_limit: usize,
    /// How long a signed upload URL holds.
    pub signed_upload_secs: i64,
    /// The longest a signed download URL may be asked to hold.
    pub max_signed_url_secs: i64,
    /// The longest any request writing bytes (an upload, a copy) may run: after
    /// it and `orphan_grace`, a version's record is stale and its bytes are swept.
    pub write_timeout: std::time::Duration,
    /// How long past `write_timeout` an interrupted upload's bytes are kept.
    pub orphan_grace: std::time::Duration,
    /// Uploads streaming at once (each holds about three parts in memory); a
    /// quarter of them at most for one client.
    pub max_concurrent_uploads: usize,
    /// How long a resumable upload may take from creation to its last byte.
    pub resumable_ttl: std::time::Duration,
}

impl Default for ObjectSettings {
    fn default() -> Self {
        Self {
            max_object_bytes: 50 << 20,
            list_scan_limit: 10_000,
            signed_upload_secs: 2 * 3600,
            max_signed_url_secs: 7 * 24 * 3600,
            write_timeout: std::time::Duration::from_secs(3600),
            orphan_grace: std::time::Duration::from_secs(600),
            max_concurrent_uploads: 16,
            resumable_ttl: std::time::Duration::from_secs(24 * 3600),
        }
    }
}

/// Who acts: a caller, or the holder of a signed upload URL, who acts as its
/// signer (under the same policies, checked with the real size and type) and
/// may replace only the version the signer was allowed to replace when signing.
#[derive(Debug, Clone, Copy)]
pub enum Actor<'a> {
    Caller(&'a Caller),
    SignedUpload {
        signer: &'a Caller,
        replaces: Option<&'a str>,
    },
}

impl<'a> Actor<'a> {
    pub fn caller(self) -> &'a Caller {
        match self {
            Actor::Caller(caller) | Actor::SignedUpload { signer: caller, .. } => caller,
        }
    }
}

/// One upload's request, the body still unread.
pub struct NewObject<S> {
    pub bucket: String,
    pub name: String,
    pub content_type: Option<String>,
    pub cache_control: Option<String>,
    /// Replace an existing object (`x-upsert: true`, or PUT).
    pub upsert: bool,
    /// The length the request announced, if any: refused early when too large.
    pub length: Option<u64>,
    /// Who is uploading, for the per-client share of upload slots: the user
    /// id, or the address when anonymous.
    pub client: String,
    pub body: S,
}

/// An object's row.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectRow {
    pub id: String,
    pub bucket_id: String,
    pub name: String,
    pub owner: Option<String>,
    pub size: u64,
    pub content_type: String,
    pub checksum: String,
    pub created_at: String,
    pub updated_at: String,
    pub version: String,
    pub cache_control: Option<String>,
}

/// An object row's columns, each after `prefix`.
#[rustfmt::skip]
macro_rules! object_columns {
    ($p:literal) => {
        concat!(
            $p, "id, ", $p, "bucket_id, ", $p, "name, ", $p, "owner, ", $p, "size, ",
            $p, "content_type, ", $p, "checksum, ", $p, "created_at, ", $p, "updated_at, ",
            $p, "version, ", $p, "cache_control"
        )
    };
}

const COLUMNS: &str = object_columns!("\"o\".");

/// The same columns, unqualified, for RETURNING (which names the written table only).
const RETURNED: &str = object_columns!("");

impl ObjectRow {
    fn from_row(row: &Row) -> Result<Self> {
        Ok(Self {
            id: row.text(0)?.to_owned(),
            bucket_id: row.text(1)?.to_owned(),
            name: row.text(2)?.to_owned(),
            owner: row.optional_text(3)?.map(str::to_owned),
            size: row.integer(4)?.unsigned_abs(),
            content_type: row.text(5)?.to_owned(),
            checksum: row.text(6)?.to_owned(),
            created_at: row.text(7)?.to_owned(),
            updated_at: row.text(8)?.to_owned(),
            version: row.text(9)?.to_owned(),
            cache_control: row.optional_text(10)?.map(str::to_owned),
        })
    }

    pub fn etag(&self) -> String {
        format!("\"{}\"", self.checksum)
    }
}

/// One entry of a listing: an object, named by what follows the prefix, or a
/// folder (no object).
#[derive(Debug, Clone, PartialEq)]
pub struct ListEntry {
    pub name: String,
    pub object: Option<ObjectRow>,
}

/// What a listing asks for (Supabase's `list` body).
#[derive(Debug, Clone, Default)]
pub struct ListRequest {
    pub prefix: String,
    pub search: Option<String>,
    pub limit: Option<usize>,
    pub offset: Option<usize>,
    /// `name`, `created_at`, `updated_at` or `last_accessed_at`.
    pub sort_column: Option<String>,
    pub descending: bool,
}

fn identifier(name: &str) -> gatehouse_core::Identifier {
    // The storage objects columns, fixed and valid (the schema crate tests them).
    gatehouse_core::Identifier::new(name).unwrap_or_else(|_| unreachable!("a fixed column"))
}

fn now() -> String {
    gatehouse_db::timestamp(time::OffsetDateTime::now_utc())
}

fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Up to one object row, the first statement's.
fn first_row(rows: &[Row]) -> Result<Option<ObjectRow>> {
    rows.first().map(ObjectRow::from_row).transpose()
}

fn last_statement_wrote(results: &[Vec<Row>]) -> bool {
    results.last().is_some_and(|rows| !rows.is_empty())
}

#[derive(Clone)]
pub struct Objects {
    db: Database,
    blobs: Blobs,
    buckets: Buckets,
    policies: Arc<TablePolicies>,
    signer: UrlSigner,
    settings: ObjectSettings,
    slots: Arc<UploadSlots>,
    service: Caller,
}

impl Objects {
    /// `service` is the service role, made by the server from its secret key:
    /// uploads through URLs the service role signed run as it, and storage can
    /// make no service caller of its own.
    pub fn new(
        db: Database,
        blobs: Blobs,
        policies: TablePolicies,
        (signer, service): (UrlSigner, Caller),
        settings: ObjectSettings,
    ) -> Self {
        Self {
            service,
            buckets: Buckets::new(db.clone()),
            db,
            blobs,
            policies: Arc::new(policies),
            signer,
            slots: Arc::new(UploadSlots::new(settings.max_concurrent_uploads)),
            settings,
        }
    }

    pub fn settings(&self) -> &ObjectSettings {
        &self.settings
    }

    /// The access decision for the actor's `command` on objects.
    fn decision(&self, actor: Actor<'_>, command: Command, rows: Rows) -> Decision {
        decide(actor.caller(), Some(&self.policies), command, rows)
    }

    fn builder(&self) -> StatementBuilder {
        StatementBuilder::new(self.db.dialect())
    }

    fn text<S>(sql: &mut StatementBuilder<S>, value: &str) {
        sql.param(Value::Text(value.to_owned()), None);
    }

    /// Texts as bound parameters, comma-separated (inside an `IN (…)`).
    fn texts<S>(sql: &mut StatementBuilder<S>, values: &[String]) {
        for (i, value) in values.iter().enumerate() {
            if i > 0 {
                sql.push(", ");
            }
            Self::text(sql, value);
        }
    }

    /// The object if the actor may read it (`select`); invisible is not found.
    pub async fn find(&self, actor: Actor<'_>, bucket: &str, object: &str) -> Result<ObjectRow> {
        let name = name::object_name(object)?;
        let decision = self.decision(actor, Command::Select, Rows::Existing);
        if decision.is_closed() {
            return Err(StorageError::NoSuchKey);
        }
        let sql =
            Self::select_one(self.builder(), bucket, &name).and_decision(&decision, "o", None);
        self.first(sql).await
    }

    /// `SELECT` the objects of a bucket: the WHERE open for more.
    fn select_in<S>(mut sql: StatementBuilder<S>, bucket: &str) -> StatementBuilder<S> {
        sql.push("SELECT ")
            .push(COLUMNS)
            .push(" FROM gatehouse_objects AS \"o\" WHERE \"o\".bucket_id = ");
        Self::text(&mut sql, bucket);
        sql
    }

    /// `SELECT` an object by bucket and name: the WHERE open for a decision.
    fn select_one<S>(sql: StatementBuilder<S>, bucket: &str, name: &str) -> StatementBuilder<S> {
        let mut sql = Self::select_in(sql, bucket);
        sql.push(" AND \"o\".name = ");
        Self::text(&mut sql, name);
        sql
    }

    async fn first(&self, sql: StatementBuilder<Decided>) -> Result<ObjectRow> {
        let rows = self.db.query(sql.finish()).await?;
        first_row(&rows)?.ok_or(StorageError::NoSuchKey)
    }

    /// An object of a public bucket, whoever asks (download only).
    pub async fn find_public(&self, bucket: &str, object: &str) -> Result<ObjectRow> {
        let found = self.buckets.get(bucket).await?;
        if !found.public {
            return Err(StorageError::NoSuchBucket);
        }
        let name = name::object_name(object)?;
        let sql = StatementBuilder::without_policy(
            self.db.dialect(),
            "a public bucket's objects are anyone's to download",
        );
        self.first(Self::select_one(sql, &found.id, &name)).await
    }

    /// An object through a signed download URL.
    pub async fn find_signed(&self, bucket: &str, object: &str, token: &str) -> Result<ObjectRow> {
        let name = name::object_name(object)?;
        self.signer
            .verify(token, Purpose::Download, bucket, &name, unix_now())?;
        let sql = StatementBuilder::without_policy(
            self.db.dialect(),
            "a signed download URL, checked above, grants this one object",
        );
        self.first(Self::select_one(sql, bucket, &name)).await
    }

    /// An object's bytes, or `range` of them (within its size).
    pub async fn read(
        &self,
        object: &ObjectRow,
        range: Option<std::ops::Range<u64>>,
    ) -> Result<impl Stream<Item = Result<Bytes>> + Send + 'static + use<>> {
        self.blobs.read(&object.version, range).await
    }

    fn size_limit(&self, bucket: &Bucket) -> u64 {
        bucket
            .file_size_limit
            .map_or(self.settings.max_object_bytes, |limit| {
                limit.min(self.settings.max_object_bytes)
            })
    }

    /// The new row's values as policies see them.
    fn policy_row(
        bucket: &str,
        name: &str,
        owner: Option<&str>,
        size: u64,
        content_type: &str,
    ) -> HashMap<gatehouse_core::Identifier, Value> {
        HashMap::from([
            (identifier("bucket_id"), Value::Text(bucket.to_owned())),
            (identifier("name"), Value::Text(name.to_owned())),
            (
                identifier("owner"),
                owner.map_or(Value::Null, |o| Value::Text(o.to_owned())),
            ),
            (
                identifier("size"),
                Value::Integer(i64::try_from(size).unwrap_or(i64::MAX)),
            ),
            (
                identifier("content_type"),
                Value::Text(content_type.to_owned()),
            ),
        ])
    }

    fn owner<'a>(actor: Actor<'a>) -> Option<&'a str> {
        actor.caller().user_id()
    }

    /// Supabase's `list`: the entries one level under `prefix` (a folder is an
    /// entry with no id), of the objects the caller may read.
    pub async fn list(
        &self,
        caller: &Caller,
        bucket: &str,
        request: &ListRequest,
    ) -> Result<Vec<ListEntry>> {
        let bucket = self.buckets.get(bucket).await?;
        let mut prefix = request.prefix.trim_start_matches('/').to_owned();
        if !prefix.is_empty() && !prefix.ends_with('/') {
            prefix.push('/');
        }
        let decision = self.decision(Actor::Caller(caller), Command::Select, Rows::Existing);
        if decision.is_closed() {
            return Ok(vec![]);
        }
        let mut sql = Self::select_in(self.builder(), &bucket.id);
        // Names compare bytewise on both databases (SQLite's default; "C" on
        // PostgreSQL, whatever the database's collation), so a prefix is a
        // range and pages come in one order. Names hold no U+10FFFF.
        let bytewise = match self.db.dialect() {
            gatehouse_core::Dialect::Sqlite => "\"o\".name",
            gatehouse_core::Dialect::Postgres => "\"o\".name COLLATE \"C\"",
        };
        if !prefix.is_empty() {
            sql.push(" AND ").push(bytewise).push(" >= ");
            Self::text(&mut sql, &prefix);
            sql.push(" AND ").push(bytewise).push(" < ");
            Self::text(&mut sql, &format!("{prefix}\u{10FFFF}"));
        }
        let mut sql = sql.and_decision(&decision, "o", None);
        sql.push(" ORDER BY ")
            .push(bytewise)
            .push(" LIMIT ")
            .number(self.settings.list_scan_limit as u64);
        let rows = self.db.query(sql.finish()).await?;
        let search = request.search.as_deref().unwrap_or("").to_lowercase();
        let mut entries: Vec<ListEntry> = Vec::new();
        let mut folders = std::collections::HashSet::new();
        for row in &rows {
            let object = ObjectRow::from_row(row)?;
            let Some(rest) = object.name.strip_prefix(&prefix) else {
                continue;
            };
            let entry = match rest.split_once('/') {
                Some((folder, _)) => ListEntry {
                    name: folder.to_owned(),
                    object: None,
                },
                None => ListEntry {
                    name: rest.to_owned(),
                    object: Some(object.clone()),
                },
            };
            if !entry.name.to_lowercase().starts_with(&search) {
                continue;
            }
            // A folder is one entry however many objects it holds.
            if entry.object.is_some() || folders.insert(entry.name.clone()) {
                entries.push(entry);
            }
        }
        let column = request.sort_column.as_deref().unwrap_or("name");
        let key = |entry: &ListEntry| -> String {
            match (column, &entry.object) {
                ("created_at", Some(object)) => object.created_at.clone(),
                ("updated_at" | "last_accessed_at", Some(object)) => object.updated_at.clone(),
                ("name", _) => entry.name.clone(),
                _ => String::new(),
            }
        };
        entries.sort_by(|a, b| key(a).cmp(&key(b)).then_with(|| a.name.cmp(&b.name)));
        if request.descending {
            entries.reverse();
        }
        let limit = request.limit.unwrap_or(100).clamp(1, 1000);
        Ok(entries
            .into_iter()
            .skip(request.offset.unwrap_or(0))
            .take(limit)
            .collect())
    }

    /// Removes the named objects the caller may delete; returns those removed.
    pub async fn remove(
        &self,
        caller: &Caller,
        bucket: &str,
        names: &[String],
    ) -> Result<Vec<ObjectRow>> {
        let bucket = self.buckets.get(bucket).await?;
        if names.len() > 1000 {
            return Err(StorageError::Invalid(
                "remove at most 1000 objects at once".into(),
            ));
        }
        let names = names
            .iter()
            .map(|n| name::object_name(n))
            .collect::<Result<Vec<_>>>()?;
        let decision = self.decision(Actor::Caller(caller), Command::Delete, Rows::Existing);
        if names.is_empty() || decision.is_closed() {
            return Ok(vec![]);
        }
        let mut sql = self.builder();
        sql.push("DELETE FROM gatehouse_objects AS \"o\" WHERE \"o\".bucket_id = ");
        Self::text(&mut sql, &bucket.id);
        sql.push(" AND \"o\".name IN (");
        Self::texts(&mut sql, &names);
        sql.push(")");
        let mut sql = sql.and_decision(&decision, "o", None);
        sql.push(" RETURNING ").push(RETURNED);
        let results = self.db.transaction(vec![sql.finish()]).await?;
        let removed = results[0]
            .iter()
            .map(ObjectRow::from_row)
            .collect::<Result<Vec<_>>>()?;
        for object in &removed {
            self.forget_blob(&object.version).await;
        }
        Ok(removed)
    }

    /// Renames an object (within or across buckets): the update policy must
    /// allow the object as it is and as it will be. The bytes stay where they are.
    pub async fn move_object(
        &self,
        caller: &Caller,
        bucket: &str,
        from: &str,
        to_bucket: &str,
        to: &str,
    ) -> Result<ObjectRow> {
        let source_bucket = self.buckets.get(bucket).await?;
        let target_bucket = self.buckets.get(to_bucket).await?;
        let (from, to) = (name::object_name(from)?, name::object_name(to)?);
        let actor = Actor::Caller(caller);
        // Into another bucket, the bytes meet its limits, and a new name in a
        // bucket that restricts types must fit them: exactly these bytes, should
        // another upload replace them meanwhile.
        let mut admitted = None;
        if target_bucket.id != source_bucket.id || target_bucket.allowed_mime_types.is_some() {
            let source = self.find(actor, &source_bucket.id, &from).await?;
            self.admit(&target_bucket, &source, &to).await?;
            admitted = Some(source.version);
        }
        let using = self.decision(actor, Command::Update, Rows::Existing);
        let check = self.decision(actor, Command::Update, Rows::Written);
        if using.is_closed() {
            return Err(StorageError::NoSuchKey);
        }
        let moved = HashMap::from([
            (
                identifier("bucket_id"),
                Value::Text(target_bucket.id.clone()),
            ),
            (identifier("name"), Value::Text(to.clone())),
        ]);
        let mut sql = self.builder();
        sql.push("UPDATE gatehouse_objects AS \"o\" SET bucket_id = ");
        Self::text(&mut sql, &target_bucket.id);
        sql.push(", name = ");
        Self::text(&mut sql, &to);
        sql.push(", updated_at = ");
        Self::text(&mut sql, &now());
        sql.push(" WHERE \"o\".bucket_id = ");
        Self::text(&mut sql, &source_bucket.id);
        sql.push(" AND \"o\".name = ");
        Self::text(&mut sql, &from);
        if let Some(version) = &admitted {
            sql.push(" AND \"o\".version = ");
            Self::text(&mut sql, version);
        }
        let mut sql = sql.and_decision(&using, "o", None);
        sql.and_also(&check, "o", Some(&moved))
            .push(" RETURNING ")
            .push(RETURNED);
        self.write_one(sql, None, StorageError::NoSuchKey).await
    }

    /// Whether an existing object may enter `bucket` as `name` (by move or copy):
    /// its size limit, and where it restricts types, the stored type, what the
    /// bytes are and the name's extension, as for an upload.
    async fn admit(&self, bucket: &Bucket, object: &ObjectRow, name: &str) -> Result<()> {
        let limit = self.size_limit(bucket);
        if object.size > limit {
            return Err(StorageError::TooLarge(limit));
        }
        if let Some(allowed) = bucket.allowed_mime_types.as_deref() {
            let length = object.size.min(content::SNIFF_BYTES as u64);
            let head = self.blobs.head(&object.version, length).await?;
            let settled = content::settle(
                Some(allowed),
                Some(&object.content_type),
                content::sniff(&head),
            )?;
            content::name_fits(Some(allowed), name, &settled)?;
        }
        Ok(())
    }
}
