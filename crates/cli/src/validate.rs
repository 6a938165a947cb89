//! `husk validate SPEC…`: parses and checks specs without running them,
//! reporting every problem with its file, line and column.

use std::path::PathBuf;

use clap::Args;
use serde_json::json;

use crate::CliResult;

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Spec files (YAML or JSON).
    #[arg(required = true, value_name = "SPEC")]
    specs: Vec<PathBuf>,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    json: bool,
}

/// Exit 0 when every spec is valid (warnings do not count), 1 otherwise.
/// Warnings of a valid spec go to stderr as `warning: FILE:LINE:COL: PATH:
/// MESSAGE`, or into the JSON as `warnings`, shaped like `errors`.
pub async fn run(args: ValidateArgs) -> CliResult<i32> {
    let mut results = Vec::new();
    let mut ok = true;
    for path in &args.specs {
        match husk_spec::load_file(path) {
            Ok(spec) => {
                if !args.json {
                    for w in &spec.warnings {
                        eprintln!("warning: {w}");
                    }
                    println!(
                        "ok: {} — {} `{}`",
                        path.display(),
                        spec.kind.as_str(),
                        spec.name
                    );
                }
                let warnings: Vec<_> = spec.warnings.iter().map(problem_json).collect();
                results.push(json!({"file": path, "valid": true, "kind": spec.kind.as_str(), "name": spec.name, "warnings": warnings}));
            }
            Err(errors) => {
                ok = false;
                if !args.json {
                    let n = errors.0.len();
                    eprintln!(
                        "{} problem{} in {}:",
                        n,
                        if n == 1 { "" } else { "s" },
                        path.display()
                    );
                    for e in &errors.0 {
                        eprintln!("  {e}");
                    }
                }
                let list: Vec<_> = errors.iter().map(problem_json).collect();
                results.push(json!({"file": path, "valid": false, "errors": list}));
            }
        }
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({"valid": ok, "specs": results}))?
        );
    }
    Ok(if ok { 0 } else { 1 })
}

/// An error or a warning in `--json` output.
fn problem_json(e: &husk_spec::SpecError) -> serde_json::Value {
    json!({"path": e.path, "line": e.line, "column": e.column, "message": e.message, "text": e.to_string()})
}
