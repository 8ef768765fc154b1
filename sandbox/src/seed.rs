//! Deterministic seeding: Concur users with pending requests, and the matching
//! supplier member directory, with the hard matching cases in fixed proportions.
//!
//! The expected outcome of every request is computed here from the rules of the
//! reference pages (loyalty number + last name; verified e-mail + last name
//! without a number), not from the connector's code.

use std::collections::HashSet;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use unicode_normalization::char::is_combining_mark;
use unicode_normalization::UnicodeNormalization;
use uuid::Uuid;

pub use crate::cases::{Case, Expectation, CYCLE};
use crate::state::{uuid_from, User};

/// A member of the supplier's loyalty programme, as written to the members file.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Member {
    pub member_id: String,
    pub loyalty_number: Option<String>,
    pub first_name: String,
    pub last_name: String,
    pub emails: Vec<String>,
    /// active | closed | locked | unverified
    pub status: String,
    /// The status a correct connector PUTs for the request this member is meant for.
    pub expected: String,
    /// The Concur user the member was generated for.
    pub concur_user_id: String,
    pub case: Case,
}

/// Everything a seed produces.
#[derive(Debug, Clone)]
pub struct SeedData {
    /// Users with the id of their (pending) request, in queue order.
    pub users: Vec<(User, Uuid)>,
    pub members: Vec<Member>,
    pub expectations: Vec<Expectation>,
}

const FIRST: [&str; 20] = [
    "Anna", "Ben", "Clara", "David", "Elena", "Felix", "Grace", "Hugo", "Ines", "Jonas", "Karin",
    "Liam", "Maya", "Noah", "Olga", "Paul", "Rosa", "Sven", "Tara", "Victor",
];
const LAST: [&str; 20] = [
    "Smith",
    "Johnson",
    "Larsen",
    "Nakamura",
    "Kowalski",
    "Rossi",
    "Dubois",
    "Novak",
    "Silva",
    "Schneider",
    "Andersen",
    "Murphy",
    "Fischer",
    "Costa",
    "Lindqvist",
    "Moreau",
    "Weber",
    "Horvat",
    "Jensen",
    "Bauer",
];
const MIDDLE: [&str; 4] = ["Marie", "J.", "Lee", "Anne"];
/// (plain, accented): the accents decompose under NFKD.
const ACCENTS: [(&str, &str); 7] = [
    ("Muller", "Müller"),
    ("Lefevre", "Lefèvre"),
    ("Jonsson", "Jónsson"),
    ("Nunez", "Núñez"),
    ("Cote", "Côté"),
    ("Dvorak", "Dvořák"),
    ("Celik", "Çelik"),
];
/// (Concur, member)
const HYPHENATED: [(&str, &str); 4] = [
    ("García-López", "Garcia Lopez"),
    ("Smith-Jones", "Smith Jones"),
    ("Ruiz-Picasso", "Ruiz Picasso"),
    ("Lloyd Webber", "Lloyd-Webber"),
];
const COMPOUND: [(&str, &str); 4] = [
    ("van der Berg", "Van Der Berg"),
    ("de la Cruz", "De La Cruz"),
    ("von Trapp", "Von Trapp"),
    ("Mac Donald", "MacDonald"),
];
const APOSTROPHE: [(&str, &str); 3] = [
    ("O'Brien", "OBrien"),
    ("D'Angelo", "DAngelo"),
    ("O\u{2019}Connor", "O'Connor"),
];
const DOTTED: [(&str, &str); 2] = [("St. John", "St John"), ("St. Clair", "St Clair")];
/// (Concur first name, member first name)
const NICKNAMES: [(&str, &str); 6] = [
    ("Bob", "Robert"),
    ("Bill", "William"),
    ("Liz", "Elizabeth"),
    ("Kate", "Katherine"),
    ("Jim", "James"),
    ("Peggy", "Margaret"),
];
/// (Concur, member): different after normalisation.
const MISMATCH: [(&str, &str); 4] = [
    ("Schmidt", "Schmitt"),
    ("Nguyen", "Tran"),
    ("Berg", "Burg"),
    ("Johansson", "Johanson"),
];

/// Name comparison of the reference pages: Unicode NFKD, combining marks
/// removed, case-folded, spaces, hyphens, apostrophes and dots ignored.
pub fn normalize_name(s: &str) -> String {
    s.nfkd()
        .filter(|c| !is_combining_mark(*c))
        .flat_map(char::to_lowercase)
        .filter(|c| {
            !c.is_whitespace()
                && !matches!(
                    c,
                    '-' | '\u{2010}' | '\u{2011}' | '\'' | '\u{2019}' | '\u{02bc}' | '`' | '.'
                )
        })
        .collect()
}

/// The status a connector following Concur's recommendation should PUT.
pub fn expected_status(user: &User, members: &[Member]) -> &'static str {
    let last = normalize_name(&user.last_name);
    if let Some(num) = user.loyalty_number.as_deref() {
        let Some(m) = members
            .iter()
            .find(|m| m.loyalty_number.as_deref().map(str::trim) == Some(num.trim()))
        else {
            return "CREU1";
        };
        if normalize_name(&m.last_name) != last {
            "CREU2"
        } else if m.status != "active" {
            "CREU3"
        } else {
            "CRSUC"
        }
    } else {
        let found: Vec<&Member> = members
            .iter()
            .filter(|m| {
                m.emails.iter().any(|me| {
                    user.emails
                        .iter()
                        .take(5)
                        .any(|ue| ue.trim().eq_ignore_ascii_case(me.trim()))
                })
            })
            .collect();
        if found.is_empty() {
            return "CREU1";
        }
        match found.iter().find(|m| normalize_name(&m.last_name) == last) {
            None => "CREU2",
            Some(m) if m.status != "active" => "CREU3",
            Some(_) => "CRSUC",
        }
    }
}

fn ascii_slug(s: &str) -> String {
    s.nfkd()
        .filter(|c| c.is_ascii_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

/// Generates `n` users (each with one request id) and the member directory.
/// Same `seed` and `n` → same output, byte for byte.
pub fn generate(seed: u64, n: usize) -> SeedData {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut cases: Vec<Case> = (0..n).map(|i| CYCLE[i % CYCLE.len()]).collect();
    cases.shuffle(&mut rng);
    let mut numbers = HashSet::new();
    let mut fresh_number = |rng: &mut StdRng| loop {
        let v: u64 = rng.random_range(1_000_000_000..10_000_000_000);
        let s = v.to_string();
        if numbers.insert(s.clone()) {
            break s;
        }
    };
    let mut users = Vec::with_capacity(n);
    let mut members = Vec::with_capacity(n);
    let mut meta = Vec::with_capacity(n);
    for (i, case) in cases.iter().copied().enumerate() {
        let user_id = uuid_from(&mut rng);
        let request_id = uuid_from(&mut rng);
        let mut first = FIRST[rng.random_range(0..FIRST.len())].to_string();
        let mut member_first = first.clone();
        let plain_last = LAST[rng.random_range(0..LAST.len())];
        let (concur_last, member_last): (String, String) = match case {
            Case::AccentInMember => {
                let (p, a) = pick(&mut rng, &ACCENTS);
                (p.into(), a.into())
            }
            Case::AccentInConcur => {
                let (p, a) = pick(&mut rng, &ACCENTS);
                (a.into(), p.into())
            }
            Case::Hyphenated => pick(&mut rng, &HYPHENATED).into_tuple(),
            Case::Compound => pick(&mut rng, &COMPOUND).into_tuple(),
            Case::Apostrophe => pick(&mut rng, &APOSTROPHE).into_tuple(),
            Case::Dotted => pick(&mut rng, &DOTTED).into_tuple(),
            Case::NameMismatch => pick(&mut rng, &MISMATCH).into_tuple(),
            _ => (plain_last.into(), plain_last.into()),
        };
        if case == Case::Nickname {
            let (nick, full) = pick(&mut rng, &NICKNAMES);
            first = nick.into();
            member_first = full.into();
        }
        let middle = if rng.random_range(0..4) == 0 {
            Some(MIDDLE[rng.random_range(0..MIDDLE.len())].to_string())
        } else {
            None
        };
        let slug = format!(
            "{}.{}{}",
            ascii_slug(&first),
            ascii_slug(&concur_last),
            i + 1
        );
        let login_id = format!("{slug}@sandbox.example");
        let email_only = matches!(case, Case::EmailOnly | Case::EmailOnlyOtherAddress);
        let mut emails = vec![format!("{slug}@mail.example")];
        let extra = if case == Case::EmailOnlyOtherAddress {
            2
        } else {
            rng.random_range(0..2)
        };
        for k in 0..extra {
            emails.push(format!("{slug}.{}@other{}.example", k + 2, k + 1));
        }
        let loyalty = if email_only {
            None
        } else {
            Some(fresh_number(&mut rng))
        };
        let user = User {
            id: user_id,
            login_id,
            first_name: first,
            middle_name: middle,
            last_name: concur_last,
            loyalty_number: loyalty.clone(),
            emails: emails.clone(),
        };
        let member_emails = match case {
            Case::EmailOnly => vec![emails[0].to_uppercase()],
            Case::EmailOnlyOtherAddress => vec![
                format!("{}.home@elsewhere.example", ascii_slug(&member_first)),
                emails[2].to_ascii_uppercase(),
            ],
            _ => vec![emails[0].clone()],
        };
        let status = match case {
            Case::Closed => "closed",
            Case::Locked => "locked",
            Case::Unverified => "unverified",
            _ => "active",
        };
        let member_id = format!("M{:06}", i + 1);
        let member = match case {
            // The supplier has no member with this number.
            Case::UnknownNumber => None,
            _ => Some(Member {
                member_id: member_id.clone(),
                loyalty_number: loyalty,
                first_name: member_first,
                last_name: member_last,
                emails: member_emails,
                status: status.into(),
                expected: String::new(),
                concur_user_id: user_id.to_string(),
                case,
            }),
        };
        if let Some(m) = member {
            members.push(m);
        }
        meta.push((case, request_id));
        users.push(user);
    }
    let mut expectations = Vec::with_capacity(n);
    let mut with_requests = Vec::with_capacity(n);
    for (user, (case, request_id)) in users.into_iter().zip(meta) {
        let expected = expected_status(&user, &members).to_string();
        let member_id = members
            .iter_mut()
            .find(|m| m.concur_user_id == user.id.to_string())
            .map(|m| {
                m.expected = expected.clone();
                m.member_id.clone()
            });
        expectations.push(Expectation {
            request_id: request_id.to_string(),
            user_id: user.id.to_string(),
            login_id: user.login_id.clone(),
            case,
            expected,
            member_id,
        });
        with_requests.push((user, request_id));
    }
    SeedData {
        users: with_requests,
        members,
        expectations,
    }
}

fn pick(rng: &mut StdRng, list: &[(&'static str, &'static str)]) -> (&'static str, &'static str) {
    list[rng.random_range(0..list.len())]
}

trait IntoTuple {
    fn into_tuple(self) -> (String, String);
}
impl IntoTuple for (&str, &str) {
    fn into_tuple(self) -> (String, String) {
        (self.0.into(), self.1.into())
    }
}

/// The outcome each case is designed to have.
pub fn intended(case: Case) -> &'static str {
    match case {
        Case::UnknownNumber => "CREU1",
        Case::NameMismatch => "CREU2",
        Case::Closed | Case::Locked | Case::Unverified => "CREU3",
        _ => "CRSUC",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation_follows_the_rules() {
        assert_eq!(normalize_name("Müller"), normalize_name("Muller"));
        assert_eq!(
            normalize_name("García-López"),
            normalize_name("Garcia Lopez")
        );
        assert_eq!(
            normalize_name("van der Berg"),
            normalize_name("Van Der Berg")
        );
        assert_eq!(normalize_name("O'Brien"), normalize_name("OBrien"));
        assert_eq!(
            normalize_name("O\u{2019}Connor"),
            normalize_name("O'Connor")
        );
        assert_eq!(normalize_name("St. John"), normalize_name("St John"));
        assert_ne!(normalize_name("Schmidt"), normalize_name("Schmitt"));
    }

    #[test]
    fn every_case_gets_its_intended_outcome() {
        let data = generate(7, 200);
        for e in &data.expectations {
            assert_eq!(e.expected, intended(e.case), "{e:?}");
        }
    }
}
