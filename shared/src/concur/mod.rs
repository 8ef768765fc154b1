//! Concur API client: OAuth2 grants and the Connection Requests API.

pub mod auth;
pub mod base_url;
pub mod client;
pub mod error;
pub mod retry;
pub mod version;

pub use auth::{OAuthError, OAuthErrorKind, UserTokens};
pub use base_url::{BaseUrl, BaseUrlError, GLZ_BASE_URL};
pub use client::{
    next_page_offset, ConcurClient, ConcurConfig, ForeignNextPage, NextPage, Page, Pager,
    SecretFuture, SecretProvider, DEFAULT_CALL_TIMEOUT, MAX_API_BODY, MAX_PAGE_LIMIT,
    MAX_TOKEN_BODY,
};
pub use error::{CallInfo, ConcurError, CONCUR_PAUSE};
pub use retry::RetryPolicy;
pub use version::ApiVersion;
