//! `rlhf plot` and `rlhf report`: pictures of training runs, written only once everything is
//! read and drawn, so bad input leaves nothing behind.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::bad_input;
use crate::cli::{PlotArgs, ReportArgs};
use crate::report::chart::{SIZE, charts};
use crate::report::html;
use crate::report::run::Run;

pub fn plot(args: &PlotArgs) -> Result<()> {
    if args.out.exists() && !args.out.is_dir() {
        return Err(bad_input!(
            "{}: exists and is not a directory\nhint: --out names the directory the charts go into",
            args.out.display()
        ));
    }
    check_ancestors(&args.out)?;
    let runs = Run::read_all(&args.runs)?;
    let charts = charts(&runs);
    if charts.is_empty() {
        return Err(bad_input!(
            "nothing to plot: no numeric metrics in {}",
            runs.iter().map(|r| r.dir.display().to_string()).collect::<Vec<_>>().join(", ")
        ));
    }
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    for chart in &charts {
        // Distinct metrics can share a file name once odd characters are replaced.
        let mut stem = chart.file_stem();
        while files.iter().any(|(name, _)| *name == format!("{stem}.svg")) {
            stem.push('_');
        }
        files.push((format!("{stem}.svg"), chart.svg(SIZE)?.into_bytes()));
        files.push((format!("{stem}.png"), chart.png()?));
    }
    write_files(&args.out, &files)?;
    eprintln!(
        "plot: {} charts of {} run(s) written to {} (SVG and PNG)",
        charts.len(),
        runs.len(),
        args.out.display()
    );
    Ok(())
}

pub fn report(args: &ReportArgs) -> Result<()> {
    if args.out.is_dir() {
        return Err(bad_input!(
            "{}: is a directory\nhint: --out names the HTML file to write, e.g. --out {}",
            args.out.display(),
            args.out.join("report.html").display()
        ));
    }
    check_ancestors(&parent(&args.out))?;
    let runs = Run::read_all(&args.runs)?;
    let charts = charts(&runs);
    let page = html::page(&runs, &charts)?;
    let dir = parent(&args.out);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let staging = dir.join(format!(".{}.writing-{}", file_name(&args.out), std::process::id()));
    let written = std::fs::write(&staging, page)
        .and_then(|()| std::fs::rename(&staging, &args.out))
        .with_context(|| format!("writing {}", args.out.display()));
    if written.is_err() {
        let _ = std::fs::remove_file(&staging);
    }
    written?;
    eprintln!(
        "report: {} run(s), {} charts written to {}",
        runs.len(),
        charts.len(),
        args.out.display()
    );
    Ok(())
}

/// Writes every file into a staging directory first, then renames each into `out`: a failure
/// midway leaves no partly written file in `out`.
fn write_files(out: &Path, files: &[(String, Vec<u8>)]) -> Result<()> {
    // Staging inside an existing `out`, or beside a new one: the renames stay on one filesystem.
    let fresh = !out.exists();
    let staging = if fresh {
        let dir = parent(out);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        dir.join(format!(".{}.plotting-{}", file_name(out), std::process::id()))
    } else {
        out.join(format!(".plotting-{}", std::process::id()))
    };
    let result = (|| -> Result<()> {
        std::fs::create_dir_all(&staging)
            .with_context(|| format!("creating {}", staging.display()))?;
        for (name, bytes) in files {
            let path = staging.join(name);
            std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
        }
        if fresh {
            return std::fs::rename(&staging, out)
                .with_context(|| format!("renaming into {}", out.display()));
        }
        for (name, _) in files {
            std::fs::rename(staging.join(name), out.join(name))
                .with_context(|| format!("writing {}", out.join(name).display()))?;
        }
        Ok(())
    })();
    if staging.exists() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    result
}

/// A path whose nearest existing ancestor is a file cannot be created: say so as bad input
/// rather than fail halfway through writing.
fn check_ancestors(path: &Path) -> Result<()> {
    match path.ancestors().find(|a| !a.as_os_str().is_empty() && a.exists()) {
        Some(existing) if !existing.is_dir() => {
            Err(bad_input!("{}: {} is a file, not a directory", path.display(), existing.display()))
        }
        _ => Ok(()),
    }
}

fn parent(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(|| "out".into(), |n| n.to_string_lossy().into_owned())
}
