//! Signed URLs: made for callers the policies allow, checked before use.

use gatehouse_policy::Role;
use gatehouse_rest::Caller;

use super::{Actor, Objects, unix_now};
use crate::signed::{Grant, Purpose};
use crate::{Result, StorageError, name};

/// A signed upload URL whose token [`Objects::verify_upload`] checked: only
/// that makes one, so its signer can be trusted.
pub struct CheckedUpload(Grant);

impl CheckedUpload {
    /// The version of the object there the signer was allowed to replace;
    /// none means the upload may only create.
    pub fn replaces(&self) -> Option<&str> {
        self.0.replaces.as_deref()
    }
}

impl Objects {
    /// The signer of a checked upload URL as its upload runs: role and user id
    /// only, or the service role the server handed over (see [`Objects::new`]).
    pub fn signer(&self, upload: &CheckedUpload) -> Caller {
        let grant = &upload.0;
        match (grant.signer_role.as_deref(), &grant.owner) {
            (Some("service"), _) => self.service.clone(),
            (Some("authenticated"), Some(user)) => {
                Caller::delegated(Role::Authenticated, Some(user.clone()))
            }
            (_, user) => Caller::delegated(Role::Anon, user.clone()),
        }
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
    pub fn verify_upload(&self, bucket: &str, object: &str, token: &str) -> Result<CheckedUpload> {
        let name = name::object_name(object)?;
        self.signer
            .verify(token, Purpose::Upload, bucket, &name, unix_now())
            .map(CheckedUpload)
    }
}
