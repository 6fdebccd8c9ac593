use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::KeyError;

/// Writes a file only its owner can read (0600), atomically: the bytes go to a
/// temporary file that is synced and then renamed over the target, so a crash
/// leaves either the old file or the new one, never half of one.
pub fn write_private_file(path: &Path, bytes: &[u8]) -> Result<(), KeyError> {
    let fail = |source| KeyError::Write {
        path: path.to_path_buf(),
        source,
    };
    let temporary = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temporary)
        .map_err(fail)?;
    file.write_all(bytes).map_err(fail)?;
    file.sync_all().map_err(fail)?;
    std::fs::rename(&temporary, path).map_err(fail)?;
    if let Some(folder) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::File::open(folder)
            .and_then(|f| f.sync_all())
            .map_err(fail)?;
    }
    Ok(())
}
