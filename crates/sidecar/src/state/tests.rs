use serde_json::{Value, json};

use super::*;
use crate::limits::MAX_TTL_ITERATIONS;
use crate::types::{Audience, Kind, Priority};

fn state() -> State {
    let mut id = Identity::for_run("run-1");
    id.candidate_id = "cand-1".into();
    State::new(id)
}

fn intent(payload: Value) -> Intent {
    Intent {
        kind: Kind::Signal,
        audience: Audience::Broadcast,
        payload,
        priority: Priority::Normal,
        ttl_iterations: 1,
    }
}

fn key(k: &str) -> Option<IdemKey> {
    Some((k.to_string(), 0))
}

fn entry(id: &str) -> InboxEntry {
    InboxEntry {
        message_id: id.into(),
        from_candidate_id: "cand-2".into(),
        kind: Kind::Proposal,
        payload: json!({"m": id}),
    }
}

fn load(version: Option<u64>, iteration: Option<u32>, entries: &[&str]) -> InboxLoad {
    InboxLoad {
        version,
        execution_id: None,
        candidate_id: None,
        iteration,
        entries: entries.iter().map(|e| entry(e)).collect(),
    }
}

#[test]
fn stamping_uses_own_id_and_current_iteration() {
    let mut s = state();
    s.load_inbox(load(None, Some(7), &[])).unwrap();
    let mut i = intent(json!({"x": 1}));
    i.priority = Priority::High;
    i.ttl_iterations = MAX_TTL_ITERATIONS;
    let (a, how) = s.submit(i, None).unwrap();
    assert_eq!(how, Accepted::Stamped);
    assert_eq!(a.from_candidate_id, "cand-1");
    assert_eq!(a.iteration, 7);
    assert_eq!(a.priority, Priority::High);
    assert_eq!(a.ttl_iterations, MAX_TTL_ITERATIONS);
    assert!(a.intent_id.starts_with("int-"), "{}", a.intent_id);
    let (b, _) = s.submit(intent(json!({"x": 2})), None).unwrap();
    assert_ne!(a.intent_id, b.intent_id);
    assert_eq!(s.buffer_depth(), 2);
}

#[test]
fn idempotency_key_returns_the_original_even_with_another_body() {
    let mut s = state();
    let (a, _) = s.submit(intent(json!(1)), key("k")).unwrap();
    let (b, how) = s.submit(intent(json!(2)), key("k")).unwrap();
    assert_eq!(how, Accepted::SameKey);
    assert_eq!(a, b);
    assert_eq!(s.buffer_depth(), 1);
    // Another place in a batch is another intent.
    let (c, how) = s.submit(intent(json!(2)), Some(("k".into(), 1))).unwrap();
    assert_eq!(how, Accepted::Stamped);
    assert_ne!(c.intent_id, a.intent_id);
}

#[test]
fn same_payload_and_audience_is_deduplicated_other_audience_is_not() {
    let mut s = state();
    let (a, _) = s.submit(intent(json!({"a": 1, "b": 2})), None).unwrap();
    let mut same = intent(json!({"b": 2, "a": 1}));
    same.kind = Kind::Proposal; // kind and priority do not matter
    same.priority = Priority::Low;
    let (b, how) = s.submit(same, None).unwrap();
    assert_eq!(how, Accepted::SameContent);
    assert_eq!(a, b);
    let mut leader = intent(json!({"a": 1, "b": 2}));
    leader.audience = Audience::Leader;
    let (_, how) = s.submit(leader, None).unwrap();
    assert_eq!(how, Accepted::Stamped);
    assert_eq!(s.buffer_depth(), 2);
}

#[test]
fn dedup_and_keys_survive_a_drain() {
    let mut s = state();
    let (a, _) = s.submit(intent(json!(1)), key("k")).unwrap();
    assert_eq!(s.drain(), vec![a.clone()]);
    assert_eq!(
        s.submit(intent(json!(9)), key("k")).unwrap(),
        (a.clone(), Accepted::SameKey)
    );
    assert_eq!(
        s.submit(intent(json!(1)), None).unwrap(),
        (a, Accepted::SameContent)
    );
    assert_eq!(s.buffer_depth(), 0);
}

#[test]
fn payload_limit_is_checked_after_dedup() {
    let mut s = state();
    let at_limit = "x".repeat(MAX_INTENT_PAYLOAD_BYTES - 2); // plus the quotes
    s.submit(intent(json!(at_limit)), key("ok")).unwrap();
    let over = "x".repeat(MAX_INTENT_PAYLOAD_BYTES - 1);
    let e = s.submit(intent(json!(over)), None).unwrap_err();
    assert_eq!(
        e,
        Rejection::PayloadTooLarge {
            size: MAX_INTENT_PAYLOAD_BYTES + 1
        }
    );
    // A key seen before wins over the size check (rule 1 before rule 3).
    let (_, how) = s.submit(intent(json!(over)), key("ok")).unwrap();
    assert_eq!(how, Accepted::SameKey);
}

#[test]
fn three_per_iteration_then_429_and_replays_still_work() {
    let mut s = state();
    for n in 0..MAX_INTENTS_PER_ITERATION {
        s.submit(intent(json!(n)), None).unwrap();
    }
    let e = s.submit(intent(json!("more")), None).unwrap_err();
    assert_eq!(e, Rejection::IterationLimit { iteration: 0 });
    // Replays do not count against the limit.
    let (_, how) = s.submit(intent(json!(0)), None).unwrap();
    assert_eq!(how, Accepted::SameContent);
    // Size is checked before the count (rule 3 before rule 4).
    let big = "x".repeat(MAX_INTENT_PAYLOAD_BYTES);
    assert!(matches!(
        s.submit(intent(json!(big)), None),
        Err(Rejection::PayloadTooLarge { .. })
    ));
    // A drain does not reset the count: only a new iteration does.
    s.drain();
    assert!(s.submit(intent(json!("more")), None).is_err());
}

#[test]
fn new_iteration_resets_count_and_dedup_memory() {
    let mut s = state();
    for n in 0..MAX_INTENTS_PER_ITERATION {
        s.submit(intent(json!(n)), key(&format!("k{n}"))).unwrap();
    }
    // Same iteration again: nothing resets.
    s.load_inbox(load(None, Some(0), &[])).unwrap();
    assert!(s.submit(intent(json!("more")), None).is_err());
    s.load_inbox(load(None, Some(1), &[])).unwrap();
    assert_eq!(s.iteration(), 1);
    let (a, how) = s.submit(intent(json!(0)), key("k0")).unwrap();
    assert_eq!(how, Accepted::Stamped);
    assert_eq!(a.iteration, 1);
    // Earlier iterations' intents stay buffered.
    assert_eq!(s.buffer_depth(), MAX_INTENTS_PER_ITERATION + 1);
}

#[test]
fn buffer_is_bounded_and_nothing_acknowledged_is_lost() {
    let mut s = state();
    let mut acked = Vec::new();
    let mut iteration = 0;
    let mut refused = 0;
    for n in 0..10_000u32 {
        if n % MAX_INTENTS_PER_ITERATION as u32 == 0 {
            iteration += 1;
            s.load_inbox(load(None, Some(iteration), &[])).unwrap();
        }
        match s.submit(intent(json!(n)), None) {
            Ok((a, Accepted::Stamped)) => acked.push(a),
            Ok(other) => panic!("unexpected replay {other:?}"),
            Err(Rejection::BufferFull) => refused += 1,
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(acked.len(), MAX_BUFFERED_INTENTS);
    assert_eq!(refused, 10_000 - MAX_BUFFERED_INTENTS);
    assert_eq!(s.buffer_depth(), MAX_BUFFERED_INTENTS);
    assert_eq!(s.drain(), acked);
    // After a drain there is room again.
    s.load_inbox(load(None, Some(iteration + 1), &[])).unwrap();
    assert!(s.submit(intent(json!("again")), None).is_ok());
}

#[test]
fn inbox_since_semantics() {
    let mut s = state();
    let empty = s.inbox(None);
    assert_eq!((empty.version, empty.entries.len()), (0, 0));
    assert_eq!(empty.candidate_id, "cand-1");
    assert_eq!(s.inbox(Some(3)).version, 0);
    s.load_inbox(load(Some(5), Some(2), &["m1", "m2"])).unwrap();
    let full = s.inbox(None);
    assert_eq!(
        (full.version, full.iteration, full.entries.len()),
        (5, 2, 2)
    );
    assert_eq!(s.inbox(Some(4)), full);
    for since in [5, 6, u64::MAX] {
        let meta = s.inbox(Some(since));
        assert_eq!((meta.version, meta.iteration), (5, 2));
        assert_eq!(meta.candidate_id, "cand-1");
        assert!(meta.entries.is_empty());
    }
}

#[test]
fn version_defaults_to_previous_plus_one() {
    let mut s = state();
    assert_eq!(s.load_inbox(load(None, None, &[])).unwrap().version, 1);
    assert_eq!(s.load_inbox(load(Some(10), None, &[])).unwrap().version, 10);
    assert_eq!(s.load_inbox(load(None, None, &["a"])).unwrap().version, 11);
    assert_eq!(s.inbox_version(), 11);
}

#[test]
fn version_rules_older_equal_zero() {
    let mut s = state();
    assert_eq!(
        s.load_inbox(load(Some(0), None, &[])),
        Err(InboxError::ZeroVersion)
    );
    s.load_inbox(load(Some(3), Some(1), &["a"])).unwrap();
    assert_eq!(
        s.load_inbox(load(Some(2), Some(1), &[])),
        Err(InboxError::StaleVersion {
            given: 2,
            current: 3
        })
    );
    // The same version with the same content is a no-op …
    let again = s.load_inbox(load(Some(3), Some(1), &["a"])).unwrap();
    assert!(again.unchanged);
    // … with other content a conflict that changes nothing.
    assert_eq!(
        s.load_inbox(load(Some(3), Some(1), &["b"])),
        Err(InboxError::VersionConflict { version: 3 })
    );
    assert_eq!(s.inbox(None).entries[0].message_id, "a");
    // The iteration may not go back.
    assert_eq!(
        s.load_inbox(load(Some(4), Some(0), &[])),
        Err(InboxError::IterationWentBack {
            given: 0,
            current: 1
        })
    );
}

#[test]
fn load_checks_entries() {
    let mut s = state();
    assert_eq!(
        s.load_inbox(load(None, None, &["a", "b", "a"])),
        Err(InboxError::DuplicateMessageId("a".into()))
    );
    let many: Vec<String> = (0..=MAX_INBOX_ENTRIES).map(|i| format!("m{i}")).collect();
    let refs: Vec<&str> = many.iter().map(String::as_str).collect();
    assert_eq!(
        s.load_inbox(load(None, None, &refs)),
        Err(InboxError::TooManyEntries {
            count: MAX_INBOX_ENTRIES + 1
        })
    );
    assert_eq!(s.inbox_version(), 0);
    s.load_inbox(load(None, None, &refs[..MAX_INBOX_ENTRIES]))
        .unwrap();
    assert!(matches!(
        s.push_message(entry("one-more")),
        Err(InboxError::TooManyEntries { .. })
    ));
}

#[test]
fn snapshot_ids_default_to_identity_and_echo_the_orchestrator() {
    let mut s = state();
    s.load_inbox(load(None, None, &[])).unwrap();
    assert_eq!(s.inbox(None).execution_id, "run-1");
    let mut l = load(None, None, &[]);
    l.execution_id = Some("exec-9".into());
    l.candidate_id = Some("cand-9".into());
    s.load_inbox(l).unwrap();
    let snap = s.inbox(None);
    assert_eq!(
        (snap.execution_id.as_str(), snap.candidate_id.as_str()),
        ("exec-9", "cand-9")
    );
    // Stamping keeps the run's own identity.
    let (a, _) = s.submit(intent(json!(1)), None).unwrap();
    assert_eq!(a.from_candidate_id, "cand-1");
}

#[test]
fn push_message_appends_and_bumps_the_version() {
    let mut s = state();
    // Without an inbox, a push creates one at version 1.
    assert_eq!(s.push_message(entry("m1")), Ok(1));
    s.load_inbox(load(Some(4), Some(2), &["m1"])).unwrap();
    assert_eq!(s.push_message(entry("m2")), Ok(5));
    let snap = s.inbox(Some(4));
    assert_eq!(snap.version, 5);
    assert_eq!(snap.iteration, 2);
    let ids: Vec<&str> = snap.entries.iter().map(|e| e.message_id.as_str()).collect();
    assert_eq!(ids, ["m1", "m2"]);
    // A retried push changes nothing; another entry under the same id is refused.
    assert_eq!(s.push_message(entry("m2")), Ok(5));
    let mut other = entry("m2");
    other.payload = json!("changed");
    assert_eq!(
        s.push_message(other),
        Err(InboxError::DuplicateMessageId("m2".into()))
    );
    // A pushed-to version counts as loaded: an explicit version must exceed it.
    assert!(matches!(
        s.load_inbox(load(Some(5), Some(2), &[])),
        Err(InboxError::VersionConflict { version: 5 })
    ));
    assert_eq!(s.load_inbox(load(None, Some(2), &[])).unwrap().version, 6);
}

#[test]
fn close_returns_the_buffer_and_refuses_writes() {
    let mut s = state();
    let (a, _) = s.submit(intent(json!(1)), None).unwrap();
    let (b, _) = s.submit(intent(json!(2)), None).unwrap();
    assert_eq!(s.close(), vec![a, b]);
    assert_eq!(s.status(), Status::Closed);
    assert_eq!(s.buffer_depth(), 0);
    assert_eq!(s.submit(intent(json!(3)), None), Err(Rejection::Closed));
    assert_eq!(s.load_inbox(load(None, None, &[])), Err(InboxError::Closed));
    assert_eq!(s.push_message(entry("m")), Err(InboxError::Closed));
    assert!(s.close().is_empty());
    assert!(s.drain().is_empty());
}
