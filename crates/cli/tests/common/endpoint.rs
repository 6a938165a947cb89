//! A scripted model endpoint (a Python fixture under `tests/fixtures/`)
//! for the end-to-end tests of the real agent CLIs. It prints its port on
//! its first line and logs every request as a JSON line; it is killed when
//! dropped, also when a test panics.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::Value;

pub struct Endpoint {
    child: Child,
    pub port: u16,
    log: PathBuf,
}

impl Endpoint {
    /// Starts `tests/fixtures/<script>` logging to `log`; `plan`, when
    /// given, is passed as the environment variable `plan_var`.
    pub fn start(script: &str, log: &Path, plan: Option<(&str, &Value)>) -> Endpoint {
        let script = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(script);
        let mut cmd = Command::new("python3");
        if let Some((var, p)) = plan {
            cmd.env(var, p.to_string());
        }
        let mut child = cmd
            .arg(&script)
            .arg(log)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("start python3 {}: {e}", script.display()));
        let mut first = String::new();
        let stdout = child.stdout.take().unwrap();
        let read = BufReader::new(stdout).read_line(&mut first);
        let port = match read.ok().and_then(|_| first.trim().parse().ok()) {
            Some(p) => p,
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the fake endpoint printed no port (got {first:?})");
            }
        };
        Endpoint {
            child,
            port,
            log: log.to_path_buf(),
        }
    }

    /// The logged requests, one JSON object each.
    pub fn requests(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("endpoint log line"))
            .collect()
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fresh random test credential.
pub fn test_key(prefix: &str) -> String {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .expect("read /dev/urandom");
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{prefix}{hex}")
}

/// Regular files under `dir` whose bytes contain `needle` (sockets and
/// other special files are skipped).
pub fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let entry = entry.unwrap();
            let (path, kind) = (entry.path(), entry.file_type().unwrap());
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_file()
                && std::fs::read(&path)
                    .unwrap()
                    .windows(needle.len())
                    .any(|w| w == needle)
            {
                found.push(path);
            }
        }
    }
    found
}

/// The messages of the record's events of type `kind`.
pub fn events_of<'a>(record: &'a Value, kind: &str) -> Vec<&'a str> {
    record["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["event_type"] == kind)
        .filter_map(|e| e["message"].as_str())
        .collect()
}
