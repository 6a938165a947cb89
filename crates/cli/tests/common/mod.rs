//! Helpers shared by the CLI's end-to-end tests.
#![allow(dead_code)]

pub mod daemon;
pub mod endpoint;

use std::process::Command;

/// The `husk` binary under test.
pub fn husk() -> Command {
    Command::new(env!("CARGO_BIN_EXE_husk"))
}

/// Whether bubblewrap is here; says so when it is not (an honest skip).
pub fn have_bwrap() -> bool {
    let found = husk_sandbox::host::which("bwrap").is_some();
    if !found {
        eprintln!("SKIP: bubblewrap is not installed on this host");
    }
    found
}

/// Exit code, stdout and stderr of a finished command.
pub fn out(cmd: &mut Command) -> (i32, String, String) {
    let o = cmd.output().expect("run husk");
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into(),
        String::from_utf8_lossy(&o.stderr).into(),
    )
}

/// The first line a spawned child writes to its (piped) stdout.
pub fn first_line(child: &mut std::process::Child) -> String {
    use std::io::BufRead;
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("piped stdout"))
        .read_line(&mut line)
        .expect("read the first line");
    line
}
