//! Realtime as supabase-js's `channel()` speaks it (the Phoenix channel
//! protocol of Supabase Realtime): the frames, this instance's topics, one
//! socket's side (joins, broadcast, presence), and row changes delivered under
//! each subscriber's own `select` decision. Private channels and sharing
//! across instances follow (issue 19).

pub mod connection;
pub mod feed;
pub mod hub;
pub mod limits;
pub mod protocol;

use std::sync::Arc;

/// One instance's realtime: its topics, its row-change feed, who holds its
/// sockets, its bounds, and the policies of its private channels.
pub struct Realtime {
    pub hub: Arc<hub::Hub>,
    pub feed: Arc<feed::Feed>,
    pub admission: limits::Admission,
    pub limits: limits::Limits,
    /// `[[realtime.policies]]`, over `realtime.messages`: none, none joins.
    pub private: gatehouse_policy::TablePolicies,
}
