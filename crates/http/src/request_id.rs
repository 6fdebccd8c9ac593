use axum::extract::Request;
use axum::response::Response;
use http::HeaderValue;

pub const HEADER: &str = "x-request-id";

/// The id that ties a response to its log lines.
#[derive(Debug, Clone)]
pub struct RequestId(pub HeaderValue);

impl RequestId {
    pub fn as_str(&self) -> &str {
        self.0.to_str().unwrap_or_default()
    }
}

/// A caller's id is kept when it is short and plain, so ids can follow a request
/// across services; anything else is replaced rather than echoed into our logs.
fn is_well_formed(id: &[u8]) -> bool {
    (1..=128).contains(&id.len())
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

pub async fn assign<F: Future<Output = Response>>(
    mut request: Request,
    next: impl FnOnce(Request) -> F,
) -> Response {
    let id = request
        .headers()
        .get(HEADER)
        .filter(|value| is_well_formed(value.as_bytes()))
        .cloned()
        .unwrap_or_else(|| {
            HeaderValue::from_str(&uuid::Uuid::new_v4().to_string())
                .unwrap_or(HeaderValue::from_static("unidentified"))
        });
    request.headers_mut().insert(HEADER, id.clone());
    request.extensions_mut().insert(RequestId(id.clone()));
    let mut response = next(request).await;
    response.headers_mut().insert(HEADER, id);
    response
}

#[cfg(test)]
mod tests {
    use super::is_well_formed;

    #[test]
    fn accepts_plain_ids_only() {
        for good in ["abc", "0f9c2b1e-1d2b-4c61-9d0c-2b8f7a6e4d10", "trace:1.2_3"] {
            assert!(is_well_formed(good.as_bytes()), "{good}");
        }
        let long = "a".repeat(129);
        for bad in [
            "",
            "has space",
            "new\nline",
            "<script>",
            "quote\"",
            long.as_str(),
        ] {
            assert!(!is_well_formed(bad.as_bytes()), "{bad:?}");
        }
    }
}
