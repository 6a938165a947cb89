//! Session chat logs (void-box v1 compatibility): `POST
//! /v1/sessions/{id}/messages` appends `{role, content}` and answers the
//! stored `{ts_ms, role, content}`; `GET` answers the log as a bare JSON
//! array, oldest first (`[]` for a session nobody wrote to). Sessions
//! exist implicitly; the log is kept in the store and survives restarts.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use serde::Deserialize;

use super::error::{ApiError, ApiResult, Code};
use super::{AppState, PathParam, json_body};
use crate::store::{AppendMessageError, SessionMessage};

/// Longest session id (characters of `[A-Za-z0-9._-]`).
pub const MAX_SESSION_ID: usize = 128;
/// Longest role.
pub const MAX_ROLE_CHARS: usize = 64;
/// Largest message content, in bytes of UTF-8.
pub const MAX_CONTENT_BYTES: usize = 64 * 1024;
/// Most messages one session holds (more: 413 `PAYLOAD_TOO_LARGE`).
pub const MAX_MESSAGES_PER_SESSION: usize = 10_000;

/// `POST /v1/sessions/{id}/messages`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewMessage {
    /// 1–64 characters.
    #[schema(min_length = 1, max_length = 64)]
    role: String,
    /// At most 64 KiB of UTF-8 (more: 413).
    content: String,
}

pub async fn list(
    State(s): State<AppState>,
    PathParam(id): PathParam<String>,
) -> ApiResult<Json<Vec<SessionMessage>>> {
    check_session_id(&id)?;
    let m = s.manager.clone();
    let msgs = tokio::task::spawn_blocking(move || m.store().messages(&id))
        .await
        .map_err(ApiError::internal)??;
    Ok(Json(msgs))
}

pub async fn append(
    State(s): State<AppState>,
    PathParam(id): PathParam<String>,
    body: Bytes,
) -> ApiResult<Json<SessionMessage>> {
    check_session_id(&id)?;
    let msg: NewMessage = json_body(&body)?;
    check_role(&msg.role)?;
    if msg.content.len() > MAX_CONTENT_BYTES {
        return Err(ApiError::new(
            Code::PayloadTooLarge,
            format!(
                "content is {} bytes; at most {} KiB",
                msg.content.len(),
                MAX_CONTENT_BYTES >> 10
            ),
        ));
    }
    let m = s.manager.clone();
    let stored = tokio::task::spawn_blocking(move || {
        m.store()
            .append_message(&id, &msg.role, &msg.content, MAX_MESSAGES_PER_SESSION)
    })
    .await
    .map_err(ApiError::internal)?;
    match stored {
        Ok(m) => Ok(Json(m)),
        Err(e @ AppendMessageError::SessionFull { .. }) => Err(ApiError::new(
            Code::PayloadTooLarge,
            format!("{e}; start a new session"),
        )),
        Err(AppendMessageError::Store(e)) => Err(e.into()),
    }
}

/// 1–128 of `[A-Za-z0-9._-]`, not `.` or `..`; the message names the
/// problem.
pub fn check_session_id(id: &str) -> ApiResult<()> {
    let bad = |why: &str| Err(ApiError::params(format!("session id {id:?}: {why}")));
    if id.is_empty() {
        return bad("must not be empty");
    }
    if id == "." || id == ".." {
        return bad("`.` and `..` are not session ids");
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        let what = match c {
            '/' => "contains `/`".to_string(),
            '\\' => "contains `\\`".to_string(),
            c => format!("contains {c:?}"),
        };
        return bad(&format!("{what}; use letters, digits, `.`, `_` or `-`"));
    }
    if id.len() > MAX_SESSION_ID {
        return bad(&format!(
            "is {} characters; at most {MAX_SESSION_ID}",
            id.len()
        ));
    }
    Ok(())
}

fn check_role(role: &str) -> ApiResult<()> {
    let n = role.chars().count();
    if n == 0 || n > MAX_ROLE_CHARS {
        return Err(ApiError::params(format!(
            "role is {n} characters; give 1 to {MAX_ROLE_CHARS}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_name_their_problem() {
        for ok in ["a", "s-1", "A.b_c", &"x".repeat(128), "..."] {
            assert!(check_session_id(ok).is_ok(), "{ok}");
        }
        for (bad, says) in [
            ("", "empty"),
            (".", "`.` and `..`"),
            ("..", "`.` and `..`"),
            ("a/b", "contains `/`"),
            ("a\\b", "contains `\\`"),
            ("a b", "contains ' '"),
            ("é", "contains 'é'"),
            (&"x".repeat(129), "at most 128"),
        ] {
            let e = check_session_id(bad).unwrap_err();
            assert_eq!(e.code, Code::InvalidParams);
            assert!(e.message.contains(says), "{bad:?}: {}", e.message);
        }
    }

    #[test]
    fn roles_are_one_to_64_chars() {
        assert!(check_role("user").is_ok());
        assert!(check_role(&"é".repeat(64)).is_ok());
        assert!(check_role("").is_err());
        assert!(check_role(&"r".repeat(65)).is_err());
    }
}
