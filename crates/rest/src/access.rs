//! The one access decision. Every statement on a declared table or on storage
//! objects carries the [`Decision`] made here for its caller, table and command
//! (the statement builder cannot finish without one); nothing else decides
//! which rows a caller may touch.

use gatehouse_policy::{Command, Condition, ContextValue, TablePolicies, Term};

use crate::caller::Caller;

/// Which rows a policy speaks of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rows {
    /// The rows as they are: what a read sees, an update or delete touches
    /// (the policies' `using`).
    Existing,
    /// A row as it is written: what an insert or update must leave behind
    /// (the policies' `with check`, else their `using`).
    Written,
}

/// What one caller may do with one command on one table or bucket's objects.
/// Made only by [`decide`]; its parts stay private, so holding one proves the
/// policies were consulted.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision(pub(crate) Verdict);

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Verdict {
    /// The secret key: no policy applies.
    Open,
    /// The rows this condition holds for, the caller's id, role and claims
    /// already bound into it.
    Only(Condition),
    /// No policy lets this caller run the command.
    Closed,
}

/// The decision for `caller` running `command` under `policies` (`None` when
/// the table has none: closed to everyone but the service role).
pub fn decide(
    caller: &Caller,
    policies: Option<&TablePolicies>,
    command: Command,
    rows: Rows,
) -> Decision {
    let role = match caller.role() {
        Ok(None) => return Decision(Verdict::Open),
        Ok(Some(role)) => role,
        Err(_) => return Decision(Verdict::Closed),
    };
    let condition = policies.and_then(|policies| match rows {
        Rows::Existing => policies.using(command, role),
        Rows::Written => policies.with_check(command, role),
    });
    let Some(condition) = condition else {
        return Decision(Verdict::Closed);
    };
    let bind = |condition: &Condition| condition.binding(&|value| caller.context(value));
    // A signed URL's claims are unknown: whatever reads one counts against.
    let bound = if caller.claims_unknown() {
        bind(&condition.deciding(
            &|term| matches!(term, Term::Context(ContextValue::Claim(_))),
            false,
        ))
    } else {
        bind(&condition)
    };
    Decision(Verdict::Only(bound))
}

impl Decision {
    /// No policy lets the caller run the command: it is refused before any
    /// SQL runs. (A policy whose condition no row meets is not closed: the
    /// command runs and finds nothing, as in PostgreSQL.)
    pub fn is_closed(&self) -> bool {
        matches!(self.0, Verdict::Closed)
    }

    /// The decision's text: decisions alike have the same (to ask the
    /// database once for many callers deciding alike).
    pub fn key(&self) -> String {
        format!("{:?}", self.0)
    }

    /// The decision for a row not fully known yet (a check before the body
    /// arrives, a signed upload URL): whatever reads a term `unknown` touches
    /// is assumed to pass, for the check when the row is written decides it.
    pub fn assuming(self, unknown: &impl Fn(&Term) -> bool) -> Decision {
        match self.0 {
            Verdict::Only(condition) => Decision(Verdict::Only(condition.deciding(unknown, true))),
            other => Decision(other),
        }
    }
}
