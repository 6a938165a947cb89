//! A run's events: a JSON array of the events strictly after
//! `from_event_id` (all of them when it is unknown), or, with `Accept:
//! text/event-stream`, a live SSE stream that starts after `Last-Event-ID`
//! (or `from_event_id`) and ends with the run's terminal event.
//!
//! The stream subscribes before it reads the store, then drops what it
//! already sent by sequence number: no gap, no duplicate.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream};
use husk_runtime::Event;
use serde::Deserialize;
use tokio::sync::broadcast::{self, error::RecvError};

use super::error::ApiResult;
use super::{AppState, PathParam, QueryParams};
use crate::manager::Manager;

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Events strictly after this one (`evt_<seq>`); all when unknown.
    from_event_id: Option<String>,
}

/// `evt_00000012` → 12; anything else → 0 (from the start).
fn seq_of(id: Option<&str>) -> u64 {
    id.and_then(|s| s.strip_prefix("evt_"))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn is_terminal(e: &Event) -> bool {
    matches!(
        e.event_type.as_str(),
        "run.finished" | "run.failed" | "run.cancelled"
    )
}

pub async fn events(
    State(s): State<AppState>,
    PathParam(id): PathParam<String>,
    headers: HeaderMap,
    QueryParams(q): QueryParams<EventsQuery>,
) -> ApiResult<Response> {
    s.manager.record(&id)?;
    let wants_sse = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"));
    if !wants_sse {
        let after = seq_of(q.from_event_id.as_deref());
        return Ok(Json(s.manager.store().events_after(&id, after)?).into_response());
    }
    let last_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let after = seq_of(last_id.as_deref().or(q.from_event_id.as_deref()));
    let rx = s.manager.subscribe(&id).map(|(rx, _)| rx);
    let backlog: VecDeque<Event> = s.manager.store().events_after(&id, after)?.into();
    let stream = live_stream(s.manager.clone(), id, after, backlog, rx);
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

struct Cursor {
    manager: Arc<Manager>,
    run_id: String,
    last: u64,
    backlog: VecDeque<Event>,
    rx: Option<broadcast::Receiver<Event>>,
    done: bool,
}

fn live_stream(
    manager: Arc<Manager>,
    run_id: String,
    after: u64,
    backlog: VecDeque<Event>,
    rx: Option<broadcast::Receiver<Event>>,
) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    let cursor = Cursor {
        manager,
        run_id,
        last: after,
        backlog,
        rx,
        done: false,
    };
    stream::unfold(cursor, |mut c| async move {
        let e = next_event(&mut c).await?;
        let data = serde_json::to_string(&e).unwrap_or_default();
        let sse = SseEvent::default()
            .id(e.event_id.clone())
            .event(e.event_type.clone())
            .data(data);
        Some((Ok(sse), c))
    })
}

async fn next_event(c: &mut Cursor) -> Option<Event> {
    loop {
        if c.done {
            return None;
        }
        if let Some(e) = c.backlog.pop_front() {
            if e.seq <= c.last {
                continue;
            }
            c.last = e.seq;
            c.done = is_terminal(&e);
            return Some(e);
        }
        let rx = c.rx.as_mut()?;
        match rx.recv().await {
            Ok(e) => c.backlog.push_back(e),
            Err(RecvError::Lagged(_)) => refill(c),
            Err(RecvError::Closed) => {
                c.rx = None;
                refill(c);
                if c.backlog.is_empty() {
                    return None;
                }
            }
        }
    }
}

/// After falling behind (or at the end), catch up from the store.
fn refill(c: &mut Cursor) {
    if let Ok(evs) = c.manager.store().events_after(&c.run_id, c.last) {
        c.backlog.extend(evs);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn event_ids_to_seq() {
        assert_eq!(super::seq_of(Some("evt_00000012")), 12);
        assert_eq!(super::seq_of(Some("bogus")), 0);
        assert_eq!(super::seq_of(None), 0);
    }
}
