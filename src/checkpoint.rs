//! Checkpoint directories: atomic saves and the `rlhf.json` lineage file.
//!
//! A save writes everything into a staging directory beside the target, syncs it, and swaps it
//! with the target in one `renameat2(RENAME_EXCHANGE)`, so at every instant the target is
//! either the previous complete checkpoint or the new one, whatever kills the process. Where
//! the filesystem cannot exchange, the old target is moved aside first, and [`recover`] puts
//! it back if the process died between the two renames.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::model::weights;

pub const LINEAGE_FILE: &str = "rlhf.json";

const SAVING: &str = "saving";
const REPLACED: &str = "replaced";

/// `write` fills a fresh staging directory; on success it replaces `target`.
pub fn save_atomically(target: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let (parent, name) = split(target)?;
    std::fs::create_dir_all(&parent).with_context(|| format!("creating {}", parent.display()))?;
    recover(target)?;
    let staging = sibling(&parent, &name, SAVING, std::process::id());
    std::fs::create_dir(&staging).with_context(|| format!("creating {}", staging.display()))?;
    let written = write(&staging).and_then(|()| sync_tree(&staging));
    let result = written.and_then(|()| match target.exists() {
        true => replace(&staging, target),
        false => rename(&staging, target),
    });
    if let Err(err) = result {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(err.context(format!("saving {}", target.display())));
    }
    sync_dir(&parent)
}

/// Writes beside `path`, syncs and renames, so a reader never sees half a file.
pub fn write_file_atomically(path: &Path, contents: &str) -> Result<()> {
    let (parent, name) = split(path)?;
    let staging = path.with_file_name(format!(".{name}.writing-{}", std::process::id()));
    let written = std::fs::write(&staging, contents)
        .and_then(|()| std::fs::File::open(&staging)?.sync_all())
        .with_context(|| format!("writing {}", staging.display()));
    if let Err(err) = written.and_then(|()| rename(&staging, path)) {
        let _ = std::fs::remove_file(&staging);
        return Err(err);
    }
    sync_dir(&parent)
}

/// Cleans up after a save that was killed: a staging directory of a process that no longer
/// runs is removed (it holds a partial new checkpoint or the old one already replaced), and a
/// checkpoint moved aside but never replaced is put back. Runs before every save and training
/// run, so strays are never mistaken for a checkpoint and never pile up.
pub fn recover(target: &Path) -> Result<()> {
    let (parent, name) = split(target)?;
    let Ok(entries) = std::fs::read_dir(&parent) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name().to_string_lossy().into_owned();
        let Some((kind, pid)) = stray_of(&file_name, &name) else { continue };
        if process_alive(pid) {
            continue; // another run is saving here right now
        }
        let path = entry.path();
        if kind == REPLACED && !target.exists() {
            rename(&path, target)?;
        } else {
            std::fs::remove_dir_all(&path)
                .with_context(|| format!("removing {}, left by a killed save", path.display()))?;
        }
    }
    Ok(())
}

/// Fails (exit 1) unless a checkpoint can be created beside `target`: a read-only or
/// unwritable directory is found before a run spends hours training. Creates nothing: where
/// the directory does not exist yet, its nearest existing ancestor is tried.
pub fn check_writable(target: &Path) -> Result<()> {
    let (mut dir, name) = split(target)?;
    while !dir.exists() {
        dir = match dir.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
    }
    let probe = sibling(&dir, &name, "probe", std::process::id());
    std::fs::File::create(&probe)
        .and_then(|_| std::fs::remove_file(&probe))
        .with_context(|| format!("{}: cannot write a checkpoint here", dir.display()))
}

/// `.NAME.saving-PID` or `.NAME.replaced-PID` → (kind, PID).
fn stray_of<'a>(file_name: &'a str, name: &str) -> Option<(&'a str, u32)> {
    let rest = file_name.strip_prefix('.')?.strip_prefix(name)?.strip_prefix('.')?;
    let (kind, pid) = rest.split_once('-')?;
    let pid = pid.parse().ok()?;
    [SAVING, REPLACED].contains(&kind).then_some((kind, pid))
}

fn process_alive(pid: u32) -> bool {
    pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists()
}

fn split(target: &Path) -> Result<(PathBuf, String)> {
    let parent = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = target
        .file_name()
        .with_context(|| format!("{} is not a file or directory name", target.display()))?
        .to_string_lossy()
        .into_owned();
    Ok((parent, name))
}

fn sibling(parent: &Path, name: &str, kind: &str, pid: u32) -> PathBuf {
    parent.join(format!(".{name}.{kind}-{pid}"))
}

fn rename(from: &Path, to: &Path) -> Result<()> {
    std::fs::rename(from, to).with_context(|| format!("renaming into {}", to.display()))
}

/// Puts `staging` in place of the existing `target` and removes the old checkpoint.
fn replace(staging: &Path, target: &Path) -> Result<()> {
    if exchange(staging, target)? {
        // `staging` now holds the old checkpoint; a kill from here on leaves the new one.
        return std::fs::remove_dir_all(staging)
            .with_context(|| format!("removing the previous checkpoint {}", staging.display()));
    }
    let (parent, name) = split(target)?;
    let old = sibling(&parent, &name, REPLACED, std::process::id());
    std::fs::rename(target, &old).with_context(|| format!("moving aside {}", target.display()))?;
    rename(staging, target)?;
    std::fs::remove_dir_all(&old).with_context(|| format!("removing {}", old.display()))
}

/// Swaps two paths in one step; `false` where the platform or filesystem cannot.
#[cfg(target_os = "linux")]
fn exchange(a: &Path, b: &Path) -> Result<bool> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| CString::new(p.as_os_str().as_bytes()).context("a path with a NUL byte");
    let (ca, cb) = (c(a)?, c(b)?);
    // SAFETY: both are valid NUL-terminated paths; renameat2 only reads them.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            ca.as_ptr(),
            libc::AT_FDCWD,
            cb.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if rc == 0 {
        return Ok(true);
    }
    let err = std::io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP) => Ok(false),
        _ => Err(err).with_context(|| format!("renaming into {}", b.display())),
    }
}

#[cfg(not(target_os = "linux"))]
fn exchange(_: &Path, _: &Path) -> Result<bool> {
    Ok(false)
}

/// Makes a rename durable: the directory entry itself is flushed.
fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing {}", dir.display()))
}

/// Flushes every file to disk before the rename makes the directory visible.
fn sync_tree(dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_file() {
            std::fs::File::open(&path)?.sync_all()?;
        } else if path.is_dir() {
            sync_tree(&path)?;
        }
    }
    sync_dir(dir)
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

    /// A model directory, hashed over `config.json` (an adapter's `adapter_config.json`) and
    /// its weight files.
    pub fn model_dir(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            return Err(crate::bad_input!("{}: no such model directory", dir.display()));
        }
        // An adapter directory (model/adapter.rs) has its own config file.
        let config = match crate::model::adapter::is_adapter_dir(dir) {
            true => crate::model::adapter::CONFIG_FILE,
            false => "config.json",
        };
        let mut files = vec![dir.join(config)];
        let mut shards: Vec<PathBuf> = std::fs::read_dir(dir)
            .with_context(|| format!("reading {}", dir.display()))?
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

    /// Above any Linux pid_max, so never a running process.
    const DEAD: u32 = 4_000_000_000;

    #[test]
    fn strays_of_a_killed_save_are_removed_and_a_moved_aside_checkpoint_comes_back() {
        let root = tempfile::tempdir().unwrap();
        let target = root.path().join("ckpt");
        let stray = |kind: &str, pid: u32| {
            let dir = sibling(root.path(), "ckpt", kind, pid);
            std::fs::create_dir(&dir).unwrap();
            std::fs::write(dir.join("a"), kind).unwrap();
            dir
        };
        stray(SAVING, DEAD);
        stray(REPLACED, DEAD);
        let live = stray(SAVING, std::process::id()); // ours: a save in progress
        std::fs::create_dir(root.path().join(".other.saving-4000000000")).unwrap();
        recover(&target).unwrap();
        assert_eq!(std::fs::read_to_string(target.join("a")).unwrap(), REPLACED);
        let mut left: Vec<_> = std::fs::read_dir(root.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        let live = live.file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(left, [live, ".other.saving-4000000000".into(), "ckpt".into()]);
    }

    #[test]
    fn a_save_replaces_the_target_and_leaves_no_strays() {
        let root = tempfile::tempdir().unwrap();
        let target = root.path().join("ckpt");
        std::fs::create_dir(sibling(root.path(), "ckpt", SAVING, DEAD)).unwrap();
        for version in ["v1", "v2", "v3"] {
            save_atomically(&target, |dir| Ok(std::fs::write(dir.join("a"), version)?)).unwrap();
            assert_eq!(std::fs::read_to_string(target.join("a")).unwrap(), version);
        }
        let left: Vec<_> = std::fs::read_dir(root.path()).unwrap().collect();
        assert_eq!(left.len(), 1);
        write_file_atomically(&root.path().join("f.txt"), "x").unwrap();
        assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 2);
    }
}
