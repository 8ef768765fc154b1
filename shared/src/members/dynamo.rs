//! The member directory on a DynamoDB members table (the default directory).
//!
//! The layout is in [`crate::store::layout`] ("Members table"): one member item per
//! member, found by loyalty number through the `by-loyalty-number` index, and one e-mail
//! pointer item per address, found through the `by-email` index and leading to its owner.
//! The pointers are hints; the member item is the truth: an owner is returned for an
//! address only if its item still lists that address.

use std::collections::{BTreeSet, HashMap};

use aws_sdk_dynamodb::error::{DisplayErrorContext, SdkError};
use aws_sdk_dynamodb::types::{AttributeValue, Delete, Put, Select, TransactWriteItem};
use aws_sdk_dynamodb::Client;
use serde::{Deserialize, Serialize};

use super::{without_values, DirectoryError, DirectoryHealth, MemberDirectory};
use crate::matching::{email_key, loyalty_key, Member, MemberStatus};
use crate::store::layout::members as attr;

/// DynamoDB allows this many actions in one transaction: the member item and 99 pointers.
const MAX_TRANSACTION_ITEMS: usize = 100;

/// The members table on DynamoDB.
#[derive(Clone)]
pub struct DynamoMemberDirectory {
    pub client: Client,
    pub table: String,
}

/// A member item as stored.
#[derive(Serialize, Deserialize)]
struct MemberItem {
    member_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    loyalty_number: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    loyalty_number_raw: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    first_name: Option<String>,
    last_name: String,
    #[serde(default)]
    emails: Vec<String>,
    status: MemberStatus,
}

impl MemberItem {
    fn from_member(member: &Member) -> Self {
        let raw = member.loyalty_number.as_deref();
        let key = raw.map(loyalty_key).filter(|k| !k.is_empty());
        let loyalty_number_raw = match (raw, key.as_deref()) {
            (Some(raw), Some(key)) if raw != key => Some(raw.to_owned()),
            _ => None,
        };
        Self {
            member_id: member.member_id.clone(),
            loyalty_number: key,
            loyalty_number_raw,
            first_name: member.first_name.clone(),
            last_name: member.last_name.clone(),
            emails: member.emails.clone(),
            status: member.status,
        }
    }

    fn into_member(self) -> Member {
        Member {
            member_id: self.member_id,
            loyalty_number: self.loyalty_number_raw.or(self.loyalty_number),
            first_name: self.first_name,
            last_name: self.last_name,
            emails: self.emails,
            status: self.status,
        }
    }
}

fn unavailable<E, R>(op: &str, error: SdkError<E, R>) -> DirectoryError
where
    E: std::error::Error + 'static,
    R: std::fmt::Debug,
{
    DirectoryError::Unavailable(format!("DynamoDB {op}: {}", DisplayErrorContext(&error)))
}

fn read_member(item: HashMap<String, AttributeValue>) -> Result<Member, DirectoryError> {
    let id = match item.get(attr::MEMBER_ID) {
        Some(AttributeValue::S(id)) => id.clone(),
        _ => String::from("<no member_id>"),
    };
    serde_dynamo::from_item::<_, MemberItem>(item)
        .map(MemberItem::into_member)
        .map_err(|e| {
            DirectoryError::Malformed(format!(
                "member item {id}: {}",
                without_values(&e.to_string())
            ))
        })
}

fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

/// The e-mail keys of a member's addresses, de-duplicated, blanks left out.
fn email_keys(member_emails: &[String]) -> BTreeSet<String> {
    member_emails
        .iter()
        .map(|e| email_key(e))
        .filter(|k| !k.is_empty())
        .collect()
}

fn pointer_id(key: &str, owner: &str) -> String {
    format!("{}{key}#{owner}", attr::EMAIL_POINTER_PREFIX)
}

impl DynamoMemberDirectory {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    async fn get_member(&self, member_id: &str) -> Result<Option<Member>, DirectoryError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(attr::MEMBER_ID, s(member_id))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| unavailable("GetItem", e))?;
        output.item.map(read_member).transpose()
    }

    /// Store a member (insert or replace), for imports and tests: its item, a pointer per
    /// e-mail address, and the removal of the pointers of addresses it no longer has, all
    /// in one transaction. A member id starting with `email#`, or a member with more than
    /// 99 distinct addresses, is refused.
    pub async fn put_member(&self, member: &Member) -> Result<(), DirectoryError> {
        if member.member_id.is_empty()
            || member.member_id.starts_with(attr::EMAIL_POINTER_PREFIX)
            || member.member_id.starts_with(attr::MANIFEST_PREFIX)
        {
            return Err(DirectoryError::Malformed(format!(
                "member id {:?} is empty or starts with {:?} or {:?} (reserved)",
                member.member_id,
                attr::EMAIL_POINTER_PREFIX,
                attr::MANIFEST_PREFIX
            )));
        }
        let new_keys = email_keys(&member.emails);
        if new_keys.len() >= MAX_TRANSACTION_ITEMS {
            return Err(DirectoryError::Malformed(format!(
                "member {} has {} e-mail addresses; at most {} are supported",
                member.member_id,
                new_keys.len(),
                MAX_TRANSACTION_ITEMS - 1
            )));
        }
        let old_keys = match self.get_member(&member.member_id).await {
            Ok(Some(old)) => email_keys(&old.emails),
            Ok(None) => BTreeSet::new(),
            // An unreadable old item is replaced; its pointers fail the owner check.
            Err(DirectoryError::Malformed(_)) => BTreeSet::new(),
            Err(e) => return Err(e),
        };
        let item = serde_dynamo::to_item(MemberItem::from_member(member)).map_err(|e| {
            DirectoryError::Malformed(format!(
                "member {}: {}",
                member.member_id,
                without_values(&e.to_string())
            ))
        })?;
        let mut actions = vec![put_action(&self.table, item)?];
        for key in &new_keys {
            let pointer = HashMap::from([
                (
                    attr::MEMBER_ID.to_owned(),
                    s(pointer_id(key, &member.member_id)),
                ),
                (attr::EMAIL_KEY.to_owned(), s(key.clone())),
                (
                    attr::OWNER_MEMBER_ID.to_owned(),
                    s(member.member_id.clone()),
                ),
            ]);
            actions.push(put_action(&self.table, pointer)?);
        }
        for stale in old_keys.difference(&new_keys) {
            let delete = Delete::builder()
                .table_name(&self.table)
                .key(attr::MEMBER_ID, s(pointer_id(stale, &member.member_id)))
                .build()
                .map_err(|e| DirectoryError::Malformed(e.to_string()))?;
            actions.push(TransactWriteItem::builder().delete(delete).build());
        }
        // Stale pointers beyond one transaction are left behind: harmless (owner check).
        actions.truncate(MAX_TRANSACTION_ITEMS);
        self.client
            .transact_write_items()
            .set_transact_items(Some(actions))
            .send()
            .await
            .map_err(|e| unavailable("TransactWriteItems", e))?;
        Ok(())
    }

    /// Write the manifest the health gate reads: the table holds `members` members.
    pub async fn write_manifest(
        &self,
        members: u64,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), DirectoryError> {
        self.client
            .put_item()
            .table_name(&self.table)
            .item(attr::MEMBER_ID, s(attr::MANIFEST_ID))
            .item(attr::MEMBER_COUNT, AttributeValue::N(members.to_string()))
            .item(
                attr::UPDATED_AT,
                s(now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
            )
            .send()
            .await
            .map_err(|e| unavailable("PutItem", e))?;
        Ok(())
    }

    /// Count the members and write the count as the manifest (after an import).
    pub async fn refresh_manifest(
        &self,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<u64, DirectoryError> {
        let members = self.count().await?;
        self.write_manifest(members, now).await?;
        Ok(members)
    }

    /// How many members (not pointer items, not the manifest) the table holds.
    pub async fn count(&self) -> Result<u64, DirectoryError> {
        let mut total = 0u64;
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let output = self
                .client
                .scan()
                .table_name(&self.table)
                .select(Select::Count)
                .filter_expression(
                    "attribute_not_exists(#owner) AND NOT begins_with(#id, :reserved)",
                )
                .expression_attribute_names("#owner", attr::OWNER_MEMBER_ID)
                .expression_attribute_names("#id", attr::MEMBER_ID)
                .expression_attribute_values(":reserved", s(attr::MANIFEST_PREFIX))
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| unavailable("Scan", e))?;
            total += u64::try_from(output.count).unwrap_or(0);
            match output.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(total),
            }
        }
    }

    /// All items of one index under `key`, every page.
    async fn query_index(
        &self,
        index: &str,
        attribute: &str,
        key: &str,
    ) -> Result<Vec<HashMap<String, AttributeValue>>, DirectoryError> {
        let mut items = Vec::new();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let output = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(index)
                .key_condition_expression("#k = :v")
                .expression_attribute_names("#k", attribute)
                .expression_attribute_values(":v", s(key))
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| unavailable("Query", e))?;
            items.extend(output.items.unwrap_or_default());
            match output.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(items),
            }
        }
    }
}

fn put_action(
    table: &str,
    item: HashMap<String, AttributeValue>,
) -> Result<TransactWriteItem, DirectoryError> {
    let put = Put::builder()
        .table_name(table)
        .set_item(Some(item))
        .build()
        .map_err(|e| DirectoryError::Malformed(e.to_string()))?;
    Ok(TransactWriteItem::builder().put(put).build())
}

impl MemberDirectory for DynamoMemberDirectory {
    async fn by_loyalty_number(&self, loyalty_number: &str) -> Result<Vec<Member>, DirectoryError> {
        let key = loyalty_key(loyalty_number);
        if key.is_empty() {
            return Ok(Vec::new());
        }
        self.query_index(attr::BY_LOYALTY_NUMBER, attr::LOYALTY_NUMBER, &key)
            .await?
            .into_iter()
            .map(read_member)
            .collect()
    }

    async fn by_email(&self, email: &str) -> Result<Vec<Member>, DirectoryError> {
        let key = email_key(email);
        if key.is_empty() {
            return Ok(Vec::new());
        }
        let pointers = self
            .query_index(attr::BY_EMAIL, attr::EMAIL_KEY, &key)
            .await?;
        let owners: BTreeSet<String> = pointers
            .iter()
            .filter_map(|p| match p.get(attr::OWNER_MEMBER_ID) {
                Some(AttributeValue::S(owner)) => Some(owner.clone()),
                _ => None,
            })
            .collect();
        let mut members = Vec::with_capacity(owners.len());
        for owner in owners {
            // A pointer whose owner is gone, or no longer has the address, is skipped.
            if let Some(member) = self.get_member(&owner).await? {
                if member.emails.iter().any(|e| email_key(e) == key) {
                    members.push(member);
                }
            }
        }
        Ok(members)
    }

    async fn health(&self) -> Result<DirectoryHealth, DirectoryError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(attr::MEMBER_ID, s(attr::MANIFEST_ID))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| unavailable("GetItem", e))?;
        let Some(item) = output.item else {
            return Ok(DirectoryHealth {
                members: None,
                updated_at: None,
            });
        };
        let members = match item.get(attr::MEMBER_COUNT) {
            Some(AttributeValue::N(n)) => n.parse::<u64>().map_err(|_| {
                DirectoryError::Malformed("manifest member_count is not a count".into())
            })?,
            _ => {
                return Err(DirectoryError::Malformed(
                    "manifest without member_count".into(),
                ))
            }
        };
        let updated_at = match item.get(attr::UPDATED_AT) {
            Some(AttributeValue::S(at)) => Some(at.clone()),
            _ => None,
        };
        Ok(DirectoryHealth {
            members: Some(members),
            updated_at,
        })
    }
}
