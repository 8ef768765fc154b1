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

/// An error or diagnostic message without the input values it may quote.
///
/// serde, serde_json, serde_dynamo and quick-xml name the offending value in their
/// messages (`invalid type: string "Müller"`, `` integer `5314636889` ``, `` unknown
/// variant `Smith` ``, `` unrecognized entity `x` ``), and that value can be personal
/// data or a token. Double-quoted parts become `"…"`. Back-quoted parts are kept only
/// where they name the program's own vocabulary: a field (`` missing field `id` ``) or
/// the list of what was expected (`` expected one of `active`, `closed` ``), and only
/// when made of ASCII letters and underscores; every other back-quoted part becomes
/// `` `…` ``, and since such a value may hold back quotes of its own, everything up to
/// the message's last back quote goes with it. Line and column numbers and the error's
/// category are kept.
pub fn without_values(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(start) = rest.find(['"', '`']) {
        let quote = rest[start..].chars().next().unwrap_or('"');
        out.push_str(&rest[..=start]);
        let after = &rest[start + 1..];
        // Inside a debug-quoted string a quote may be escaped.
        let mut end = None;
        let mut escaped = false;
        for (i, c) in after.char_indices() {
            if escaped {
                escaped = false;
            } else if c == '\\' && quote == '"' {
                escaped = true;
            } else if c == quote {
                end = Some(i);
                break;
            }
        }
        let vocabulary = out.ends_with("field `") || out.contains("expected");
        // A back-quoted value is not escaped: it may hold back quotes of its own, so
        // where it ends is unknown. Unless it is a word of the vocabulary, it is taken to
        // run to the last back quote of the message (what follows that is the program's).
        if quote == '`' {
            let word = end.is_some_and(|end| {
                let inner = &after[..end];
                vocabulary
                    && !inner.is_empty()
                    && inner.chars().all(|c| c.is_ascii_alphabetic() || c == '_')
            });
            if !word {
                end = after.rfind('`');
            }
        }
        let Some(end) = end else {
            out.push('…');
            return out;
        };
        let inner = &after[..end];
        if quote == '`'
            && vocabulary
            && !inner.is_empty()
            && inner.chars().all(|c| c.is_ascii_alphabetic() || c == '_')
        {
            out.push_str(inner);
        } else {
            out.push('…');
        }
        out.push(quote);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}

/// A serde_json error for logs: its category (`syntax`, `data`, `eof`, `io`), line and
/// column, and serde's message without the values it quotes (see [`without_values`]).
pub fn json_error(error: &serde_json::Error) -> String {
    let category = match error.classify() {
        serde_json::error::Category::Io => "io",
        serde_json::error::Category::Syntax => "syntax",
        serde_json::error::Category::Data => "data",
        serde_json::error::Category::Eof => "eof",
    };
    format!("{category} error: {}", without_values(&error.to_string()))
}

/// A serde_dynamo error for logs: its message without the values it quotes (serde_dynamo
/// also writes `Failed to parse '<value>' as an integer`).
pub fn dynamo_error(error: &serde_dynamo::Error) -> String {
    let text = error.to_string();
    let text = match text.strip_prefix("Failed to parse '") {
        Some(rest) => match rest.rfind("' as ") {
            Some(end) => format!("Failed to parse '…'{}", &rest[end + 1..]),
            None => "Failed to parse '…'".to_owned(),
        },
        None => text,
    };
    without_values(&text)
}

/// An input value shown only when it looks like a code of the API: a status code (upper
/// case ASCII letters, digits and `_`, no run of five digits, as `CREU4`) or a date and
/// time (`2024-01-02T03:04:05`, digits and `-:.+TZ`), at most 40 characters. Anything
/// else (a name, a number, an address) is withheld and only its length is shown.
pub fn code(value: &str) -> Shown<'_> {
    Shown(value)
}

/// See [`code`].
#[derive(Clone, Copy)]
pub struct Shown<'a>(&'a str);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let value = self.0;
        let status_code = value
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
            && !value
                .as_bytes()
                .windows(5)
                .any(|w| w.iter().all(u8::is_ascii_digit));
        let date_time = value.len() >= 10
            && value.as_bytes()[..4].iter().all(u8::is_ascii_digit)
            && value.as_bytes()[4] == b'-'
            && value
                .chars()
                .all(|c| c.is_ascii_digit() || matches!(c, '-' | ':' | '.' | '+' | 'T' | 'Z'));
        if !value.is_empty() && value.len() <= 40 && (status_code || date_time) {
            write!(f, "{value:?}")
        } else {
            write!(f, "<{} characters withheld>", value.chars().count())
        }
    }
}

impl fmt::Debug for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Free text from a server (an error body's message, an OAuth `error_description`) for
/// logs: any word with an `@` is masked as an e-mail address, any run of five or more
/// digits as `***`, and the text is cut at 300 characters. Servers are not expected
/// to quote personal data; this keeps a log line safe when one does.
pub fn free_text(text: &str) -> String {
    const MAX: usize = 300;
    let mut out = String::with_capacity(text.len().min(MAX + 1));
    for (i, word) in text.split(' ').enumerate() {
        if i > 0 {
            out.push(' ');
        }
        if word.contains('@') {
            out.push_str(&email(Some(word)).to_string());
            continue;
        }
        let mut digits = String::new();
        for c in word.chars() {
            if c.is_ascii_digit() {
                digits.push(c);
                continue;
            }
            flush_digits(&mut out, &mut digits);
            out.push(c);
        }
        flush_digits(&mut out, &mut digits);
    }
    if out.chars().count() > MAX {
        out = out.chars().take(MAX).collect();
        out.push('…');
    }
    out
}

fn flush_digits(out: &mut String, digits: &mut String) {
    if digits.len() >= 5 {
        out.push_str("***");
    } else {
        out.push_str(digits);
    }
    digits.clear();
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

    #[test]
    fn messages_lose_the_values_they_quote() {
        for (message, expected) in [
            (
                r#"invalid type: string "Müller", expected a sequence at line 1 column 9"#,
                r#"invalid type: string "…", expected a sequence at line 1 column 9"#,
            ),
            (
                "invalid type: integer `5314636889`, expected a string",
                "invalid type: integer `…`, expected a string",
            ),
            (
                "missing field `last_name`; unknown variant `Smith`, expected one of `active`",
                "missing field `last_name`; unknown variant `…`",
            ),
            // A value holding back quotes of its own (quick-xml's mismatched end tag, or
            // serde's unknown variant) shows none of itself.
            (
                "ill-formed document: expected `</a>`, but `</b`maria`smith>` was found",
                "ill-formed document: expected `…` was found",
            ),
            (
                "unknown variant `x`, expected one of `MARIA`, expected one of `active`",
                "unknown variant `…`",
            ),
            (
                "at 3..9: unrecognized entity `maria`",
                "at 3..9: unrecognized entity `…`",
            ),
            (r#"a "quoted \" value" b"#, r#"a "…" b"#),
            (r#"unterminated "abc"#, r#"unterminated "…"#),
            ("no quotes", "no quotes"),
        ] {
            assert_eq!(without_values(message), expected, "{message}");
        }
    }

    #[test]
    fn json_errors_keep_category_and_position_but_not_the_value() {
        let error =
            serde_json::from_str::<Vec<u8>>(r#"{"email": "maria.smith@example.com"}"#).unwrap_err();
        assert!(error.to_string().contains("map"), "{error}");
        let error = serde_json::from_str::<Vec<String>>(r#"["a", 5314636889]"#).unwrap_err();
        assert!(
            error.to_string().contains("5314636889"),
            "serde quotes it: {error}"
        );
        let shown = json_error(&error);
        assert!(!shown.contains("5314636889"), "{shown}");
        assert!(shown.starts_with("data error: invalid type"), "{shown}");
        assert!(shown.contains("line 1 column"), "{shown}");
        let syntax = serde_json::from_str::<serde_json::Value>("{\"a\": maria@x.com}").unwrap_err();
        assert!(json_error(&syntax).starts_with("syntax error"), "{syntax}");
    }

    #[test]
    fn dynamo_errors_lose_the_number_they_could_not_parse() {
        let item: std::collections::HashMap<String, serde_dynamo::AttributeValue> = [(
            "n".to_owned(),
            serde_dynamo::AttributeValue::N("53146x36889".into()),
        )]
        .into();
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct Item {
            n: u64,
        }
        let error = serde_dynamo::from_item::<_, Item>(item).unwrap_err();
        assert!(error.to_string().contains("53146x36889"), "{error}");
        let shown = dynamo_error(&error);
        assert!(!shown.contains("53146"), "{shown}");
        assert!(shown.contains("as an integer"), "{shown}");
    }

    #[test]
    fn codes_show_only_when_they_look_like_codes() {
        assert_eq!(code("CREU4").to_string(), "\"CREU4\"");
        assert_eq!(
            code("2024-01-02T03:04:05").to_string(),
            "\"2024-01-02T03:04:05\""
        );
        assert_eq!(
            code("maria.smith@example.com").to_string(),
            "<23 characters withheld>"
        );
        assert!(!format!("{:?}", code("Müller")).contains("ller"));
        assert!(!code("Smith").to_string().contains("Smith"));
        assert!(!code("5314636889").to_string().contains("5314"));
        assert!(!code("CREU 5314636889").to_string().contains("5314"));
    }

    #[test]
    fn free_text_masks_emails_and_long_numbers() {
        let shown = free_text("user maria.smith@example.com with number 5314636889 has 3 errors");
        assert_eq!(shown, "user m***@***.com with number *** has 3 errors");
        assert!(free_text(&"x".repeat(1000)).chars().count() <= 301);
    }
}
