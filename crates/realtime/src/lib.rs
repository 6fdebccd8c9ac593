//! Realtime as supabase-js's `channel()` speaks it (the Phoenix channel
//! protocol of Supabase Realtime): the frames, this instance's topics, and
//! one socket's side (joins, broadcast, presence). Row changes under the row
//! policies, private channels and sharing across instances follow (issue 19);
//! `../shared/reference/realtime-wire.md` is the protocol brief they follow.

pub mod connection;
pub mod feed;
pub mod hub;
pub mod protocol;
