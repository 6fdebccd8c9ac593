//! The topics of one instance and who is joined to each: broadcasts fan out
//! here, and presence is kept here (Phoenix's shape: each key has a list of
//! metas, each with its own `phx_ref`).
//!
//! Invariants: nothing here waits on a socket. Each socket's frames go into
//! its bounded [`Outbox`]; a socket whose outbox is full is cut off (it is
//! told why by its own task), never buffered without limit.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{Map, Value as Json, json};
use tokio::sync::{Notify, mpsc};

use crate::protocol::{Frame, Message, Payload, Vsn, encode, encode_broadcast};

/// One socket's way out: its frames, bounded, and the signal that cuts it
/// off when it cannot keep up.
#[derive(Clone)]
pub struct Outbox {
    frames: mpsc::Sender<Frame>,
    vsn: Vsn,
    cut: Arc<Notify>,
}

impl Outbox {
    /// An outbox of `capacity` frames for a socket speaking `vsn`; the socket's
    /// task reads the frames and waits on the returned signal.
    pub fn new(vsn: Vsn, capacity: usize) -> (Self, mpsc::Receiver<Frame>, Arc<Notify>) {
        let (frames, receiver) = mpsc::channel(capacity.max(1));
        let cut = Arc::new(Notify::new());
        (
            Self {
                frames,
                vsn,
                cut: cut.clone(),
            },
            receiver,
            cut,
        )
    }

    pub fn vsn(&self) -> Vsn {
        self.vsn
    }

    /// Queues `frame`; a full queue cuts the socket off instead.
    pub fn send(&self, frame: Frame) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.frames.try_send(frame) {
            self.cut.notify_one();
        }
    }

    pub fn message(&self, message: &Message) {
        self.send(encode(self.vsn, message));
    }
}

/// The hub's key for the channel named `wire` (`realtime:<name>`): a private
/// channel is another topic than the public one of the same name.
pub fn topic_key(wire: &str, private: bool) -> String {
    if private {
        format!("private:{wire}")
    } else {
        wire.to_owned()
    }
}

/// One socket's membership of one topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MemberId(u64);

/// A socket joined to a topic.
pub struct Member {
    pub outbox: Outbox,
    /// `broadcast.self`: whether its own broadcasts come back to it.
    pub receives_own: bool,
    /// Whether it hears who is present (a private channel's policy may say not).
    pub hears_presence: bool,
}

#[derive(Default)]
struct Topic {
    /// The topic as its members' messages name it (`realtime:<name>`): a
    /// private channel and a public one of the same name are two topics
    /// under one wire name.
    wire: String,
    members: HashMap<MemberId, Member>,
    /// Presence key → (member, meta) in the order they were tracked.
    presences: BTreeMap<String, Vec<(MemberId, Json)>>,
}

#[derive(Default)]
pub struct Hub {
    topics: Mutex<HashMap<String, Topic>>,
    next: AtomicU64,
}

impl Hub {
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    fn topics(&self) -> std::sync::MutexGuard<'_, HashMap<String, Topic>> {
        // A panic elsewhere while holding the lock leaves plain maps behind:
        // still consistent enough to keep serving.
        self.topics
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Joins the topic `key`, whose messages are named `wire`; the id names
    /// this membership until it leaves.
    pub fn join(&self, (key, wire): (&str, &str), member: Member) -> MemberId {
        let id = MemberId(self.next.fetch_add(1, Ordering::Relaxed));
        let mut topics = self.topics();
        let entry = topics.entry(key.to_owned()).or_insert_with(|| Topic {
            wire: wire.to_owned(),
            ..Topic::default()
        });
        entry.members.insert(id, member);
        id
    }

    /// Leaves `topic`; the others hear that its presence left (it does not:
    /// it is gone).
    pub fn leave(&self, topic: &str, member: MemberId) {
        let mut topics = self.topics();
        let Some(entry) = topics.get_mut(topic) else {
            return;
        };
        entry.members.remove(&member);
        if let Some((key, meta)) = remove_presence(entry, member) {
            announce(entry, json!({}), json!({ key: {"metas": [meta]} }));
        }
        if entry.members.is_empty() {
            topics.remove(topic);
        }
    }

    /// Sends a broadcast to the topic's members (the sender too only when it
    /// asked for its own); returns how many it reached.
    pub fn broadcast(
        &self,
        topic: &str,
        from: Option<MemberId>,
        (event, payload): (&str, &Payload),
    ) -> usize {
        let topics = self.topics();
        let Some(entry) = topics.get(topic) else {
            return 0;
        };
        let mut reached = 0;
        for (id, member) in &entry.members {
            if Some(*id) == from && !member.receives_own {
                continue;
            }
            if let Some(frame) =
                encode_broadcast(member.outbox.vsn(), &entry.wire, event, payload, None)
            {
                member.outbox.send(frame);
                reached += 1;
            }
        }
        reached
    }

    /// Tracks `meta` under `key` for `member`, replacing what it tracked
    /// before; every member (the tracker too) hears the diff.
    pub fn track(&self, topic: &str, member: MemberId, key: &str, meta: &Json) {
        let mut topics = self.topics();
        let Some(entry) = topics.get_mut(topic) else {
            return;
        };
        let previous = remove_presence(entry, member);
        let mut meta = match meta {
            Json::Object(fields) => fields.clone(),
            _ => Map::new(),
        };
        meta.insert("phx_ref".into(), json!(presence_ref(self)));
        if let Some((_, old)) = &previous {
            meta.insert("phx_ref_prev".into(), old["phx_ref"].clone());
        }
        let meta = Json::Object(meta);
        entry
            .presences
            .entry(key.to_owned())
            .or_default()
            .push((member, meta.clone()));
        let joins = json!({ key: {"metas": [meta]} });
        let leaves = match previous {
            Some((old_key, old)) => json!({ old_key: {"metas": [old]} }),
            None => json!({}),
        };
        announce(entry, joins, leaves);
    }

    /// Stops tracking `member`'s presence, if it had one.
    pub fn untrack(&self, topic: &str, member: MemberId) {
        let mut topics = self.topics();
        let Some(entry) = topics.get_mut(topic) else {
            return;
        };
        if let Some((key, meta)) = remove_presence(entry, member) {
            announce(entry, json!({}), json!({ key: {"metas": [meta]} }));
        }
    }

    /// Everyone tracked on `topic`, as `presence_state` sends it.
    pub fn presence_state(&self, topic: &str) -> Json {
        let topics = self.topics();
        let mut state = Map::new();
        if let Some(entry) = topics.get(topic) {
            for (key, metas) in &entry.presences {
                let metas: Vec<Json> = metas.iter().map(|(_, meta)| meta.clone()).collect();
                state.insert(key.clone(), json!({ "metas": metas }));
            }
        }
        Json::Object(state)
    }
}

/// Takes `member`'s presence out of the topic: its key and meta.
fn remove_presence(entry: &mut Topic, member: MemberId) -> Option<(String, Json)> {
    let mut found = None;
    entry.presences.retain(|key, metas| {
        if let Some(at) = metas.iter().position(|(id, _)| *id == member) {
            let (_, meta) = metas.remove(at);
            found = Some((key.clone(), meta));
        }
        !metas.is_empty()
    });
    found
}

fn announce(entry: &Topic, joins: Json, leaves: Json) {
    let diff = Message {
        join_ref: None,
        reference: None,
        topic: entry.wire.clone(),
        event: "presence_diff".into(),
        payload: json!({"joins": joins, "leaves": leaves}),
    };
    for member in entry
        .members
        .values()
        .filter(|member| member.hears_presence)
    {
        member.outbox.message(&diff);
    }
}

/// A presence meta's `phx_ref`: unique on this instance.
fn presence_ref(hub: &Hub) -> String {
    format!("F{:x}", hub.next.fetch_add(1, Ordering::Relaxed))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const ROOM: (&str, &str) = ("realtime:room", "realtime:room");

    fn joining(outbox: Outbox, receives_own: bool) -> Member {
        Member {
            outbox,
            receives_own,
            hears_presence: true,
        }
    }

    fn texts(receiver: &mut mpsc::Receiver<Frame>) -> Vec<Json> {
        let mut out = Vec::new();
        while let Ok(frame) = receiver.try_recv() {
            match frame {
                Frame::Text(text) => out.push(serde_json::from_str(&text).unwrap()),
                Frame::Binary(bytes) => out.push(json!({"binary": bytes.len()})),
            }
        }
        out
    }

    #[test]
    fn broadcasts_reach_others_and_the_sender_only_when_it_asked() {
        let hub = Hub::new();
        let (quiet, mut quiet_frames, _) = Outbox::new(Vsn::V1, 8);
        let (echo, mut echo_frames, _) = Outbox::new(Vsn::V1, 8);
        let quiet = hub.join(ROOM, joining(quiet, false));
        let echo = hub.join(ROOM, joining(echo, true));
        let payload = Payload::Json(json!({"x": 1}));
        assert_eq!(
            hub.broadcast("realtime:room", Some(quiet), ("cursor", &payload)),
            1
        );
        assert_eq!(
            hub.broadcast("realtime:room", Some(echo), ("cursor", &payload)),
            2
        );
        assert_eq!(texts(&mut quiet_frames).len(), 1, "only the other's");
        assert_eq!(texts(&mut echo_frames).len(), 2, "the other's and its own");
        assert_eq!(
            hub.broadcast("realtime:elsewhere", None, ("cursor", &payload)),
            0
        );
    }

    #[test]
    fn presence_state_and_diffs_follow_track_untrack_and_leave() {
        let hub = Hub::new();
        let (a, mut a_frames, _) = Outbox::new(Vsn::V2, 16);
        let (b, mut b_frames, _) = Outbox::new(Vsn::V2, 16);
        let a = hub.join(ROOM, joining(a, false));
        let b = hub.join(ROOM, joining(b, false));
        hub.track("realtime:room", a, "ada", &json!({"status": "online"}));
        let diff = &texts(&mut b_frames)[0];
        assert_eq!(diff[3], "presence_diff");
        assert_eq!(diff[4]["joins"]["ada"]["metas"][0]["status"], "online");
        assert_eq!(
            texts(&mut a_frames).len(),
            1,
            "the tracker hears its own diff"
        );
        hub.track("realtime:room", a, "ada", &json!({"status": "away"}));
        let update = &texts(&mut b_frames)[0][4];
        assert_eq!(
            update["joins"]["ada"]["metas"][0]["phx_ref_prev"],
            update["leaves"]["ada"]["metas"][0]["phx_ref"]
        );
        hub.track("realtime:room", b, "bo", &json!({}));
        let state = hub.presence_state("realtime:room");
        assert_eq!(state["ada"]["metas"][0]["status"], "away");
        assert!(state["bo"]["metas"][0]["phx_ref"].is_string());
        hub.leave("realtime:room", b);
        let leave = texts(&mut a_frames).pop().unwrap();
        assert!(leave[4]["leaves"]["bo"].is_object());
        hub.untrack("realtime:room", a);
        assert_eq!(hub.presence_state("realtime:room"), json!({}));
    }

    #[tokio::test]
    async fn a_socket_that_cannot_keep_up_is_cut_off() {
        let hub = Hub::new();
        let (slow, _frames, cut) = Outbox::new(Vsn::V1, 2);
        hub.join(ROOM, joining(slow, true));
        let payload = Payload::Json(json!(1));
        for _ in 0..3 {
            hub.broadcast("realtime:room", None, ("tick", &payload));
        }
        // The third found the queue full: the cut is signalled (a stored permit).
        tokio::time::timeout(std::time::Duration::from_millis(50), cut.notified())
            .await
            .expect("the socket was cut off");
    }
}
