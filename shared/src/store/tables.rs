//! Create the connector's tables as [`super::layout`] describes them: for local runs, the
//! demo and tests (the SAM template creates them in the cloud).

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType, StreamSpecification, StreamViewType,
    TimeToLiveSpecification,
};
use aws_sdk_dynamodb::Client;

use super::layout::{attr, members, BY_DUE, TTL_ATTRIBUTE};
use super::StoreError;

fn backend(op: &'static str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend {
        op,
        message: e.to_string(),
        transient: false,
    }
}

fn hash_key(name: &str) -> Result<(KeySchemaElement, AttributeDefinition), StoreError> {
    attribute(name, ScalarAttributeType::S, KeyType::Hash)
}

fn attribute(
    name: &str,
    kind: ScalarAttributeType,
    key_type: KeyType,
) -> Result<(KeySchemaElement, AttributeDefinition), StoreError> {
    let key = KeySchemaElement::builder()
        .attribute_name(name)
        .key_type(key_type)
        .build()
        .map_err(|e| backend("CreateTable", e))?;
    let definition = AttributeDefinition::builder()
        .attribute_name(name)
        .attribute_type(kind)
        .build()
        .map_err(|e| backend("CreateTable", e))?;
    Ok((key, definition))
}

/// A keys-only index on a state (hash, S) and a time (range, N, epoch ms) that only
/// the items due for something carry: the sweep's `by-due`, the keep-alive's
/// `by-renewal`. With the two attribute definitions it needs.
fn sparse_index(
    name: &str,
    state: &str,
    time: &str,
) -> Result<
    (
        GlobalSecondaryIndex,
        AttributeDefinition,
        AttributeDefinition,
    ),
    StoreError,
> {
    let (state_key, state_definition) = hash_key(state)?;
    let (time_key, time_definition) = attribute(time, ScalarAttributeType::N, KeyType::Range)?;
    let index = GlobalSecondaryIndex::builder()
        .index_name(name)
        .key_schema(state_key)
        .key_schema(time_key)
        .projection(
            Projection::builder()
                .projection_type(ProjectionType::KeysOnly)
                .build(),
        )
        .build()
        .map_err(|e| backend("CreateTable", e))?;
    Ok((index, state_definition, time_definition))
}

/// The requests table: key `request_id`, stream of new and old images, TTL `expires_at`,
/// and the sweep's sparse index `by-due` (`state`, `due_at`; keys only).
pub async fn create_requests_table(client: &Client, name: &str) -> Result<(), StoreError> {
    let (key, definition) = hash_key(attr::REQUEST_ID)?;
    let (by_due, state_definition, due_definition) =
        sparse_index(BY_DUE, attr::STATE, attr::DUE_AT)?;
    client
        .create_table()
        .table_name(name)
        .key_schema(key)
        .attribute_definitions(definition)
        .attribute_definitions(state_definition)
        .attribute_definitions(due_definition)
        .global_secondary_indexes(by_due)
        .billing_mode(BillingMode::PayPerRequest)
        .stream_specification(
            StreamSpecification::builder()
                .stream_enabled(true)
                .stream_view_type(StreamViewType::NewAndOldImages)
                .build()
                .map_err(|e| backend("CreateTable", e))?,
        )
        .send()
        .await
        .map_err(|e| {
            backend(
                "CreateTable",
                aws_sdk_dynamodb::error::DisplayErrorContext(e),
            )
        })?;
    client
        .update_time_to_live()
        .table_name(name)
        .time_to_live_specification(
            TimeToLiveSpecification::builder()
                .enabled(true)
                .attribute_name(TTL_ATTRIBUTE)
                .build()
                .map_err(|e| backend("UpdateTimeToLive", e))?,
        )
        .send()
        .await
        .map_err(|e| {
            backend(
                "UpdateTimeToLive",
                aws_sdk_dynamodb::error::DisplayErrorContext(e),
            )
        })?;
    Ok(())
}

fn index(name: &str, key: KeySchemaElement) -> Result<GlobalSecondaryIndex, StoreError> {
    GlobalSecondaryIndex::builder()
        .index_name(name)
        .key_schema(key)
        .projection(
            Projection::builder()
                .projection_type(ProjectionType::All)
                .build(),
        )
        .build()
        .map_err(|e| backend("CreateTable", e))
}

/// The members table: key `member_id`, indexes by loyalty number and by e-mail key.
pub async fn create_members_table(client: &Client, name: &str) -> Result<(), StoreError> {
    let (key, definition) = hash_key(members::MEMBER_ID)?;
    let (loyalty_key, loyalty_definition) = hash_key(members::LOYALTY_NUMBER)?;
    let (email_key, email_definition) = hash_key(members::EMAIL_KEY)?;
    client
        .create_table()
        .table_name(name)
        .key_schema(key)
        .attribute_definitions(definition)
        .attribute_definitions(loyalty_definition)
        .attribute_definitions(email_definition)
        .global_secondary_indexes(index(members::BY_LOYALTY_NUMBER, loyalty_key)?)
        .global_secondary_indexes(index(members::BY_EMAIL, email_key)?)
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .map_err(|e| {
            backend(
                "CreateTable",
                aws_sdk_dynamodb::error::DisplayErrorContext(e),
            )
        })?;
    Ok(())
}

/// The connections table: key `member_id`, and the keep-alive's sparse index
/// `by-renewal` (`token_state`, `renew_at`; keys only; `crate::vault::BY_RENEWAL`).
pub async fn create_connections_table(client: &Client, name: &str) -> Result<(), StoreError> {
    use crate::vault::{attr as vault, BY_RENEWAL};
    let (key, definition) = hash_key(members::MEMBER_ID)?;
    let (by_renewal, state_definition, renew_definition) =
        sparse_index(BY_RENEWAL, vault::TOKEN_STATE, vault::RENEW_AT)?;
    client
        .create_table()
        .table_name(name)
        .key_schema(key)
        .attribute_definitions(definition)
        .attribute_definitions(state_definition)
        .attribute_definitions(renew_definition)
        .global_secondary_indexes(by_renewal)
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .map_err(|e| {
            backend(
                "CreateTable",
                aws_sdk_dynamodb::error::DisplayErrorContext(e),
            )
        })?;
    Ok(())
}
