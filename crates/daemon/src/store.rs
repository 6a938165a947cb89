//! The run store: SQLite (embedded, WAL) holding every run record and
//! every event, with artifacts on disk next to it (`<data>/runs/<id>/`).
//!
//! Durability: an event is committed before anyone can see it (the API
//! and live streams read what the store returns), so a daemon killed with
//! SIGKILL at any moment loses nothing a client was told about. WAL with
//! `synchronous=NORMAL` survives a process crash; only a power loss could
//! lose the last transactions.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use husk_runtime::record::RunRecord;
use husk_runtime::{Event, RunStatus};
use rusqlite::{Connection, OptionalExtension, params};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("run store {path}: {source}")]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("run store: bad stored JSON: {0}")]
    Json(#[from] serde_json::Error),
}

pub type Result<T> = std::result::Result<T, StoreError>;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    terminal INTEGER NOT NULL,
    created_seq INTEGER NOT NULL,
    record TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    run_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    event TEXT NOT NULL,
    PRIMARY KEY (run_id, seq)
);
";

pub struct Store {
    conn: Mutex<Connection>,
    path: PathBuf,
    /// `<data>/runs`: artifacts, one directory per run.
    runs_dir: PathBuf,
}

impl Store {
    /// Opens (creating) `<data>/husk.db` and `<data>/runs/`.
    pub fn open(data_dir: &Path) -> Result<Store> {
        let path = data_dir.join("husk.db");
        let sql = |source| StoreError::Sqlite {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(data_dir.join("runs"))
            .map_err(|e| sql(rusqlite::Error::ToSqlConversionFailure(Box::new(e))))?;
        let conn = Connection::open(&path).map_err(sql)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(sql)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(sql)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(sql)?;
        conn.execute_batch(SCHEMA).map_err(sql)?;
        Ok(Store {
            conn: Mutex::new(conn),
            runs_dir: data_dir.join("runs"),
            path,
        })
    }

    pub fn runs_dir(&self) -> &Path {
        &self.runs_dir
    }

    fn with<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T> {
        let conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        f(&conn).map_err(|source| StoreError::Sqlite {
            path: self.path.clone(),
            source,
        })
    }

    /// Inserts or replaces a run record (its `events` are stored apart).
    pub fn put_run(&self, record: &RunRecord) -> Result<()> {
        let mut slim = record.clone();
        slim.events = Vec::new();
        let json = serde_json::to_string(&slim)?;
        self.with(|c| {
            c.execute(
                "INSERT INTO runs (id, status, terminal, created_seq, record)
                 VALUES (?1, ?2, ?3, (SELECT COALESCE(MAX(created_seq), 0) + 1 FROM runs), ?4)
                 ON CONFLICT(id) DO UPDATE SET status = ?2, terminal = ?3, record = ?4",
                params![
                    record.id,
                    record.status.as_str(),
                    record.status.is_terminal(),
                    json
                ],
            )
            .map(|_| ())
        })
    }

    /// Appends an event (ignores a duplicate of the same sequence number).
    pub fn append_event(&self, event: &Event) -> Result<()> {
        let json = serde_json::to_string(event)?;
        self.with(|c| {
            c.execute(
                "INSERT OR IGNORE INTO events (run_id, seq, event) VALUES (?1, ?2, ?3)",
                params![event.run_id, event.seq as i64, json],
            )
            .map(|_| ())
        })
    }

    /// A run record without its events.
    pub fn get_run(&self, id: &str) -> Result<Option<RunRecord>> {
        let json: Option<String> = self.with(|c| {
            c.query_row("SELECT record FROM runs WHERE id = ?1", params![id], |r| {
                r.get(0)
            })
            .optional()
        })?;
        Ok(match json {
            Some(j) => Some(serde_json::from_str(&j)?),
            None => None,
        })
    }

    /// Runs, oldest first; `terminal` filters by state.
    pub fn list_runs(&self, terminal: Option<bool>) -> Result<Vec<RunRecord>> {
        let rows: Vec<String> = self.with(|c| {
            let mut st = c.prepare(
                "SELECT record FROM runs WHERE (?1 IS NULL OR terminal = ?1) ORDER BY created_seq",
            )?;
            let rows = st.query_map(params![terminal], |r| r.get::<_, String>(0))?;
            rows.collect()
        })?;
        rows.iter()
            .map(|j| serde_json::from_str(j).map_err(Into::into))
            .collect()
    }

    /// Events of a run with `seq > after`, in order.
    pub fn events_after(&self, run_id: &str, after: u64) -> Result<Vec<Event>> {
        let rows: Vec<String> = self.with(|c| {
            let mut st =
                c.prepare("SELECT event FROM events WHERE run_id = ?1 AND seq > ?2 ORDER BY seq")?;
            let rows = st.query_map(params![run_id, after as i64], |r| r.get::<_, String>(0))?;
            rows.collect()
        })?;
        rows.iter()
            .map(|j| serde_json::from_str(j).map_err(Into::into))
            .collect()
    }

    pub fn last_seq(&self, run_id: &str) -> Result<u64> {
        self.with(|c| {
            c.query_row(
                "SELECT COALESCE(MAX(seq), 0) FROM events WHERE run_id = ?1",
                params![run_id],
                |r| r.get::<_, i64>(0),
            )
        })
        .map(|v| v as u64)
    }

    /// Runs that were not terminal when the daemon last stopped.
    pub fn unfinished(&self) -> Result<Vec<RunRecord>> {
        self.list_runs(Some(false))
    }
}

/// Whether a stored status is terminal (for tests and listings).
pub fn is_terminal(s: RunStatus) -> bool {
    s.is_terminal()
}
