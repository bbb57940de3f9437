//! What the workload clients did: one [`Op`] per request, with when it was
//! invoked and completed (relative to the run's start) and how it ended.

use std::time::Duration;

use serde::Serialize;

use super::linear::Cond;

/// The workloads (Jepsen's register, a monotonic-read client, and a set).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum OpKind {
    /// A QUORUM write of a unique value to a shared register key.
    Write,
    /// A QUORUM write of an increasing value to one of the client's own keys.
    OwnWrite,
    /// A QUORUM read of one of the client's own keys.
    OwnRead,
    /// A QUORUM add of a unique element to a shared set.
    SetAdd,
    /// A SERIAL read of a compare-and-set register.
    CasRead,
    /// A conditional write (Paxos) of `value` to a compare-and-set
    /// register, under [`Op::cond`]; the result in [`Op::applied`].
    Cas,
    /// A QUORUM increment of a shared counter by `value`.
    CounterAdd,
}

/// How a request ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum Outcome {
    /// Acknowledged; for reads, the value seen (`None`: no row).
    Ok(Option<i64>),
    /// Unavailable: the coordinator sent nothing.
    Unavailable,
    /// WriteTimeout / ReadTimeout, or no answer: may have been applied.
    Timeout,
    /// Anything else (connection refused or lost, server error): may have
    /// been applied.
    Failed(String),
}

impl Outcome {
    pub fn is_ok(&self) -> bool {
        matches!(self, Outcome::Ok(_))
    }

    /// Whether a write that ended this way may have been applied.
    pub fn maybe_applied(&self) -> bool {
        !matches!(self, Outcome::Unavailable)
    }
}

/// One request of one client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Op {
    pub client: usize,
    pub kind: OpKind,
    pub key: String,
    /// The value written (for writes and set adds).
    pub value: i64,
    #[serde(serialize_with = "as_millis")]
    pub invoke: Duration,
    #[serde(serialize_with = "as_millis")]
    pub complete: Duration,
    pub outcome: Outcome,
    /// The nemesis phase when it was invoked (`healthy` or a fault name).
    pub phase: String,
    /// A conditional write's condition.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cond: Option<Cond>,
    /// A conditional write's acknowledged `[applied]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub applied: Option<bool>,
}

fn as_millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_millis() as u64)
}
