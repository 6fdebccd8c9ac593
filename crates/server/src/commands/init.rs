use std::path::Path;

use anyhow::bail;

use crate::config::STARTER;

pub fn run(path: &Path, force: bool) -> anyhow::Result<()> {
    if path.exists() && !force {
        bail!("{} exists; pass --force to replace it", path.display());
    }
    std::fs::write(path, STARTER)?;
    eprintln!(
        "Wrote {}. Edit it, then run `gatehouse serve`.",
        path.display()
    );
    Ok(())
}
