//! Frames on the wire, both versions realtime-js speaks (`vsn` in the socket
//! URL): 1.0.0, JSON objects; 2.0.0 (its default), JSON arrays
//! `[join_ref, ref, topic, event, payload]`, except broadcasts, which travel
//! as binary frames (the client pushes kind 3, and decodes only kind 4).
//! Decoding normalises every broadcast, text or binary, into
//! [`Incoming::Broadcast`], so what follows never sees the framing.

use serde_json::{Map, Value as Json, json};

/// The protocol version a socket asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vsn {
    V1,
    V2,
}

impl Vsn {
    /// `vsn` from the socket URL; absent means 1.0.0, as Phoenix reads it.
    pub fn parse(vsn: Option<&str>) -> Result<Self, ProtocolError> {
        match vsn {
            None => Ok(Vsn::V1),
            Some(text) if text.starts_with("1.") => Ok(Vsn::V1),
            Some(text) if text.starts_with("2.") => Ok(Vsn::V2),
            Some(other) => Err(ProtocolError::Malformed(format!(
                "unsupported vsn {other:?}: use 1.0.0 or 2.0.0"
            ))),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("malformed frame: {0}")]
    Malformed(String),
}

/// A message in either direction, framing aside.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub join_ref: Option<String>,
    pub reference: Option<String>,
    pub topic: String,
    pub event: String,
    pub payload: Json,
}

/// What a broadcast carries: JSON, or bytes a client sent as an `ArrayBuffer`.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    Json(Json),
    Binary(Vec<u8>),
}

/// A frame from a client, decoded.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// `channel.send({ type: 'broadcast', event, payload })`.
    Broadcast {
        join_ref: Option<String>,
        reference: Option<String>,
        topic: String,
        event: String,
        payload: Payload,
    },
    Message(Message),
}

/// A frame to a client.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    Text(String),
    Binary(Vec<u8>),
}

const USER_BROADCAST_PUSH: u8 = 3;
const USER_BROADCAST: u8 = 4;
const BINARY_ENCODING: u8 = 0;
const JSON_ENCODING: u8 = 1;

fn malformed(why: &str) -> ProtocolError {
    ProtocolError::Malformed(why.to_owned())
}

fn optional_text(value: Option<&Json>) -> Result<Option<String>, ProtocolError> {
    match value {
        None | Some(Json::Null) => Ok(None),
        Some(Json::String(text)) => Ok(Some(text.clone())),
        Some(_) => Err(malformed("a ref is a string or null")),
    }
}

fn text(value: Option<&Json>, what: &str) -> Result<String, ProtocolError> {
    match value {
        Some(Json::String(text)) => Ok(text.clone()),
        _ => Err(ProtocolError::Malformed(format!("{what} is not a string"))),
    }
}

/// A text frame.
pub fn decode_text(vsn: Vsn, frame: &str) -> Result<Incoming, ProtocolError> {
    let value: Json = serde_json::from_str(frame).map_err(|_| malformed("not JSON"))?;
    let message = match (vsn, value) {
        (Vsn::V2, Json::Array(parts)) if parts.len() == 5 => Message {
            join_ref: optional_text(parts.first())?,
            reference: optional_text(parts.get(1))?,
            topic: text(parts.get(2), "topic")?,
            event: text(parts.get(3), "event")?,
            payload: parts.get(4).cloned().unwrap_or(Json::Null),
        },
        (Vsn::V1, Json::Object(fields)) => Message {
            join_ref: optional_text(fields.get("join_ref"))?,
            reference: optional_text(fields.get("ref"))?,
            topic: text(fields.get("topic"), "topic")?,
            event: text(fields.get("event"), "event")?,
            payload: fields.get("payload").cloned().unwrap_or(Json::Null),
        },
        (Vsn::V2, _) => return Err(malformed("a 2.0.0 frame is an array of five")),
        (Vsn::V1, _) => return Err(malformed("a 1.0.0 frame is an object")),
    };
    if message.event != "broadcast" {
        return Ok(Incoming::Message(message));
    }
    // A broadcast sent as text (1.0.0): `{type: "broadcast", event, payload}`.
    let event = text(message.payload.get("event"), "the broadcast's event")?;
    let payload = message.payload.get("payload").cloned().unwrap_or(json!({}));
    Ok(Incoming::Broadcast {
        join_ref: message.join_ref,
        reference: message.reference,
        topic: message.topic,
        event,
        payload: Payload::Json(payload),
    })
}

/// A binary frame: only the broadcast push (kind 3) comes from clients.
/// Names are written byte per character by the client, so they are read so.
pub fn decode_binary(frame: &[u8]) -> Result<Incoming, ProtocolError> {
    let header = frame
        .get(..7)
        .ok_or_else(|| malformed("short binary frame"))?;
    if header[0] != USER_BROADCAST_PUSH {
        return Err(ProtocolError::Malformed(format!(
            "binary frames of kind {} are not accepted",
            header[0]
        )));
    }
    let lengths = [header[1], header[2], header[3], header[4], header[5]].map(usize::from);
    let encoding = header[6];
    let mut at = 7;
    let mut fields = Vec::with_capacity(5);
    for length in lengths {
        let bytes = frame
            .get(at..at + length)
            .ok_or_else(|| malformed("a length runs past the frame"))?;
        fields.push(bytes.iter().map(|&b| char::from(b)).collect::<String>());
        at += length;
    }
    let body = &frame[at..];
    let payload = match encoding {
        JSON_ENCODING => Payload::Json(
            serde_json::from_slice(body).map_err(|_| malformed("the JSON payload is not JSON"))?,
        ),
        BINARY_ENCODING => Payload::Binary(body.to_vec()),
        _ => return Err(malformed("unknown payload encoding")),
    };
    let non_empty = |text: String| (!text.is_empty()).then_some(text);
    let mut fields = fields.into_iter();
    let (join_ref, reference, topic, event) = (
        fields.next().and_then(non_empty),
        fields.next().and_then(non_empty),
        fields.next().unwrap_or_default(),
        fields.next().unwrap_or_default(),
    );
    Ok(Incoming::Broadcast {
        join_ref,
        reference,
        topic,
        event,
        payload,
    })
}

/// A message as a text frame of the socket's version.
pub fn encode(vsn: Vsn, message: &Message) -> Frame {
    let value = match vsn {
        Vsn::V2 => json!([
            message.join_ref,
            message.reference,
            message.topic,
            message.event,
            message.payload
        ]),
        Vsn::V1 => {
            let mut fields = Map::new();
            fields.insert("topic".into(), json!(message.topic));
            fields.insert("event".into(), json!(message.event));
            fields.insert("payload".into(), message.payload.clone());
            fields.insert("ref".into(), json!(message.reference));
            if let Some(join_ref) = &message.join_ref {
                fields.insert("join_ref".into(), json!(join_ref));
            }
            Json::Object(fields)
        }
    };
    Frame::Text(value.to_string())
}

/// A broadcast to a subscriber of `topic`: binary kind 4 for 2.0.0 sockets
/// (the one binary kind realtime-js decodes), a text message for 1.0.0 ones;
/// `None` when a 1.0.0 socket cannot take it (bytes).
pub fn encode_broadcast(
    vsn: Vsn,
    topic: &str,
    event: &str,
    payload: &Payload,
    meta: Option<&Json>,
) -> Option<Frame> {
    let meta_text = meta.map(Json::to_string).unwrap_or_default();
    let fits = |text: &str| text.len() <= usize::from(u8::MAX);
    let binary_fits = fits(topic) && fits(event) && fits(&meta_text);
    match (vsn, payload) {
        (Vsn::V2, _) if binary_fits => {
            let (encoding, body) = match payload {
                Payload::Json(json) => (JSON_ENCODING, json.to_string().into_bytes()),
                Payload::Binary(bytes) => (BINARY_ENCODING, bytes.clone()),
            };
            let length = |text: &str| u8::try_from(text.len()).unwrap_or(u8::MAX);
            let mut frame = vec![
                USER_BROADCAST,
                length(topic),
                length(event),
                length(&meta_text),
                encoding,
            ];
            frame.extend_from_slice(topic.as_bytes());
            frame.extend_from_slice(event.as_bytes());
            frame.extend_from_slice(meta_text.as_bytes());
            frame.extend_from_slice(&body);
            Some(Frame::Binary(frame))
        }
        (_, Payload::Json(json)) => {
            let mut inner = json!({"type": "broadcast", "event": event, "payload": json});
            if let Some(meta) = meta {
                inner["meta"] = meta.clone();
            }
            Some(encode(
                vsn,
                &Message {
                    join_ref: None,
                    reference: None,
                    topic: topic.to_owned(),
                    event: "broadcast".into(),
                    payload: inner,
                },
            ))
        }
        (_, Payload::Binary(_)) => None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// What realtime-js 2.109 sent for `send({type: 'broadcast', event:
    /// 'cursor', payload: {x: 3}})` on join ref 6, ref 7 (captured).
    fn captured_push() -> Vec<u8> {
        let mut frame = vec![3, 1, 1, 14, 6, 0, 1];
        frame.extend_from_slice(b"67realtime:room1cursor{\"x\":3}");
        frame
    }

    #[test]
    fn the_clients_binary_broadcast_push_decodes() {
        assert_eq!(
            decode_binary(&captured_push()).unwrap(),
            Incoming::Broadcast {
                join_ref: Some("6".into()),
                reference: Some("7".into()),
                topic: "realtime:room1".into(),
                event: "cursor".into(),
                payload: Payload::Json(json!({"x": 3})),
            }
        );
        let mut bytes = vec![3, 1, 1, 14, 3, 0, 0];
        bytes.extend_from_slice(b"67realtime:room1bin");
        bytes.extend_from_slice(&[1, 2, 3]);
        let Incoming::Broadcast { payload, .. } = decode_binary(&bytes).unwrap() else {
            panic!("a broadcast")
        };
        assert_eq!(payload, Payload::Binary(vec![1, 2, 3]));
    }

    #[test]
    fn malformed_binary_frames_are_refused_not_trusted() {
        let push = captured_push();
        for bad in [
            &push[..3],                       // short header
            &push[..10],                      // a length runs past the end
            &[4, 1, 1, 1, 1, 0, 1][..],       // a kind clients do not send
            &[3, 0, 0, 0, 0, 0, 9][..],       // unknown encoding
            &[3, 0, 0, 0, 0, 0, 1, b'{'][..], // JSON that is not
        ] {
            assert!(decode_binary(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn text_frames_of_both_versions() {
        let join = r#"["6","6","realtime:room1","phx_join",{"config":{"private":false}}]"#;
        let Incoming::Message(message) = decode_text(Vsn::V2, join).unwrap() else {
            panic!("a message")
        };
        assert_eq!(message.topic, "realtime:room1");
        assert_eq!(message.event, "phx_join");
        assert_eq!(message.join_ref.as_deref(), Some("6"));
        let heartbeat = r#"{"topic":"phoenix","event":"heartbeat","payload":{},"ref":"9"}"#;
        let Incoming::Message(message) = decode_text(Vsn::V1, heartbeat).unwrap() else {
            panic!("a message")
        };
        assert_eq!(
            (message.join_ref, message.reference.as_deref()),
            (None, Some("9"))
        );
        // 1.0.0 broadcasts come as text and decode like binary ones.
        let broadcast = r#"{"topic":"realtime:r","event":"broadcast","payload":{"type":"broadcast","event":"e","payload":{"a":1}},"ref":"3","join_ref":"2"}"#;
        assert!(matches!(
            decode_text(Vsn::V1, broadcast).unwrap(),
            Incoming::Broadcast { ref event, payload: Payload::Json(ref p), .. } if event == "e" && p == &json!({"a": 1})
        ));
        for (vsn, bad) in [
            (Vsn::V2, "{}"),
            (Vsn::V2, r#"["1","2","t"]"#),
            (Vsn::V2, r#"[1,"2","t","e",{}]"#),
            (Vsn::V1, "[]"),
            (Vsn::V1, "not json"),
        ] {
            assert!(decode_text(vsn, bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn replies_encode_as_each_version_reads_them() {
        let reply = Message {
            join_ref: None,
            reference: Some("4".into()),
            topic: "phoenix".into(),
            event: "phx_reply".into(),
            payload: json!({"status": "ok", "response": {}}),
        };
        assert_eq!(
            encode(Vsn::V2, &reply),
            Frame::Text(r#"[null,"4","phoenix","phx_reply",{"status":"ok","response":{}}]"#.into())
        );
        let Frame::Text(v1) = encode(Vsn::V1, &reply) else {
            panic!("text")
        };
        let v1: Json = serde_json::from_str(&v1).unwrap();
        assert_eq!(v1["ref"], "4");
        assert_eq!(v1["event"], "phx_reply");
        assert!(v1.get("join_ref").is_none());
    }

    #[test]
    fn broadcasts_go_out_as_kind_4_or_as_text() {
        let json = Payload::Json(json!({"x": 3}));
        let Some(Frame::Binary(frame)) =
            encode_broadcast(Vsn::V2, "realtime:room1", "cursor", &json, None)
        else {
            panic!("binary")
        };
        let mut expected = vec![4, 14, 6, 0, 1];
        expected.extend_from_slice(b"realtime:room1cursor{\"x\":3}");
        assert_eq!(frame, expected);
        let Some(Frame::Text(text)) = encode_broadcast(
            Vsn::V1,
            "realtime:room1",
            "cursor",
            &json,
            Some(&json!({"id": "m1"})),
        ) else {
            panic!("text")
        };
        let text: Json = serde_json::from_str(&text).unwrap();
        assert_eq!(
            text["payload"],
            json!({"type": "broadcast", "event": "cursor", "payload": {"x": 3}, "meta": {"id": "m1"}})
        );
        assert_eq!(
            encode_broadcast(Vsn::V1, "realtime:r", "b", &Payload::Binary(vec![1]), None),
            None
        );
        // Names too long for the binary header fall back to text.
        let long = "e".repeat(300);
        assert!(matches!(
            encode_broadcast(Vsn::V2, "realtime:r", &long, &json, None),
            Some(Frame::Text(_))
        ));
    }
}
