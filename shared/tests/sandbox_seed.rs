//! Conformance with the sandbox's seeded cases: for every seeded request, the connector's
//! rules (through `match_request` and an in-memory directory built from the sandbox's
//! members file format) reach the status the sandbox documents as expected.

use std::collections::HashMap;

use triplink_shared::matching::{email_key, loyalty_key, MatchOutcome, MatchPolicy};
use triplink_shared::members::{
    match_request, DirectoryError, DirectoryHealth, Member, MemberDirectory,
};
use triplink_shared::model::{ConnectionRequest, WireConnectionRequest};

/// The whole directory in memory, looked up by the same keys as the real ones.
struct InMemory(Vec<Member>);

impl MemberDirectory for InMemory {
    async fn by_loyalty_number(&self, number: &str) -> Result<Vec<Member>, DirectoryError> {
        let key = loyalty_key(number);
        Ok(self
            .0
            .iter()
            .filter(|m| m.loyalty_number.as_deref().map(loyalty_key) == Some(key.clone()))
            .cloned()
            .collect())
    }

    async fn by_email(&self, email: &str) -> Result<Vec<Member>, DirectoryError> {
        let key = email_key(email);
        Ok(self
            .0
            .iter()
            .filter(|m| m.emails.iter().any(|e| email_key(e) == key))
            .cloned()
            .collect())
    }

    async fn health(&self) -> Result<DirectoryHealth, DirectoryError> {
        Ok(DirectoryHealth {
            members: Some(self.0.len() as u64),
            updated_at: None,
        })
    }
}

fn code(outcome: &MatchOutcome) -> &'static str {
    match outcome {
        MatchOutcome::Matched { .. } => "CRSUC",
        MatchOutcome::NotFound => "CREU1",
        MatchOutcome::NameMismatch => "CREU2",
        MatchOutcome::NeedsAttention { .. } => "CREU3",
        MatchOutcome::DuplicateLoyaltyNumber { .. } => "parked",
    }
}

#[tokio::test]
async fn every_seeded_case_gets_the_documented_status() {
    for seed in [1u64, 7, 2026] {
        let data = concur_sandbox::seed::generate(seed, 120);
        // Through the members file format (JSON, camelCase, extra fields ignored).
        let file = serde_json::to_string(&data.members).unwrap();
        let directory = InMemory(serde_json::from_str(&file).unwrap());
        let expected: HashMap<String, (String, String)> = data
            .expectations
            .iter()
            .map(|e| {
                (
                    e.request_id.clone(),
                    (e.expected.clone(), format!("{:?}", e.case)),
                )
            })
            .collect();
        let mut cases_seen = std::collections::HashSet::new();
        for (user, request_id) in &data.users {
            let mut emails: [Option<String>; 5] = Default::default();
            for (slot, email) in emails.iter_mut().zip(&user.emails) {
                *slot = Some(email.clone());
            }
            let request = ConnectionRequest::from_wire(WireConnectionRequest {
                id: Some(request_id.to_string()),
                user_id: Some(user.id.to_string()),
                first_name: Some(user.first_name.clone()),
                middle_name: user.middle_name.clone(),
                last_name: Some(user.last_name.clone()),
                loyalty_number: user.loyalty_number.clone(),
                emails,
                ..Default::default()
            })
            .unwrap();
            let outcome = match_request(&directory, &request, &MatchPolicy::default())
                .await
                .unwrap();
            let (status, case) = &expected[&request_id.to_string()];
            assert_eq!(
                code(&outcome),
                status,
                "seed {seed}, case {case}: {outcome:?}"
            );
            cases_seen.insert(case.clone());
        }
        assert_eq!(cases_seen.len(), 15, "every case kind, seed {seed}");
    }
}
