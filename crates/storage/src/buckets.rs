//! Buckets: create, read, list, update, empty and delete (the secret key's
//! business; the edge checks that). A bucket holds its public flag, its largest
//! object and the content types it admits.

use gatehouse_db::{Constraint, Database, Row, Sql, Statement, Value};

use crate::{Result, StorageError, name};

/// The most bytes one object may have, whatever a bucket says.
pub const MAX_OBJECT_BYTES: u64 = 5 << 30;

#[derive(Debug, Clone, PartialEq)]
pub struct Bucket {
    pub id: String,
    pub public: bool,
    pub file_size_limit: Option<u64>,
    pub allowed_mime_types: Option<Vec<String>>,
    pub created_at: String,
    pub updated_at: String,
}

impl Bucket {
    fn from_row(row: &Row) -> Result<Self> {
        let allowed = row
            .optional_text(3)?
            .map(|text| serde_json::from_str::<Vec<String>>(text).unwrap_or_default());
        let limit = match row.0.get(2) {
            Some(Value::Integer(bytes)) => Some(bytes.unsigned_abs()),
            _ => None,
        };
        Ok(Self {
            id: row.text(0)?.to_owned(),
            public: row.flag(1)?,
            file_size_limit: limit,
            allowed_mime_types: allowed,
            created_at: row.text(4)?.to_owned(),
            updated_at: row.text(5)?.to_owned(),
        })
    }
}

/// What a new bucket is made of.
#[derive(Debug, Clone, Default)]
pub struct NewBucket {
    pub id: String,
    pub public: bool,
    pub file_size_limit: Option<u64>,
    pub allowed_mime_types: Option<Vec<String>>,
}

/// What an update changes; `None` keeps the current value.
#[derive(Debug, Clone, Default)]
pub struct BucketChanges {
    pub public: Option<bool>,
    pub file_size_limit: Option<Option<u64>>,
    pub allowed_mime_types: Option<Option<Vec<String>>>,
}

const INSERT: Sql = Sql::both(
    "INSERT INTO gatehouse_buckets (id, public, file_size_limit, allowed_mime_types, created_at, updated_at) \
     VALUES ($1, $2, $3, $4, $5, $5)",
);

const ONE: Sql = Sql::both(
    "SELECT id, public, file_size_limit, allowed_mime_types, created_at, updated_at \
     FROM gatehouse_buckets WHERE id = $1",
);

const ALL: Sql = Sql::both(
    "SELECT id, public, file_size_limit, allowed_mime_types, created_at, updated_at \
     FROM gatehouse_buckets ORDER BY id LIMIT 1000",
);

const UPDATE: Sql = Sql::both(
    "UPDATE gatehouse_buckets SET public = $2, file_size_limit = $3, allowed_mime_types = $4, \
     updated_at = $5 WHERE id = $1",
);

const EMPTY: Sql = Sql::both("DELETE FROM gatehouse_objects WHERE bucket_id = $1");

/// Deletes the bucket only while it holds no object.
const DELETE: Sql = Sql::both(
    "DELETE FROM gatehouse_buckets WHERE id = $1 \
     AND NOT EXISTS (SELECT 1 FROM gatehouse_objects WHERE bucket_id = $1) RETURNING id",
);

fn now() -> String {
    gatehouse_db::timestamp(time::OffsetDateTime::now_utc())
}

fn limit_value(limit: Option<u64>) -> Result<Value> {
    match limit {
        None => Ok(Value::Null),
        Some(0) => Err(StorageError::Invalid(
            "file_size_limit must be positive".into(),
        )),
        Some(bytes) if bytes > MAX_OBJECT_BYTES => Err(StorageError::Invalid(format!(
            "file_size_limit is at most {MAX_OBJECT_BYTES} bytes"
        ))),
        Some(bytes) => Ok(Value::Integer(i64::try_from(bytes).unwrap_or(i64::MAX))),
    }
}

/// A MIME type pattern: `type/subtype`, either part `*`, printable ASCII.
fn types_value(types: Option<&[String]>) -> Result<Value> {
    let Some(types) = types else {
        return Ok(Value::Null);
    };
    for pattern in types {
        let valid = pattern.split_once('/').is_some_and(|(kind, sub)| {
            let token = |part: &str| {
                !part.is_empty()
                    && part
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+*".contains(&b))
            };
            token(kind) && token(sub)
        });
        if !valid || types.len() > 100 {
            return Err(StorageError::Invalid(format!(
                "{pattern:?} is not a MIME type such as image/png or image/*"
            )));
        }
    }
    Ok(Value::Text(serde_json::json!(types).to_string()))
}

#[derive(Clone)]
pub struct Buckets {
    db: Database,
}

impl Buckets {
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    pub async fn create(&self, bucket: NewBucket) -> Result<Bucket> {
        let id = name::bucket_id(&bucket.id)?.to_owned();
        let statement = Statement::new(
            &INSERT,
            vec![
                id.clone().into(),
                Value::Bool(bucket.public),
                limit_value(bucket.file_size_limit)?,
                types_value(bucket.allowed_mime_types.as_deref())?,
                now().into(),
            ],
        );
        match self.db.transaction(vec![statement]).await {
            Err(error) if error.constraint() == Some(Constraint::Unique) => {
                Err(StorageError::BucketExists)
            }
            other => {
                other?;
                self.get(&id).await
            }
        }
    }

    pub async fn get(&self, id: &str) -> Result<Bucket> {
        let id = name::bucket_id(id).map_err(|_| StorageError::NoSuchBucket)?;
        let rows = self
            .db
            .query(Statement::new(&ONE, vec![id.to_owned().into()]))
            .await?;
        rows.first()
            .map(Bucket::from_row)
            .unwrap_or(Err(StorageError::NoSuchBucket))
    }

    pub async fn list(&self) -> Result<Vec<Bucket>> {
        let rows = self.db.query(Statement::new(&ALL, vec![])).await?;
        rows.iter().map(Bucket::from_row).collect()
    }

    pub async fn update(&self, id: &str, changes: BucketChanges) -> Result<Bucket> {
        let current = self.get(id).await?;
        let limit = changes.file_size_limit.unwrap_or(current.file_size_limit);
        let types = changes
            .allowed_mime_types
            .unwrap_or(current.allowed_mime_types);
        let statement = Statement::new(
            &UPDATE,
            vec![
                current.id.clone().into(),
                Value::Bool(changes.public.unwrap_or(current.public)),
                limit_value(limit)?,
                types_value(types.as_deref())?,
                now().into(),
            ],
        );
        self.db.transaction(vec![statement]).await?;
        self.get(&current.id).await
    }

    /// Removes every object's record; their bytes go with the next sweep.
    pub async fn empty(&self, id: &str) -> Result<()> {
        let bucket = self.get(id).await?;
        self.db
            .transaction(vec![Statement::new(&EMPTY, vec![bucket.id.into()])])
            .await?;
        Ok(())
    }

    /// Deletes an empty bucket.
    pub async fn delete(&self, id: &str) -> Result<()> {
        let bucket = self.get(id).await?;
        let deleted = self
            .db
            .transaction(vec![Statement::new(&DELETE, vec![bucket.id.into()])])
            .await?;
        if deleted.first().is_none_or(Vec::is_empty) {
            return Err(StorageError::BucketNotEmpty);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mime_patterns_and_limits_are_checked() {
        assert!(types_value(Some(&["image/png".into(), "image/*".into()])).is_ok());
        for bad in [
            "image",
            "/png",
            "image/",
            "text/html; charset=utf-8",
            "a b/c",
        ] {
            assert!(types_value(Some(&[bad.into()])).is_err(), "{bad}");
        }
        assert!(limit_value(Some(0)).is_err());
        assert!(limit_value(Some(MAX_OBJECT_BYTES + 1)).is_err());
        assert_eq!(limit_value(Some(1024)).ok(), Some(Value::Integer(1024)));
    }
}
