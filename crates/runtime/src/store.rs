//! Where runs are kept on disk when no daemon stores them: one directory
//! per run under the runs root, holding the stage artifacts, `run.json`
//! (the run record) and `events.jsonl` (one event per line). The daemon's
//! store takes the same record and events unchanged.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::record::RunRecord;

/// `$HUSK_DATA_DIR/runs`, else `$XDG_DATA_HOME/husk/runs`, else
/// `~/.local/share/husk/runs`.
pub fn runs_root() -> PathBuf {
    if let Some(d) = std::env::var_os("HUSK_DATA_DIR") {
        return PathBuf::from(d).join("runs");
    }
    let base = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    base.join("husk").join("runs")
}

/// Writes `run.json` and `events.jsonl` into `root/<run id>/`.
pub fn save(root: &Path, record: &RunRecord) -> std::io::Result<PathBuf> {
    let dir = root.join(&record.id);
    std::fs::create_dir_all(&dir)?;
    let mut events = std::io::BufWriter::new(std::fs::File::create(dir.join("events.jsonl"))?);
    for e in &record.events {
        serde_json::to_writer(&mut events, e)?;
        events.write_all(b"\n")?;
    }
    events.flush()?;
    let json = serde_json::to_vec_pretty(record)?;
    std::fs::write(dir.join("run.json"), json)?;
    Ok(dir)
}
