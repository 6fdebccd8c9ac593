//! Writing objects: uploads (checked before the body, streamed into a fresh
//! blob, committed under the policy's `with check`), copies, the records of
//! versions being written, and the sweep of bytes no row names.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use gatehouse_db::{Constraint, Database, Value};
use gatehouse_policy::{Command, Term};
use gatehouse_rest::{Caller, Decided, Decision, Rows, StatementBuilder};
use gatehouse_schema::ColumnType;

use super::{
    Actor, NewObject, ObjectRow, Objects, RETURNED, first_row, last_statement_wrote, now, unix_now,
};
use crate::blobs::BlobWriter;
use crate::{Result, StorageError, content, name};

/// What an upload's bytes came to.
pub(super) struct Written {
    pub(super) size: u64,
    checksum: String,
    head: Vec<u8>,
}

/// Uploads streaming at once: in all, and per client (a user, or an address
/// when anonymous), so one client cannot hold every slot.
pub(super) struct UploadSlots {
    all: Arc<tokio::sync::Semaphore>,
    per_client: std::sync::Mutex<HashMap<String, usize>>,
    per_client_max: usize,
}

/// One upload's place; given back when dropped.
pub(super) struct Slot {
    _all: tokio::sync::OwnedSemaphorePermit,
    slots: Arc<UploadSlots>,
    client: String,
}

impl UploadSlots {
    pub(super) fn new(max: usize) -> Self {
        Self {
            all: Arc::new(tokio::sync::Semaphore::new(max)),
            per_client: std::sync::Mutex::new(HashMap::new()),
            per_client_max: (max / 4).max(1),
        }
    }

    pub(super) fn take(self: &Arc<Self>, client: &str) -> Result<Slot> {
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

/// A check of a new row whose `unknown` columns are not known yet (a precheck
/// before the body, a signed upload URL): whatever reads them is assumed to
/// pass, for the commit checks the real values.
fn assuming(decision: Decision, unknown: &[&str]) -> Decision {
    if unknown.is_empty() {
        return decision;
    }
    decision.assuming(&|term| reads_column(term, unknown))
}

/// Whether `term` reads one of `names` of the object itself.
fn reads_column(term: &Term, names: &[&str]) -> bool {
    match term {
        Term::Column { depth: 0, name, .. } => names.contains(&name.as_str()),
        Term::Path { column, .. } => reads_column(column, names),
        _ => false,
    }
}

/// Which of `versions` an object names, an upload started after `cutoff`
/// (unix seconds) is writing, or a resumable upload holds as a part.
async fn kept_versions(db: &Database, versions: Vec<String>, cutoff: i64) -> Result<Vec<String>> {
    let mut sql =
        StatementBuilder::without_policy(db.dialect(), "the sweep asks which versions are in use");
    sql.push("SELECT version FROM gatehouse_objects WHERE version IN (");
    Objects::texts(&mut sql, &versions);
    sql.push(") UNION SELECT version FROM gatehouse_object_uploads WHERE version IN (");
    Objects::texts(&mut sql, &versions);
    sql.push(") AND started_at >= ");
    sql.param(Value::Integer(cutoff), Some(ColumnType::Bigint));
    sql.push(" UNION SELECT version FROM gatehouse_resumable_parts WHERE version IN (");
    Objects::texts(&mut sql, &versions);
    sql.push(")");
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

impl Objects {
    /// Whether the actor could write this row now (before any byte is read): a
    /// new object under the insert policy or, with `upsert` where the name is
    /// taken, the object there under the update policy as it is (`using`) and
    /// as it would be (`with check`). Returns the version that would be replaced.
    /// The commit checks again with the real size and type.
    pub(super) async fn may_write(
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
        let sql = match &current {
            Some(version) => {
                let using = self.decision(actor, Command::Update, Rows::Existing);
                let check = self.decision(actor, Command::Update, Rows::Written);
                sql.push("SELECT 1 FROM gatehouse_objects AS \"o\" WHERE \"o\".version = ");
                Self::text(&mut sql, version);
                let mut sql = sql.and_decision(&using, "o", None);
                sql.and_also(&assuming(check, unknown), "o", Some(row));
                sql
            }
            None => {
                let check = self.decision(actor, Command::Insert, Rows::Written);
                sql.push("SELECT 1 WHERE 1 = 1");
                sql.and_decision(&assuming(check, unknown), "o", Some(row))
            }
        };
        let allowed = !self.db.query(sql.finish()).await?.is_empty();
        Ok(allowed.then_some(current))
    }

    /// Streams the body into a new blob under the size limit, hashing it and
    /// keeping its first bytes for sniffing. A body cut off midway abandons the
    /// blob, or with `keep_received` keeps what arrived and says why it ended.
    pub(super) async fn write_blob<S, E>(
        &self,
        version: &str,
        mut body: S,
        limit: u64,
        keep_received: bool,
    ) -> Result<(Written, Option<StorageError>)>
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
        let cut = match outcome {
            Ok(()) => None,
            Err(error @ StorageError::Body(_)) if keep_received && size > 0 => Some(error),
            Err(error) => {
                writer.abort().await;
                return Err(error);
            }
        };
        writer.finish().await?;
        let checksum = digest
            .finish()
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let written = Written {
            size,
            checksum,
            head,
        };
        Ok((written, cut))
    }

    /// Uploads (or replaces, with `upsert`) an object. Nothing is read from the
    /// body until the bucket, name, declared type and size, and the policies
    /// with what is known so far, all allow it.
    pub async fn upload<S, E>(&self, actor: Actor<'_>, new: NewObject<S>) -> Result<ObjectRow>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        self.upload_as(actor, new, None).await
    }

    /// [`Self::upload`] into the given version, when there is one: a
    /// resumable upload's object is its id, so a finish repeated after a crash
    /// can tell whether the first one committed.
    pub(super) async fn upload_as<S, E>(
        &self,
        actor: Actor<'_>,
        new: NewObject<S>,
        version: Option<&str>,
    ) -> Result<ObjectRow>
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
        let version = match version {
            Some(version) => self.begin_blob_again(version).await?,
            None => self.begin_blob().await?,
        };
        let written = match self.write_blob(&version, new.body, limit, false).await {
            Ok((written, _)) => written,
            Err(error) => {
                self.abandon_blob(&version).await;
                return Err(error);
            }
        };
        let settled = content::settle(
            allowed,
            new.content_type.as_deref(),
            content::sniff(&written.head),
        )
        .and_then(|settled| content::name_fits(allowed, &name, &settled).map(|()| settled));
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
    pub(super) async fn begin_blob(&self) -> Result<String> {
        let version = uuid::Uuid::new_v4().to_string();
        self.db
            .transaction(vec![self.upload_record(&version)])
            .await?;
        Ok(version)
    }

    /// Records `version` as being written again, after an attempt that died.
    async fn begin_blob_again(&self, version: &str) -> Result<String> {
        let statements = vec![self.settle_upload(version), self.upload_record(version)];
        self.db.transaction(statements).await?;
        Ok(version.to_owned())
    }

    fn upload_record(&self, version: &str) -> gatehouse_db::Statement {
        let mut sql = StatementBuilder::without_policy(
            self.db.dialect(),
            "records a version before its bytes are written",
        );
        sql.push("INSERT INTO gatehouse_object_uploads (version, started_at) VALUES (");
        Self::text(&mut sql, version);
        sql.push(", ");
        sql.param(Value::Integer(unix_now()), Some(ColumnType::Bigint));
        sql.push(")");
        sql.finish()
    }

    /// Deletes the bytes of a version no row names any more; whether it could.
    pub(super) async fn forget_blob(&self, version: &str) -> bool {
        let deleted = self.blobs.delete(version).await;
        if let Err(error) = &deleted {
            tracing::warn!(%error, "could not delete a blob; the sweep removes it later");
        }
        deleted.is_ok()
    }

    /// Deletes the bytes of a version that never got its row, and its record
    /// (kept while the bytes stay, so the sweep finds them).
    pub(super) async fn abandon_blob(&self, version: &str) {
        if !self.forget_blob(version).await {
            return;
        }
        if let Err(error) = self.db.transaction(vec![self.settle_upload(version)]).await {
            tracing::warn!(%error, "could not clear an upload record; the sweep removes it later");
        }
    }

    /// Clears a version's in-flight record: in the transaction that names it,
    /// or after its bytes are deleted.
    pub(super) fn settle_upload(&self, version: &str) -> gatehouse_db::Statement {
        let mut sql = StatementBuilder::without_policy(
            self.db.dialect(),
            "clears the record of a version written or abandoned",
        );
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
        // The write that follows carries the caller's decision; the version only
        // names which row that write may replace.
        let mut sql = StatementBuilder::without_policy(
            self.db.dialect(),
            "which version a name holds, for the write that follows",
        );
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
        let check = self.decision(actor, Command::Insert, Rows::Written);
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
        let mut sql = self.builder();
        sql.push("INSERT INTO gatehouse_objects (");
        for (i, (name, ..)) in columns.iter().enumerate() {
            if i > 0 {
                sql.push(", ");
            }
            sql.push(name);
        }
        sql.push(") SELECT ");
        for (i, (_, value, ty)) in columns.into_iter().enumerate() {
            if i > 0 {
                sql.push(", ");
            }
            sql.param(value, ty);
        }
        sql.push(" WHERE 1 = 1");
        let mut sql = sql.and_decision(&check, "o", Some(&row.policy_row()));
        sql.push(" RETURNING ").push(RETURNED);
        self.write_one(sql, Some(row.version), StorageError::Denied)
            .await
    }

    /// Runs a statement writing one object row (with `names`, in the
    /// transaction that clears that version's in-flight record); `refused` when
    /// no row passed (not there, or not allowed), `Duplicate` when the name is taken.
    pub(super) async fn write_one(
        &self,
        sql: StatementBuilder<Decided>,
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
        let using = self.decision(actor, Command::Update, Rows::Existing);
        let check = self.decision(actor, Command::Update, Rows::Written);
        let mut sql = self.builder();
        sql.push("UPDATE gatehouse_objects AS \"o\" SET ");
        for (name, value, ty) in row.content_columns() {
            sql.push(name).push(" = ");
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
        let mut sql = sql.and_decision(&using, "o", None);
        sql.and_also(&check, "o", Some(&row.policy_row()))
            .push(" RETURNING ")
            .push(RETURNED);
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

    /// Removes bytes no object names and no live upload is writing (an upload
    /// older than the upload time limit plus the grace is dead); see
    /// [`Blobs::sweep`]. Then forgets the dead uploads' records.
    pub async fn sweep(&self) -> Result<usize> {
        let stale = self.settings.write_timeout + self.settings.orphan_grace;
        let cutoff = unix_now() - i64::try_from(stale.as_secs()).unwrap_or(i64::MAX);
        self.forget_expired_resumables().await?;
        let db = self.db.clone();
        let removed = self
            .blobs
            .sweep(move |versions| {
                let db = db.clone();
                async move { kept_versions(&db, versions, cutoff).await }
            })
            .await?;
        let mut sql =
            StatementBuilder::without_policy(self.db.dialect(), "forgets uploads that died");
        sql.push("DELETE FROM gatehouse_object_uploads WHERE started_at < ");
        sql.param(Value::Integer(cutoff), Some(ColumnType::Bigint));
        self.db.transaction(vec![sql.finish()]).await?;
        Ok(removed)
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
        self.admit(&target_bucket, &source, &to).await?;
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
}
