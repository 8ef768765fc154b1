//! The directory health gate: when the connector may tell a traveller that their
//! loyalty account is wrong.
//!
//! A `CREU1`/`CREU2`/`CREU3` is an e-mail from Concur to the traveller and uses one of
//! their four attempts. "No member has this number" is evidence only if the directory is
//! known to hold the supplier's members: an empty members table (the first deploy,
//! before `triplink members import`), a wrong table name, or a member service answering
//! every lookup with "not found" would otherwise send `CREU1` to everyone.
//!
//! So before any `CREU*` is decided the worker asks [`HealthGate::check`], which asks
//! the directory itself ([`MemberDirectory::health`](super::MemberDirectory::health)):
//!
//! * the DynamoDB members table holds a **manifest** item, written by
//!   `triplink members import` after every import, with the number of members;
//! * the HTTP member service answers `GET {base}/health` with
//!   `{"status": "ok", "members": <count>}`.
//!
//! The directory is [`Readiness::Ready`] only when that manifest (or health answer)
//! exists and counts at least one member. Anything else (no manifest, zero members, an
//! unreachable or malformed health answer) is [`Readiness::NotReady`]: the worker
//! decides no `CREU*`, leaves the request pending at Concur (no attempt spent, not even
//! a `CRRET`: nothing is wrong on the traveller's side), releases it with a backoff,
//! logs the reason and emits the `DirectoryNotReady` metric (alarm
//! `directory-not-ready`). A match (`CRSUC`) needs no gate: finding the member is
//! positive evidence in itself.
//!
//! The answer is cached per execution environment for [`READY_TTL`] when ready and
//! [`NOT_READY_TTL`] when not, so a batch costs one health read, and an import is seen
//! within seconds.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::{DirectoryError, MemberDirectory};

/// How long a "ready" answer is trusted.
pub const READY_TTL: Duration = Duration::from_secs(60);
/// How long a "not ready" answer is trusted before the directory is asked again.
pub const NOT_READY_TTL: Duration = Duration::from_secs(10);

/// What a directory says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectoryHealth {
    /// Members the directory holds, from its manifest; `None` when it has no manifest.
    pub members: Option<u64>,
    /// When the manifest was written (RFC 3339), if known.
    pub updated_at: Option<String>,
}

/// Why the directory cannot be trusted with a `CREU*` decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotReady {
    /// No manifest: nothing was ever imported (or the table name is wrong).
    NoManifest,
    /// The manifest counts zero members.
    Empty,
    /// The health read failed (the message names no personal data).
    Unreachable(String),
}

impl NotReady {
    /// The reason as logged and shown by `triplink status`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::NoManifest => "no_manifest",
            Self::Empty => "empty",
            Self::Unreachable(_) => "unreachable",
        }
    }

    /// What an operator should do about it.
    pub fn advice(&self) -> &'static str {
        match self {
            Self::NoManifest => {
                "no member manifest: run `triplink members import FILE` (or check MEMBERS_TABLE)"
            }
            Self::Empty => "the directory counts zero members: import the member file",
            Self::Unreachable(_) => "the directory's health could not be read",
        }
    }
}

/// The rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    Ready { members: u64 },
    NotReady(NotReady),
}

impl Readiness {
    pub fn is_ready(&self) -> bool {
        matches!(self, Self::Ready { .. })
    }
}

/// Apply the rule to a health read.
pub fn readiness(health: &Result<DirectoryHealth, DirectoryError>) -> Readiness {
    match health {
        Err(e) => Readiness::NotReady(NotReady::Unreachable(e.to_string())),
        Ok(DirectoryHealth { members: None, .. }) => Readiness::NotReady(NotReady::NoManifest),
        Ok(DirectoryHealth {
            members: Some(0), ..
        }) => Readiness::NotReady(NotReady::Empty),
        Ok(DirectoryHealth {
            members: Some(members),
            ..
        }) => Readiness::Ready { members: *members },
    }
}

/// The cached gate, one per execution environment.
#[derive(Default)]
pub struct HealthGate {
    cached: Mutex<Option<(Instant, Readiness)>>,
}

impl HealthGate {
    /// The directory's readiness, from the cache while it is fresh. Concurrent callers
    /// wait for one read.
    pub async fn check<D: MemberDirectory>(&self, directory: &D) -> Readiness {
        let mut cached = self.cached.lock().await;
        if let Some((at, readiness)) = cached.as_ref() {
            let ttl = if readiness.is_ready() {
                READY_TTL
            } else {
                NOT_READY_TTL
            };
            if at.elapsed() < ttl {
                return readiness.clone();
            }
        }
        let readiness = readiness(&directory.health().await);
        *cached = Some((Instant::now(), readiness.clone()));
        readiness
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health(members: Option<u64>) -> Result<DirectoryHealth, DirectoryError> {
        Ok(DirectoryHealth {
            members,
            updated_at: None,
        })
    }

    #[test]
    fn only_a_manifest_with_members_is_ready() {
        assert_eq!(readiness(&health(Some(3))), Readiness::Ready { members: 3 });
        assert_eq!(
            readiness(&health(Some(0))),
            Readiness::NotReady(NotReady::Empty)
        );
        assert_eq!(
            readiness(&health(None)),
            Readiness::NotReady(NotReady::NoManifest)
        );
        let down = readiness(&Err(DirectoryError::Unavailable("timeout".into())));
        assert!(!down.is_ready());
        assert!(matches!(&down, Readiness::NotReady(r) if r.as_str() == "unreachable"));
    }

    /// A directory whose manifest count can be changed, counting health reads.
    struct Counted {
        members: std::sync::atomic::AtomicU64,
        reads: std::sync::atomic::AtomicU32,
    }

    impl MemberDirectory for Counted {
        async fn by_loyalty_number(
            &self,
            _: &str,
        ) -> Result<Vec<crate::matching::Member>, DirectoryError> {
            Ok(Vec::new())
        }
        async fn by_email(&self, _: &str) -> Result<Vec<crate::matching::Member>, DirectoryError> {
            Ok(Vec::new())
        }
        async fn health(&self) -> Result<DirectoryHealth, DirectoryError> {
            use std::sync::atomic::Ordering::SeqCst;
            self.reads.fetch_add(1, SeqCst);
            health(Some(self.members.load(SeqCst)))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_gate_caches_each_answer_for_its_time() {
        use std::sync::atomic::Ordering::SeqCst;
        let directory = Counted {
            members: 0.into(),
            reads: 0.into(),
        };
        let gate = HealthGate::default();
        assert_eq!(
            gate.check(&directory).await,
            Readiness::NotReady(NotReady::Empty)
        );
        // An import lands: seen once the short "not ready" answer expires, not before.
        directory.members.store(5, SeqCst);
        assert!(!gate.check(&directory).await.is_ready());
        tokio::time::advance(NOT_READY_TTL).await;
        assert_eq!(
            gate.check(&directory).await,
            Readiness::Ready { members: 5 }
        );
        assert_eq!(directory.reads.load(SeqCst), 2);
        // A ready answer is trusted for its longer time, then read again.
        directory.members.store(0, SeqCst);
        tokio::time::advance(READY_TTL - Duration::from_secs(1)).await;
        assert!(gate.check(&directory).await.is_ready());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(!gate.check(&directory).await.is_ready());
        assert_eq!(directory.reads.load(SeqCst), 3);
    }
}
