//! A real `husk serve` for end-to-end tests: its own socket and data
//! directory, curl against the socket, the CLI pointed at it.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::husk;

/// A daemon process with its own socket and data directory; killed on drop.
pub struct Daemon {
    pub child: Child,
    pub dir: PathBuf,
    pub socket: PathBuf,
    pub tcp: Option<String>,
}

impl Daemon {
    pub fn start(name: &str, extra: &[&str]) -> Daemon {
        let dir =
            std::env::temp_dir().join(format!("husk-daemon-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self::start_in(dir, extra)
    }

    pub fn start_in(dir: PathBuf, extra: &[&str]) -> Daemon {
        Self::start_wrapped(dir, extra, "")
    }

    /// Starts the daemon through `sh -c "<shell>; exec husk serve …"`, to
    /// set its umask or open-files limit.
    pub fn start_wrapped(dir: PathBuf, extra: &[&str], shell: &str) -> Daemon {
        let socket = dir.join("husk.sock");
        let mut cmd = if shell.is_empty() {
            husk()
        } else {
            let mut c = Command::new("sh");
            c.args(["-c", &format!("{shell}; exec \"$0\" \"$@\"")])
                .arg(env!("CARGO_BIN_EXE_husk"));
            c
        };
        let mut child = cmd
            .args(["serve", "--socket"])
            .arg(&socket)
            .arg("--data-dir")
            .arg(dir.join("data"))
            .args(extra)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let mut tcp = None;
        let want = if extra.contains(&"--listen") { 2 } else { 1 };
        let mut seen = 0;
        while seen < want {
            let mut line = String::new();
            if err.read_line(&mut line).unwrap() == 0 {
                panic!("daemon exited before listening: {line}");
            }
            if let Some(rest) = line.split("listening on tcp://").nth(1) {
                tcp = Some(rest.split_whitespace().next().unwrap().to_string());
            }
            seen += line.contains("listening on") as usize;
        }
        std::thread::spawn(move || for _ in err.lines() {});
        Daemon {
            child,
            dir,
            socket,
            tcp,
        }
    }

    /// curl against the socket: (status, body).
    pub fn curl(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        headers: &[&str],
    ) -> (u16, String) {
        let mut c = Command::new("curl");
        c.args([
            "-s",
            "--path-as-is",
            "-o",
            "-",
            "-w",
            "\n%{http_code}",
            "-X",
            method,
            "--unix-socket",
        ])
        .arg(&self.socket);
        for h in headers {
            c.args(["-H", h]);
        }
        if let Some(b) = body {
            // Large bodies go through a file (argv has a size limit).
            let file = self.dir.join(format!("body-{}", b.len()));
            std::fs::write(&file, b).unwrap();
            c.args(["-H", "content-type: application/json", "--data-binary"])
                .arg(format!("@{}", file.display()));
        }
        c.arg(format!("http://husk{path}"));
        split(c.output().unwrap().stdout)
    }

    /// `GET /v1/runs/{id}/stages/{stage}/output-file`: (status, body).
    pub fn output_file(&self, id: &str, stage: &str) -> (u16, String) {
        self.curl(
            "GET",
            &format!("/v1/runs/{id}/stages/{stage}/output-file"),
            None,
            &[],
        )
    }

    pub fn json(&self, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
        let (code, text) = self.curl(method, path, body, &[]);
        (
            code,
            serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {text}")),
        )
    }

    /// Drains run `id`'s intents and checks there was exactly the one
    /// high-priority broadcast signal `text` from `candidate` (the
    /// real-agent tests' `broadcast_observation`); a second drain is empty.
    pub fn expect_one_broadcast(&self, id: &str, candidate: &str, text: &str, context: &str) {
        let (code, intents) = self.json("GET", &format!("/v1/runs/{id}/intents"), None);
        assert_eq!(code, 200, "{intents}");
        let intents = intents.as_array().unwrap();
        assert_eq!(intents.len(), 1, "{intents:?}\n{context}");
        assert_eq!(intents[0]["kind"], "signal");
        assert_eq!(intents[0]["audience"], "broadcast");
        assert_eq!(intents[0]["priority"], "high");
        assert_eq!(intents[0]["from_candidate_id"], candidate);
        assert_eq!(intents[0]["payload"]["summary_text"], text);
        let (_, again) = self.json("GET", &format!("/v1/runs/{id}/intents"), None);
        assert_eq!(again, Value::Array(Vec::new()));
    }

    pub fn cli(&self) -> Command {
        let mut c = husk();
        c.env("HUSK_SOCKET", &self.socket);
        c
    }

    /// Waits (bounded) until run `id` is terminal; returns its record.
    pub fn wait_terminal(&self, id: &str, limit: Duration) -> Value {
        let t = Instant::now();
        loop {
            let (_, r) = self.json("GET", &format!("/v1/runs/{id}"), None);
            if ["succeeded", "failed", "cancelled"].contains(&r["status"].as_str().unwrap_or("")) {
                return r;
            }
            assert!(
                t.elapsed() < limit,
                "run {id} not terminal after {limit:?}: {r}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn split(out: Vec<u8>) -> (u16, String) {
    let text = String::from_utf8_lossy(&out).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

pub fn have_curl() -> bool {
    let ok = husk_sandbox::host::which("curl").is_some();
    if !ok {
        eprintln!("SKIP: curl is not installed");
    }
    ok
}
