//! One file per endpoint, named after its route.

pub mod admin_jobs;
pub mod auth;
pub mod functions;
pub mod health;
pub mod hooks;
pub mod jwks;
pub mod metrics;
pub mod ready;
pub mod realtime;
pub mod rest_root;
pub mod rest_table;
pub mod rpc;
pub mod storage_buckets;
pub mod storage_objects;
pub mod storage_resumable;

use crate::ApiError;

/// A number or flag in a request body, sent as JSON's own type or as a string
/// (`"60"`, `"true"`): Supabase Storage's request schemas coerce such strings,
/// and supabase-py sends some that way.
pub type Coerced = serde_with::PickFirst<(serde_with::Same, serde_with::DisplayFromStr)>;

/// A refusal by permission, as PostgREST answers it: 401 to an anonymous
/// caller (signing in may help), 403 to a signed-in one.
pub(crate) fn denied_status(caller: &gatehouse_rest::Caller) -> http::StatusCode {
    if caller.is_anon() {
        http::StatusCode::UNAUTHORIZED
    } else {
        http::StatusCode::FORBIDDEN
    }
}

/// Every unknown path answers the same way, in the dialect of its surface.
pub async fn not_found() -> ApiError {
    ApiError::new(
        http::StatusCode::NOT_FOUND,
        "not_found",
        "No such resource.",
    )
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;
    use serde_json::json;
    use serde_with::serde_as;

    use super::Coerced;

    #[serde_as]
    #[derive(Deserialize, Debug, PartialEq)]
    struct Body {
        #[serde_as(as = "Coerced")]
        seconds: i64,
        #[serde_as(as = "Option<Coerced>")]
        #[serde(default)]
        public: Option<bool>,
    }

    #[test]
    fn numbers_and_flags_may_come_as_strings() {
        let read = |value| serde_json::from_value::<Body>(value).ok();
        let expected = Some(Body {
            seconds: 60,
            public: Some(true),
        });
        assert_eq!(read(json!({"seconds": 60, "public": true})), expected);
        assert_eq!(read(json!({"seconds": "60", "public": "true"})), expected);
        assert_eq!(
            read(json!({"seconds": 60})).map(|body| body.public),
            Some(None)
        );
        for wrong in [
            json!({"seconds": "soon"}),
            json!({"seconds": "6e1"}),
            json!({"seconds": 60, "public": "yes"}),
        ] {
            assert_eq!(read(wrong.clone()), None, "{wrong}");
        }
    }
}
