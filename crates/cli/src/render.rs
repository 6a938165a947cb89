//! Renders run events for a person on stderr: one line per step of
//! progress, prefixed with the elapsed time and the stage; agent output
//! and logs only with `-v`.

use std::io::Write;
use std::time::Instant;

use husk_runtime::{Event, EventSink, Level};

pub struct Renderer {
    start: Instant,
    verbose: bool,
    quiet: bool,
}

impl Renderer {
    pub fn new(verbose: bool, quiet: bool) -> Self {
        Renderer {
            start: Instant::now(),
            verbose,
            quiet,
        }
    }

    fn shown(&self, e: &Event) -> bool {
        if self.quiet {
            return false;
        }
        match e.event_type.as_str() {
            "log.chunk" | "log.closed" => self.verbose,
            "agent.message" | "agent.tool_result" => self.verbose,
            _ => e.level != Level::Debug || self.verbose,
        }
    }
}

impl EventSink for Renderer {
    fn emit(&self, e: &Event) {
        if !self.shown(e) {
            return;
        }
        let t = self.start.elapsed().as_secs_f64();
        let stage = e.stage_name.as_deref().unwrap_or("run");
        let mark = match e.level {
            Level::Error => "✗ ",
            Level::Warn => "! ",
            _ => "",
        };
        let text = if e.event_type == "log.chunk" {
            let stream = e
                .payload
                .as_ref()
                .and_then(|p| p["stream"].as_str())
                .unwrap_or("out");
            format!("{stream}| {}", e.message)
        } else {
            e.message.clone()
        };
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "[{t:7.1}s] {stage:<12} {mark}{text}");
    }
}
