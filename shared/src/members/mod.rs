//! The member directory: where the connector looks up the supplier's loyalty members.
//!
//! [`MemberDirectory`] is the small trait the worker is generic over. Two
//! implementations: [`dynamo::DynamoMemberDirectory`], a DynamoDB members table (the
//! default), and [`http::HttpMemberDirectory`], which calls the supplier's own member
//! service. [`match_request`] looks a request's members up and applies the rules of
//! [`crate::matching`].

pub mod dynamo;
pub mod health;
pub mod http;

use std::future::Future;
use std::sync::Arc;

use futures::future::try_join_all;

use crate::matching::{decide, identity, Identity};
pub use crate::matching::{AttentionReason, MatchOutcome, MatchPolicy, Member, MemberStatus};
use crate::model::ConnectionRequest;
pub use dynamo::DynamoMemberDirectory;
pub use health::{DirectoryHealth, HealthGate, NotReady, Readiness};
pub use http::{HttpDirectoryConfig, HttpMemberDirectory};

/// A failed lookup. Neither variant carries personal data.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    /// The directory could not be asked (network, timeout, throttling, server error):
    /// worth retrying (`CRRET`).
    #[error("member directory unavailable: {0}")]
    Unavailable(String),
    /// The directory answered something the connector cannot read, or refused the
    /// request; retrying will not help until someone fixes it.
    #[error("member directory answered malformed data: {0}")]
    Malformed(String),
}

impl DirectoryError {
    /// Whether trying again later may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Unavailable(_) => true,
            Self::Malformed(_) => false,
        }
    }
}

pub(crate) use crate::privacy::without_values;

/// The supplier's members, as the connector sees them.
pub trait MemberDirectory: Send + Sync {
    /// The members whose loyalty number has the same
    /// [`loyalty_key`](crate::matching::loyalty_key) as `loyalty_number`.
    fn by_loyalty_number(
        &self,
        loyalty_number: &str,
    ) -> impl Future<Output = Result<Vec<Member>, DirectoryError>> + Send;

    /// The members holding `email` among their addresses, compared by
    /// [`email_key`](crate::matching::email_key).
    fn by_email(
        &self,
        email: &str,
    ) -> impl Future<Output = Result<Vec<Member>, DirectoryError>> + Send;

    /// What the directory says about itself: how many members its manifest counts
    /// (see [`health`] for why no `CREU*` is decided without it).
    fn health(&self) -> impl Future<Output = Result<DirectoryHealth, DirectoryError>> + Send;
}

impl<T: MemberDirectory> MemberDirectory for &T {
    fn by_loyalty_number(
        &self,
        loyalty_number: &str,
    ) -> impl Future<Output = Result<Vec<Member>, DirectoryError>> + Send {
        (**self).by_loyalty_number(loyalty_number)
    }

    fn by_email(
        &self,
        email: &str,
    ) -> impl Future<Output = Result<Vec<Member>, DirectoryError>> + Send {
        (**self).by_email(email)
    }

    fn health(&self) -> impl Future<Output = Result<DirectoryHealth, DirectoryError>> + Send {
        (**self).health()
    }
}

impl<T: MemberDirectory> MemberDirectory for Arc<T> {
    fn by_loyalty_number(
        &self,
        loyalty_number: &str,
    ) -> impl Future<Output = Result<Vec<Member>, DirectoryError>> + Send {
        (**self).by_loyalty_number(loyalty_number)
    }

    fn by_email(
        &self,
        email: &str,
    ) -> impl Future<Output = Result<Vec<Member>, DirectoryError>> + Send {
        (**self).by_email(email)
    }

    fn health(&self) -> impl Future<Output = Result<DirectoryHealth, DirectoryError>> + Send {
        (**self).health()
    }
}

/// Look the request's members up and decide: by loyalty number when the request has one,
/// else by each of its e-mail addresses (concurrently); no lookup at all when it has
/// neither. Any failed lookup fails the whole match (nothing is decided on partial data).
pub async fn match_request<D: MemberDirectory>(
    directory: &D,
    request: &ConnectionRequest,
    policy: &MatchPolicy,
) -> Result<MatchOutcome, DirectoryError> {
    let (by_loyalty, by_email) = match identity(request) {
        Identity::None => (Vec::new(), Vec::new()),
        Identity::Loyalty(key) => (directory.by_loyalty_number(&key).await?, Vec::new()),
        Identity::Emails(keys) => {
            let found = try_join_all(keys.iter().map(|key| directory.by_email(key))).await?;
            (Vec::new(), found.into_iter().flatten().collect())
        }
    };
    Ok(decide(request, &by_loyalty, &by_email, policy))
}
