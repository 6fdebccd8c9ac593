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

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;

use crate::bus::{News, Relay};
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

/// Presence key → metas: what one other instance has tracked on a topic.
type Tracked = BTreeMap<String, Vec<Json>>;

#[derive(Default)]
struct State {
    topics: HashMap<String, Topic>,
    /// Topic key → instance → what that other instance's sockets track
    /// there, kept whether or not a socket here is joined (one may join).
    remote: HashMap<String, HashMap<String, Tracked>>,
}

#[derive(Default)]
pub struct Hub {
    state: Mutex<State>,
    next: AtomicU64,
    /// The way to the other instances, when there are any.
    relay: Option<Relay>,
}

impl Hub {
    /// The hub of an instance alone.
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// The hub of one instance of several: what happens here is told to the
    /// others through `relay`, and what they tell is heard through [`Hub::hear`].
    pub fn relaying(relay: Relay) -> Arc<Self> {
        Arc::new(Self {
            relay: Some(relay),
            ..Self::default()
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic elsewhere while holding the lock leaves plain maps behind:
        // still consistent enough to keep serving.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn tell(&self, news: impl FnOnce() -> News) {
        if let Some(relay) = &self.relay {
            relay.share(news);
        }
    }

    /// Joins the topic `key`, whose messages are named `wire`; the id names
    /// this membership until it leaves.
    pub fn join(&self, (key, wire): (&str, &str), member: Member) -> MemberId {
        let id = MemberId(self.next.fetch_add(1, Ordering::Relaxed));
        let mut state = self.state();
        let entry = state.topics.entry(key.to_owned()).or_insert_with(|| Topic {
            wire: wire.to_owned(),
            ..Topic::default()
        });
        entry.members.insert(id, member);
        id
    }

    /// Leaves `topic`; the others hear that its presence left (it does not:
    /// it is gone).
    pub fn leave(&self, topic: &str, member: MemberId) {
        let mut state = self.state();
        let Some(entry) = state.topics.get_mut(topic) else {
            return;
        };
        entry.members.remove(&member);
        if let Some((key, meta)) = remove_presence(entry, member) {
            self.presence_changed(entry, (topic, json!({})), json!({ key: {"metas": [meta]} }));
        }
        if entry.members.is_empty() {
            state.topics.remove(topic);
        }
    }

    /// Sends a broadcast to the topic's members (the sender too only when it
    /// asked for its own) and to the other instances; returns how many
    /// sockets here it reached.
    pub fn broadcast(
        &self,
        key: &str,
        from: Option<MemberId>,
        (event, payload): (&str, &Payload),
    ) -> usize {
        let reached = self.fan_out(key, from, (event, payload));
        self.tell(|| {
            let (payload, binary) = match payload {
                Payload::Json(json) => (json.clone(), false),
                Payload::Binary(bytes) => (json!(BASE64.encode(bytes)), true),
            };
            News::Broadcast {
                topic: key.to_owned(),
                event: event.to_owned(),
                payload,
                binary,
            }
        });
        reached
    }

    fn fan_out(
        &self,
        topic: &str,
        from: Option<MemberId>,
        (event, payload): (&str, &Payload),
    ) -> usize {
        let state = self.state();
        let Some(entry) = state.topics.get(topic) else {
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
        let mut state = self.state();
        let Some(entry) = state.topics.get_mut(topic) else {
            return;
        };
        let previous = remove_presence(entry, member);
        let mut meta = match meta {
            Json::Object(fields) => fields.clone(),
            _ => Map::new(),
        };
        meta.insert("phx_ref".into(), json!(self.presence_ref()));
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
        self.presence_changed(entry, (topic, joins), leaves);
    }

    /// Stops tracking `member`'s presence, if it had one.
    pub fn untrack(&self, topic: &str, member: MemberId) {
        let mut state = self.state();
        let Some(entry) = state.topics.get_mut(topic) else {
            return;
        };
        if let Some((key, meta)) = remove_presence(entry, member) {
            self.presence_changed(entry, (topic, json!({})), json!({ key: {"metas": [meta]} }));
        }
    }

    /// Tells the topic's members here and the other instances.
    fn presence_changed(&self, entry: &Topic, (topic, joins): (&str, Json), leaves: Json) {
        announce(entry, &joins, &leaves);
        self.tell(|| News::Presence {
            topic: topic.to_owned(),
            joins,
            leaves,
        });
    }

    /// Everyone tracked on `topic`, here and on the other instances, as
    /// `presence_state` sends it.
    pub fn presence_state(&self, topic: &str) -> Json {
        let state = self.state();
        let mut all: BTreeMap<&str, Vec<&Json>> = BTreeMap::new();
        if let Some(entry) = state.topics.get(topic) {
            for (key, metas) in &entry.presences {
                all.entry(key)
                    .or_default()
                    .extend(metas.iter().map(|(_, meta)| meta));
            }
        }
        for tracked in state
            .remote
            .get(topic)
            .into_iter()
            .flat_map(HashMap::values)
        {
            for (key, metas) in tracked {
                all.entry(key).or_default().extend(metas);
            }
        }
        let all: Map<String, Json> = all
            .into_iter()
            .map(|(key, metas)| (key.to_owned(), json!({ "metas": metas })))
            .collect();
        Json::Object(all)
    }

    /// What this instance's sockets track, topic by topic, for an instance
    /// that has just started listening.
    pub fn presence_held(&self) -> Vec<News> {
        let state = self.state();
        state
            .topics
            .iter()
            .filter(|(_, entry)| !entry.presences.is_empty())
            .map(|(topic, entry)| {
                let held: Map<String, Json> = entry
                    .presences
                    .iter()
                    .map(|(key, metas)| {
                        let metas: Vec<&Json> = metas.iter().map(|(_, meta)| meta).collect();
                        (key.clone(), json!({ "metas": metas }))
                    })
                    .collect();
                News::PresenceState {
                    topic: topic.clone(),
                    state: Json::Object(held),
                }
            })
            .collect()
    }

    /// What another instance (`from`) tells: its broadcasts reach the
    /// sockets here, its presences join and leave here.
    pub fn hear(&self, from: &str, news: News) {
        match news {
            News::Broadcast {
                topic,
                event,
                payload,
                binary,
            } => {
                let payload = if binary {
                    let Some(bytes) = payload.as_str().and_then(|text| BASE64.decode(text).ok())
                    else {
                        return;
                    };
                    Payload::Binary(bytes)
                } else {
                    Payload::Json(payload)
                };
                self.fan_out(&topic, None, (&event, &payload));
            }
            News::Presence {
                topic,
                joins,
                leaves,
            } => {
                let mut state = self.state();
                let tracked = tracked_by(&mut state, &topic, from);
                for (key, meta) in metas(&leaves) {
                    if let Some(metas) = tracked.get_mut(key) {
                        metas.retain(|kept| kept["phx_ref"] != meta["phx_ref"]);
                    }
                }
                for (key, meta) in metas(&joins) {
                    tracked
                        .entry(key.to_owned())
                        .or_default()
                        .push(meta.clone());
                }
                tidy(&mut state, &topic, from);
                if let Some(entry) = state.topics.get(&topic) {
                    announce(entry, &joins, &leaves);
                }
            }
            News::PresenceState { topic, state: held } => {
                let mut state = self.state();
                let tracked = tracked_by(&mut state, &topic, from);
                let before = std::mem::take(tracked);
                for (key, meta) in metas(&held) {
                    tracked
                        .entry(key.to_owned())
                        .or_default()
                        .push(meta.clone());
                }
                let (joins, leaves) = (difference(tracked, &before), difference(&before, tracked));
                tidy(&mut state, &topic, from);
                let changed = joins != json!({}) || leaves != json!({});
                if let (true, Some(entry)) = (changed, state.topics.get(&topic)) {
                    announce(entry, &joins, &leaves);
                }
            }
            _ => {}
        }
    }

    /// Every other instance's presences leave (this one lost track of them).
    pub fn forget_all(&self) {
        self.forget_where(|_| true);
    }

    /// Another instance is gone: everything it tracked leaves.
    pub fn forget(&self, peer: &str) {
        self.forget_where(|known| known == peer);
    }

    fn forget_where(&self, gone: impl Fn(&str) -> bool) {
        let mut state = self.state();
        let State { topics, remote } = &mut *state;
        for (topic, by_peer) in remote.iter_mut() {
            let entry = topics.get(topic);
            by_peer.retain(|peer, tracked| {
                if !gone(peer) {
                    return true;
                }
                if let Some(entry) = entry {
                    announce(entry, &json!({}), &difference(tracked, &Tracked::new()));
                }
                false
            });
        }
        remote.retain(|_, by_peer| !by_peer.is_empty());
    }

    /// A presence meta's `phx_ref`: unique across instances.
    fn presence_ref(&self) -> String {
        let serial = self.next.fetch_add(1, Ordering::Relaxed);
        match &self.relay {
            Some(relay) => format!("F{}{serial:x}", relay.instance()),
            None => format!("F{serial:x}"),
        }
    }
}

/// Drops what is known of `peer` on `topic` once nothing is, and the topic
/// once no other instance tracks anything there.
fn tidy(state: &mut State, topic: &str, peer: &str) {
    let Some(by_peer) = state.remote.get_mut(topic) else {
        return;
    };
    if let Some(tracked) = by_peer.get_mut(peer) {
        tracked.retain(|_, metas| !metas.is_empty());
        if tracked.is_empty() {
            by_peer.remove(peer);
        }
    }
    if by_peer.is_empty() {
        state.remote.remove(topic);
    }
}

fn tracked_by<'a>(state: &'a mut State, topic: &str, peer: &str) -> &'a mut Tracked {
    state
        .remote
        .entry(topic.to_owned())
        .or_default()
        .entry(peer.to_owned())
        .or_default()
}

/// Each (key, meta) of a presence state or diff (`{key: {"metas": [...]}}`).
fn metas(presences: &Json) -> impl Iterator<Item = (&str, &Json)> {
    presences
        .as_object()
        .into_iter()
        .flatten()
        .flat_map(|(key, entry)| {
            entry["metas"]
                .as_array()
                .into_iter()
                .flatten()
                .map(move |meta| (key.as_str(), meta))
        })
}

/// The metas of `these` not in `those` (by `phx_ref`), as a presence diff's side.
fn difference(these: &Tracked, those: &Tracked) -> Json {
    let known: std::collections::HashSet<&Json> = those
        .values()
        .flatten()
        .map(|meta| &meta["phx_ref"])
        .collect();
    let mut side = Map::new();
    for (key, metas) in these {
        let new: Vec<&Json> = metas
            .iter()
            .filter(|meta| !known.contains(&meta["phx_ref"]))
            .collect();
        if !new.is_empty() {
            side.insert(key.clone(), json!({ "metas": new }));
        }
    }
    Json::Object(side)
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

fn announce(entry: &Topic, joins: &Json, leaves: &Json) {
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
        assert_eq!(hub.broadcast(ROOM.0, Some(quiet), ("cursor", &payload)), 1);
        assert_eq!(hub.broadcast(ROOM.0, Some(echo), ("cursor", &payload)), 2);
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

    #[test]
    fn other_instances_presences_join_merge_and_leave_when_they_go() {
        let hub = Hub::new();
        let (here, mut frames, _) = Outbox::new(Vsn::V2, 16);
        let here = hub.join(ROOM, joining(here, false));
        hub.track("realtime:room", here, "ada", &json!({}));
        texts(&mut frames);
        hub.hear(
            "peer",
            News::Presence {
                topic: "realtime:room".into(),
                joins: json!({"bo": {"metas": [{"phx_ref": "Fp1", "status": "away"}]}}),
                leaves: json!({}),
            },
        );
        assert_eq!(
            texts(&mut frames)[0][4]["joins"]["bo"]["metas"][0]["status"],
            "away"
        );
        let state = hub.presence_state("realtime:room");
        assert!(
            state["ada"].is_object() && state["bo"].is_object(),
            "{state}"
        );

        // A whole state replaces what was known of the peer: Bo left, Cy came.
        hub.hear(
            "peer",
            News::PresenceState {
                topic: "realtime:room".into(),
                state: json!({"cy": {"metas": [{"phx_ref": "Fp2"}]}}),
            },
        );
        let diff = &texts(&mut frames)[0][4];
        assert!(
            diff["leaves"]["bo"].is_object() && diff["joins"]["cy"].is_object(),
            "{diff}"
        );

        hub.forget("peer");
        assert!(texts(&mut frames)[0][4]["leaves"]["cy"].is_object());
        let state = hub.presence_state("realtime:room");
        assert_eq!(
            state.as_object().unwrap().keys().collect::<Vec<_>>(),
            ["ada"]
        );
    }

    #[test]
    fn what_happens_here_is_relayed_and_what_others_broadcast_is_heard() {
        let (relay, mut relayed) = Relay::new();
        let hub = Hub::relaying(relay.clone());
        let (alone, _, _) = Outbox::new(Vsn::V2, 16);
        let alone = hub.join(("realtime:alone", "realtime:alone"), joining(alone, false));
        hub.track("realtime:alone", alone, "ada", &json!({}));
        assert!(
            relayed.try_recv().is_err(),
            "no other instance: nothing relayed"
        );
        relay.peers().saw("peer");
        let (here, mut frames, _) = Outbox::new(Vsn::V2, 16);
        let here = hub.join(ROOM, joining(here, false));
        hub.track("realtime:room", here, "ada", &json!({}));
        let Ok(News::Presence { joins, .. }) = relayed.try_recv() else {
            panic!("the track was not relayed");
        };
        assert!(joins["ada"]["metas"][0]["phx_ref"].is_string());
        assert!(matches!(
            hub.presence_held()[..],
            [News::PresenceState { .. }, News::PresenceState { .. }]
        ));

        hub.broadcast(ROOM.0, Some(here), ("cursor", &Payload::Binary(vec![1, 2])));
        let Ok(News::Broadcast {
            payload, binary, ..
        }) = relayed.try_recv()
        else {
            panic!("the broadcast was not relayed");
        };
        assert!(binary);
        texts(&mut frames);
        hub.hear(
            "peer",
            News::Broadcast {
                topic: "realtime:room".into(),
                event: "cursor".into(),
                payload,
                binary,
            },
        );
        assert_eq!(
            texts(&mut frames).len(),
            1,
            "a peer's broadcast reaches the member"
        );
        assert!(
            relayed.try_recv().is_err(),
            "what is heard is not relayed again"
        );
    }

    #[tokio::test]
    async fn a_socket_that_cannot_keep_up_is_cut_off() {
        let hub = Hub::new();
        let (slow, _frames, cut) = Outbox::new(Vsn::V1, 2);
        hub.join(ROOM, joining(slow, true));
        let payload = Payload::Json(json!(1));
        for _ in 0..3 {
            hub.broadcast(ROOM.0, None, ("tick", &payload));
        }
        // The third found the queue full: the cut is signalled (a stored permit).
        tokio::time::timeout(std::time::Duration::from_millis(50), cut.notified())
            .await
            .expect("the socket was cut off");
    }
}
