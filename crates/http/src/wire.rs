//! The JSON shapes of the services' values as Supabase's clients read them:
//! users and sessions (Supabase Auth), buckets and objects (Supabase Storage),
//! audit entries. The services return typed values; only this edge knows how
//! they go on the wire.

use gatehouse_auth::audit::Entry;
use gatehouse_auth::{Challenge, Enrolled, Factor, Identity, Session, User};
use gatehouse_storage::{Bucket, ListEntry, ObjectRow};
use serde_json::{Value, json};

/// Supabase Auth's user object.
pub fn user(user: &User) -> Value {
    json!({
        "id": user.id,
        "aud": "authenticated",
        "role": "authenticated",
        "email": user.email.clone().unwrap_or_default(),
        "email_confirmed_at": user.email_confirmed_at,
        "confirmed_at": user.email_confirmed_at,
        "phone": "",
        "last_sign_in_at": user.last_sign_in_at,
        "app_metadata": user.app_metadata,
        "user_metadata": user.user_metadata,
        "identities": identities(user),
        "factors": user.factors.iter().map(factor).collect::<Vec<_>>(),
        "created_at": user.created_at,
        "updated_at": user.updated_at,
        "banned_until": user.banned_until,
        "is_anonymous": user.is_anonymous,
    })
}

/// The user's identities as GoTrue lists them: an account that signed up
/// with its email has the `email` identity, then each linked provider's.
fn identities(user: &User) -> Vec<Value> {
    let signed_up_by_email = user.app_metadata["providers"]
        .as_array()
        .is_some_and(|providers| providers.iter().any(|p| p == "email"));
    let email = user
        .email
        .as_ref()
        .filter(|_| signed_up_by_email)
        .map(|email| {
            json!({
                "identity_id": user.id,
                "id": user.id,
                "user_id": user.id,
                "identity_data": {
                    "sub": user.id,
                    "email": email,
                    "email_verified": user.email_confirmed_at.is_some(),
                    "phone_verified": false,
                },
                "provider": "email",
                "email": email,
                "last_sign_in_at": user.last_sign_in_at,
                "created_at": user.created_at,
                "updated_at": user.updated_at,
            })
        });
    email
        .into_iter()
        .chain(user.identities.iter().map(identity))
        .collect()
}

fn identity(identity: &Identity) -> Value {
    json!({
        "identity_id": identity.id,
        "id": identity.provider_id,
        "user_id": identity.user_id,
        "identity_data": identity.identity_data,
        "provider": identity.provider,
        "email": identity.email,
        "last_sign_in_at": identity.last_sign_in_at,
        "created_at": identity.created_at,
        "updated_at": identity.updated_at,
    })
}

/// A second factor as Supabase Auth lists it in the user object.
pub fn factor(factor: &Factor) -> Value {
    json!({
        "id": factor.id,
        "friendly_name": factor.friendly_name,
        "factor_type": factor.factor_type,
        "status": factor.status,
        "created_at": factor.created_at,
        "updated_at": factor.updated_at,
        "last_challenged_at": factor.last_challenged_at,
    })
}

/// The answer to `mfa.enroll`: the secret is shown this once.
pub fn enrolled(enrolled: &Enrolled) -> Value {
    json!({
        "id": enrolled.factor.id,
        "type": enrolled.factor.factor_type,
        "friendly_name": enrolled.factor.friendly_name.clone().unwrap_or_default(),
        "totp": {
            "qr_code": enrolled.qr_code,
            "secret": enrolled.secret,
            "uri": enrolled.uri,
        },
    })
}

/// The answer to `mfa.challenge`.
pub fn challenge(challenge: &Challenge) -> Value {
    json!({"id": challenge.id, "type": "totp", "expires_at": challenge.expires_at})
}

/// Supabase Auth's session, with its user.
pub fn session(session: &Session) -> Value {
    let mut json = json!({
        "access_token": session.access_token,
        "token_type": "bearer",
        "expires_in": session.expires_in,
        "expires_at": session.expires_at,
        "refresh_token": session.refresh_token,
        "user": user(&session.user),
    });
    if let Some(tokens) = &session.provider_tokens {
        json["provider_token"] = json!(tokens.access_token);
        if let Some(refresh) = &tokens.refresh_token {
            json["provider_refresh_token"] = json!(refresh);
        }
    }
    json
}

/// An entry of the admin audit log.
pub fn audit_entry(entry: &Entry) -> Value {
    json!({
        "id": entry.id,
        "at": entry.at,
        "actor": entry.actor,
        "ip": entry.ip,
        "user_agent": entry.user_agent,
        "action": entry.action,
        "outcome": entry.outcome,
        "request_id": entry.request_id,
        "detail": entry.detail,
    })
}

/// Supabase Storage's bucket.
pub fn bucket(bucket: &Bucket) -> Value {
    json!({
        "id": bucket.id,
        "name": bucket.id,
        "owner": "",
        "public": bucket.public,
        "file_size_limit": bucket.file_size_limit,
        "allowed_mime_types": bucket.allowed_mime_types,
        "created_at": bucket.created_at,
        "updated_at": bucket.updated_at,
    })
}

/// Supabase Storage's `metadata` of an object.
fn object_metadata(object: &ObjectRow) -> Value {
    json!({
        "eTag": object.etag(),
        "size": object.size,
        "mimetype": object.content_type,
        "cacheControl": object.cache_control.as_deref().unwrap_or("no-cache"),
        "lastModified": object.updated_at,
        "contentLength": object.size,
        "httpStatusCode": 200,
    })
}

/// A list or remove entry (`FileObject`), named as the caller sees it.
pub fn file_object(object: &ObjectRow, shown_name: &str) -> Value {
    json!({
        "name": shown_name,
        "id": object.id,
        "bucket_id": object.bucket_id,
        "owner": object.owner,
        "updated_at": object.updated_at,
        "created_at": object.created_at,
        "last_accessed_at": object.updated_at,
        "metadata": object_metadata(object),
    })
}

/// A listing's entry: an object, or a folder (no id, no metadata).
pub fn list_entry(entry: &ListEntry) -> Value {
    match &entry.object {
        Some(object) => file_object(object, &entry.name),
        None => json!({
            "name": entry.name, "id": null, "updated_at": null, "created_at": null,
            "last_accessed_at": null, "metadata": null,
        }),
    }
}

/// `GET /object/info/…` (`FileObjectV2`).
pub fn object_info(object: &ObjectRow) -> Value {
    json!({
        "id": object.id,
        "version": object.version,
        "name": object.name,
        "bucket_id": object.bucket_id,
        "owner": object.owner,
        "size": object.size,
        "content_type": object.content_type,
        "cache_control": object.cache_control,
        "etag": object.etag(),
        "created_at": object.created_at,
        "updated_at": object.updated_at,
        "last_modified": object.updated_at,
        "metadata": object_metadata(object),
    })
}

/// Rows as CSV (RFC 4180), as PostgREST answers `Accept: text/csv`: a header
/// line of the first row's keys, then one line per row. Null is an empty field,
/// text is as it is, and anything else (numbers, booleans, embedded rows) is its
/// JSON text. No rows, no lines. Values are not altered: a field that starts
/// with `=` stays a formula to a spreadsheet, as it would in the JSON.
pub fn csv(rows: &[Value]) -> String {
    let mut writer = csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(Vec::new());
    let mut lines = rows.iter().filter_map(Value::as_object).peekable();
    if let Some(first) = lines.peek() {
        // Writing to memory cannot fail.
        let _ = writer.write_record(first.keys());
    }
    for row in lines {
        let fields = row.values().map(|value| match value {
            Value::Null => String::new(),
            Value::String(text) => text.clone(),
            other => other.to_string(),
        });
        let _ = writer.write_record(fields);
    }
    String::from_utf8(writer.into_inner().unwrap_or_default()).unwrap_or_default()
}
