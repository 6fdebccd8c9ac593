//! `/realtime/v1/websocket`: a WebSocket speaking Supabase Realtime's protocol
//! (`gatehouse-realtime`), for supabase-js's `channel()`. The socket needs an
//! API key (`apikey` in the query, as realtime-js sends it); the tokens joins
//! present are checked as every other surface checks them. And
//! `/realtime/v1/api/broadcast`, the server's own broadcasts.

use std::sync::Arc;

use axum::Extension;
use axum::extract::ws::{CloseFrame, Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::response::Response;
use gatehouse_realtime::connection::{Connection, Keyed, Verify};
use gatehouse_realtime::hub::{Outbox, topic_key};
use gatehouse_realtime::protocol::{Frame, Payload, Vsn, decode_binary, decode_text};
use http::StatusCode;
use serde::Deserialize;

use crate::identity::SocketTokens;
use crate::{ApiError, AppState, ClientIp};

/// Each socket's read and write buffer.
const SOCKET_BUFFER_BYTES: usize = 4096;

#[derive(Deserialize)]
pub struct Connect {
    apikey: Option<String>,
    vsn: Option<String>,
}

pub async fn socket(
    State(state): State<AppState>,
    address: Option<Extension<ClientIp>>,
    Query(connect): Query<Connect>,
    upgrade: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let api_key = connect.apikey.unwrap_or_default();
    let Some(key) = state.api_keys().identify(&api_key) else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "no_api_key",
            "API key is missing or not valid",
        ));
    };
    let keyed = Keyed {
        api_key,
        caller: crate::identity::key_caller(key),
    };
    let vsn = Vsn::parse(connect.vsn.as_deref()).map_err(|error| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "validation_failed",
            error.to_string(),
        )
    })?;
    let realtime = state.realtime();
    // Without a peer address (no listener in front), all share one count.
    let address = address.map_or(
        std::net::Ipv4Addr::UNSPECIFIED.into(),
        |Extension(ClientIp(ip))| ip,
    );
    let most = realtime.limits.connections_per_address;
    let Some(admitted) = realtime.admission.address(address, most) else {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_connections",
            "ConnectionRateLimitReached: Too many connections from this address",
        ));
    };
    Ok(upgrade
        // Small buffers: an idle socket should cost little (the library's
        // defaults reserve 128 KiB for reading alone); they grow for a large frame.
        .read_buffer_size(SOCKET_BUFFER_BYTES)
        .write_buffer_size(SOCKET_BUFFER_BYTES)
        .max_message_size(realtime.limits.message_bytes)
        .on_upgrade(move |socket| async move {
            serve(state, socket, (vsn, keyed)).await;
            drop(admitted);
        }))
}

/// How a socket whose frame could not be read is closed: 1009 for one over
/// the size limit (the library says so only in its message), else 1002.
fn refusal(error: &axum::Error) -> CloseFrame {
    let text = error.to_string();
    if text.contains("too long") || text.contains("limit") {
        CloseFrame {
            code: 1009,
            reason: "the frame is larger than this server accepts".into(),
        }
    } else {
        CloseFrame {
            code: 1002,
            reason: "the frame could not be read".into(),
        }
    }
}

fn outgoing(frame: Frame) -> WsMessage {
    match frame {
        Frame::Text(text) => WsMessage::Text(text.into()),
        Frame::Binary(bytes) => WsMessage::Binary(bytes.into()),
    }
}

async fn serve(state: AppState, mut socket: WebSocket, (vsn, keyed): (Vsn, Keyed)) {
    let realtime = state.realtime().clone();
    let limits = realtime.limits.clone();
    let (outbox, mut frames, cut) = Outbox::new(vsn, limits.outbox_frames);
    let verify: Arc<dyn Verify> = Arc::new(SocketTokens(state.clone()));
    let mut connection = Connection::new(realtime, outbox, verify, keyed);
    let mut heard = tokio::time::Instant::now();
    let mut recheck = tokio::time::interval(limits.session_check);
    recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = recheck.tick() => connection.recheck_sessions().await,
            received = socket.recv() => {
                heard = tokio::time::Instant::now();
                let decoded = match received {
                    Some(Ok(WsMessage::Text(text))) => decode_text(vsn, text.as_str()),
                    Some(Ok(WsMessage::Binary(bytes))) => decode_binary(&bytes),
                    Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_))) => continue,
                    Some(Ok(WsMessage::Close(_))) | None => break,
                    Some(Err(error)) => {
                        let _ = socket.send(WsMessage::Close(Some(refusal(&error)))).await;
                        break;
                    }
                };
                match decoded {
                    Ok(incoming) => connection.receive(incoming).await,
                    Err(error) => tracing::debug!(%error, "a realtime frame was not understood"),
                }
            }
            Some(frame) = frames.recv() => {
                if socket.send(outgoing(frame)).await.is_err() {
                    break;
                }
            }
            () = cut.notified() => {
                let close = CloseFrame { code: 1008, reason: "the client did not keep up with its messages".into() };
                let _ = socket.send(WsMessage::Close(Some(close))).await;
                break;
            }
            () = tokio::time::sleep_until(heard + limits.silence) => break,
        }
    }
    connection.close();
}

/// Messages one call may broadcast.
const MOST_MESSAGES: usize = 100;

#[derive(Deserialize)]
pub struct Broadcasts {
    messages: Vec<ServerMessage>,
}

#[derive(Deserialize)]
struct ServerMessage {
    /// The channel's name, without `realtime:`.
    topic: String,
    event: String,
    #[serde(default)]
    payload: serde_json::Value,
    #[serde(default)]
    private: bool,
}

/// `POST /realtime/v1/api/broadcast`: the server's own broadcasts (the secret
/// key), as supabase-js sends them from a channel it has not joined.
pub async fn broadcast(
    State(state): State<AppState>,
    _: crate::api_key::Admin,
    axum::Json(body): axum::Json<Broadcasts>,
) -> Result<StatusCode, ApiError> {
    if body.messages.len() > MOST_MESSAGES {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            format!("Too many messages to broadcast: at most {MOST_MESSAGES} per call"),
        ));
    }
    for message in body.messages {
        let wire = format!("realtime:{}", message.topic);
        state.realtime().hub.broadcast(
            &topic_key(&wire, message.private),
            None,
            (&message.event, &Payload::Json(message.payload)),
        );
    }
    Ok(StatusCode::ACCEPTED)
}
