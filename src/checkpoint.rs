//! Checkpoint directories: atomic saves and the `rlhf.json` lineage file.
//!
//! A save writes everything into a staging directory beside the target and renames it into
//! place, so a crash or Ctrl-C mid-save leaves the previous checkpoint whole.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::model::weights;

pub const LINEAGE_FILE: &str = "rlhf.json";

/// `write` fills a fresh staging directory; on success it replaces `target`.
pub fn save_atomically(target: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let parent = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).with_context(|| format!("creating {}", parent.display()))?;
    let name = target
        .file_name()
        .with_context(|| format!("{} is not a directory name", target.display()))?
        .to_string_lossy()
        .into_owned();
    let staging = parent.join(format!(".{name}.saving-{}", std::process::id()));
    if staging.exists() {
        std::fs::remove_dir_all(&staging)?;
    }
    std::fs::create_dir(&staging).with_context(|| format!("creating {}", staging.display()))?;
    if let Err(err) = write(&staging).and_then(|()| sync_dir_files(&staging)) {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(err);
    }
    if target.exists() {
        let old = parent.join(format!(".{name}.replaced-{}", std::process::id()));
        std::fs::rename(target, &old)
            .with_context(|| format!("moving aside {}", target.display()))?;
        std::fs::rename(&staging, target)
            .with_context(|| format!("renaming into {}", target.display()))?;
        std::fs::remove_dir_all(&old).with_context(|| format!("removing {}", old.display()))?;
    } else {
        std::fs::rename(&staging, target)
            .with_context(|| format!("renaming into {}", target.display()))?;
    }
    Ok(())
}

/// Writes beside `path` and renames, so a reader never sees half a file.
pub fn write_file_atomically(path: &Path, contents: &str) -> Result<()> {
    let name =
        path.file_name().with_context(|| format!("{} is not a file name", path.display()))?;
    let staging =
        path.with_file_name(format!(".{}.writing-{}", name.to_string_lossy(), std::process::id()));
    std::fs::write(&staging, contents).with_context(|| format!("writing {}", staging.display()))?;
    std::fs::rename(&staging, path).with_context(|| format!("renaming into {}", path.display()))
}

/// Flushes every file to disk before the rename makes the directory visible.
fn sync_dir_files(dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_file() {
            std::fs::File::open(&path)?.sync_all()?;
        } else if path.is_dir() {
            sync_dir_files(&path)?;
        }
    }
    Ok(())
}

/// Where a checkpoint came from: written to `rlhf.json` in every output directory.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Lineage {
    /// `init`, `sft`, `reward`, `ppo` or `moderate`.
    pub stage: String,
    pub tool_version: String,
    /// The checkpoint this one started from.
    pub parent: Option<Source>,
    /// Data files read, with their hashes.
    pub data: Vec<Source>,
    /// The resolved config the run used.
    pub config: serde_json::Value,
    /// Final metrics of the run.
    pub metrics: serde_json::Value,
}

/// A file or checkpoint by path and SHA-256 of its content.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Source {
    pub path: String,
    pub sha256: String,
}

impl Source {
    pub fn file(path: &Path) -> Result<Self> {
        Ok(Self { path: path.display().to_string(), sha256: hash_files(&[path.to_path_buf()])? })
    }

    /// A model directory, hashed over `config.json` and its weight files.
    pub fn model_dir(dir: &Path) -> Result<Self> {
        let mut files = vec![dir.join("config.json")];
        let mut shards: Vec<PathBuf> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
            .collect();
        shards.sort();
        if shards.is_empty() {
            shards.push(dir.join(weights::SINGLE_FILE));
        }
        files.extend(shards);
        Ok(Self { path: dir.display().to_string(), sha256: hash_files(&files)? })
    }
}

impl Lineage {
    pub fn new(stage: &str, config: serde_json::Value) -> Self {
        Self {
            stage: stage.into(),
            tool_version: env!("CARGO_PKG_VERSION").into(),
            parent: None,
            data: Vec::new(),
            config,
            metrics: serde_json::Value::Null,
        }
    }

    pub fn write(&self, dir: &Path) -> Result<()> {
        crate::json_file::write(&dir.join(LINEAGE_FILE), self)
    }

    pub fn read(dir: &Path) -> Result<Self> {
        crate::json_file::read(&dir.join(LINEAGE_FILE))
    }
}

fn hash_files(files: &[PathBuf]) -> Result<String> {
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    for path in files {
        let mut file =
            std::fs::File::open(path).with_context(|| format!("hashing {}", path.display()))?;
        loop {
            let n = file.read(&mut buffer)?;
            if n == 0 {
                break;
            }
            hasher.update(&buffer[..n]);
        }
    }
    Ok(format!("{:x}", hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_write_keeps_the_previous_checkpoint() {
        let root = tempfile::tempdir().unwrap();
        let target = root.path().join("ckpt");
        save_atomically(&target, |dir| Ok(std::fs::write(dir.join("a"), "v1")?)).unwrap();
        let err = save_atomically(&target, |dir| {
            std::fs::write(dir.join("a"), "half-written")?;
            anyhow::bail!("crash mid-save")
        });
        assert!(err.is_err());
        assert_eq!(std::fs::read_to_string(target.join("a")).unwrap(), "v1");
        let leftovers: Vec<_> = std::fs::read_dir(root.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "staging directory removed");
        save_atomically(&target, |dir| Ok(std::fs::write(dir.join("a"), "v2")?)).unwrap();
        assert_eq!(std::fs::read_to_string(target.join("a")).unwrap(), "v2");
    }
}
