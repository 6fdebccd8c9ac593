//! `gatehouse keys`: create and maintain the signing key set and API keys.
//! Running servers read the key set at start, so restart them (one at a time
//! behind a load balancer) after `rotate` or `retire`.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use gatehouse_keys::{
    ApiRole, KeyOrigin, KeySet, SigningAlgorithm, generate_api_key, write_private_file,
};
use secrecy::ExposeSecret;

/// The key set to work on: the named file, `GATEHOUSE_SIGNING_KEYS_FILE`, or the
/// development key set in the data folder.
pub fn key_set_path(file: Option<PathBuf>, data_dir: &Path) -> PathBuf {
    file.or_else(|| std::env::var_os("GATEHOUSE_SIGNING_KEYS_FILE").map(PathBuf::from))
        .unwrap_or_else(|| data_dir.join(crate::secrets::SIGNING_KEYS_FILE))
}

fn refuse_overwrite(path: &Path) -> anyhow::Result<()> {
    if path.exists() {
        bail!("{} exists; refusing to overwrite a key", path.display());
    }
    Ok(())
}

pub fn generate_signing(out: &Path, alg: SigningAlgorithm) -> anyhow::Result<()> {
    refuse_overwrite(out)?;
    let keys = KeySet::generate(alg, KeyOrigin::Operator)?;
    keys.save(out)?;
    eprintln!(
        "Wrote a {alg} key set to {} (mode 0600), current kid {}.",
        out.display(),
        keys.current_kid()
    );
    eprintln!(
        "Set GATEHOUSE_SIGNING_KEYS_FILE={} for `gatehouse serve`.",
        out.display()
    );
    Ok(())
}

pub fn generate_api(out: &Path, role: ApiRole) -> anyhow::Result<()> {
    refuse_overwrite(out)?;
    let key = generate_api_key(role)?;
    write_private_file(out, key.expose_secret().as_bytes())?;
    let variable = match role {
        ApiRole::Anon => "GATEHOUSE_PUBLISHABLE_KEY_FILE",
        ApiRole::Service => "GATEHOUSE_SECRET_KEY_FILE",
    };
    eprintln!(
        "Wrote a new key to {} (mode 0600). Set {variable}={}.",
        out.display(),
        out.display()
    );
    Ok(())
}

fn load(path: &Path) -> anyhow::Result<KeySet> {
    KeySet::load(path).with_context(|| format!("no usable key set at {}", path.display()))
}

pub fn list(path: &Path) -> anyhow::Result<()> {
    println!("{:<45} {:<6} {:<12} current", "kid", "alg", "created");
    for key in load(path)?.list() {
        println!(
            "{:<45} {:<6} {:<12} {}",
            key.kid,
            key.alg.to_string(),
            key.created_at,
            if key.current { "yes" } else { "" }
        );
    }
    Ok(())
}

/// Returns the new key's kid.
pub fn rotate(path: &Path, alg: SigningAlgorithm) -> anyhow::Result<String> {
    let mut keys = load(path)?;
    let kid = keys.rotate(alg)?;
    keys.save(path)?;
    eprintln!(
        "New current key {kid}; older keys still verify until retired. Restart the servers to use it."
    );
    Ok(kid)
}

pub fn retire(path: &Path, kid: &str) -> anyhow::Result<()> {
    let mut keys = load(path)?;
    keys.retire(kid)?;
    keys.save(path)?;
    eprintln!("Retired {kid}; tokens it signed stop verifying once the servers restart.");
    Ok(())
}
