//! File storage behind `/storage/v1`: buckets (this module's first part) and, as
//! they land, objects. Names are checked and normalised in [`name`] before any SQL
//! or backend sees them.
//!
//! Invariant: no bucket id or object name reaches the database or a backend
//! without passing [`name::bucket_id`] or [`name::object_name`].

mod buckets;
pub mod name;

pub use buckets::{Bucket, BucketChanges, Buckets, NewBucket};

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("The bucket id must be 1 to 63 of a-z, 0-9, '.', '_' and '-'")]
    InvalidBucket,
    #[error("Invalid object name: {0}")]
    InvalidName(&'static str),
    #[error("Bucket not found")]
    NoSuchBucket,
    #[error("The resource already exists")]
    BucketExists,
    #[error("The bucket is not empty")]
    BucketNotEmpty,
    #[error("{0}")]
    Invalid(String),
    #[error("database: {0}")]
    Database(#[from] gatehouse_db::DbError),
}

impl StorageError {
    /// Supabase Storage's error code for this failure.
    pub fn code(&self) -> &'static str {
        match self {
            StorageError::InvalidBucket => "InvalidBucketName",
            StorageError::InvalidName(_) => "InvalidKey",
            StorageError::NoSuchBucket => "NoSuchBucket",
            StorageError::BucketExists => "Duplicate",
            StorageError::BucketNotEmpty => "InvalidRequest",
            StorageError::Invalid(_) => "InvalidRequest",
            StorageError::Database(_) => "InternalError",
        }
    }
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;
