//! The SQL behind users, sessions and refresh tokens: fixed texts for each
//! dialect, values always bound.

use gatehouse_db::Sql;

/// The user columns every read returns, in this order (see `User::from_row`).
macro_rules! user_columns {
    () => {
        "id, email, email_confirmed_at, is_anonymous, banned_until, user_metadata, app_metadata, \
         created_at, updated_at, last_sign_in_at, password_hash"
    };
}

pub const USER_BY_EMAIL: Sql = Sql::both(concat!(
    "SELECT ",
    user_columns!(),
    " FROM gatehouse_users WHERE email = $1"
));

pub const USER_BY_ID: Sql = Sql::both(concat!(
    "SELECT ",
    user_columns!(),
    " FROM gatehouse_users WHERE id = $1"
));

pub const USERS_PAGE: Sql = Sql::both(concat!(
    "SELECT ",
    user_columns!(),
    " FROM gatehouse_users ORDER BY created_at, id LIMIT $1 OFFSET $2"
));

pub const COUNT_USERS: Sql = Sql::both("SELECT CAST(COUNT(*) AS BIGINT) FROM gatehouse_users");

pub const INSERT_USER: Sql = Sql::both(
    "INSERT INTO gatehouse_users (id, email, password_hash, email_confirmed_at, is_anonymous, \
     user_metadata, app_metadata, created_at, updated_at, banned_until) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $9)",
);

pub const UPDATE_USER: Sql = Sql::both(
    "UPDATE gatehouse_users SET email = $2, password_hash = $3, email_confirmed_at = $4, \
     user_metadata = $5, app_metadata = $6, banned_until = $7, updated_at = $8, is_anonymous = $9 \
     WHERE id = $1",
);

pub const SIGNED_IN: Sql = Sql::both(
    "UPDATE gatehouse_users SET last_sign_in_at = $2, password_hash = COALESCE($3, password_hash) WHERE id = $1",
);

pub const DELETE_USER: Sql = Sql::both("DELETE FROM gatehouse_users WHERE id = $1 RETURNING id");

pub const INSERT_SESSION: Sql = Sql::both(
    "INSERT INTO gatehouse_sessions (id, user_id, created_at, refreshed_at, not_after, user_agent, ip, aal, amr) \
     VALUES ($1, $2, $3, $3, $4, $5, $6, $7, $8)",
);

/// A session that exists, has not passed its absolute expiry, and whose user is
/// not banned; returns the user id.
pub const ACTIVE_SESSION: Sql = Sql::both(
    "SELECT s.user_id FROM gatehouse_sessions s JOIN gatehouse_users u ON u.id = s.user_id \
     WHERE s.id = $1 AND s.not_after > $2 AND (u.banned_until IS NULL OR u.banned_until <= $2)",
);

pub const DELETE_SESSION: Sql = Sql::both("DELETE FROM gatehouse_sessions WHERE id = $1");

pub const DELETE_USER_SESSIONS: Sql =
    Sql::both("DELETE FROM gatehouse_sessions WHERE user_id = $1");

pub const DELETE_OTHER_SESSIONS: Sql =
    Sql::both("DELETE FROM gatehouse_sessions WHERE user_id = $1 AND id <> $2");

pub const TOUCH_SESSION: Sql = Sql::both(
    "UPDATE gatehouse_sessions SET refreshed_at = $2, user_agent = $3, ip = $4 WHERE id = $1",
);

/// A refresh token; a successor replayed within the grace names the same one,
/// which is then kept as it is.
pub const INSERT_REFRESH: Sql = Sql::both(
    "INSERT INTO gatehouse_refresh_tokens (token_hash, session_id, created_at) VALUES ($1, $2, $3) \
     ON CONFLICT (token_hash) DO NOTHING",
);

/// The token, its session, when it was spent (or NULL), and the session's user.
pub const REFRESH_BY_HASH: Sql = Sql::both(
    "SELECT r.session_id, r.used_at, s.user_id, s.aal, s.amr FROM gatehouse_refresh_tokens r \
     JOIN gatehouse_sessions s ON s.id = r.session_id WHERE r.token_hash = $1",
);

/// Spends a token once: the row comes back only to the first caller.
pub const SPEND_REFRESH: Sql = Sql::both(
    "UPDATE gatehouse_refresh_tokens SET used_at = $2 WHERE token_hash = $1 AND used_at IS NULL \
     RETURNING session_id",
);

pub const INSERT_ONE_TIME: Sql = Sql::both(
    "INSERT INTO gatehouse_one_time_tokens (token_hash, code_hash, user_id, kind, email, redirect_to, \
     created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
);

/// Spends a link token of one kind, once, before it expires.
pub const SPEND_LINK: Sql = Sql::both(
    "UPDATE gatehouse_one_time_tokens SET used_at = $2 WHERE token_hash = $1 AND used_at IS NULL \
     AND expires_at > $2 AND kind IN ($3, $4) RETURNING user_id, kind, redirect_to, email, token_hash",
);

/// Spends the newest live code sent to an email, of one of two kinds.
pub const SPEND_CODE: Sql = Sql::both(
    "UPDATE gatehouse_one_time_tokens SET used_at = $3 WHERE token_hash = (SELECT token_hash \
     FROM gatehouse_one_time_tokens WHERE email = $1 AND code_hash = $2 AND used_at IS NULL \
     AND expires_at > $3 AND kind IN ($4, $5) ORDER BY created_at DESC LIMIT 1) \
     RETURNING user_id, kind, redirect_to, email, token_hash",
);

/// Gives a spent token back after a failure of ours.
pub const UNSPEND_ONE_TIME: Sql =
    Sql::both("UPDATE gatehouse_one_time_tokens SET used_at = NULL WHERE token_hash = $1");

/// Disables every live code sent to an address (too many wrong codes): no code
/// hashes to the marker. The links, 256 bits each, stay live, so guessing codes
/// cannot spend someone's recovery or stop link.
pub const DISABLE_CODES_TO: Sql = Sql::both(
    "UPDATE gatehouse_one_time_tokens SET code_hash = 'disabled' WHERE email = $1 AND used_at IS NULL",
);

/// Spends a user's live email-change links (a newer request or the change is done).
pub const SPEND_EMAIL_CHANGE_LINKS: Sql = Sql::both(
    "UPDATE gatehouse_one_time_tokens SET used_at = $2 WHERE user_id = $1 AND used_at IS NULL \
     AND kind IN ('email_change', 'email_change_cancel')",
);

/// A new email change replaces any earlier one, unconfirmed on both sides.
pub const REQUEST_EMAIL_CHANGE: Sql = Sql::both(
    "INSERT INTO gatehouse_email_changes (user_id, new_email, requested_at, expires_at) \
     VALUES ($1, $2, $3, $4) ON CONFLICT (user_id) DO UPDATE SET new_email = excluded.new_email, \
     requested_at = excluded.requested_at, expires_at = excluded.expires_at, \
     current_confirmed_at = NULL, new_confirmed_at = NULL",
);

/// Confirms one side of a live email change; returns the new address and both sides.
pub const CONFIRM_CURRENT_SIDE: Sql = Sql::both(
    "UPDATE gatehouse_email_changes SET current_confirmed_at = COALESCE(current_confirmed_at, $2) \
     WHERE user_id = $1 AND expires_at > $2 RETURNING new_email, current_confirmed_at, new_confirmed_at",
);

pub const CONFIRM_NEW_SIDE: Sql = Sql::both(
    "UPDATE gatehouse_email_changes SET new_confirmed_at = COALESCE(new_confirmed_at, $2) \
     WHERE user_id = $1 AND expires_at > $2 AND new_email = $3 \
     RETURNING new_email, current_confirmed_at, new_confirmed_at",
);

pub const DELETE_EMAIL_CHANGE: Sql =
    Sql::both("DELETE FROM gatehouse_email_changes WHERE user_id = $1 RETURNING user_id");

pub const CONFIRM_EMAIL: Sql = Sql::both(
    "UPDATE gatehouse_users SET email_confirmed_at = COALESCE(email_confirmed_at, $2), updated_at = $2 WHERE id = $1",
);

pub const SET_COOKIE: Sql = Sql::both(
    "UPDATE gatehouse_sessions SET cookie_hash = $2, csrf_hash = $3, last_seen_at = $4 WHERE id = $1",
);

/// A live cookie session: id, user, CSRF hash, last seen.
pub const COOKIE_SESSION: Sql = Sql::both(
    "SELECT s.id, s.user_id, s.csrf_hash, s.last_seen_at FROM gatehouse_sessions s \
     JOIN gatehouse_users u ON u.id = s.user_id WHERE s.cookie_hash = $1 AND s.not_after > $2 \
     AND (u.banned_until IS NULL OR u.banned_until <= $2)",
);

pub const SEEN: Sql = Sql::both("UPDATE gatehouse_sessions SET last_seen_at = $2 WHERE id = $1");
