//! Realtime as supabase-js's `channel()` speaks it (the Phoenix channel
//! protocol of Supabase Realtime). Built in slices: today the frames.
//! The sockets, channels, broadcast, presence and row changes follow (issue 19);
//! `../shared/reference/realtime-wire.md` is the protocol brief they follow.

pub mod connection;
pub mod hub;
pub mod protocol;
