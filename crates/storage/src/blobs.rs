//! Object bytes, through the `object_store` crate: a folder under the data
//! directory by default, any S3-compatible service when configured.
//!
//! Every upload gets a fresh key (`objects/<version>`), never derived from the
//! object's name, so no name can reach a file path. A blob is written whole
//! before any row names it: on local disk into a staging file renamed into place
//! (fsynced), on S3 as a multipart upload that exists only once completed. The
//! metadata commit that names the version is the moment the object becomes
//! visible. Each version is recorded as in flight before its first byte (by
//! `objects`), so a crash leaves an unnamed blob or staging file whose record
//! goes stale, and [`Blobs::sweep`] removes it.

use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt, WriteMultipart};
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

/// Bytes per part (S3 needs 5 MiB for all but the last; a local file takes any);
/// at most two parts are in flight beside the one filling, so an upload holds
/// about 3 parts however large it is.
const S3_PART_BYTES: usize = 5 << 20;
const LOCAL_PART_BYTES: usize = 1 << 20;
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
        let part = match self.local_objects {
            Some(_) => LOCAL_PART_BYTES,
            None => S3_PART_BYTES,
        };
        Ok(BlobWriter {
            upload: WriteMultipart::new_with_chunk_size(upload, part),
        })
    }

    /// The bytes of a version (or of `range` of it), as a stream.
    pub async fn read(
        &self,
        version: &str,
        range: Option<Range<u64>>,
    ) -> Result<BoxStream<'static, Result<Bytes>>> {
        let options = GetOptions {
            range: range.map(GetRange::Bounded),
            ..GetOptions::default()
        };
        let found = match self.store.get_opts(&key(version), options).await {
            Ok(found) => found,
            // Replaced between reading its row and opening its bytes.
            Err(object_store::Error::NotFound { .. }) => return Err(StorageError::NoSuchKey),
            Err(error) => return Err(backend(error)),
        };
        Ok(found
            .into_stream()
            .map(|chunk| chunk.map_err(backend))
            .boxed())
    }

    pub async fn copy(&self, from: &str, to: &str) -> Result<()> {
        match self.store.copy(&key(from), &key(to)).await {
            Ok(()) => Ok(()),
            // Replaced or removed since its row was read.
            Err(object_store::Error::NotFound { .. }) => Err(StorageError::NoSuchKey),
            Err(error) => Err(backend(error)),
        }
    }

    /// The first `length` bytes of a version (for sniffing its type).
    pub async fn head(&self, version: &str, length: u64) -> Result<Bytes> {
        if length == 0 {
            return Ok(Bytes::new());
        }
        match self.store.get_range(&key(version), 0..length).await {
            Ok(bytes) => Ok(bytes),
            Err(object_store::Error::NotFound { .. }) => Err(StorageError::NoSuchKey),
            Err(error) => Err(backend(error)),
        }
    }

    /// Deletes a version's bytes; one already gone is not an error.
    pub async fn delete(&self, version: &str) -> Result<()> {
        match self.store.delete(&key(version)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(error) => Err(backend(error)),
        }
    }

    /// Deletes every blob and local staging file whose version `keep` does not
    /// return (`keep` answers for batches: the versions named by an object or
    /// being written). Returns how many were removed.
    pub async fn sweep<F, Fut>(&self, keep: F) -> Result<usize>
    where
        F: Fn(Vec<String>) -> Fut,
        Fut: std::future::Future<Output = Result<Vec<String>>>,
    {
        let mut found: Vec<(String, Option<PathBuf>)> = self
            .local_objects
            .as_deref()
            .map(staging_files)
            .unwrap_or_default();
        let prefix = Path::from("objects");
        let mut listing = self.store.list(Some(&prefix));
        while let Some(meta) = listing.next().await {
            let meta = meta.map_err(backend)?;
            if let Some(version) = meta.location.filename() {
                found.push((version.to_owned(), None));
            }
        }
        let mut removed = 0;
        for batch in found.chunks(500) {
            let versions = batch.iter().map(|(version, _)| version.clone()).collect();
            let kept = keep(versions).await?;
            for (version, staging) in batch.iter().filter(|(v, _)| !kept.contains(v)) {
                match staging {
                    Some(path) => {
                        if std::fs::remove_file(path).is_err() {
                            continue;
                        }
                    }
                    None => self.delete(version).await?,
                }
                removed += 1;
            }
        }
        Ok(removed)
    }
}

/// Local staging files (`<version>#<n>`, which object_store does not list),
/// with the version each belongs to.
fn staging_files(folder: &std::path::Path) -> Vec<(String, Option<PathBuf>)> {
    let Ok(entries) = std::fs::read_dir(folder) else {
        return vec![];
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_str()?.to_owned();
            let (version, _) = name.split_once('#')?;
            Some((version.to_owned(), Some(entry.path())))
        })
        .collect()
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
