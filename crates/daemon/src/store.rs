//! The run store: SQLite (embedded, WAL) holding every run record and
//! every event, with artifacts on disk next to it (`<data>/runs/<id>/`).
//!
//! Durability: an event is committed before anyone can see it (the API
//! and live streams read what the store returns), so a daemon killed with
//! SIGKILL at any moment loses nothing a client was told about. WAL with
//! `synchronous=NORMAL` survives a process crash; only a power loss could
//! lose the last transactions.
//!
//! Privacy: runs hold prompts, outputs and artifacts, so the data
//! directory and `runs/` are 0700 and the database files 0600 whatever the
//! umask; existing ones are fixed on open, and a store whose modes cannot
//! be fixed is refused.
//!
//! Schema changes are numbered migrations tracked in `PRAGMA user_version`,
//! applied in order on open, so an older database is upgraded in place.

use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
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
    #[error("run store {0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error(
        "run store {path} is mode {mode:o} and cannot be made {want:o} ({source}); \
         fix its owner or mode, or choose another --data-dir"
    )]
    Mode {
        path: PathBuf,
        mode: u32,
        want: u32,
        source: std::io::Error,
    },
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// Schema migrations: entry `i` takes `user_version` from `i` to `i + 1`.
/// Only ever append.
const MIGRATIONS: &[&str] = &[
    // 1: runs and their events (the first schema, which had no version).
    "
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
",
    // 2: session chat logs.
    "
CREATE TABLE IF NOT EXISTS session_messages (
    session_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    ts_ms INTEGER NOT NULL,
    role TEXT NOT NULL,
    content TEXT NOT NULL,
    PRIMARY KEY (session_id, seq)
);
",
];

/// One message of a session's chat log.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct SessionMessage {
    pub ts_ms: u64,
    pub role: String,
    pub content: String,
}

/// Why a message was not appended.
#[derive(Debug, thiserror::Error)]
pub enum AppendMessageError {
    #[error("session {session} holds {limit} messages, the limit")]
    SessionFull { session: String, limit: usize },
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub struct Store {
    conn: Mutex<Connection>,
    path: PathBuf,
    /// `<data>/runs`: artifacts, one directory per run.
    runs_dir: PathBuf,
}

impl Store {
    /// Opens (creating) `<data>/husk.db` and `<data>/runs/`, private to
    /// this user (see the module doc), migrating an older schema.
    pub fn open(data_dir: &Path) -> Result<Store> {
        let path = data_dir.join("husk.db");
        let sql = |source| StoreError::Sqlite {
            path: path.clone(),
            source,
        };
        if let Some(parent) = data_dir.parent() {
            std::fs::create_dir_all(parent).map_err(|e| StoreError::Io(parent.into(), e))?;
        }
        private_dir(data_dir)?;
        private_dir(&data_dir.join("runs"))?;
        // SQLite gives the -wal and -shm files the mode of the database file:
        // create it 0600 before SQLite does.
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| StoreError::Io(path.clone(), e))?;
        private_file(&path)?;
        let conn = Connection::open(&path).map_err(sql)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(sql)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(sql)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(sql)?;
        migrate(&conn).map_err(sql)?;
        for suffix in ["-wal", "-shm"] {
            let mut p = path.clone().into_os_string();
            p.push(suffix);
            let p = PathBuf::from(p);
            if p.exists() {
                private_file(&p)?;
            }
        }
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

    /// Appends a message to a session's chat log (creating the session),
    /// refusing it when the session already holds `limit` messages. The
    /// count and the insert are one transaction.
    pub fn append_message(
        &self,
        session: &str,
        role: &str,
        content: &str,
        limit: usize,
    ) -> std::result::Result<SessionMessage, AppendMessageError> {
        let ts_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let inserted = self.with(|c| {
            let tx = c.unchecked_transaction()?;
            let count: i64 = tx.query_row(
                "SELECT COUNT(*) FROM session_messages WHERE session_id = ?1",
                params![session],
                |r| r.get(0),
            )?;
            if count as usize >= limit {
                return Ok(false);
            }
            tx.execute(
                "INSERT INTO session_messages (session_id, seq, ts_ms, role, content)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![session, count + 1, ts_ms as i64, role, content],
            )?;
            tx.commit()?;
            Ok(true)
        })?;
        if !inserted {
            return Err(AppendMessageError::SessionFull {
                session: session.into(),
                limit,
            });
        }
        Ok(SessionMessage {
            ts_ms,
            role: role.into(),
            content: content.into(),
        })
    }

    /// A session's chat log, oldest first (empty for an unknown session).
    pub fn messages(&self, session: &str) -> Result<Vec<SessionMessage>> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT ts_ms, role, content FROM session_messages
                 WHERE session_id = ?1 ORDER BY seq",
            )?;
            let rows = st.query_map(params![session], |r| {
                Ok(SessionMessage {
                    ts_ms: r.get::<_, i64>(0)? as u64,
                    role: r.get(1)?,
                    content: r.get(2)?,
                })
            })?;
            rows.collect()
        })
    }

    /// Runs that were not terminal when the daemon last stopped.
    pub fn unfinished(&self) -> Result<Vec<RunRecord>> {
        self.list_runs(Some(false))
    }
}

/// Applies the migrations the database has not had yet.
fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    let have: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(have.max(0) as usize) {
        let tx = conn.unchecked_transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}

/// Creates `dir` (mode 0700 whatever the umask) or makes an existing one
/// 0700; refuses a non-directory or one whose mode cannot be changed.
pub fn private_dir(dir: &Path) -> Result<()> {
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(StoreError::Io(dir.into(), e)),
    }
    let meta = std::fs::symlink_metadata(dir).map_err(|e| StoreError::Io(dir.into(), e))?;
    if !meta.is_dir() {
        let e = std::io::Error::other("exists and is not a directory");
        return Err(StoreError::Io(dir.into(), e));
    }
    set_mode(dir, meta.permissions().mode() & 0o7777, 0o700)
}

/// Makes an existing file 0600.
fn private_file(file: &Path) -> Result<()> {
    let meta = std::fs::symlink_metadata(file).map_err(|e| StoreError::Io(file.into(), e))?;
    set_mode(file, meta.permissions().mode() & 0o7777, 0o600)
}

fn set_mode(path: &Path, mode: u32, want: u32) -> Result<()> {
    if mode == want {
        return Ok(());
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(want)).map_err(|source| {
        StoreError::Mode {
            path: path.into(),
            mode,
            want,
            source,
        }
    })
}

/// Whether a stored status is terminal (for tests and listings).
pub fn is_terminal(s: RunStatus) -> bool {
    s.is_terminal()
}
