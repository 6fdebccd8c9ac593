//! File storage behind `/storage/v1`: buckets, objects under the storage
//! policies, signed URLs, and the bytes through `object_store`. Names are
//! checked and normalised in [`name`] before any SQL or backend sees them, and
//! never become file paths: bytes live under keys the server makes.
//!
//! Invariants: no bucket id or object name reaches the database unchecked; an
//! object is visible only once its bytes are whole (the row naming them commits
//! last); deny by default (no storage policy for a command, no access).

mod blobs;
mod buckets;
pub mod content;
pub mod name;
mod objects;
mod signed;

pub use blobs::{BlobConfig, Blobs};
pub use buckets::{Bucket, BucketChanges, Buckets, NewBucket};
pub use objects::{
    Actor, CheckedUpload, ListEntry, ListRequest, NewObject, NewResumable, ObjectRow,
    ObjectSettings, Objects, Resumable,
};
pub use signed::{Grant, Purpose, UrlSigner};

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("The bucket id must be 1 to 63 of a-z, 0-9, '.', '_' and '-'")]
    InvalidBucket,
    #[error("Invalid object name: {0}")]
    InvalidName(&'static str),
    #[error("Bucket not found")]
    NoSuchBucket,
    #[error("Object not found")]
    NoSuchKey,
    #[error("The resource already exists")]
    BucketExists,
    #[error("The resource already exists")]
    Duplicate,
    #[error("The bucket is not empty")]
    BucketNotEmpty,
    #[error("new row violates row-level security policy")]
    Denied,
    #[error("The object exceeded the maximum allowed size of {0} bytes")]
    TooLarge(u64),
    #[error("{0}")]
    InvalidMimeType(String),
    #[error("Too many uploads are running; try again shortly")]
    Busy,
    #[error("Invalid signature")]
    InvalidSignature,
    #[error("The signed URL has expired")]
    SignatureExpired,
    #[error("The upload was interrupted: {0}")]
    Body(String),
    #[error("Upload-Offset must be {0}, the bytes stored so far")]
    UploadOffset(u64),
    #[error("{0}")]
    Invalid(String),
    #[error("storage backend: {0}")]
    Backend(String),
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
            StorageError::NoSuchKey => "NoSuchKey",
            StorageError::BucketExists => "BucketAlreadyExists",
            StorageError::Duplicate => "KeyAlreadyExists",
            StorageError::BucketNotEmpty => "ResourceNotEmpty",
            StorageError::Denied => "AccessDenied",
            StorageError::TooLarge(_) => "EntityTooLarge",
            StorageError::InvalidMimeType(_) => "InvalidMimeType",
            StorageError::InvalidSignature => "InvalidSignature",
            StorageError::SignatureExpired => "ExpiredToken",
            StorageError::Busy => "SlowDown",
            StorageError::UploadOffset(_) => "InvalidUploadOffset",
            StorageError::Body(_) | StorageError::Invalid(_) => "InvalidRequest",
            StorageError::Backend(_) | StorageError::Database(_) => "InternalError",
        }
    }
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;
