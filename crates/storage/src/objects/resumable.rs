//! Resumable uploads, the storage side of TUS: an upload is checked against
//! the bucket and the storage policies when it is created, its bytes arrive
//! over any number of requests (each stored as a part, durably, before its
//! offset is acknowledged), and the last byte turns the parts into the object
//! through the ordinary upload path, checked again with the real size and
//! type. Only the caller who created an upload may continue, inspect or end it.

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt, stream};
use gatehouse_db::{Constraint, Value};
use gatehouse_rest::{Caller, StatementBuilder};
use gatehouse_schema::ColumnType;

use super::{Actor, NewObject, Objects, last_statement_wrote, unix_now};
use crate::{Result, StorageError, content, name};

/// Parts one upload may gather: each request that delivers bytes adds one.
const MAX_PARTS: i64 = 1_000;
/// Expired uploads one sweep forgets.
const EXPIRED_PER_SWEEP: u64 = 100;

/// A resumable upload to start, as its creation request describes it.
pub struct NewResumable {
    pub bucket: String,
    pub name: String,
    pub content_type: Option<String>,
    pub cache_control: Option<String>,
    pub upsert: bool,
    /// The whole object's length, announced up front.
    pub length: u64,
}

/// Where a resumable upload stands: `received` bytes of `length` are stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resumable {
    pub id: String,
    pub length: u64,
    pub received: u64,
}

/// An upload's row.
struct Pending {
    id: String,
    bucket: String,
    name: String,
    content_type: Option<String>,
    cache_control: Option<String>,
    upsert: bool,
    length: u64,
    received: u64,
}

impl Pending {
    fn state(&self) -> Resumable {
        Resumable {
            id: self.id.clone(),
            length: self.length,
            received: self.received,
        }
    }
}

/// Who may continue an upload: the user who started it, the service role, or
/// (for an anonymous one) whoever holds its unguessable id.
fn holder(caller: &Caller) -> String {
    match caller.user_id() {
        _ if caller.is_service() => "service".to_owned(),
        Some(user) => format!("user {user}"),
        None => "anon".to_owned(),
    }
}

fn count(value: u64) -> Value {
    Value::Integer(i64::try_from(value).unwrap_or(i64::MAX))
}

impl Objects {
    /// Starts a resumable upload if an upload of `length` bytes to that name
    /// would be allowed now (bucket, name, size, type and policies).
    pub async fn begin_resumable(&self, caller: &Caller, new: NewResumable) -> Result<Resumable> {
        let bucket = self.buckets.get(&new.bucket).await?;
        let name = name::object_name(&new.name)?;
        let limit = self.size_limit(&bucket);
        if new.length > limit {
            return Err(StorageError::TooLarge(limit));
        }
        content::precheck(
            bucket.allowed_mime_types.as_deref(),
            new.content_type.as_deref(),
        )?;
        let declared = new.content_type.as_deref().unwrap_or("");
        let planned = Self::policy_row(&bucket.id, &name, caller.user_id(), new.length, declared);
        let unknown: &[&str] = match new.content_type {
            Some(_) => &[],
            None => &["content_type"],
        };
        let place = (bucket.id.as_str(), name.as_str());
        let actor = Actor::Caller(caller);
        if self
            .may_write(actor, new.upsert, &planned, place, unknown)
            .await?
            .is_none()
        {
            return Err(StorageError::Denied);
        }
        let id = uuid::Uuid::new_v4().to_string();
        let ttl = i64::try_from(self.settings.resumable_ttl.as_secs()).unwrap_or(i64::MAX);
        let optional = |text: &Option<String>| text.clone().map_or(Value::Null, Value::Text);
        let mut sql = StatementBuilder::without_policy(
            self.db.dialect(),
            "records a resumable upload the policies allowed to start",
        );
        sql.push(
            "INSERT INTO gatehouse_resumable_uploads (id, holder, bucket_id, name, \
             content_type, cache_control, upsert, length, received, expires_at) VALUES (",
        );
        let values = [
            Value::Text(id.clone()),
            Value::Text(holder(caller)),
            Value::Text(bucket.id.clone()),
            Value::Text(name),
            optional(&new.content_type),
            optional(&new.cache_control),
        ];
        for value in values {
            sql.param(value, None).push(", ");
        }
        let numbers = [
            Value::Integer(i64::from(new.upsert)),
            count(new.length),
            Value::Integer(0),
            Value::Integer(unix_now().saturating_add(ttl)),
        ];
        for (i, value) in numbers.into_iter().enumerate() {
            if i > 0 {
                sql.push(", ");
            }
            sql.param(value, Some(ColumnType::Bigint));
        }
        sql.push(")");
        self.db.transaction(vec![sql.finish()]).await?;
        Ok(Resumable {
            id,
            length: new.length,
            received: 0,
        })
    }

    /// Where the caller's upload stands; an upload whose bytes are all stored
    /// is finished first (again, if a finish was cut short).
    pub async fn resumable_status(
        &self,
        caller: &Caller,
        id: &str,
        client: &str,
    ) -> Result<Resumable> {
        let upload = self.pending(caller, id).await?;
        if upload.received == upload.length {
            self.finish_resumable(caller, &upload, client).await?;
        }
        Ok(upload.state())
    }

    /// Stores the bytes of `body` at `offset`, which must be the bytes stored
    /// so far. A body cut off midway keeps what arrived (the error says why it
    /// stopped); the last byte finishes the object.
    pub async fn append_resumable<S, E>(
        &self,
        caller: &Caller,
        (id, offset): (&str, u64),
        client: &str,
        body: S,
    ) -> Result<Resumable>
    where
        S: futures_util::Stream<Item = std::result::Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let mut upload = self.pending(caller, id).await?;
        if offset != upload.received {
            return Err(StorageError::UploadOffset(upload.received));
        }
        let mut cut = None;
        if upload.received < upload.length {
            let _streaming = self.slots.take(client)?;
            if self.part_count(id).await? >= MAX_PARTS {
                return Err(StorageError::Invalid(format!(
                    "an upload takes at most {MAX_PARTS} requests with bytes"
                )));
            }
            let version = self.begin_blob().await?;
            let remaining = upload.length - upload.received;
            let written = match self.write_blob(&version, body, remaining, true).await {
                Ok((written, interrupted)) => {
                    cut = interrupted;
                    written.size
                }
                Err(error) => {
                    self.abandon_blob(&version).await;
                    return Err(error);
                }
            };
            if written == 0 {
                self.abandon_blob(&version).await;
            } else if !self.store_part(&upload, &version, written).await? {
                self.abandon_blob(&version).await;
                let now = self.pending(caller, id).await?;
                return Err(StorageError::UploadOffset(now.received));
            }
            upload.received += written;
        }
        if let Some(error) = cut {
            return Err(error);
        }
        if upload.received == upload.length {
            self.finish_resumable(caller, &upload, client).await?;
        }
        Ok(upload.state())
    }

    /// Ends the caller's upload, dropping its bytes.
    pub async fn cancel_resumable(&self, caller: &Caller, id: &str) -> Result<()> {
        let upload = self.pending(caller, id).await?;
        self.forget_resumable(&upload.id).await
    }

    /// The caller's live upload; anyone else's, or an expired one, is not found.
    async fn pending(&self, caller: &Caller, id: &str) -> Result<Pending> {
        let mut sql = StatementBuilder::without_policy(
            self.db.dialect(),
            "a resumable upload, matched to the caller who started it",
        );
        sql.push(
            "SELECT id, bucket_id, name, content_type, cache_control, upsert, length, received \
             FROM gatehouse_resumable_uploads WHERE id = ",
        );
        Self::text(&mut sql, id);
        sql.push(" AND holder = ");
        Self::text(&mut sql, &holder(caller));
        sql.push(" AND expires_at >= ");
        sql.param(Value::Integer(unix_now()), Some(ColumnType::Bigint));
        let rows = self.db.query(sql.finish()).await?;
        let row = rows.first().ok_or(StorageError::NoSuchKey)?;
        let number = |column| row.integer(column).map(|n| u64::try_from(n).unwrap_or(0));
        Ok(Pending {
            id: row.text(0)?.to_owned(),
            bucket: row.text(1)?.to_owned(),
            name: row.text(2)?.to_owned(),
            content_type: row.optional_text(3)?.map(str::to_owned),
            cache_control: row.optional_text(4)?.map(str::to_owned),
            upsert: row.integer(5)? != 0,
            length: number(6)?,
            received: number(7)?,
        })
    }

    async fn part_count(&self, id: &str) -> Result<i64> {
        let mut sql = StatementBuilder::without_policy(
            self.db.dialect(),
            "how many parts a resumable upload has",
        );
        sql.push(
            "SELECT CAST(COUNT(*) AS BIGINT) FROM gatehouse_resumable_parts WHERE upload_id = ",
        );
        Self::text(&mut sql, id);
        let rows = self.db.query(sql.finish()).await?;
        Ok(rows
            .first()
            .map(|row| row.integer(0))
            .transpose()?
            .unwrap_or(0))
    }

    /// Names a written part and moves the upload's offset past it, in one
    /// transaction that also clears the part's in-flight record; false when
    /// another request moved the offset first.
    async fn store_part(&self, upload: &Pending, version: &str, size: u64) -> Result<bool> {
        let dialect = self.db.dialect();
        let mut part = StatementBuilder::without_policy(dialect, "names a resumable upload's part");
        part.push(
            "INSERT INTO gatehouse_resumable_parts (upload_id, start, size, version) VALUES (",
        );
        Self::text(&mut part, &upload.id);
        part.push(", ");
        part.param(count(upload.received), Some(ColumnType::Bigint));
        part.push(", ");
        part.param(count(size), Some(ColumnType::Bigint));
        part.push(", ");
        Self::text(&mut part, version);
        part.push(")");
        let mut offset =
            StatementBuilder::without_policy(dialect, "moves a resumable upload's offset");
        offset.push("UPDATE gatehouse_resumable_uploads SET received = received + ");
        offset.param(count(size), Some(ColumnType::Bigint));
        offset.push(" WHERE id = ");
        Self::text(&mut offset, &upload.id);
        offset.push(" AND received = ");
        offset.param(count(upload.received), Some(ColumnType::Bigint));
        offset.push(" RETURNING id");
        let statements = vec![self.settle_upload(version), part.finish(), offset.finish()];
        match self
            .db
            .transaction_if(statements, last_statement_wrote)
            .await
        {
            Ok(stored) => Ok(stored.is_some()),
            // Another request stored a part at this offset.
            Err(error) if error.constraint() == Some(Constraint::Unique) => Ok(false),
            Err(error) => Err(error.into()),
        }
    }

    /// The part versions of an upload, in order.
    async fn parts(&self, id: &str) -> Result<Vec<String>> {
        let mut sql = StatementBuilder::without_policy(
            self.db.dialect(),
            "the parts of a resumable upload, in order",
        );
        sql.push("SELECT version FROM gatehouse_resumable_parts WHERE upload_id = ");
        Self::text(&mut sql, id);
        sql.push(" ORDER BY start");
        let rows = self.db.query(sql.finish()).await?;
        rows.iter()
            .map(|row| row.text(0).map(str::to_owned).map_err(Into::into))
            .collect()
    }

    /// Makes the object from the parts, as an ordinary upload of their bytes
    /// into the version named after the upload, so a finish repeated after a
    /// crash sees that the first committed. A refusal ends the upload.
    async fn finish_resumable(
        &self,
        caller: &Caller,
        upload: &Pending,
        client: &str,
    ) -> Result<()> {
        if !self.version_named(&upload.id).await? {
            let blobs = self.blobs.clone();
            let body = stream::iter(self.parts(&upload.id).await?)
                .then(move |version| {
                    let blobs = blobs.clone();
                    async move { blobs.read(&version, None).await }
                })
                .try_flatten()
                .boxed();
            let new = NewObject {
                bucket: upload.bucket.clone(),
                name: upload.name.clone(),
                content_type: upload.content_type.clone(),
                cache_control: upload.cache_control.clone(),
                upsert: upload.upsert,
                length: Some(upload.length),
                client: client.to_owned(),
                body,
            };
            let finished = self
                .upload_as(Actor::Caller(caller), new, Some(&upload.id))
                .await;
            if let Err(error) = finished {
                let lasting = !matches!(
                    error,
                    StorageError::Busy | StorageError::Backend(_) | StorageError::Database(_)
                );
                if lasting {
                    self.forget_resumable(&upload.id).await?;
                }
                return Err(error);
            }
        }
        self.forget_resumable(&upload.id).await
    }

    async fn version_named(&self, version: &str) -> Result<bool> {
        let mut sql = StatementBuilder::without_policy(
            self.db.dialect(),
            "whether a resumable upload's object was committed",
        );
        sql.push("SELECT 1 FROM gatehouse_objects WHERE version = ");
        Self::text(&mut sql, version);
        Ok(!self.db.query(sql.finish()).await?.is_empty())
    }

    /// Drops an upload's row and parts, then their bytes (what cannot be
    /// deleted now, no row names, so the sweep takes it).
    async fn forget_resumable(&self, id: &str) -> Result<()> {
        let parts = self.parts(id).await?;
        let mut sql = StatementBuilder::without_policy(
            self.db.dialect(),
            "forgets a resumable upload finished, ended or expired",
        );
        sql.push("DELETE FROM gatehouse_resumable_uploads WHERE id = ");
        Self::text(&mut sql, id);
        self.db.transaction(vec![sql.finish()]).await?;
        for version in parts {
            self.forget_blob(&version).await;
        }
        Ok(())
    }

    /// Forgets uploads past their time (for the sweep).
    pub(super) async fn forget_expired_resumables(&self) -> Result<()> {
        let mut sql = StatementBuilder::without_policy(
            self.db.dialect(),
            "finds resumable uploads past their time",
        );
        sql.push("SELECT id FROM gatehouse_resumable_uploads WHERE expires_at < ");
        sql.param(Value::Integer(unix_now()), Some(ColumnType::Bigint));
        sql.push(" LIMIT ").number(EXPIRED_PER_SWEEP);
        for row in self.db.query(sql.finish()).await? {
            self.forget_resumable(row.text(0)?).await?;
        }
        Ok(())
    }
}
