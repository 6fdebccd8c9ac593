//! Bucket ids and object names, checked and normalised before they reach the
//! database or a storage backend. An object name is a `/`-separated key: Unicode
//! NFC, at most 1024 bytes, no empty, `.` or `..` segment, no leading or trailing
//! `/`, no backslash and no control character (NUL included), so no name can climb
//! out of its bucket on a file system or mean two things.

use unicode_normalization::UnicodeNormalization;

use crate::StorageError;

const MAX_NAME_BYTES: usize = 1024;
const MAX_SEGMENT_BYTES: usize = 255;
const MAX_BUCKET_BYTES: usize = 63;

/// A bucket id: 1 to 63 of `a-z 0-9 . _ -`, starting with a letter or digit.
/// Words the object API's routes use where a bucket id would stand
/// (`/object/list/{bucket}`, `/object/sign/…`): no bucket may take them.
const RESERVED_BUCKETS: &[&str] = &[
    "list",
    "list-v2",
    "sign",
    "move",
    "copy",
    "upload",
    "info",
    "public",
    "authenticated",
];

pub fn bucket_id(id: &str) -> Result<&str, StorageError> {
    let valid = !id.is_empty()
        && id.len() <= MAX_BUCKET_BYTES
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        && id.as_bytes()[0].is_ascii_alphanumeric()
        && !id.contains("..")
        && !RESERVED_BUCKETS.contains(&id);
    if valid {
        Ok(id)
    } else {
        Err(StorageError::InvalidBucket)
    }
}

/// An object name, normalised to NFC.
pub fn object_name(name: &str) -> Result<String, StorageError> {
    let name: String = name.nfc().collect();
    let refuse = |why: &'static str| Err(StorageError::InvalidName(why));
    if name.is_empty() {
        return refuse("the name is empty");
    }
    if name.len() > MAX_NAME_BYTES {
        return refuse("the name is longer than 1024 bytes");
    }
    if name.chars().any(char::is_control) {
        return refuse("the name holds a control character");
    }
    // Unicode noncharacters (U+FDD0–FDEF, U+xFFFE/xFFFF) are for internal use;
    // listing bounds prefixes with U+10FFFF.
    if name
        .chars()
        .any(|c| ('\u{FDD0}'..='\u{FDEF}').contains(&c) || (c as u32) & 0xFFFE == 0xFFFE)
    {
        return refuse("the name holds a Unicode noncharacter");
    }
    if name.contains('\\') {
        return refuse("the name holds a backslash");
    }
    if name.starts_with('/') || name.ends_with('/') {
        return refuse("the name starts or ends with /");
    }
    for segment in name.split('/') {
        match segment {
            "" => return refuse("the name has an empty segment (//)"),
            "." | ".." => return refuse("the name has a . or .. segment"),
            _ if segment.len() > MAX_SEGMENT_BYTES => {
                return refuse("a segment is longer than 255 bytes");
            }
            _ if segment.trim() != segment => {
                return refuse("a segment starts or ends with white space");
            }
            _ => {}
        }
    }
    Ok(name)
}

/// Every traversal and bad-name shape we know of, each refused: the unit
/// tests here and the HTTP tests (through every object route) use it.
pub const BAD_NAMES: &[&str] = &[
    "",
    "/",
    "/etc/passwd",
    "../secret",
    "a/../../b",
    "..",
    ".",
    "a/./b",
    "a/..",
    "./a",
    "a//b",
    "a/",
    "//a",
    "a\\..\\b",
    "..\\windows",
    "C:\\boot.ini",
    "a\0b",
    "a\u{1}b",
    "line\nbreak",
    "tab\there",
    "esc\u{1b}[31m",
    "del\u{7f}",
    "c1\u{85}control",
    "a/ b",
    "trailing /x",
    " leading",
    "/..",
    "../",
    "a/b/../../..",
    "folder/..",
    "max\u{10FFFF}",
    "nonchar\u{FDD0}",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bad_name_is_refused() {
        assert!(BAD_NAMES.len() >= 30);
        for name in BAD_NAMES {
            assert!(object_name(name).is_err(), "accepted {name:?}");
        }
        assert!(object_name(&"a".repeat(1025)).is_err(), "too long");
        assert!(
            object_name(&format!("{}/b", "a".repeat(256))).is_err(),
            "long segment"
        );
    }

    #[test]
    fn good_names_pass_normalised() {
        for name in [
            "a.txt",
            "folder/sub/file.png",
            "avatars/0190c2a4-7e5b-7000-8000-00000000a11c/me.jpg",
            "with space/and (brackets).pdf",
            "..hidden-but-fine",
            "dots.../x",
            "ünïcödé/ファイル.txt",
        ] {
            assert_eq!(object_name(name).ok().as_deref(), Some(name), "{name}");
        }
        // Decomposed "é" (e + combining acute) becomes the one composed character.
        assert_eq!(
            object_name("cafe\u{301}.txt").ok().as_deref(),
            Some("caf\u{e9}.txt")
        );
    }

    #[test]
    fn bucket_ids_are_plain() {
        for good in ["avatars", "public-files", "v1.assets", "a", "0x_1"] {
            assert!(bucket_id(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "Avatars",
            "-x",
            ".x",
            "a..b",
            "a/b",
            "a b",
            "ä",
            "list",
            "public",
            &"a".repeat(64),
        ] {
            assert!(bucket_id(bad).is_err(), "{bad}");
        }
    }
}
