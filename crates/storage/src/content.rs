//! Content types: what an upload declares, what its bytes look like, what a
//! bucket admits, and how a download is served so that a stored file can never
//! run as a page of ours.

use crate::{Result, StorageError};

/// Bytes read from the front of an upload to recognise its type.
pub const SNIFF_BYTES: usize = 8192;

/// Applied to every object response: a file rendered by the browser runs with
/// no origin, scripts, plugins or fetches.
pub const SANDBOX_CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; sandbox";

/// The type and subtype, lowercase, without parameters.
pub fn essence(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

fn valid(essence: &str) -> bool {
    let token = |part: &str| {
        !part.is_empty()
            && part
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
    };
    essence
        .split_once('/')
        .is_some_and(|(kind, sub)| token(kind) && token(sub))
        && essence.len() <= 255
}

/// Whether `essence` matches one of a bucket's patterns (`image/png`, `image/*`, `*/*`).
fn admitted(patterns: &[String], essence: &str) -> bool {
    let (kind, _) = essence.split_once('/').unwrap_or((essence, ""));
    patterns.iter().any(|pattern| {
        let pattern = pattern.to_ascii_lowercase();
        pattern == "*/*"
            || pattern == essence
            || pattern
                .strip_suffix("/*")
                .is_some_and(|pattern_kind| pattern_kind == kind)
    })
}

/// What the bytes' first `SNIFF_BYTES` say they are, when recognisable.
pub fn sniff(head: &[u8]) -> Option<&'static str> {
    infer::get(head).map(|kind| kind.mime_type())
}

/// The content type to store. `declared` comes from the request (absent:
/// whatever the bytes are, else `application/octet-stream`). Where the bucket
/// restricts types, both the declared type and the sniffed one must be admitted
/// and must agree.
pub fn settle(
    allowed: Option<&[String]>,
    declared: Option<&str>,
    sniffed: Option<&str>,
) -> Result<String> {
    let declared = declared.map(str::trim).filter(|d| !d.is_empty());
    if let Some(declared) = declared
        && (!valid(&essence(declared))
            || declared.len() > 255
            || declared.chars().any(char::is_control))
    {
        return Err(StorageError::InvalidMimeType(format!(
            "{declared:?} is not a content type"
        )));
    }
    let stored = declared
        .map(str::to_owned)
        .or_else(|| sniffed.map(str::to_owned))
        .unwrap_or_else(|| "application/octet-stream".into());
    if let Some(patterns) = allowed {
        let declared_essence = essence(&stored);
        if !admitted(patterns, &declared_essence) {
            return Err(StorageError::InvalidMimeType(format!(
                "mime type {declared_essence} is not supported by this bucket"
            )));
        }
        if let Some(sniffed) = sniffed
            && sniffed != declared_essence
        {
            return Err(StorageError::InvalidMimeType(format!(
                "the content is {sniffed}, not {declared_essence} as declared"
            )));
        }
    }
    Ok(stored)
}

/// The types a name's extension stands for (none when it has no known extension).
fn types_of_name(name: &str) -> Vec<String> {
    let file = name.rsplit('/').next().unwrap_or(name);
    match file.rsplit_once('.') {
        Some((stem, extension)) if !stem.is_empty() => mime_guess::from_ext(extension)
            .iter()
            .map(|kind| kind.essence_str().to_ascii_lowercase())
            .collect(),
        _ => Vec::new(),
    }
}

/// Whether a name's extension could stand for `content_type`: true for names
/// without a known extension.
pub fn extension_fits(name: &str, content_type: &str) -> bool {
    let types = types_of_name(name);
    types.is_empty() || types.contains(&essence(content_type))
}

/// In a bucket that restricts types, a name's extension must fit what is stored:
/// a PNG named `page.html` would be saved and opened as a page by whoever
/// downloads it.
pub fn name_fits(allowed: Option<&[String]>, name: &str, content_type: &str) -> Result<()> {
    if allowed.is_some() && !extension_fits(name, content_type) {
        return Err(StorageError::InvalidMimeType(format!(
            "the name's extension does not fit its content type {}",
            essence(content_type)
        )));
    }
    Ok(())
}

/// Checked before the body is read: the declared type alone.
pub fn precheck(allowed: Option<&[String]>, declared: Option<&str>) -> Result<()> {
    settle(allowed, declared, None).map(|_| ())
}

/// Types a browser may show inline from our origin: they cannot carry script.
/// HTML, SVG, XML and anything unknown are served as attachments.
pub fn inline_safe(content_type: &str) -> bool {
    let essence = essence(content_type);
    matches!(
        essence.as_str(),
        "image/png"
            | "image/jpeg"
            | "image/gif"
            | "image/webp"
            | "image/avif"
            | "image/bmp"
            | "text/plain"
            | "text/csv"
            | "application/pdf"
            | "application/json"
    ) || essence.starts_with("video/")
        || essence.starts_with("audio/")
}

#[cfg(test)]
mod tests {
    use super::*;

    const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";

    #[test]
    fn a_name_extension_must_fit_the_type_in_restricted_buckets() {
        let images = ["image/*".to_owned()];
        let allowed = Some(&images[..]);
        for fits in ["cat.png", "dir.v2/cat.PNG", "cat", ".png", "cat.unknownext"] {
            assert!(name_fits(allowed, fits, "image/png").is_ok(), "{fits}");
        }
        for misfit in ["page.html", "a/page.htm", "cat.svg", "cat.jpg", "run.js"] {
            assert!(name_fits(allowed, misfit, "image/png").is_err(), "{misfit}");
            assert!(name_fits(None, misfit, "image/png").is_ok(), "{misfit}");
        }
        assert!(extension_fits("photo.jpeg", "image/jpeg; charset=binary"));
    }

    #[test]
    fn restricted_buckets_need_declared_and_sniffed_types_to_agree() {
        let images = ["image/*".to_owned()];
        let allowed = Some(&images[..]);
        assert_eq!(
            settle(allowed, Some("image/png"), sniff(PNG))
                .ok()
                .as_deref(),
            Some("image/png")
        );
        assert!(
            settle(allowed, Some("text/plain"), None).is_err(),
            "declared type"
        );
        assert!(
            settle(allowed, Some("image/gif"), sniff(PNG)).is_err(),
            "declared gif, bytes png"
        );
        let html = b"<!DOCTYPE html><html><script>alert(1)</script></html>";
        assert_eq!(sniff(html), Some("text/html"));
        assert!(
            settle(allowed, Some("image/png"), sniff(html)).is_err(),
            "html as png"
        );
        // Unrestricted buckets keep what was declared, or what the bytes are.
        assert_eq!(
            settle(None, Some("text/plain;charset=UTF-8"), sniff(PNG))
                .ok()
                .as_deref(),
            Some("text/plain;charset=UTF-8")
        );
        assert_eq!(
            settle(None, None, sniff(PNG)).ok().as_deref(),
            Some("image/png")
        );
        assert_eq!(
            settle(None, None, None).ok().as_deref(),
            Some("application/octet-stream")
        );
        for bad in ["png", "image/png\r\nX-Evil: 1", "a b/c", "/x"] {
            assert!(settle(None, Some(bad), None).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn only_inert_types_are_shown_inline() {
        for inline in [
            "image/png",
            "IMAGE/JPEG",
            "text/plain; charset=utf-8",
            "video/mp4",
        ] {
            assert!(inline_safe(inline), "{inline}");
        }
        for attachment in [
            "text/html",
            "image/svg+xml",
            "application/xml",
            "text/xml",
            "application/xhtml+xml",
            "application/octet-stream",
            "application/javascript",
            "x/unknown",
        ] {
            assert!(!inline_safe(attachment), "{attachment}");
        }
    }
}
