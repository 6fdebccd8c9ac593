//! Objects: upload, download, list, move, copy, remove, under the storage
//! policies (`[[storage.policies]]`), which render into every statement exactly
//! as table policies do: `select` decides what a caller can read, list and sign;
//! `insert` what it can create; `update` what it can replace or move (and where
//! to); `delete` what it can remove. No policy, no access; the secret key
//! bypasses them; a signed URL is a capability for one path.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use gatehouse_db::{Constraint, Database, Row, Value};
use gatehouse_policy::{Command, Condition, ContextValue, Role, TablePolicies, Term};
use gatehouse_rest::{Caller, StatementBuilder};
use gatehouse_schema::ColumnType;
use serde_json::{Value as Json, json};

use crate::blobs::{BlobWriter, Blobs};
use crate::signed::{Grant, Purpose, UrlSigner};
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

impl Grant {
    /// The signer of an upload URL as its upload runs: role and user id only.
    pub fn signer(&self) -> Caller {
        match (self.signer_role.as_deref(), &self.owner) {
            (Some("service"), _) => Caller::Service,
            (Some("authenticated"), Some(user)) => Caller::Delegated {
                role: Role::Authenticated,
                user_id: Some(user.clone()),
            },
            (_, user) => Caller::Delegated {
                role: Role::Anon,
                user_id: user.clone(),
            },
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

const COLUMNS: &str = "\"o\".id, \"o\".bucket_id, \"o\".name, \"o\".owner, \"o\".size, \"o\".content_type, \
                       \"o\".checksum, \"o\".created_at, \"o\".updated_at, \"o\".version, \"o\".cache_control";

/// The same columns, unqualified, for RETURNING (which names the written table only).
fn returned() -> String {
    COLUMNS.replace("\"o\".", "")
}

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

    /// Supabase Storage's `metadata` of an object.
    pub fn metadata(&self) -> Json {
        json!({
            "eTag": self.etag(),
            "size": self.size,
            "mimetype": self.content_type,
            "cacheControl": self.cache_control.as_deref().unwrap_or("no-cache"),
            "lastModified": self.updated_at,
            "contentLength": self.size,
            "httpStatusCode": 200,
        })
    }

    /// A list or remove entry (`FileObject`), named as the caller sees it.
    pub fn file_object(&self, shown_name: &str) -> Json {
        json!({
            "name": shown_name,
            "id": self.id,
            "bucket_id": self.bucket_id,
            "owner": self.owner,
            "updated_at": self.updated_at,
            "created_at": self.created_at,
            "last_accessed_at": self.updated_at,
            "metadata": self.metadata(),
        })
    }

    /// `GET /object/info/…` (`FileObjectV2`).
    pub fn info(&self) -> Json {
        json!({
            "id": self.id,
            "version": self.version,
            "name": self.name,
            "bucket_id": self.bucket_id,
            "owner": self.owner,
            "size": self.size,
            "content_type": self.content_type,
            "cache_control": self.cache_control,
            "etag": self.etag(),
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "last_modified": self.updated_at,
            "metadata": self.metadata(),
        })
    }
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

/// A policy for one command, as it applies to one caller.
enum Gate {
    /// The secret key, or a signed capability: no policy applies.
    Open,
    Only(Condition),
    Closed,
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

/// A check of a new row whose `unknown` columns are not known yet (a precheck
/// before the body, a signed upload URL): whatever reads them is assumed to
/// pass, for the commit checks the real values.
fn assuming(gate: Gate, unknown: &[&str]) -> Gate {
    match gate {
        Gate::Only(condition) if !unknown.is_empty() => {
            Gate::Only(condition.deciding(&|term| reads_column(term, unknown), true))
        }
        other => other,
    }
}

/// Whether `term` reads one of `names` of the object itself.
fn reads_column(term: &Term, names: &[&str]) -> bool {
    match term {
        Term::Column { depth: 0, name, .. } => names.contains(&name.as_str()),
        Term::Path { column, .. } => reads_column(column, names),
        _ => false,
    }
}

/// Up to one object row, the first statement's.
fn first_row(rows: &[Row]) -> Result<Option<ObjectRow>> {
    rows.first().map(ObjectRow::from_row).transpose()
}

fn last_statement_wrote(results: &[Vec<Row>]) -> bool {
    results.last().is_some_and(|rows| !rows.is_empty())
}

/// What an upload's bytes came to.
struct Written {
    size: u64,
    checksum: String,
    head: Vec<u8>,
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
}

/// Uploads streaming at once: in all, and per client (a user, or an address
/// when anonymous), so one client cannot hold every slot.
struct UploadSlots {
    all: Arc<tokio::sync::Semaphore>,
    per_client: std::sync::Mutex<HashMap<String, usize>>,
    per_client_max: usize,
}

/// One upload's place; given back when dropped.
struct Slot {
    _all: tokio::sync::OwnedSemaphorePermit,
    slots: Arc<UploadSlots>,
    client: String,
}

impl UploadSlots {
    fn take(self: &Arc<Self>, client: &str) -> Result<Slot> {
        let all = self
            .all
            .clone()
            .try_acquire_owned()
            .map_err(|_| StorageError::Busy)?;
        let mut counts = self.per_client.lock().unwrap_or_else(|e| e.into_inner());
        let count = counts.entry(client.to_owned()).or_insert(0);
        if *count >= self.per_client_max {
            return Err(StorageError::Busy);
        }
        *count += 1;
        Ok(Slot {
            _all: all,
            slots: self.clone(),
            client: client.to_owned(),
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self
            .slots
            .per_client
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(count) = counts.get_mut(&self.client) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.client);
            }
        }
    }
}

impl Objects {
    pub fn new(
        db: Database,
        blobs: Blobs,
        policies: TablePolicies,
        signer: UrlSigner,
        settings: ObjectSettings,
    ) -> Self {
        Self {
            buckets: Buckets::new(db.clone()),
            db,
            blobs,
            policies: Arc::new(policies),
            signer,
            slots: Arc::new(UploadSlots {
                all: Arc::new(tokio::sync::Semaphore::new(settings.max_concurrent_uploads)),
                per_client: std::sync::Mutex::new(HashMap::new()),
                per_client_max: (settings.max_concurrent_uploads / 4).max(1),
            }),
            settings,
        }
    }

    pub fn settings(&self) -> &ObjectSettings {
        &self.settings
    }

    fn gate(&self, actor: Actor<'_>, command: Command, check: bool) -> Gate {
        let role = match actor.caller().role() {
            Ok(None) => return Gate::Open,
            Ok(Some(role)) => role,
            Err(_) => return Gate::Closed,
        };
        let condition = if check {
            self.policies.with_check(command, role)
        } else {
            self.policies.using(command, role)
        };
        let condition = match actor.caller() {
            // A signed URL carries no claims: whatever reads one counts against.
            Caller::Delegated { .. } => condition.map(|condition| {
                condition.deciding(
                    &|term| matches!(term, Term::Context(ContextValue::Claim(_))),
                    false,
                )
            }),
            _ => condition,
        };
        condition.map_or(Gate::Closed, Gate::Only)
    }

    fn builder(&self) -> StatementBuilder {
        StatementBuilder::new(self.db.dialect())
    }

    /// `AND <condition>`: existing rows through alias `o`, new values from `row`.
    fn and_gate(
        sql: &mut StatementBuilder,
        gate: &Gate,
        actor: Actor<'_>,
        row: Option<&HashMap<gatehouse_core::Identifier, Value>>,
    ) {
        match gate {
            Gate::Open => {}
            Gate::Only(condition) => {
                sql.and_policy(Some(condition.clone()), actor.caller(), "o", row);
            }
            Gate::Closed => {
                sql.push(" AND (1 = 0)");
            }
        }
    }

    fn text(sql: &mut StatementBuilder, value: &str) {
        sql.param(Value::Text(value.to_owned()), None);
    }

    /// The object if the actor may read it (`select`); invisible is not found.
    pub async fn find(&self, actor: Actor<'_>, bucket: &str, object: &str) -> Result<ObjectRow> {
        let name = name::object_name(object)?;
        let gate = self.gate(actor, Command::Select, false);
        if matches!(gate, Gate::Closed) {
            return Err(StorageError::NoSuchKey);
        }
        let mut sql = self.builder();
        sql.push(&format!(
            "SELECT {COLUMNS} FROM gatehouse_objects AS \"o\" WHERE \"o\".bucket_id = "
        ));
        Self::text(&mut sql, bucket);
        sql.push(" AND \"o\".name = ");
        Self::text(&mut sql, &name);
        Self::and_gate(&mut sql, &gate, actor, None);
        let rows = self.db.query(sql.finish()).await?;
        first_row(&rows)?.ok_or(StorageError::NoSuchKey)
    }

    /// An object of a public bucket, whoever asks (download only).
    pub async fn find_public(&self, bucket: &str, object: &str) -> Result<ObjectRow> {
        let found = self.buckets.get(bucket).await?;
        if !found.public {
            return Err(StorageError::NoSuchBucket);
        }
        self.find(Actor::Caller(&Caller::Service), &found.id, object)
            .await
    }

    /// An object through a signed download URL.
    pub async fn find_signed(&self, bucket: &str, object: &str, token: &str) -> Result<ObjectRow> {
        let name = name::object_name(object)?;
        self.signer
            .verify(token, Purpose::Download, bucket, &name, unix_now())?;
        self.find(Actor::Caller(&Caller::Service), bucket, &name)
            .await
    }

    pub async fn read(
        &self,
        object: &ObjectRow,
    ) -> Result<impl Stream<Item = Result<Bytes>> + Send + 'static + use<>> {
        let (_, stream) = self.blobs.read(&object.version).await?;
        Ok(stream)
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

    /// Whether the actor could write this row now (before any byte is read): a
    /// new object under the insert policy or, with `upsert` where the name is
    /// taken, the object there under the update policy as it is (`using`) and
    /// as it would be (`with check`). Returns the version that would be replaced.
    /// The commit checks again with the real size and type.
    async fn may_write(
        &self,
        actor: Actor<'_>,
        upsert: bool,
        row: &HashMap<gatehouse_core::Identifier, Value>,
        (bucket, name): (&str, &str),
        unknown: &[&str],
    ) -> Result<Option<Option<String>>> {
        let current = match upsert {
            true => self.current_version(bucket, name).await?,
            false => None,
        };
        let mut sql = self.builder();
        match &current {
            Some(version) => {
                let using = self.gate(actor, Command::Update, false);
                let check = assuming(self.gate(actor, Command::Update, true), unknown);
                sql.push("SELECT 1 FROM gatehouse_objects AS \"o\" WHERE \"o\".version = ");
                Self::text(&mut sql, version);
                Self::and_gate(&mut sql, &using, actor, None);
                Self::and_gate(&mut sql, &check, actor, Some(row));
            }
            None => {
                let check = assuming(self.gate(actor, Command::Insert, true), unknown);
                sql.push("SELECT 1 WHERE 1 = 1");
                Self::and_gate(&mut sql, &check, actor, Some(row));
            }
        }
        let allowed = !self.db.query(sql.finish()).await?.is_empty();
        Ok(allowed.then_some(current))
    }

    /// Streams the body into a new blob under the size limit, hashing it and
    /// keeping its first bytes for sniffing.
    async fn write_blob<S, E>(&self, version: &str, mut body: S, limit: u64) -> Result<Written>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let mut writer: BlobWriter = self.blobs.writer(version).await?;
        let mut digest = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        let mut size: u64 = 0;
        let mut head = Vec::new();
        let outcome: Result<()> = async {
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| StorageError::Body(e.to_string()))?;
                size += chunk.len() as u64;
                if size > limit {
                    return Err(StorageError::TooLarge(limit));
                }
                if head.len() < content::SNIFF_BYTES {
                    let take = chunk.len().min(content::SNIFF_BYTES - head.len());
                    head.extend_from_slice(&chunk[..take]);
                }
                digest.update(&chunk);
                writer.write(chunk).await?;
            }
            Ok(())
        }
        .await;
        match outcome {
            Ok(()) => writer.finish().await?,
            Err(error) => {
                writer.abort().await;
                return Err(error);
            }
        }
        let checksum = digest
            .finish()
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Ok(Written {
            size,
            checksum,
            head,
        })
    }

    /// Uploads (or replaces, with `upsert`) an object. Nothing is read from the
    /// body until the bucket, name, declared type and size, and the policies
    /// with what is known so far, all allow it.
    pub async fn upload<S, E>(&self, actor: Actor<'_>, new: NewObject<S>) -> Result<ObjectRow>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let bucket = self.buckets.get(&new.bucket).await?;
        let name = name::object_name(&new.name)?;
        let limit = self.size_limit(&bucket);
        if new.length.is_some_and(|length| length > limit) {
            return Err(StorageError::TooLarge(limit));
        }
        let allowed = bucket.allowed_mime_types.as_deref();
        content::precheck(allowed, new.content_type.as_deref())?;
        let owner = Self::owner(actor);
        let declared = new.content_type.as_deref().unwrap_or("");
        let planned = Self::policy_row(&bucket.id, &name, owner, new.length.unwrap_or(0), declared);
        let place = (bucket.id.as_str(), name.as_str());
        let mut unknown = vec![];
        if new.length.is_none() {
            unknown.push("size");
        }
        if new.content_type.is_none() {
            unknown.push("content_type");
        }
        if self
            .may_write(actor, new.upsert, &planned, place, &unknown)
            .await?
            .is_none()
        {
            return Err(StorageError::Denied);
        }
        let _streaming = self.slots.take(&new.client)?;
        let version = self.begin_blob().await?;
        let written = match self.write_blob(&version, new.body, limit).await {
            Ok(written) => written,
            Err(error) => {
                self.abandon_blob(&version).await;
                return Err(error);
            }
        };
        let settled = content::settle(
            allowed,
            new.content_type.as_deref(),
            content::sniff(&written.head),
        );
        let committed = match settled {
            Ok(content_type) => {
                let row = Stored {
                    bucket: &bucket.id,
                    name: &name,
                    owner,
                    size: written.size,
                    content_type: &content_type,
                    checksum: &written.checksum,
                    version: &version,
                    cache_control: new.cache_control.as_deref(),
                };
                self.commit(actor, &row, new.upsert).await
            }
            Err(error) => Err(error),
        };
        self.tidy_after(committed, &version).await
    }

    /// After a commit the replaced version's bytes go; after a failure, the new ones.
    async fn tidy_after(
        &self,
        committed: Result<(ObjectRow, Option<String>)>,
        version: &str,
    ) -> Result<ObjectRow> {
        match committed {
            Ok((object, replaced)) => {
                if let Some(old) = replaced {
                    self.forget_blob(&old).await;
                }
                Ok(object)
            }
            Err(error) => {
                self.abandon_blob(version).await;
                Err(error)
            }
        }
    }

    /// A fresh version, recorded as being written before any byte is.
    async fn begin_blob(&self) -> Result<String> {
        let version = uuid::Uuid::new_v4().to_string();
        let mut sql = self.builder();
        sql.push("INSERT INTO gatehouse_object_uploads (version, started_at) VALUES (");
        Self::text(&mut sql, &version);
        sql.push(", ");
        sql.param(Value::Integer(unix_now()), Some(ColumnType::Bigint));
        sql.push(")");
        self.db.transaction(vec![sql.finish()]).await?;
        Ok(version)
    }

    /// Deletes the bytes of a version no row names any more.
    async fn forget_blob(&self, version: &str) {
        if let Err(error) = self.blobs.delete(version).await {
            tracing::warn!(%error, "could not delete a blob; the sweep removes it later");
        }
    }

    /// Deletes the bytes of a version that never got its row, and its record.
    async fn abandon_blob(&self, version: &str) {
        if let Err(error) = self.blobs.delete(version).await {
            tracing::warn!(%error, "could not delete a blob; the sweep removes it later");
            return;
        }
        if let Err(error) = self.db.transaction(vec![self.settle_upload(version)]).await {
            tracing::warn!(%error, "could not clear an upload record; the sweep removes it later");
        }
    }

    /// Clears a version's in-flight record: in the transaction that names it,
    /// or after its bytes are deleted.
    fn settle_upload(&self, version: &str) -> gatehouse_db::Statement {
        let mut sql = self.builder();
        sql.push("DELETE FROM gatehouse_object_uploads WHERE version = ");
        Self::text(&mut sql, version);
        sql.finish()
    }

    /// Writes the row naming a finished blob: an insert under the insert
    /// policy, or with `upsert` a replacement under the update policy when the
    /// name is taken. Returns the row and the version it replaced.
    async fn commit(
        &self,
        actor: Actor<'_>,
        row: &Stored<'_>,
        upsert: bool,
    ) -> Result<(ObjectRow, Option<String>)> {
        let current = match upsert {
            true => self.current_version(row.bucket, row.name).await?,
            false => None,
        };
        // A signed URL replaces only the version its signer could replace.
        if let Actor::SignedUpload {
            replaces: Some(replaces),
            ..
        } = actor
            && current.as_deref() != Some(replaces)
        {
            return Err(StorageError::Duplicate);
        }
        if let Some(replaced) = current {
            return self.replace(actor, row, replaced).await;
        }
        match self.insert(actor, row).await {
            Err(StorageError::Duplicate) if upsert => {
                // Another upload took the name meanwhile: replace it instead.
                match self.current_version(row.bucket, row.name).await? {
                    Some(replaced) => self.replace(actor, row, replaced).await,
                    None => Err(StorageError::Duplicate),
                }
            }
            other => other.map(|object| (object, None)),
        }
    }

    async fn current_version(&self, bucket: &str, name: &str) -> Result<Option<String>> {
        let mut sql = self.builder();
        sql.push("SELECT \"o\".version FROM gatehouse_objects AS \"o\" WHERE \"o\".bucket_id = ");
        Self::text(&mut sql, bucket);
        sql.push(" AND \"o\".name = ");
        Self::text(&mut sql, name);
        let rows = self.db.query(sql.finish()).await?;
        rows.first()
            .map(|row| row.text(0).map(str::to_owned))
            .transpose()
            .map_err(Into::into)
    }

    async fn insert(&self, actor: Actor<'_>, row: &Stored<'_>) -> Result<ObjectRow> {
        let gate = self.gate(actor, Command::Insert, true);
        let at = now();
        let mut columns = vec![
            ("id", Value::Text(uuid::Uuid::new_v4().to_string()), None),
            ("bucket_id", Value::Text(row.bucket.to_owned()), None),
            ("name", Value::Text(row.name.to_owned()), None),
            ("metadata", Value::Text("{}".into()), None),
            ("created_at", Value::Text(at.clone()), None),
            ("updated_at", Value::Text(at), None),
        ];
        columns.extend(row.content_columns());
        let names: Vec<&str> = columns.iter().map(|(name, ..)| *name).collect();
        let mut sql = self.builder();
        sql.push(&format!(
            "INSERT INTO gatehouse_objects ({}) SELECT ",
            names.join(", ")
        ));
        for (i, (_, value, ty)) in columns.into_iter().enumerate() {
            if i > 0 {
                sql.push(", ");
            }
            sql.param(value, ty);
        }
        sql.push(" WHERE 1 = 1");
        Self::and_gate(&mut sql, &gate, actor, Some(&row.policy_row()));
        sql.push(&format!(" RETURNING {}", returned()));
        self.write_one(sql, Some(row.version), StorageError::Denied)
            .await
    }

    /// Runs a statement writing one object row (with `names`, in the
    /// transaction that clears that version's in-flight record); `refused` when
    /// no row passed (not there, or not allowed), `Duplicate` when the name is taken.
    async fn write_one(
        &self,
        sql: StatementBuilder,
        names: Option<&str>,
        refused: StorageError,
    ) -> Result<ObjectRow> {
        let mut statements: Vec<_> = names.map(|v| self.settle_upload(v)).into_iter().collect();
        statements.push(sql.finish());
        match self
            .db
            .transaction_if(statements, last_statement_wrote)
            .await
        {
            Ok(Some(results)) => results
                .last()
                .map_or(Ok(None), |rows| first_row(rows))?
                .ok_or(refused),
            Ok(None) => Err(refused),
            Err(error) if error.constraint() == Some(Constraint::Unique) => {
                Err(StorageError::Duplicate)
            }
            Err(error) => Err(error.into()),
        }
    }

    async fn replace(
        &self,
        actor: Actor<'_>,
        row: &Stored<'_>,
        replaced: String,
    ) -> Result<(ObjectRow, Option<String>)> {
        let using = self.gate(actor, Command::Update, false);
        let check = self.gate(actor, Command::Update, true);
        let mut sql = self.builder();
        sql.push("UPDATE gatehouse_objects AS \"o\" SET ");
        for (name, value, ty) in row.content_columns() {
            sql.push(&format!("{name} = "));
            sql.param(value, ty);
            sql.push(", ");
        }
        sql.push("updated_at = ");
        Self::text(&mut sql, &now());
        sql.push(" WHERE \"o\".bucket_id = ");
        Self::text(&mut sql, row.bucket);
        sql.push(" AND \"o\".name = ");
        Self::text(&mut sql, row.name);
        sql.push(" AND \"o\".version = ");
        Self::text(&mut sql, &replaced);
        Self::and_gate(&mut sql, &using, actor, None);
        Self::and_gate(&mut sql, &check, actor, Some(&row.policy_row()));
        sql.push(&format!(" RETURNING {}", returned()));
        match self
            .write_one(sql, Some(row.version), StorageError::Denied)
            .await
        {
            Ok(object) => Ok((object, Some(replaced))),
            // Replaced or removed by another request since it was read.
            Err(StorageError::Denied)
                if self.current_version(row.bucket, row.name).await?.as_deref()
                    != Some(replaced.as_str()) =>
            {
                Err(StorageError::Duplicate)
            }
            Err(error) => Err(error),
        }
    }

    /// Supabase's `list`: the entries one level under `prefix` (a folder is an
    /// entry with no id), of the objects the caller may read.
    pub async fn list(
        &self,
        caller: &Caller,
        bucket: &str,
        request: &ListRequest,
    ) -> Result<Vec<Json>> {
        let bucket = self.buckets.get(bucket).await?;
        let mut prefix = request.prefix.trim_start_matches('/').to_owned();
        if !prefix.is_empty() && !prefix.ends_with('/') {
            prefix.push('/');
        }
        let actor = Actor::Caller(caller);
        let gate = self.gate(actor, Command::Select, false);
        if matches!(gate, Gate::Closed) {
            return Ok(vec![]);
        }
        let mut sql = self.builder();
        sql.push(&format!(
            "SELECT {COLUMNS} FROM gatehouse_objects AS \"o\" WHERE \"o\".bucket_id = "
        ));
        Self::text(&mut sql, &bucket.id);
        // Names compare bytewise on both databases (SQLite's default; "C" on
        // PostgreSQL, whatever the database's collation), so a prefix is a
        // range and pages come in one order. Names hold no U+10FFFF.
        let bytewise = match self.db.dialect() {
            gatehouse_core::Dialect::Sqlite => "\"o\".name",
            gatehouse_core::Dialect::Postgres => "\"o\".name COLLATE \"C\"",
        };
        if !prefix.is_empty() {
            sql.push(&format!(" AND {bytewise} >= "));
            Self::text(&mut sql, &prefix);
            sql.push(&format!(" AND {bytewise} < "));
            Self::text(&mut sql, &format!("{prefix}\u{10FFFF}"));
        }
        Self::and_gate(&mut sql, &gate, actor, None);
        sql.push(&format!(
            " ORDER BY {bytewise} LIMIT {}",
            self.settings.list_scan_limit
        ));
        let rows = self.db.query(sql.finish()).await?;
        let search = request.search.as_deref().unwrap_or("").to_lowercase();
        let mut entries: Vec<(String, Option<ObjectRow>)> = Vec::new();
        let mut folders = std::collections::HashSet::new();
        for row in &rows {
            let object = ObjectRow::from_row(row)?;
            let Some(rest) = object.name.strip_prefix(&prefix) else {
                continue;
            };
            let entry = match rest.split_once('/') {
                Some((folder, _)) => (folder.to_owned(), None),
                None => (rest.to_owned(), Some(object.clone())),
            };
            if !entry.0.to_lowercase().starts_with(&search) {
                continue;
            }
            // A folder is one entry however many objects it holds.
            if entry.1.is_some() || folders.insert(entry.0.clone()) {
                entries.push(entry);
            }
        }
        let column = request.sort_column.as_deref().unwrap_or("name");
        let key = |entry: &(String, Option<ObjectRow>)| -> String {
            match (column, &entry.1) {
                ("created_at", Some(object)) => object.created_at.clone(),
                ("updated_at" | "last_accessed_at", Some(object)) => object.updated_at.clone(),
                ("name", _) => entry.0.clone(),
                _ => String::new(),
            }
        };
        entries.sort_by(|a, b| key(a).cmp(&key(b)).then_with(|| a.0.cmp(&b.0)));
        if request.descending {
            entries.reverse();
        }
        let limit = request.limit.unwrap_or(100).clamp(1, 1000);
        Ok(entries
            .into_iter()
            .skip(request.offset.unwrap_or(0))
            .take(limit)
            .map(|(entry, object)| match object {
                Some(object) => object.file_object(&entry),
                None => json!({
                    "name": entry, "id": null, "updated_at": null, "created_at": null,
                    "last_accessed_at": null, "metadata": null,
                }),
            })
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
        let actor = Actor::Caller(caller);
        let gate = self.gate(actor, Command::Delete, false);
        if names.is_empty() || matches!(gate, Gate::Closed) {
            return Ok(vec![]);
        }
        let mut sql = self.builder();
        sql.push("DELETE FROM gatehouse_objects AS \"o\" WHERE \"o\".bucket_id = ");
        Self::text(&mut sql, &bucket.id);
        sql.push(" AND \"o\".name IN (");
        for (i, name) in names.iter().enumerate() {
            if i > 0 {
                sql.push(", ");
            }
            Self::text(&mut sql, name);
        }
        sql.push(")");
        Self::and_gate(&mut sql, &gate, actor, None);
        sql.push(&format!(" RETURNING {}", returned()));
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
        // Into another bucket, the bytes meet its limits: exactly these bytes,
        // should another upload replace them meanwhile.
        let mut admitted = None;
        if target_bucket.id != source_bucket.id {
            let source = self.find(actor, &source_bucket.id, &from).await?;
            self.admit(&target_bucket, &source).await?;
            admitted = Some(source.version);
        }
        let using = self.gate(actor, Command::Update, false);
        let check = self.gate(actor, Command::Update, true);
        if matches!(using, Gate::Closed) {
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
        Self::and_gate(&mut sql, &using, actor, None);
        Self::and_gate(&mut sql, &check, actor, Some(&moved));
        sql.push(&format!(" RETURNING {}", returned()));
        self.write_one(sql, None, StorageError::NoSuchKey).await
    }

    /// Whether an existing object may enter `bucket` (by move or copy): its size
    /// limit, and where it restricts types, the stored type and what the bytes
    /// are, as for an upload.
    async fn admit(&self, bucket: &Bucket, object: &ObjectRow) -> Result<()> {
        let limit = self.size_limit(bucket);
        if object.size > limit {
            return Err(StorageError::TooLarge(limit));
        }
        if let Some(allowed) = bucket.allowed_mime_types.as_deref() {
            let length = object.size.min(content::SNIFF_BYTES as u64);
            let head = self.blobs.head(&object.version, length).await?;
            content::settle(
                Some(allowed),
                Some(&object.content_type),
                content::sniff(&head),
            )?;
        }
        Ok(())
    }

    /// Copies an object the caller may read to a name it may create.
    pub async fn copy_object(
        &self,
        caller: &Caller,
        bucket: &str,
        from: &str,
        to_bucket: &str,
        to: &str,
        upsert: bool,
    ) -> Result<ObjectRow> {
        let actor = Actor::Caller(caller);
        let source = self.find(actor, bucket, from).await?;
        let target_bucket = self.buckets.get(to_bucket).await?;
        let to = name::object_name(to)?;
        let owner = caller.user_id();
        let planned = Self::policy_row(
            &target_bucket.id,
            &to,
            owner,
            source.size,
            &source.content_type,
        );
        let place = (target_bucket.id.as_str(), to.as_str());
        if self
            .may_write(actor, upsert, &planned, place, &[])
            .await?
            .is_none()
        {
            return Err(StorageError::Denied);
        }
        self.admit(&target_bucket, &source).await?;
        let version = self.begin_blob().await?;
        if let Err(error) = self.blobs.copy(&source.version, &version).await {
            self.abandon_blob(&version).await;
            return Err(error);
        }
        let row = Stored {
            bucket: &target_bucket.id,
            name: &to,
            owner,
            size: source.size,
            content_type: &source.content_type,
            checksum: &source.checksum,
            version: &version,
            cache_control: source.cache_control.as_deref(),
        };
        let committed = self.commit(actor, &row, upsert).await;
        self.tidy_after(committed, &version).await
    }

    /// A signed download URL's path and query (relative to `/storage/v1`), for
    /// an object the caller may read.
    pub async fn sign_download(
        &self,
        caller: &Caller,
        bucket: &str,
        object: &str,
        expires_in: i64,
    ) -> Result<String> {
        if !(1..=self.settings.max_signed_url_secs).contains(&expires_in) {
            return Err(StorageError::Invalid(format!(
                "expiresIn is 1 to {} seconds",
                self.settings.max_signed_url_secs
            )));
        }
        let found = self.find(Actor::Caller(caller), bucket, object).await?;
        let token = self.signer.sign(&Grant {
            purpose: Purpose::Download,
            bucket: found.bucket_id.clone(),
            name: found.name.clone(),
            expires: unix_now() + expires_in,
            signer_role: None,
            owner: None,
            replaces: None,
        });
        Ok(format!(
            "/object/sign/{}/{}?token={token}",
            found.bucket_id, found.name
        ))
    }

    /// A signed upload URL for a name the caller may create (checked now, with
    /// what is known now; the bucket's size and type limits apply at upload).
    pub async fn sign_upload(
        &self,
        caller: &Caller,
        bucket: &str,
        object: &str,
        upsert: bool,
    ) -> Result<(String, String)> {
        let bucket = self.buckets.get(bucket).await?;
        let name = name::object_name(object)?;
        let actor = Actor::Caller(caller);
        let planned = Self::policy_row(&bucket.id, &name, caller.user_id(), 0, "");
        let place = (bucket.id.as_str(), name.as_str());
        let Some(replaces) = self
            .may_write(actor, upsert, &planned, place, &["size", "content_type"])
            .await?
        else {
            return Err(StorageError::Denied);
        };
        let signer_role = match caller.role() {
            Ok(None) => "service",
            Ok(Some(Role::Authenticated)) => "authenticated",
            Ok(Some(Role::Anon)) => "anon",
            Err(_) => return Err(StorageError::Denied),
        };
        let token = self.signer.sign(&Grant {
            purpose: Purpose::Upload,
            bucket: bucket.id.clone(),
            name: name.clone(),
            expires: unix_now() + self.settings.signed_upload_secs,
            signer_role: Some(signer_role.to_owned()),
            owner: caller.user_id().map(str::to_owned),
            replaces,
        });
        Ok((
            format!("/object/upload/sign/{}/{name}?token={token}", bucket.id),
            token,
        ))
    }

    /// Checks a signed upload URL's token: what it grants, for [`Actor::SignedUpload`].
    pub fn verify_upload(&self, bucket: &str, object: &str, token: &str) -> Result<Grant> {
        let name = name::object_name(object)?;
        self.signer
            .verify(token, Purpose::Upload, bucket, &name, unix_now())
    }

    /// Removes bytes no object names and no live upload is writing (an upload
    /// older than the upload time limit plus the grace is dead); see
    /// [`Blobs::sweep`]. Then forgets the dead uploads' records.
    pub async fn sweep(&self) -> Result<usize> {
        let stale = self.settings.write_timeout + self.settings.orphan_grace;
        let cutoff = unix_now() - i64::try_from(stale.as_secs()).unwrap_or(i64::MAX);
        let db = self.db.clone();
        let removed = self
            .blobs
            .sweep(move |versions| {
                let db = db.clone();
                async move { kept_versions(&db, versions, cutoff).await }
            })
            .await?;
        let mut sql = self.builder();
        sql.push("DELETE FROM gatehouse_object_uploads WHERE started_at < ");
        sql.param(Value::Integer(cutoff), Some(ColumnType::Bigint));
        self.db.transaction(vec![sql.finish()]).await?;
        Ok(removed)
    }
}

/// Which of `versions` an object names or an upload started after `cutoff`
/// (unix seconds) is writing.
async fn kept_versions(db: &Database, versions: Vec<String>, cutoff: i64) -> Result<Vec<String>> {
    let mut sql = StatementBuilder::new(db.dialect());
    let list = |sql: &mut StatementBuilder| {
        for (i, version) in versions.iter().enumerate() {
            if i > 0 {
                sql.push(", ");
            }
            sql.param(Value::Text(version.clone()), None);
        }
    };
    sql.push("SELECT version FROM gatehouse_objects WHERE version IN (");
    list(&mut sql);
    sql.push(") UNION SELECT version FROM gatehouse_object_uploads WHERE version IN (");
    list(&mut sql);
    sql.push(") AND started_at >= ");
    sql.param(Value::Integer(cutoff), Some(ColumnType::Bigint));
    let rows = db.query(sql.finish()).await?;
    rows.iter()
        .map(|row| row.text(0).map(str::to_owned).map_err(Into::into))
        .collect()
}

/// The row an upload or copy commits.
struct Stored<'a> {
    bucket: &'a str,
    name: &'a str,
    owner: Option<&'a str>,
    size: u64,
    content_type: &'a str,
    checksum: &'a str,
    version: &'a str,
    cache_control: Option<&'a str>,
}

impl Stored<'_> {
    /// The columns an upload sets on its row (besides where and when).
    fn content_columns(&self) -> [(&'static str, Value, Option<ColumnType>); 6] {
        let optional = |text: Option<&str>| text.map_or(Value::Null, |t| Value::Text(t.to_owned()));
        [
            ("owner", optional(self.owner), None),
            (
                "size",
                Value::Integer(i64::try_from(self.size).unwrap_or(i64::MAX)),
                Some(ColumnType::Bigint),
            ),
            (
                "content_type",
                Value::Text(self.content_type.to_owned()),
                None,
            ),
            ("checksum", Value::Text(self.checksum.to_owned()), None),
            ("version", Value::Text(self.version.to_owned()), None),
            ("cache_control", optional(self.cache_control), None),
        ]
    }

    fn policy_row(&self) -> HashMap<gatehouse_core::Identifier, Value> {
        Objects::policy_row(
            self.bucket,
            self.name,
            self.owner,
            self.size,
            self.content_type,
        )
    }
}
