//! Parts of an object path (`a/b/c.png`) for storage policies, registered on
//! SQLite under the names migration 9 creates on PostgreSQL, so one policy means
//! the same on both. NULL where the part does not exist.

/// The n-th folder, counted from 1: `a` and `b` in `a/b/c.png`.
pub fn folder(path: &str, n: i64) -> Option<&str> {
    let segments: Vec<&str> = path.split('/').collect();
    let index = usize::try_from(n).ok()?.checked_sub(1)?;
    (index + 1 < segments.len()).then(|| segments[index])
}

/// The last segment: `c.png`.
pub fn filename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// What follows the file name's last dot: `png`; NULL without a dot.
pub fn extension(path: &str) -> Option<&str> {
    filename(path)
        .rsplit_once('.')
        .map(|(_, extension)| extension)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_of_paths() {
        assert_eq!(folder("a/b/c.png", 1), Some("a"));
        assert_eq!(folder("a/b/c.png", 2), Some("b"));
        assert_eq!(folder("a/b/c.png", 3), None);
        assert_eq!(folder("c.png", 1), None);
        assert_eq!(folder("a/b", 0), None);
        assert_eq!(folder("a/b", -1), None);
        assert_eq!(filename("a/b/c.png"), "c.png");
        assert_eq!(filename("c"), "c");
        assert_eq!(extension("a/b/c.tar.gz"), Some("gz"));
        assert_eq!(extension("a.b/c"), None);
        assert_eq!(extension("x/.bashrc"), Some("bashrc"));
    }
}
