//! Building this API's URLs on the client side (the `husk` CLI): every
//! path segment is percent-encoded, so a run id such as `../../etc`
//! stays one segment (`..%2F..%2Fetc`) instead of walking the path.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// Everything but the unreserved `A-Z a-z 0-9 - _ ~` is encoded; `.` too,
/// so `.` and `..` cannot be dot-segments.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'~');

/// One path segment, percent-encoded.
pub fn segment(s: &str) -> String {
    utf8_percent_encode(s, SEGMENT).to_string()
}

/// `/` + the segments, each percent-encoded: `path(&["v1", "runs", id])`.
pub fn path(segments: &[&str]) -> String {
    let mut out = String::new();
    for s in segments {
        out.push('/');
        out.push_str(&segment(s));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{path, segment};

    #[test]
    fn segments_cannot_escape_their_place() {
        assert_eq!(segment("run-a_b~1"), "run-a_b~1");
        assert_eq!(segment("../../etc"), "%2E%2E%2F%2E%2E%2Fetc");
        assert_eq!(segment(".."), "%2E%2E");
        assert_eq!(segment("a b?c#d%e"), "a%20b%3Fc%23d%25e");
        assert_eq!(segment("é"), "%C3%A9");
        assert_eq!(
            path(&["v1", "runs", "x/y", "events"]),
            "/v1/runs/x%2Fy/events"
        );
    }
}
