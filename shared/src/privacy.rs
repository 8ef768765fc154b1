//! Masking of personal data and secrets for logs.
//!
//! The rule, for every log line the connector writes: tokens and secrets are never shown
//! (they are `secrecy::SecretString` and print as `[REDACTED]`); names show their first
//! letter only; loyalty numbers show their last two characters; e-mail addresses show the
//! first letter of the local part and the top-level domain. Identifiers that carry no
//! personal data (Concur request ids, user ids, correlation ids) are logged as they are.

use std::fmt;

/// A value that displays masked. Build one with [`name`], [`loyalty`] or [`email`].
#[derive(Clone, Copy)]
pub struct Masked<'a> {
    value: Option<&'a str>,
    kind: Kind,
}

#[derive(Clone, Copy)]
enum Kind {
    Name,
    Loyalty,
    Email,
}

/// A person's name: first letter, then `***`.
pub fn name(value: Option<&str>) -> Masked<'_> {
    Masked {
        value,
        kind: Kind::Name,
    }
}

/// A loyalty number: `***` then its last two characters (none if it is shorter than 6).
pub fn loyalty(value: Option<&str>) -> Masked<'_> {
    Masked {
        value,
        kind: Kind::Loyalty,
    }
}

/// An e-mail address: `j***@***.com`.
pub fn email(value: Option<&str>) -> Masked<'_> {
    Masked {
        value,
        kind: Kind::Email,
    }
}

impl fmt::Display for Masked<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(value) = self.value.map(str::trim).filter(|v| !v.is_empty()) else {
            return f.write_str("<none>");
        };
        match self.kind {
            Kind::Name => {
                let first = value.chars().next().unwrap_or('?');
                write!(f, "{first}***")
            }
            Kind::Loyalty => {
                let chars: Vec<char> = value.chars().collect();
                if chars.len() >= 6 {
                    let tail: String = chars[chars.len() - 2..].iter().collect();
                    write!(f, "***{tail}")
                } else {
                    f.write_str("***")
                }
            }
            Kind::Email => {
                let first = value.chars().next().unwrap_or('?');
                let tld = value
                    .rsplit_once('@')
                    .and_then(|(_, domain)| domain.rsplit_once('.'))
                    .map(|(_, tld)| tld)
                    .unwrap_or("");
                write!(f, "{first}***@***.{tld}")
            }
        }
    }
}

impl fmt::Debug for Masked<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_keep_only_the_first_letter() {
        assert_eq!(name(Some("Müller")).to_string(), "M***");
        assert_eq!(name(Some("  ")).to_string(), "<none>");
        assert_eq!(name(None).to_string(), "<none>");
    }

    #[test]
    fn loyalty_numbers_keep_the_last_two_characters_when_long_enough() {
        assert_eq!(loyalty(Some("23242526")).to_string(), "***26");
        assert_eq!(loyalty(Some("1234")).to_string(), "***");
    }

    #[test]
    fn emails_hide_local_part_and_domain() {
        let shown = email(Some("maria.smith@example.com")).to_string();
        assert_eq!(shown, "m***@***.com");
        assert!(!shown.contains("smith"));
        assert!(!shown.contains("example"));
    }
}
