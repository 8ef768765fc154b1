//! The vocabulary shared by the seed and the sandbox's state: the kinds of matching case a
//! seeded user exercises and the outcome expected for each seeded request (checked by
//! `GET /_sandbox/verify`). It depends on neither: the seed ([`crate::seed`]) builds
//! users into the state ([`crate::state`]), and the state keeps these expectations.

use serde::Serialize;

/// The kind of case a seeded user exercises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Case {
    /// Concur has the plain spelling, the member the accented one (Muller / Müller).
    AccentInMember,
    /// Concur has the accented spelling, the member the plain one.
    AccentInConcur,
    /// García-López / Garcia Lopez.
    Hyphenated,
    /// van der Berg / Van Der Berg.
    Compound,
    /// O'Brien / OBrien, O’Connor / O'Connor.
    Apostrophe,
    /// St. John / St John.
    Dotted,
    /// Concur "Bob", member "Robert": matches, first names are not compared.
    Nickname,
    /// No loyalty number; the member is found by the user's first verified e-mail (other case).
    EmailOnly,
    /// No loyalty number; the member holds only the user's third verified e-mail.
    EmailOnlyOtherAddress,
    /// A loyalty number the supplier does not know: CREU1.
    UnknownNumber,
    /// Known number, different last name: CREU2.
    NameMismatch,
    /// Member closed: CREU3.
    Closed,
    /// Member locked: CREU3.
    Locked,
    /// Member unverified: CREU3.
    Unverified,
    /// An ordinary match.
    Plain,
}

/// Fixed mix for every 20 users: the 14 hard cases first (so any N >= 14 has
/// them all), then 6 plain ones.
pub const CYCLE: [Case; 20] = [
    Case::AccentInMember,
    Case::AccentInConcur,
    Case::Hyphenated,
    Case::Compound,
    Case::Apostrophe,
    Case::Dotted,
    Case::Nickname,
    Case::EmailOnly,
    Case::EmailOnlyOtherAddress,
    Case::UnknownNumber,
    Case::NameMismatch,
    Case::Closed,
    Case::Locked,
    Case::Unverified,
    Case::Plain,
    Case::Plain,
    Case::Plain,
    Case::Plain,
    Case::Plain,
    Case::Plain,
];

/// The expected outcome of one seeded request.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Expectation {
    pub request_id: String,
    pub user_id: String,
    pub login_id: String,
    pub case: Case,
    pub expected: String,
    /// The member it should match (or that has its number), if any.
    pub member_id: Option<String>,
}
