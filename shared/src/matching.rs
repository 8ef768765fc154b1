//! The matching rules: which supplier member a Concur connection request belongs to, and
//! which status the connector reports when there is none. This module is the one place
//! these rules live; the worker only looks members up (see [`crate::members`]) and calls
//! [`decide`].
//!
//! ## Rules
//!
//! 1. **With a loyalty number.** The candidates are the members whose loyalty number has
//!    the same [`loyalty_key`] as the request's.
//!    * No candidate → [`MatchOutcome::NotFound`] (`CREU1`, loyalty account not found).
//!      An unknown number never falls back to the e-mail addresses.
//!    * Candidates, but none with the same last name (see *Names* below) →
//!      [`MatchOutcome::NameMismatch`] (`CREU2`, account does not match).
//!    * More than one distinct member (by `memberId`) with the same last name →
//!      [`MatchOutcome::DuplicateLoyaltyNumber`]: **no status**; the request is parked
//!      for an operator (see *Ambiguity* below). The connector never guesses between
//!      two accounts.
//!    * Exactly one: `active` → [`MatchOutcome::Matched`] (`CRSUC` once the request token
//!      is exchanged); `closed`, `locked` or `unverified` →
//!      [`MatchOutcome::NeedsAttention`] with that reason and the member id (`CREU3`).
//! 2. **Without a loyalty number, with e-mail addresses.** Concur sends the user's
//!    *verified* addresses (`email1`..`email5`). The candidates are the members holding any
//!    of them, compared by [`email_key`] (trimmed, lower-cased), whichever of the member's
//!    addresses it is. Then the same steps as above: none → `NotFound`, none with the same
//!    last name → `NameMismatch`, several → [`MatchOutcome::NeedsAttention`] with
//!    [`AttentionReason::Ambiguous`] (`CREU3`, see *Ambiguity*), one → by its status.
//! 3. **Neither a loyalty number nor an e-mail address** → `NotFound` (`CREU1`).
//! 4. **A request without a last name** (or one that normalises to nothing, such as `"."`)
//!    matches no candidate: `NameMismatch` when there are candidates, `NotFound` when
//!    there are none. A member whose last name normalises to nothing matches no request.
//! 5. A loyalty number that has no characters left after [`loyalty_key`] (for example
//!    `"--"`) counts as absent: rule 2 or 3 applies.
//! 6. Candidates are de-duplicated by member id (a member found through two of the
//!    request's addresses is one candidate). Members handed to [`decide`] that do not
//!    actually carry the request's loyalty key (or one of its e-mail keys) are ignored,
//!    so a directory that answers loosely cannot cause a false match.
//! 7. **First and middle names are not compared** by default: nicknames (Bob/Robert) and
//!    middle names cause false failures. With [`MatchPolicy::compare_first_name`] the
//!    first names must also be equal after normalisation (a missing first name on either
//!    side then fails the comparison). Middle names are never compared.
//!
//! ## Ambiguity: two members fit
//!
//! The reference page gives the error statuses these meanings: `CREU1` "loyalty account
//! not found", `CREU2` "loyalty account does not match", `CREU3` "loyalty account needs
//! attention"; each e-mails the traveller "to check the loyalty account information they
//! supplied" and spends one of four attempts. When two members fit:
//!
//! * `CREU2` would be false: the details the traveller gave *do* match (twice).
//! * **Through a verified e-mail address** (no loyalty number given): two members of the
//!   same family commonly share an address and a last name. Nothing is wrong with
//!   either account, but the information given does not single one out: the traveller
//!   must act (give the loyalty number). That is what "needs attention" says: `CREU3`
//!   with reason `needs_attention:ambiguous`.
//! * **Through a loyalty number**: a loyalty number names one account, so two member
//!   records carrying it (with the same last name) are a defect of the supplier's data
//!   that the traveller cannot fix. Any status would be a guess and would spend an
//!   attempt on the supplier's error, so none is sent: the worker parks the request
//!   (reason `duplicate_loyalty_number`, alarm `requests-parked`); once the directory
//!   is fixed, `triplink retry` hands it back to the worker.
//! * Two fitting members of which only one is active are still ambiguous (the connector
//!   does not prefer one account over another by status).
//! * Candidates with another last name never make a request ambiguous: one fitting
//!   member among several candidates is a match by its status.
//!
//! ## Names
//!
//! Two names are equal when their [`normalize_name`] forms are equal. The normaliser, in
//! order:
//! 1. Unicode **NFKD**: accented letters split into base letter + combining marks, and
//!    compatibility forms become their plain letters (full-width `Ｍ` → `M`, ligature
//!    `ﬁ` → `fi`, non-breaking space → space, `ŉ` → `ʼn`).
//! 2. **Case-fold** each character with Unicode's lower-case mapping (not the
//!    locale-dependent one: `I` → `i` always), plus the few foldings Unicode's case
//!    folding adds to it: Greek final sigma `ς` → `σ` (so `ΣΟΦΟΣ` and `σοφος` agree),
//!    the iota subscript U+0345 → `ι` (so `ᾳ` agrees with its capital `ΑΙ`), and the
//!    old Cyrillic letter variants U+1C80–U+1C88 → their ordinary letters.
//! 3. Letters that NFKD does not decompose but that are written as plain Latin letters
//!    in names and e-mail-style spellings are mapped: `ß` → `ss` (German: *Strauß* is
//!    written *Strauss*), `æ` → `ae` and `œ` → `oe` (the ligatures' spelled-out forms),
//!    `ø` → `o` (Danish/Norwegian, as airline tickets write it), `đ` → `d` (Croatian,
//!    Vietnamese) and `ð` → `d` (Icelandic, as passports transliterate it), `ł` → `l`
//!    (Polish), `þ` → `th` (Icelandic), `ı` → `i` (Turkish dotless i; `İ` already becomes
//!    `i` through NFKD and the case mapping). The capital forms reach these through
//!    step 2 (`ẞ` → `ß` → `ss`).
//! 4. A second NFKD pass, then every remaining **combining mark** (Unicode general
//!    category M: `Mn`, `Mc` and `Me`; the iota subscript became `ι` in step 2) is
//!    removed: `ü` → `u`, `ç` → `c`, `ř` → `r`.
//! 5. **Separators are removed**: all Unicode white space, hyphens and dashes (`-`,
//!    `‐` U+2010, `‑` U+2011, `–` U+2013, `—` U+2014), apostrophes (`'`, `’` U+2019,
//!    `ʼ` U+02BC, `‘` U+2018, and the backtick `` ` ``) and dots (`.`). So `García-López`
//!    = `Garcia Lopez`, `van der Berg` = `Van Der Berg`, `Mac Donald` = `MacDonald`,
//!    `O'Brien` = `OBrien` = `O’Brien`, `St. John` = `St John`.
//!
//! 6. The result is cut at [`MAX_NAME_CHARS`] characters.
//!
//! Every step works character by character (NFKD only reorders combining marks, which
//! are removed), so the normaliser of a concatenation is the concatenation of the
//! normalisers (up to the cut). The tests check every Unicode scalar value `c` for `n(n(c)) = n(c)` and
//! `n(upper(c)) = n(lower(c))`, which makes the normaliser idempotent and blind to case
//! (Unicode's default, locale-free case mappings) for every string.
//!
//! ## Keys
//!
//! * [`loyalty_key`]: trimmed, white space and hyphens/dashes removed, upper-cased;
//!   leading zeros are kept (`0012-345 ab` → `0012345AB`). Members are stored under this
//!   key and requests are looked up by it.
//! * [`email_key`]: trimmed and lower-cased (see [`crate::store::layout::email_key`]).

use std::collections::HashSet;
use std::fmt;

use serde::{Deserialize, Serialize};
use unicode_normalization::char::is_combining_mark;
use unicode_normalization::UnicodeNormalization;

use crate::model::ConnectionRequest;
use crate::privacy;
pub use crate::store::layout::email_key;

/// Hyphens and dashes ignored in names and loyalty numbers.
const DASHES: [char; 5] = ['-', '\u{2010}', '\u{2011}', '\u{2013}', '\u{2014}'];
/// Apostrophes ignored in names.
const APOSTROPHES: [char; 5] = ['\'', '\u{2019}', '\u{02BC}', '\u{2018}', '`'];

fn is_name_separator(c: char) -> bool {
    c.is_whitespace() || c == '.' || DASHES.contains(&c) || APOSTROPHES.contains(&c)
}

/// Letters NFKD leaves alone, spelled as plain Latin letters (after case folding).
fn spell_out(c: char) -> Option<&'static str> {
    Some(match c {
        'ß' => "ss",
        'æ' => "ae",
        'œ' => "oe",
        'ø' => "o",
        'đ' | 'ð' => "d",
        'ł' => "l",
        'þ' => "th",
        'ı' => "i",
        // Unicode case folding (CaseFolding.txt) beyond the lower-case mapping.
        'ς' => "σ",
        '\u{0345}' => "ι",
        '\u{1C80}' => "в",
        '\u{1C81}' => "д",
        '\u{1C82}' => "о",
        '\u{1C83}' => "с",
        '\u{1C84}' | '\u{1C85}' => "т",
        '\u{1C86}' => "ъ",
        '\u{1C87}' => "ѣ",
        '\u{1C88}' => "\u{A64B}",
        _ => return None,
    })
}

/// The longest normalised name, in characters: names are compared on at most this many
/// (a name is a few dozen; a hostile page may carry megabytes in one field).
pub const MAX_NAME_CHARS: usize = 256;

/// A name in the form names are compared in (see the module documentation): at most
/// [`MAX_NAME_CHARS`] characters, computed lazily so that a long input costs no more
/// memory than that.
pub fn normalize_name(name: &str) -> String {
    name.nfkd()
        .flat_map(char::to_lowercase)
        .flat_map(Folded::of)
        .nfkd()
        .filter(|&c| !is_combining_mark(c) && !is_name_separator(c))
        .take(MAX_NAME_CHARS)
        .collect()
}

/// A lower-cased character after step 3: spelled out, or itself.
enum Folded {
    Spelled(std::str::Chars<'static>),
    Itself(Option<char>),
}

impl Folded {
    fn of(c: char) -> Self {
        match spell_out(c) {
            Some(spelled) => Self::Spelled(spelled.chars()),
            None => Self::Itself(Some(c)),
        }
    }
}

impl Iterator for Folded {
    type Item = char;

    fn next(&mut self) -> Option<char> {
        match self {
            Self::Spelled(chars) => chars.next(),
            Self::Itself(c) => c.take(),
        }
    }
}

/// The key a loyalty number is stored and looked up under: trimmed, white space and
/// hyphens/dashes removed, upper-cased, leading zeros kept.
pub fn loyalty_key(number: &str) -> String {
    number
        .trim()
        .chars()
        .filter(|c| !c.is_whitespace() && !DASHES.contains(c))
        .flat_map(char::to_uppercase)
        .collect()
}

/// A supplier's loyalty member, as the member directory holds it (JSON: camelCase, the
/// format of the sandbox's `members.json`; unknown fields are ignored).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Member {
    pub member_id: String,
    #[serde(default)]
    pub loyalty_number: Option<String>,
    #[serde(default)]
    pub first_name: Option<String>,
    pub last_name: String,
    #[serde(default)]
    pub emails: Vec<String>,
    pub status: MemberStatus,
}

/// Debug output is safe for logs: names, the loyalty number and e-mails are masked.
impl fmt::Debug for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let emails: Vec<_> = self
            .emails
            .iter()
            .map(|e| privacy::email(Some(e)))
            .collect();
        f.debug_struct("Member")
            .field("member_id", &self.member_id)
            .field(
                "loyalty_number",
                &privacy::loyalty(self.loyalty_number.as_deref()),
            )
            .field("first_name", &privacy::name(self.first_name.as_deref()))
            .field("last_name", &privacy::name(Some(&self.last_name)))
            .field("emails", &emails)
            .field("status", &self.status)
            .finish()
    }
}

/// Whether a member account can be linked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberStatus {
    Active,
    Closed,
    Locked,
    Unverified,
}

/// Why a found member cannot be linked now (`CREU3`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttentionReason {
    Closed,
    Locked,
    Unverified,
    /// More than one member fits the request.
    Ambiguous,
}

impl AttentionReason {
    /// A short reason for logs and the request's history (no personal data).
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Locked => "locked",
            Self::Unverified => "unverified",
            Self::Ambiguous => "ambiguous",
        }
    }
}

/// What matching decided for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MatchOutcome {
    /// One active member: exchange the request token, then `CRSUC`.
    Matched { member_id: String },
    /// No member with the number (or any of the e-mails): `CREU1`.
    NotFound,
    /// Members found, none with the same last name: `CREU2`.
    NameMismatch,
    /// A member that cannot be linked, or several that fit by e-mail: `CREU3`.
    NeedsAttention {
        member_id: Option<String>,
        reason: AttentionReason,
    },
    /// Several members carry the request's loyalty number and last name: the
    /// supplier's data is at fault; no status (see *Ambiguity*).
    DuplicateLoyaltyNumber { members: usize },
}

/// Tunable parts of the rules.
#[derive(Debug, Clone, Default)]
pub struct MatchPolicy {
    /// Also require equal first names (off by default: nicknames cause false failures).
    pub compare_first_name: bool,
}

/// How the request identifies its member: the loyalty key, else its e-mail keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    Loyalty(String),
    Emails(Vec<String>),
    None,
}

/// Which lookup the rules use for a request (rules 1, 2, 3 and 5). E-mail keys are
/// de-duplicated, in the request's order.
pub fn identity(request: &ConnectionRequest) -> Identity {
    if let Some(key) = request
        .loyalty_number
        .as_deref()
        .map(loyalty_key)
        .filter(|k| !k.is_empty())
    {
        return Identity::Loyalty(key);
    }
    let mut keys: Vec<String> = Vec::new();
    for key in request.emails.iter().map(|e| email_key(e)) {
        if !key.is_empty() && !keys.contains(&key) {
            keys.push(key);
        }
    }
    if keys.is_empty() {
        Identity::None
    } else {
        Identity::Emails(keys)
    }
}

fn names_match(request: Option<&str>, member: Option<&str>) -> bool {
    match (
        request.map(normalize_name).filter(|n| !n.is_empty()),
        member.map(normalize_name).filter(|n| !n.is_empty()),
    ) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

/// Apply the rules (see the module documentation) to the members the directory found:
/// `by_loyalty` for the request's loyalty number, `by_email` for its e-mail addresses.
pub fn decide(
    request: &ConnectionRequest,
    by_loyalty: &[Member],
    by_email: &[Member],
    policy: &MatchPolicy,
) -> MatchOutcome {
    let candidates: Vec<&Member> = match identity(request) {
        Identity::None => return MatchOutcome::NotFound,
        Identity::Loyalty(key) => by_loyalty
            .iter()
            .filter(|m| m.loyalty_number.as_deref().map(loyalty_key).as_ref() == Some(&key))
            .collect(),
        Identity::Emails(keys) => by_email
            .iter()
            .filter(|m| m.emails.iter().any(|e| keys.contains(&email_key(e))))
            .collect(),
    };
    let mut seen = HashSet::new();
    let candidates: Vec<&Member> = candidates
        .into_iter()
        .filter(|m| seen.insert(m.member_id.as_str()))
        .collect();
    if candidates.is_empty() {
        return MatchOutcome::NotFound;
    }
    let fitting: Vec<&Member> = candidates
        .into_iter()
        .filter(|m| names_match(request.last_name.as_deref(), Some(&m.last_name)))
        .filter(|m| {
            !policy.compare_first_name
                || names_match(request.first_name.as_deref(), m.first_name.as_deref())
        })
        .collect();
    match fitting.as_slice() {
        [] => MatchOutcome::NameMismatch,
        [member] => {
            let reason = match member.status {
                MemberStatus::Active => {
                    return MatchOutcome::Matched {
                        member_id: member.member_id.clone(),
                    }
                }
                MemberStatus::Closed => AttentionReason::Closed,
                MemberStatus::Locked => AttentionReason::Locked,
                MemberStatus::Unverified => AttentionReason::Unverified,
            };
            MatchOutcome::NeedsAttention {
                member_id: Some(member.member_id.clone()),
                reason,
            }
        }
        several => match identity(request) {
            Identity::Loyalty(_) => MatchOutcome::DuplicateLoyaltyNumber {
                members: several.len(),
            },
            _ => MatchOutcome::NeedsAttention {
                member_id: None,
                reason: AttentionReason::Ambiguous,
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::WireConnectionRequest;
    use proptest::prelude::*;

    fn request(
        loyalty: Option<&str>,
        first: Option<&str>,
        last: Option<&str>,
        emails: &[&str],
    ) -> ConnectionRequest {
        let mut wire_emails: [Option<String>; 5] = Default::default();
        for (slot, email) in wire_emails.iter_mut().zip(emails) {
            *slot = Some((*email).to_owned());
        }
        ConnectionRequest::from_wire(WireConnectionRequest {
            id: Some("r1".into()),
            loyalty_number: loyalty.map(str::to_owned),
            first_name: first.map(str::to_owned),
            last_name: last.map(str::to_owned),
            emails: wire_emails,
            ..Default::default()
        })
        .unwrap()
    }

    fn member(
        id: &str,
        loyalty: Option<&str>,
        first: Option<&str>,
        last: &str,
        emails: &[&str],
        status: MemberStatus,
    ) -> Member {
        Member {
            member_id: id.into(),
            loyalty_number: loyalty.map(str::to_owned),
            first_name: first.map(str::to_owned),
            last_name: last.into(),
            emails: emails.iter().map(|e| (*e).to_owned()).collect(),
            status,
        }
    }

    fn matched(id: &str) -> MatchOutcome {
        MatchOutcome::Matched {
            member_id: id.into(),
        }
    }

    fn attention(id: Option<&str>, reason: AttentionReason) -> MatchOutcome {
        MatchOutcome::NeedsAttention {
            member_id: id.map(str::to_owned),
            reason,
        }
    }

    use MemberStatus::{Active, Closed, Locked, Unverified};

    /// Loyalty-number cases: (case, request last name, member last name, status, expected).
    #[test]
    fn loyalty_number_and_last_name_table() {
        let cases: &[(&str, &str, &str, MemberStatus, MatchOutcome)] = &[
            ("plain", "Lindqvist", "Lindqvist", Active, matched("M1")),
            (
                "accent-in-member",
                "Muller",
                "Müller",
                Active,
                matched("M1"),
            ),
            (
                "accent-in-concur",
                "Müller",
                "Muller",
                Active,
                matched("M1"),
            ),
            (
                "accent Lefèvre",
                "Lefevre",
                "Lefèvre",
                Active,
                matched("M1"),
            ),
            (
                "accent Jónsson",
                "Jonsson",
                "Jónsson",
                Active,
                matched("M1"),
            ),
            ("accent Núñez", "Nunez", "Núñez", Active, matched("M1")),
            ("accent Côté", "Cote", "Côté", Active, matched("M1")),
            ("accent Dvořák", "Dvorak", "Dvořák", Active, matched("M1")),
            ("accent Çelik", "Celik", "Çelik", Active, matched("M1")),
            (
                "hyphenated",
                "García-López",
                "Garcia Lopez",
                Active,
                matched("M1"),
            ),
            (
                "hyphenated 2",
                "Smith-Jones",
                "Smith Jones",
                Active,
                matched("M1"),
            ),
            (
                "hyphenated 3",
                "Lloyd Webber",
                "Lloyd-Webber",
                Active,
                matched("M1"),
            ),
            (
                "compound",
                "van der Berg",
                "Van Der Berg",
                Active,
                matched("M1"),
            ),
            (
                "compound 2",
                "de la Cruz",
                "De La Cruz",
                Active,
                matched("M1"),
            ),
            (
                "compound 3",
                "Mac Donald",
                "MacDonald",
                Active,
                matched("M1"),
            ),
            ("apostrophe", "O'Brien", "OBrien", Active, matched("M1")),
            (
                "apostrophe typographic",
                "O’Connor",
                "O'Connor",
                Active,
                matched("M1"),
            ),
            (
                "apostrophe modifier",
                "Oʼ Neill",
                "O‘Neill",
                Active,
                matched("M1"),
            ),
            ("dotted", "St. John", "St John", Active, matched("M1")),
            (
                "en dash",
                "Smith–Jones",
                "Smith—Jones",
                Active,
                matched("M1"),
            ),
            ("eszett", "Strauß", "STRAUSS", Active, matched("M1")),
            ("capital eszett", "STRAUẞ", "Strauss", Active, matched("M1")),
            (
                "ø æ",
                "Søren Bækgaard",
                "Soren Baekgaard",
                Active,
                matched("M1"),
            ),
            ("ł", "Łukasz", "Lukasz", Active, matched("M1")),
            (
                "đ ð",
                "Đorđević Guðmundsdóttir",
                "Dordevic Gudmundsdottir",
                Active,
                matched("M1"),
            ),
            (
                "þ œ",
                "Þórsdóttir Œuvre",
                "Thorsdottir Oeuvre",
                Active,
                matched("M1"),
            ),
            ("dotless i", "Yılmaz", "YILMAZ", Active, matched("M1")),
            ("full width", "Ｍüller", "muller", Active, matched("M1")),
            (
                "name-mismatch",
                "Schmidt",
                "Schmitt",
                Active,
                MatchOutcome::NameMismatch,
            ),
            (
                "closed",
                "Lindqvist",
                "Lindqvist",
                Closed,
                attention(Some("M1"), AttentionReason::Closed),
            ),
            (
                "locked",
                "Lindqvist",
                "Lindqvist",
                Locked,
                attention(Some("M1"), AttentionReason::Locked),
            ),
            (
                "unverified",
                "Lindqvist",
                "Lindqvist",
                Unverified,
                attention(Some("M1"), AttentionReason::Unverified),
            ),
            (
                "mismatch before status",
                "Schmidt",
                "Schmitt",
                Closed,
                MatchOutcome::NameMismatch,
            ),
        ];
        let policy = MatchPolicy::default();
        for (case, concur, supplier, status, expected) in cases {
            let request = request(Some("5314636889"), Some("Grace"), Some(concur), &[]);
            let members = [member(
                "M1",
                Some("5314636889"),
                Some("Grace"),
                supplier,
                &[],
                *status,
            )];
            assert_eq!(
                &decide(&request, &members, &[], &policy),
                expected,
                "case {case}: {concur:?} vs {supplier:?}"
            );
        }
    }

    #[test]
    fn unknown_number_is_not_found_and_never_falls_back_to_emails() {
        let request = request(Some("999"), None, Some("Smith"), &["a@example.com"]);
        let by_email = [member(
            "M1",
            None,
            None,
            "Smith",
            &["a@example.com"],
            Active,
        )];
        assert_eq!(
            decide(&request, &[], &by_email, &MatchPolicy::default()),
            MatchOutcome::NotFound
        );
    }

    #[test]
    fn loyalty_numbers_compare_by_key() {
        let request = request(Some(" 0012-345 ab "), None, Some("Smith"), &[]);
        let members = [member("M1", Some("0012345AB"), None, "Smith", &[], Active)];
        assert_eq!(
            decide(&request, &members, &[], &MatchPolicy::default()),
            matched("M1")
        );
        // A member that does not carry the key (a loose directory) is ignored.
        let other = [member("M2", Some("12345AB"), None, "Smith", &[], Active)];
        assert_eq!(
            decide(&request, &other, &[], &MatchPolicy::default()),
            MatchOutcome::NotFound
        );
    }

    #[test]
    fn first_names_are_unused_unless_the_policy_says_so() {
        let request = request(Some("42"), Some("Bob"), Some("Smith"), &[]);
        let members = [member(
            "M1",
            Some("42"),
            Some("Robert"),
            "Smith",
            &[],
            Active,
        )];
        assert_eq!(
            decide(&request, &members, &[], &MatchPolicy::default()),
            matched("M1")
        );
        let strict = MatchPolicy {
            compare_first_name: true,
        };
        assert_eq!(
            decide(&request, &members, &[], &strict),
            MatchOutcome::NameMismatch
        );
        let same = [member("M1", Some("42"), Some("BOB"), "Smith", &[], Active)];
        assert_eq!(decide(&request, &same, &[], &strict), matched("M1"));
        let missing = [member("M1", Some("42"), None, "Smith", &[], Active)];
        assert_eq!(
            decide(&request, &missing, &[], &strict),
            MatchOutcome::NameMismatch
        );
    }

    #[test]
    fn email_only_matches_any_of_the_members_addresses_case_insensitively() {
        let policy = MatchPolicy::default();
        // email-only: the member holds the user's first e-mail, upper-cased.
        let request1 = request(None, None, Some("Núñez"), &["ana.nunez@mail.example"]);
        let member1 = member(
            "M1",
            None,
            None,
            "Nunez",
            &["ANA.NUNEZ@MAIL.EXAMPLE"],
            Active,
        );
        assert_eq!(decide(&request1, &[], &[member1], &policy), matched("M1"));
        // email-only-other-address: the user's third e-mail is the member's second one,
        // and the member's third e-mail matches another request.
        let request3 = request(
            None,
            None,
            Some("Okafor"),
            &["a@mail.example", "b@mail.example", "c@mail.example"],
        );
        let member3 = member(
            "M3",
            None,
            None,
            "Okafor",
            &["unrelated@else.example", "C@MAIL.EXAMPLE"],
            Active,
        );
        assert_eq!(decide(&request3, &[], &[member3], &policy), matched("M3"));
        let third = member(
            "M4",
            None,
            None,
            "Okafor",
            &["x@else.example", "y@else.example", " B@Mail.Example "],
            Active,
        );
        assert_eq!(decide(&request3, &[], &[third], &policy), matched("M4"));
    }

    #[test]
    fn email_only_rules() {
        let policy = MatchPolicy::default();
        let request = request(
            None,
            None,
            Some("Smith"),
            &["a@example.com", "b@example.com"],
        );
        assert_eq!(decide(&request, &[], &[], &policy), MatchOutcome::NotFound);
        let jones = member("M1", None, None, "Jones", &["a@example.com"], Active);
        assert_eq!(
            decide(&request, &[], std::slice::from_ref(&jones), &policy),
            MatchOutcome::NameMismatch
        );
        let locked = member("M2", None, None, "Smith", &["b@example.com"], Locked);
        assert_eq!(
            decide(&request, &[], &[jones, locked.clone()], &policy),
            attention(Some("M2"), AttentionReason::Locked)
        );
        // The same member found through both addresses is one candidate.
        let both = member(
            "M3",
            None,
            None,
            "Smith",
            &["a@example.com", "b@example.com"],
            Active,
        );
        assert_eq!(
            decide(&request, &[], &[both.clone(), both.clone()], &policy),
            matched("M3")
        );
        // Two different members with the same last name: ambiguous.
        assert_eq!(
            decide(&request, &[], &[both, locked], &policy),
            attention(None, AttentionReason::Ambiguous)
        );
        // A member that holds none of the request's addresses is ignored.
        let stranger = member("M9", None, None, "Smith", &["z@example.com"], Active);
        assert_eq!(
            decide(&request, &[], &[stranger], &policy),
            MatchOutcome::NotFound
        );
    }

    #[test]
    fn ambiguous_loyalty_number() {
        let request = request(Some("42"), None, Some("Smith"), &[]);
        let members = [
            member("M1", Some("42"), None, "Smith", &[], Active),
            member("M2", Some("4-2"), None, "SMITH", &[], Active),
        ];
        // Two records of one loyalty number: the supplier's data, not the traveller's.
        assert_eq!(
            decide(&request, &members, &[], &MatchPolicy::default()),
            MatchOutcome::DuplicateLoyaltyNumber { members: 2 }
        );
        // Still a duplicate when only one of them is active.
        let mixed = [
            member("M1", Some("42"), None, "Smith", &[], Active),
            member("M2", Some("42"), None, "Smith", &[], Closed),
        ];
        assert_eq!(
            decide(&request, &mixed, &[], &MatchPolicy::default()),
            MatchOutcome::DuplicateLoyaltyNumber { members: 2 }
        );
        // Only one of the two has the name: no ambiguity.
        let members = [
            member("M1", Some("42"), None, "Smith", &[], Active),
            member("M2", Some("42"), None, "Jones", &[], Active),
        ];
        assert_eq!(
            decide(&request, &members, &[], &MatchPolicy::default()),
            matched("M1")
        );
        // The same member twice is not ambiguous.
        let twice = [members[0].clone(), members[0].clone()];
        assert_eq!(
            decide(&request, &twice, &[], &MatchPolicy::default()),
            matched("M1")
        );
    }

    #[test]
    fn no_number_and_no_email_is_not_found() {
        let members = [member(
            "M1",
            Some("42"),
            None,
            "Smith",
            &["a@example.com"],
            Active,
        )];
        let request = request(None, None, Some("Smith"), &[]);
        assert_eq!(
            decide(&request, &members, &members, &MatchPolicy::default()),
            MatchOutcome::NotFound
        );
        // A number with nothing left after the key rules counts as absent.
        let dashes = self::request(Some("- -"), None, Some("Smith"), &["a@example.com"]);
        assert_eq!(
            identity(&dashes),
            Identity::Emails(vec!["a@example.com".into()])
        );
        assert_eq!(
            decide(&dashes, &[], &members, &MatchPolicy::default()),
            matched("M1")
        );
    }

    #[test]
    fn no_last_name_is_a_name_mismatch_when_there_are_candidates() {
        let members = [member(
            "M1",
            Some("42"),
            None,
            "Smith",
            &["a@example.com"],
            Active,
        )];
        let policy = MatchPolicy::default();
        assert_eq!(
            decide(
                &request(Some("42"), None, None, &[]),
                &members,
                &[],
                &policy
            ),
            MatchOutcome::NameMismatch
        );
        assert_eq!(
            decide(
                &request(Some("42"), None, Some(" . "), &[]),
                &members,
                &[],
                &policy
            ),
            MatchOutcome::NameMismatch
        );
        assert_eq!(
            decide(
                &request(None, None, None, &["a@example.com"]),
                &[],
                &members,
                &policy
            ),
            MatchOutcome::NameMismatch
        );
        assert_eq!(
            decide(&request(Some("43"), None, None, &[]), &[], &[], &policy),
            MatchOutcome::NotFound
        );
        // A member whose last name normalises to nothing matches nobody.
        let blank = [member("M1", Some("42"), None, "-", &[], Active)];
        assert_eq!(
            decide(
                &request(Some("42"), None, Some("-"), &[]),
                &blank,
                &[],
                &policy
            ),
            MatchOutcome::NameMismatch
        );
    }

    #[test]
    fn normalised_forms() {
        for (input, expected) in [
            ("Müller", "muller"),
            ("García-López", "garcialopez"),
            ("van der Berg", "vanderberg"),
            ("O’Connor", "oconnor"),
            ("St. John", "stjohn"),
            ("Strauß", "strauss"),
            ("ÆRØ", "aero"),
            ("Þór", "thor"),
            ("İstanbul", "istanbul"),
            ("ΣΟΦΟΣ", "σοφοσ"),
            ("σοφος", "σοφοσ"),
            ("ﬁsh\u{00A0}and\tchips", "fishandchips"),
            ("`Abd-al ʼAziz", "abdalaziz"),
            ("", ""),
        ] {
            assert_eq!(normalize_name(input), expected, "{input:?}");
        }
    }

    #[test]
    fn loyalty_keys() {
        assert_eq!(loyalty_key(" 0012-345 ab "), "0012345AB");
        assert_eq!(loyalty_key("12\u{2011}34\u{00A0}56"), "123456");
        assert_eq!(loyalty_key("--"), "");
    }

    #[test]
    fn member_json_is_the_sandbox_format_and_debug_masks_it() {
        let m: Member = serde_json::from_str(
            r#"{"memberId":"M000001","loyaltyNumber":null,"firstName":"Grace","lastName":"Lindqvist",
                "emails":["grace.lindqvist1@mail.example"],"status":"active","expected":"CRSUC",
                "concurUserId":"d13451de","case":"plain"}"#,
        )
        .unwrap();
        assert_eq!(m.loyalty_number, None);
        assert_eq!(m.status, Active);
        let minimal: Member =
            serde_json::from_str(r#"{"memberId":"M2","lastName":"X","status":"locked"}"#).unwrap();
        assert!(minimal.emails.is_empty());
        assert!(serde_json::from_str::<Member>(
            r#"{"memberId":"M2","lastName":"X","status":"gone"}"#
        )
        .is_err());
        let with_number = Member {
            loyalty_number: Some("5314636889".into()),
            ..m
        };
        let shown = format!("{with_number:?}");
        for secret in [
            "Grace",
            "Lindqvist",
            "5314636889",
            "grace.lindqvist1",
            "mail.example",
        ] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(shown.contains("M000001"));
    }

    /// The normaliser works character by character (see the module documentation), so
    /// checking every scalar value proves idempotence for every string.
    #[test]
    fn idempotent_for_every_character() {
        let mut buffer = [0u8; 4];
        for c in (0..=0x10FFFFu32).filter_map(char::from_u32) {
            let once = normalize_name(c.encode_utf8(&mut buffer));
            assert_eq!(normalize_name(&once), once, "U+{:04X}", c as u32);
        }
    }

    /// Per character for every scalar value, hence for every string (see the module docs).
    #[test]
    fn case_insensitive_for_every_character() {
        let mut buffer = [0u8; 4];
        for c in (0..=0x10FFFFu32).filter_map(char::from_u32) {
            let s = c.encode_utf8(&mut buffer);
            assert_eq!(
                normalize_name(&s.to_uppercase()),
                normalize_name(&s.to_lowercase()),
                "U+{:04X}",
                c as u32
            );
        }
    }

    const SEPARATORS: [&str; 14] = [
        " ", "\u{00A0}", "\t", "-", "\u{2010}", "\u{2011}", "\u{2013}", "\u{2014}", "'",
        "\u{2019}", "\u{02BC}", "\u{2018}", "`", ".",
    ];

    proptest! {
        #[test]
        fn never_panics_and_is_idempotent(s in any::<String>()) {
            let once = normalize_name(&s);
            prop_assert_eq!(normalize_name(&once), once);
        }

        /// Arbitrary Unicode, up to far past the cap: no panic, idempotent, bounded, and
        /// the cut keeps a prefix of what an uncut normaliser would give.
        #[test]
        fn long_names_are_bounded_and_stay_idempotent(
            s in "\\PC{0,64}",
            repeat in 1usize..40,
        ) {
            let long = s.repeat(repeat);
            let once = normalize_name(&long);
            prop_assert!(once.chars().count() <= MAX_NAME_CHARS);
            prop_assert_eq!(normalize_name(&once), once.clone());
            let short = normalize_name(&s);
            prop_assert!(short.repeat(repeat).starts_with(&once));
        }

        #[test]
        fn case_insensitive(s in any::<String>()) {
            prop_assert_eq!(normalize_name(&s.to_uppercase()), normalize_name(&s.to_lowercase()));
        }

        #[test]
        fn accent_insensitive(
            base in "[A-Za-z]{0,16}",
            // The combining diacritical marks block, except the iota subscript U+0345,
            // which case folding reads as the letter ι.
            marks in proptest::collection::vec(
                (0usize..17, (0x0300u32..0x0370).prop_filter("iota subscript", |&m| m != 0x0345)),
                0..8,
            ),
        ) {
            let mut chars: Vec<char> = base.chars().collect();
            for (at, mark) in marks {
                let mark = char::from_u32(mark).unwrap_or('\u{0301}');
                chars.insert(at.min(chars.len()), mark);
            }
            let accented: String = chars.into_iter().collect();
            prop_assert_eq!(normalize_name(&accented), normalize_name(&base));
        }

        #[test]
        fn separators_are_ignored(
            base in "\\PC{0,16}",
            inserts in proptest::collection::vec((0usize..17, 0usize..SEPARATORS.len()), 0..8),
        ) {
            let mut chars: Vec<String> = base.chars().map(String::from).collect();
            for (at, which) in inserts {
                chars.insert(at.min(chars.len()), SEPARATORS[which].to_owned());
            }
            let separated: String = chars.concat();
            prop_assert_eq!(normalize_name(&separated), normalize_name(&base));
        }
    }
}
