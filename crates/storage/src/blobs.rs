//! Object bytes, through the `object_store` crate: a folder under the data
//! directory by default, any S3-compatible service when configured.
//!
//! Every upload gets a fresh key (`objects/<version>`), never derived from the
//! object's name, so no name can reach a file path. A blob is written whole
//! before any row names it: on local disk into a staging file renamed into place
//! (fsynced), on S3 as a multipart upload that exists only once completed. The
//! metadata commit that names the version is the moment the object becomes
//! visible; a crash before it leaves an unnamed blob or staging file, which
//! [`Blobs::sweep`] removes.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, WriteMultipart};
use secrecy::{ExposeSecret, SecretString};

use crate::{Result, StorageError};

/// Where bytes live.
#[derive(Debug, Clone)]
pub enum BlobConfig {
    /// A folder (created if missing).
    Local { root: PathBuf },
    /// An S3-compatible bucket. Keys come from the environment, never the file.
    S3 {
        bucket: String,
        region: String,
        /// Another S3-compatible service (MinIO, moto, R2…); AWS when absent.
        endpoint: Option<String>,
        access_key_id: SecretString,
        secret_access_key: SecretString,
    },
}

/// Bytes per part sent to the backend (S3 needs 5 MiB but the last); at most
/// two parts are in flight, so an upload holds about 16 MiB however large.
const PART_BYTES: usize = 8 << 20;
const PARTS_IN_FLIGHT: usize = 2;

#[derive(Clone)]
pub struct Blobs {
    store: Arc<dyn ObjectStore>,
    /// The folder of the local backend, where staging files of interrupted
    /// uploads are found (object_store does not list them).
    local_objects: Option<PathBuf>,
}

fn backend(error: object_store::Error) -> StorageError {
    StorageError::Backend(error.to_string())
}

fn key(version: &str) -> Path {
    Path::from(format!("objects/{version}"))
}

impl Blobs {
    pub fn open(config: &BlobConfig) -> Result<Self> {
        match config {
            BlobConfig::Local { root } => {
                let objects = root.join("objects");
                std::fs::create_dir_all(&objects)
                    .map_err(|e| StorageError::Backend(format!("{}: {e}", objects.display())))?;
                let store = LocalFileSystem::new_with_prefix(root)
                    .map_err(backend)?
                    .with_fsync(true);
                Ok(Self {
                    store: Arc::new(store),
                    local_objects: Some(objects),
                })
            }
            BlobConfig::S3 {
                bucket,
                region,
                endpoint,
                access_key_id,
                secret_access_key,
            } => {
                let mut builder = AmazonS3Builder::new()
                    .with_bucket_name(bucket)
                    .with_region(region)
                    .with_access_key_id(access_key_id.expose_secret())
                    .with_secret_access_key(secret_access_key.expose_secret());
                if let Some(endpoint) = endpoint {
                    builder = builder
                        .with_endpoint(endpoint)
                        .with_allow_http(endpoint.starts_with("http://"));
                }
                Ok(Self {
                    store: Arc::new(builder.build().map_err(backend)?),
                    local_objects: None,
                })
            }
        }
    }

    /// Starts writing the blob of a new version.
    pub async fn writer(&self, version: &str) -> Result<BlobWriter> {
        let upload = self
            .store
            .put_multipart(&key(version))
            .await
            .map_err(backend)?;
        Ok(BlobWriter {
            upload: WriteMultipart::new_with_chunk_size(upload, PART_BYTES),
        })
    }

    /// The bytes of a version, as a stream, and their length.
    pub async fn read(&self, version: &str) -> Result<(u64, BoxStream<'static, Result<Bytes>>)> {
        let found = match self.store.get(&key(version)).await {
            Ok(found) => found,
            // Replaced between reading its row and opening its bytes.
            Err(object_store::Error::NotFound { .. }) => return Err(StorageError::NoSuchKey),
            Err(error) => return Err(backend(error)),
        };
        let size = found.meta.size;
        Ok((
            size,
            found
                .into_stream()
                .map(|chunk| chunk.map_err(backend))
                .boxed(),
        ))
    }

    pub async fn copy(&self, from: &str, to: &str) -> Result<()> {
        self.store.copy(&key(from), &key(to)).await.map_err(backend)
    }

    /// Deletes a version's bytes; one already gone is not an error.
    pub async fn delete(&self, version: &str) -> Result<()> {
        match self.store.delete(&key(version)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(error) => Err(backend(error)),
        }
    }

    /// Deletes blobs no row names (`is_named` says which are named) and staging
    /// files of interrupted uploads, once they are older than `grace`: a live
    /// upload writes its staging file at least every body-idle timeout, and a
    /// finished one is named within a commit. Returns how many were removed.
    pub async fn sweep<F, Fut>(&self, grace: Duration, is_named: F) -> Result<usize>
    where
        F: Fn(Vec<String>) -> Fut,
        Fut: std::future::Future<Output = Result<Vec<String>>>,
    {
        let cutoff = SystemTime::now()
            .checked_sub(grace)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let cutoff_secs = cutoff
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let mut removed = 0;
        if let Some(folder) = &self.local_objects {
            removed += remove_stale_staging(folder, cutoff);
        }
        let prefix = Path::from("objects");
        let mut listing = self.store.list(Some(&prefix));
        let mut batch = Vec::new();
        loop {
            let next = listing.next().await;
            if let Some(meta) = &next {
                let meta = meta
                    .as_ref()
                    .map_err(|e| StorageError::Backend(e.to_string()))?;
                if meta.last_modified.timestamp() < cutoff_secs
                    && let Some(version) = meta.location.filename()
                {
                    batch.push(version.to_owned());
                }
            }
            if batch.len() >= 500 || (next.is_none() && !batch.is_empty()) {
                let named = is_named(batch.clone()).await?;
                for version in batch.drain(..).filter(|v| !named.contains(v)) {
                    self.delete(&version).await?;
                    removed += 1;
                }
            }
            if next.is_none() {
                return Ok(removed);
            }
        }
    }
}

/// Local staging files (`<key>#<n>`) whose upload stopped writing before `cutoff`.
fn remove_stale_staging(folder: &std::path::Path, cutoff: SystemTime) -> usize {
    let Ok(entries) = std::fs::read_dir(folder) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let staging = entry
            .file_name()
            .to_str()
            .is_some_and(|name| name.contains('#'));
        let stale = entry
            .metadata()
            .and_then(|meta| meta.modified())
            .is_ok_and(|modified| modified < cutoff);
        if staging && stale && std::fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// One blob being written; dropped without [`BlobWriter::finish`] it is abandoned
/// (call [`BlobWriter::abort`] to clean up at once).
pub struct BlobWriter {
    upload: WriteMultipart,
}

impl BlobWriter {
    /// Queues bytes, waiting while too many parts are in flight.
    pub async fn write(&mut self, bytes: Bytes) -> Result<()> {
        self.upload
            .wait_for_capacity(PARTS_IN_FLIGHT)
            .await
            .map_err(backend)?;
        self.upload.put(bytes);
        Ok(())
    }

    /// Makes the blob whole at its key (atomically, durably).
    pub async fn finish(self) -> Result<()> {
        self.upload.finish().await.map(|_| ()).map_err(backend)
    }

    pub async fn abort(self) {
        if let Err(error) = self.upload.abort().await {
            tracing::warn!(%error, "could not abort an upload; the sweep removes it later");
        }
    }
}
