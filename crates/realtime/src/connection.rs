//! One socket's side of the protocol: heartbeats, joining and leaving
//! channels, broadcasts and presence on them. The socket's task feeds it each
//! frame; everything it answers goes out through the socket's outbox.
//!
//! Invariants: a channel is reached only after its `phx_join` succeeded on
//! this socket; private channels are refused until realtime policies exist
//! (deny by default); a token a join presents is verified before it counts.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Value as Json, json};

use crate::hub::{Hub, MemberId, Outbox};
use crate::protocol::{Incoming, Message, Payload};

/// Checks a token a client presents (a join's `access_token`).
pub trait Verify: Send + Sync {
    /// `Err` carries the reason in Realtime's words (`InvalidJWTToken: …`).
    fn verify(&self, token: &str) -> Result<(), String>;
}

/// The most channels one socket may join (Supabase's default).
pub const MOST_CHANNELS: usize = 100;

struct Joined {
    join_ref: Option<String>,
    member: MemberId,
    ack: bool,
    presence_key: String,
}

pub struct Connection {
    hub: Arc<Hub>,
    outbox: Outbox,
    verify: Arc<dyn Verify>,
    /// The API key the socket connected with: a join presenting it (as
    /// supabase-js does before sign-in) needs no further check.
    api_key: String,
    channels: HashMap<String, Joined>,
}

fn reply(message: &Message, status: &str, response: Json) -> Message {
    Message {
        join_ref: message.join_ref.clone(),
        reference: message.reference.clone(),
        topic: message.topic.clone(),
        event: "phx_reply".into(),
        payload: json!({"status": status, "response": response}),
    }
}

/// `true`, `"true"`: Realtime takes either.
fn flag(value: &Json) -> bool {
    matches!(value, Json::Bool(true)) || value.as_str() == Some("true")
}

impl Connection {
    pub fn new(hub: Arc<Hub>, outbox: Outbox, verify: Arc<dyn Verify>, api_key: String) -> Self {
        Self {
            hub,
            outbox,
            verify,
            api_key,
            channels: HashMap::new(),
        }
    }

    pub fn receive(&mut self, incoming: Incoming) {
        match incoming {
            Incoming::Broadcast {
                join_ref,
                reference,
                topic,
                event,
                payload,
            } => self.broadcast(
                Message {
                    join_ref,
                    reference,
                    topic,
                    event: "broadcast".into(),
                    payload: Json::Null,
                },
                &event,
                &payload,
            ),
            Incoming::Message(message) => self.message(message),
        }
    }

    fn message(&mut self, message: Message) {
        match (message.topic.as_str(), message.event.as_str()) {
            ("phoenix", "heartbeat") => self.outbox.message(&reply(&message, "ok", json!({}))),
            (_, "phx_join") => self.join(message),
            (_, "phx_leave") => self.leave(&message),
            (_, "presence") => self.presence(&message),
            (_, "access_token") => self.refresh_token(&message),
            _ => self.unmatched(&message),
        }
    }

    fn unmatched(&self, message: &Message) {
        self.outbox.message(&reply(
            message,
            "error",
            json!({"reason": "unmatched topic"}),
        ));
    }

    fn refuse_join(&self, message: &Message, reason: String) {
        self.outbox
            .message(&reply(message, "error", json!({"reason": reason})));
    }

    fn join(&mut self, message: Message) {
        let Some(name) = message
            .topic
            .strip_prefix("realtime:")
            .filter(|name| !name.is_empty())
        else {
            return self.refuse_join(
                &message,
                "TopicNameRequired: You must provide a topic name".into(),
            );
        };
        let config = &message.payload["config"];
        if flag(&config["private"]) {
            return self.refuse_join(
                &message,
                format!(
                    "Unauthorized: You do not have permissions to read from this Channel topic: {name}"
                ),
            );
        }
        if let Some(token) = message.payload["access_token"].as_str()
            && token != self.api_key
            && let Err(reason) = self.verify.verify(token)
        {
            return self.refuse_join(&message, reason);
        }
        // A join again replaces the earlier one, as Phoenix does.
        if let Some(earlier) = self.channels.remove(&message.topic) {
            self.hub.leave(&message.topic, earlier.member);
        }
        if self.channels.len() >= MOST_CHANNELS {
            return self.refuse_join(
                &message,
                "ChannelRateLimitReached: Too many channels".into(),
            );
        }
        let broadcast = &config["broadcast"];
        let member = self.hub.join(
            &message.topic,
            self.outbox.clone(),
            flag(&broadcast["self"]),
        );
        let presence = &config["presence"];
        let presence_key = presence["key"]
            .as_str()
            .filter(|key| !key.is_empty())
            .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned);
        self.channels.insert(
            message.topic.clone(),
            Joined {
                join_ref: message.join_ref.clone(),
                member,
                ack: flag(&broadcast["ack"]),
                presence_key,
            },
        );
        // Each requested row-change binding is echoed with its id, in order.
        let changes: Vec<Json> = config["postgres_changes"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .enumerate()
            .map(|(at, binding)| {
                let mut binding = binding.clone();
                binding["id"] = json!(at + 1);
                binding
            })
            .collect();
        let wants_changes = !changes.is_empty();
        self.outbox
            .message(&reply(&message, "ok", json!({"postgres_changes": changes})));
        if wants_changes {
            self.outbox.message(&Message {
                join_ref: message.join_ref.clone(),
                reference: None,
                topic: message.topic.clone(),
                event: "system".into(),
                payload: json!({
                    "extension": "postgres_changes",
                    "status": "error",
                    "message": "Row changes are not delivered by this server yet",
                    "channel": name,
                }),
            });
        }
        let presence_wanted = flag(&presence["enabled"]);
        if presence_wanted {
            self.outbox.message(&Message {
                join_ref: message.join_ref.clone(),
                reference: None,
                topic: message.topic.clone(),
                event: "presence_state".into(),
                payload: self.hub.presence_state(&message.topic),
            });
        }
    }

    fn leave(&mut self, message: &Message) {
        let Some(joined) = self.channels.remove(&message.topic) else {
            return self.unmatched(message);
        };
        self.hub.leave(&message.topic, joined.member);
        self.outbox.message(&reply(message, "ok", json!({})));
        self.outbox.message(&Message {
            join_ref: joined.join_ref.clone(),
            reference: joined.join_ref,
            topic: message.topic.clone(),
            event: "phx_close".into(),
            payload: json!({}),
        });
    }

    fn broadcast(&mut self, message: Message, event: &str, payload: &Payload) {
        let Some(joined) = self.channels.get(&message.topic) else {
            return self.unmatched(&message);
        };
        self.hub
            .broadcast(&message.topic, Some(joined.member), (event, payload));
        if joined.ack {
            self.outbox.message(&reply(&message, "ok", json!({})));
        }
    }

    fn presence(&mut self, message: &Message) {
        let Some(joined) = self.channels.get(&message.topic) else {
            return self.unmatched(message);
        };
        match message.payload["event"].as_str() {
            Some("track") => {
                let meta = &message.payload["payload"];
                if !meta.is_object() {
                    return self.outbox.message(&reply(
                        message,
                        "error",
                        json!({"reason": "Presence track payload must be a map"}),
                    ));
                }
                self.hub
                    .track(&message.topic, joined.member, &joined.presence_key, meta);
            }
            Some("untrack") => self.hub.untrack(&message.topic, joined.member),
            _ => return self.outbox.message(&reply(message, "error", json!({}))),
        }
        self.outbox.message(&reply(message, "ok", json!({})));
    }

    /// A refreshed token for a channel: checked; one that fails closes the
    /// channel with a `system` message, as Realtime does. No reply either way.
    fn refresh_token(&mut self, message: &Message) {
        let Some(token) = message.payload["access_token"].as_str() else {
            return;
        };
        if token == self.api_key || !self.channels.contains_key(&message.topic) {
            return;
        }
        if let Err(reason) = self.verify.verify(token)
            && let Some(joined) = self.channels.remove(&message.topic)
        {
            self.hub.leave(&message.topic, joined.member);
            let name = message.topic.trim_start_matches("realtime:");
            self.outbox.message(&Message {
                join_ref: joined.join_ref.clone(),
                reference: None,
                topic: message.topic.clone(),
                event: "system".into(),
                payload: json!({"extension": "system", "status": "error", "message": reason, "channel": name}),
            });
            self.outbox.message(&Message {
                join_ref: joined.join_ref.clone(),
                reference: joined.join_ref,
                topic: message.topic.clone(),
                event: "phx_close".into(),
                payload: json!({}),
            });
        }
    }

    /// The socket closed: every channel is left.
    pub fn close(&mut self) {
        for (topic, joined) in self.channels.drain() {
            self.hub.leave(&topic, joined.member);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use tokio::sync::mpsc;

    use super::*;
    use crate::protocol::{Frame, Vsn, decode_binary, decode_text};

    struct Tokens;

    impl Verify for Tokens {
        fn verify(&self, token: &str) -> Result<(), String> {
            match token {
                "good" => Ok(()),
                _ => Err("InvalidJWTToken: Token has expired 5 seconds ago".into()),
            }
        }
    }

    /// A connection on `hub` (2.0.0), and what it sends.
    fn connect(hub: &Arc<Hub>) -> (Connection, mpsc::Receiver<Frame>) {
        let (outbox, frames, _cut) = Outbox::new(Vsn::V2, 64);
        let connection = Connection::new(
            hub.clone(),
            outbox,
            Arc::new(Tokens),
            "sb_publishable_x".into(),
        );
        (connection, frames)
    }

    fn send(connection: &mut Connection, frame: &str) {
        connection.receive(decode_text(Vsn::V2, frame).unwrap());
    }

    fn sent(frames: &mut mpsc::Receiver<Frame>) -> Vec<Json> {
        let mut out = Vec::new();
        while let Ok(frame) = frames.try_recv() {
            out.push(match frame {
                Frame::Text(text) => serde_json::from_str(&text).unwrap(),
                Frame::Binary(bytes) => json!({"binary": bytes}),
            });
        }
        out
    }

    type Joined = (Connection, mpsc::Receiver<Frame>);

    /// Ada and Bo joined to `realtime:room`, what they were sent so far read.
    fn both_joined(hub: &Arc<Hub>) -> (Joined, Joined) {
        let (mut ada, mut ada_frames) = connect(hub);
        let (mut bo, mut bo_frames) = connect(hub);
        send(&mut ada, JOIN);
        send(&mut bo, &JOIN.replace("\"ada\"", "\"bo\""));
        sent(&mut ada_frames);
        sent(&mut bo_frames);
        ((ada, ada_frames), (bo, bo_frames))
    }

    const JOIN: &str = r#"["1","1","realtime:room","phx_join",{"config":{"broadcast":{"self":false,"ack":true},"presence":{"key":"ada","enabled":true},"postgres_changes":[],"private":false},"access_token":"sb_publishable_x"}]"#;

    #[test]
    fn heartbeat_and_join_are_answered_as_realtime_does() {
        let hub = Hub::new();
        let (mut ada, mut frames) = connect(&hub);
        send(&mut ada, r#"[null,"7","phoenix","heartbeat",{}]"#);
        send(&mut ada, JOIN);
        let out = sent(&mut frames);
        assert_eq!(
            out[0],
            json!([null, "7", "phoenix", "phx_reply", {"status": "ok", "response": {}}])
        );
        assert_eq!(
            out[1],
            json!(["1", "1", "realtime:room", "phx_reply", {"status": "ok", "response": {"postgres_changes": []}}])
        );
        assert_eq!(
            out[2],
            json!(["1", null, "realtime:room", "presence_state", {}])
        );
    }

    #[test]
    fn refused_joins_say_why() {
        let hub = Hub::new();
        let (mut ada, mut frames) = connect(&hub);
        send(
            &mut ada,
            r#"["1","1","realtime:secret","phx_join",{"config":{"private":true}}]"#,
        );
        send(
            &mut ada,
            r#"["2","2","realtime:room","phx_join",{"config":{},"access_token":"stale"}]"#,
        );
        send(
            &mut ada,
            r#"["3","3","realtime:","phx_join",{"config":{}}]"#,
        );
        send(
            &mut ada,
            r#"[null,"4","realtime:never","presence",{"type":"presence","event":"track","payload":{}}]"#,
        );
        let reasons: Vec<String> = sent(&mut frames)
            .iter()
            .map(|frame| frame[4]["response"]["reason"].as_str().unwrap().to_owned())
            .collect();
        assert!(reasons[0].starts_with("Unauthorized: "), "{reasons:?}");
        assert!(reasons[1].starts_with("InvalidJWTToken: "));
        assert!(reasons[2].starts_with("TopicNameRequired: "));
        assert_eq!(reasons[3], "unmatched topic");
    }

    #[test]
    fn binary_broadcasts_reach_the_others_with_an_ack_to_the_sender() {
        let hub = Hub::new();
        let ((mut ada, mut ada_frames), (_bo, mut bo_frames)) = both_joined(&hub);
        let mut push = vec![3, 1, 1, 13, 6, 0, 1];
        push.extend_from_slice(b"12realtime:roomcursor{\"x\":3}");
        ada.receive(decode_binary(&push).unwrap());
        assert_eq!(
            sent(&mut ada_frames),
            vec![json!(["1", "2", "realtime:room", "phx_reply", {"status": "ok", "response": {}}])],
            "the ack, not its own message (self is off)"
        );
        let received = sent(&mut bo_frames);
        let mut expected = vec![4u8, 13, 6, 0, 1];
        expected.extend_from_slice(b"realtime:roomcursor{\"x\":3}");
        assert_eq!(received, vec![json!({"binary": expected})]);
    }

    #[test]
    fn presence_and_leaving_reach_the_others() {
        let hub = Hub::new();
        let ((mut ada, mut ada_frames), (mut bo, mut bo_frames)) = both_joined(&hub);
        send(
            &mut ada,
            r#"["1","5","realtime:room","presence",{"type":"presence","event":"track","payload":{"online_at":1}}]"#,
        );
        let to_bo = sent(&mut bo_frames);
        let diff = to_bo.last().unwrap();
        assert_eq!(diff[3], "presence_diff");
        assert_eq!(diff[4]["joins"]["ada"]["metas"][0]["online_at"], 1);
        sent(&mut ada_frames);
        send(&mut ada, r#"["1","6","realtime:room","phx_leave",{}]"#);
        let to_ada = sent(&mut ada_frames);
        assert_eq!(to_ada[0][4]["status"], "ok");
        assert_eq!(to_ada[1][3], "phx_close");
        assert!(
            sent(&mut bo_frames)[0][4]["leaves"]["ada"].is_object(),
            "leaving untracks"
        );
        // A stale token on a refresh closes the channel with a system message.
        send(
            &mut bo,
            r#"["1","7","realtime:room","access_token",{"access_token":"stale"}]"#,
        );
        let to_bo = sent(&mut bo_frames);
        assert_eq!(to_bo[0][3], "system");
        assert_eq!(to_bo[0][4]["status"], "error");
        assert_eq!(to_bo[1][3], "phx_close");
        bo.close();
        assert_eq!(hub.presence_state("realtime:room"), json!({}));
    }

    #[test]
    fn row_change_bindings_are_echoed_with_ids_and_told_they_are_not_served() {
        let hub = Hub::new();
        let (mut ada, mut frames) = connect(&hub);
        send(
            &mut ada,
            r#"["1","1","realtime:db","phx_join",{"config":{"postgres_changes":[{"event":"*","schema":"public","table":"orders"}]}}]"#,
        );
        let out = sent(&mut frames);
        assert_eq!(
            out[0][4]["response"]["postgres_changes"],
            json!([{"event": "*", "schema": "public", "table": "orders", "id": 1}])
        );
        assert_eq!(out[1][3], "system");
        assert_eq!(out[1][4]["extension"], "postgres_changes");
        assert_eq!(out[1][4]["status"], "error");
    }
}
