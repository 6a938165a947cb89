//! The prompt an agent gets: the spec's prompt, then where the run input
//! is (and, when small, the input itself), then where to write the result
//! and what shape it must have.

use serde_json::Value;

/// Inputs up to this size are also quoted in the prompt.
const INLINE_INPUT_BYTES: usize = 2048;

pub fn compose(prompt: &str, input: Option<&Value>, output_file: &str, service: bool) -> String {
    let mut p = prompt.trim_end().to_string();
    if let Some(input) = input {
        p.push_str("\n\nThe run input is in /workspace/input.json; read it before you start.");
        let text = serde_json::to_string_pretty(input).unwrap_or_default();
        if text.len() <= INLINE_INPUT_BYTES {
            p.push_str(&format!(" Its content:\n```json\n{text}\n```"));
        }
    }
    if service {
        p.push_str(&format!(
            "\n\nYou run as a long-lived service: keep running. Whenever you have a result, \
             write it as JSON to {output_file} (write a temporary file and rename it over \
             {output_file}, so it is never seen half-written); rewrite it to publish an update. \
             The result is an object with `status`, a one-line `summary`, and optionally \
             `metrics` (an object) and `artifacts` (a list of {{name, path, media_type}} for \
             files you made, paths relative to /workspace)."
        ));
        return p;
    }
    p.push_str(&format!(
        "\n\nWhen you are done, write your result as JSON to {output_file}: an object with \
         `status` (\"success\" or \"failed\"), a one-line `summary`, and optionally `metrics` \
         (an object) and `artifacts` (a list of {{name, path, media_type}} for files you made, \
         paths relative to /workspace)."
    ));
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_input_and_output() {
        let p = compose(
            "Do X.",
            Some(&serde_json::json!({"k": 1})),
            "/workspace/out.json",
            false,
        );
        assert!(p.starts_with("Do X.\n\nThe run input is in /workspace/input.json"));
        assert!(p.contains("\"k\": 1"));
        assert!(p.contains("write your result as JSON to /workspace/out.json"));
        let big = serde_json::json!({"k": "x".repeat(5000)});
        assert!(!compose("Do X.", Some(&big), "/o.json", false).contains("xxxx"));
        let s = compose("Serve.", None, "/workspace/o.json", true);
        assert!(s.contains("long-lived service"), "{s}");
        assert!(s.contains("rename it over /workspace/o.json"), "{s}");
    }
}
