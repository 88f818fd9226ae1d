//! The record format both shared stores write: one JSON object, versioned. `FileStore` keeps
//! it as its token file (see [`FileStore`](super::FileStore) for the format), `RedisStore`
//! in its record's `tokens` field.

use std::fmt;
use std::io;
use std::time::SystemTime;

use crate::timing::{from_unix_ms, unix_ms_of};
use crate::tokens::{Lineage, TokenType, Tokens};

/// The version of the record format this tokengate writes, and the only one it reads.
pub(in crate::store) const FORMAT_VERSION: u64 = 1;

/// Largest record read (a token file, a Redis record's `tokens` field). Three 16 KiB tokens
/// (access, refresh, ID) and a scope fit several times over; anything bigger is not a token
/// record.
pub(in crate::store) const MAX_RECORD_LEN: u64 = 256 * 1024;

/// One token set as a record holds it. No `Debug`: it holds secrets.
#[derive(Clone, PartialEq, Eq)]
pub(in crate::store) struct Record {
    access_token: String,
    /// Optional in what is read: a record written before it was kept is Bearer.
    token_type: TokenType,
    refresh_token: Option<String>,
    expires_at_unix_ms: Option<u64>,
    issued_at_unix_ms: Option<u64>,
    scope: Option<String>,
    /// Optional: a record written before it was kept has none.
    id_token: Option<String>,
    lineage: Option<Lineage>,
}

/// The record's JSON, as written.
#[derive(serde::Serialize)]
struct RecordV1<'a> {
    version: u64,
    access_token: &'a str,
    token_type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at_unix_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    issued_at_unix_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    id_token: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    lineage: Option<String>,
}

impl Record {
    pub(in crate::store) fn from_tokens(tokens: &Tokens) -> io::Result<Record> {
        tokens.validate().map_err(|which| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("cannot store an invalid {which}: tokens must be 1 to 16384 bytes of visible ASCII"),
            )
        })?;
        let (expires_at, issued_at) = tokens.absolute_times(SystemTime::now());
        Ok(Record {
            access_token: tokens.access_token().secret().to_owned(),
            token_type: tokens.kind(),
            refresh_token: tokens.refresh_token().map(|r| r.secret().to_owned()),
            expires_at_unix_ms: expires_at.map(unix_ms_of),
            issued_at_unix_ms: issued_at.map(unix_ms_of),
            scope: tokens.scope().map(str::to_owned),
            id_token: tokens.id_token().map(|i| i.secret().to_owned()),
            lineage: tokens.lineage(),
        })
    }

    pub(in crate::store) fn to_tokens(&self) -> Tokens {
        let mut t = Tokens::new(self.access_token.clone()).with_token_type(self.token_type);
        if let Some(r) = &self.refresh_token {
            t = t.with_refresh_token(r.clone());
        }
        if let Some(at) = self.expires_at_unix_ms.and_then(from_unix_ms) {
            t = t.with_expires_at(at);
        }
        if let Some(at) = self.issued_at_unix_ms.and_then(from_unix_ms) {
            t = t.with_issued_at(at);
        }
        if let Some(s) = &self.scope {
            t = t.with_scope(s.clone());
        }
        if let Some(i) = &self.id_token {
            t = t.with_id_token(i.clone());
        }
        if let Some(l) = self.lineage {
            t = t.with_lineage(l);
        }
        t
    }

    pub(in crate::store) fn to_json(&self) -> Vec<u8> {
        let file = RecordV1 {
            version: FORMAT_VERSION,
            access_token: &self.access_token,
            token_type: self.token_type.as_str(),
            refresh_token: self.refresh_token.as_deref(),
            expires_at_unix_ms: self.expires_at_unix_ms,
            issued_at_unix_ms: self.issued_at_unix_ms,
            scope: self.scope.as_deref(),
            id_token: self.id_token.as_deref(),
            lineage: self.lineage.map(|l| l.to_hex()),
        };
        let mut bytes = serde_json::to_vec_pretty(&file).expect("strings and integers serialize");
        bytes.push(b'\n');
        bytes
    }
}

/// Parses a token file's bytes (or a Redis record's `tokens` field); `source` names it in
/// errors ("token file /path"). Error messages never quote the content.
pub(in crate::store) fn parse(bytes: &[u8], source: &dyn fmt::Display) -> io::Result<Record> {
    let invalid =
        |what: String| io::Error::new(io::ErrorKind::InvalidData, format!("{source} {what}"));
    let obj = versioned_object(bytes, &invalid)?;
    let record = fields(&obj, &invalid)?;
    record.to_tokens().validate().map_err(|which| {
        invalid(format!(
            "holds an invalid {which} (empty, over 16384 bytes, or not visible ASCII)"
        ))
    })?;
    Ok(record)
}

/// The JSON object of a record of this format version (`invalid` makes the error).
fn versioned_object(
    bytes: &[u8],
    invalid: &dyn Fn(String) -> io::Error,
) -> io::Result<serde_json::Map<String, serde_json::Value>> {
    if bytes.len() as u64 > MAX_RECORD_LEN {
        return Err(invalid(format!(
            "is larger than {MAX_RECORD_LEN} bytes: not a token file"
        )));
    }
    // serde_json's own messages can quote a value (a token in the wrong field): only its
    // position is used.
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| {
        let what = if e.is_eof() {
            "ends early (empty or truncated)"
        } else {
            "is not valid JSON"
        };
        invalid(format!(
            "{what} at line {}, column {}",
            e.line(),
            e.column()
        ))
    })?;
    let serde_json::Value::Object(obj) = value else {
        return Err(invalid("is not a JSON object".into()));
    };
    match obj.get("version").map(serde_json::Value::as_u64) {
        None => Err(invalid("has no \"version\" field".into())),
        Some(Some(FORMAT_VERSION)) => Ok(obj),
        Some(Some(n)) => Err(invalid(format!(
            "has format version {n}; this tokengate reads version {FORMAT_VERSION}"
        ))),
        Some(None) => Err(invalid(
            "has a \"version\" that is not a whole number".into(),
        )),
    }
}

/// The record's fields, each of its type (`invalid` makes the error).
fn fields(
    obj: &serde_json::Map<String, serde_json::Value>,
    invalid: &dyn Fn(String) -> io::Error,
) -> io::Result<Record> {
    let string = |name: &str| -> io::Result<Option<String>> {
        match obj.get(name) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(invalid(format!("has a \"{name}\" that is not a string"))),
        }
    };
    let millis = |name: &str| -> io::Result<Option<u64>> {
        match obj.get(name) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(v) => Some(
                v.as_u64()
                    .filter(|ms| from_unix_ms(*ms).is_some())
                    .ok_or_else(|| {
                        invalid(format!(
                            "has an \"{name}\" that is not a time in milliseconds"
                        ))
                    }),
            )
            .transpose(),
        }
    };
    let access_token =
        string("access_token")?.ok_or_else(|| invalid("has no \"access_token\"".into()))?;
    let token_type = match string("token_type")? {
        None => TokenType::Bearer,
        Some(t) => TokenType::parse(&t).ok_or_else(|| {
            invalid("has a \"token_type\" other than Bearer, the only type tokengate uses".into())
        })?,
    };
    Ok(Record {
        access_token,
        token_type,
        refresh_token: string("refresh_token")?,
        expires_at_unix_ms: millis("expires_at_unix_ms")?,
        issued_at_unix_ms: millis("issued_at_unix_ms")?,
        scope: string("scope")?,
        id_token: string("id_token")?,
        lineage: string("lineage")?
            .map(|l| {
                Lineage::parse(&l)
                    .ok_or_else(|| invalid("has a \"lineage\" that is not 16 hex digits".into()))
            })
            .transpose()?,
    })
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    #[test]
    fn issue_time_round_trips_and_files_without_it_still_read() {
        let issued = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let t = Tokens::new("a")
            .with_refresh_token("r")
            .with_expires_at(issued + Duration::from_secs(60))
            .with_issued_at(issued);
        let rec = Record::from_tokens(&t).unwrap();
        let back = parse(&rec.to_json(), &"token file t.json")
            .unwrap()
            .to_tokens();
        assert_eq!(back.issued_at(), Some(issued));
        assert_eq!(back.expires_at(), t.expires_at());

        // A file written by tokengate before issue times were stored.
        let old = br#"{"version":1,"access_token":"a","expires_at_unix_ms":1700000060123}"#;
        let back = parse(old, &"token file t.json").unwrap().to_tokens();
        assert_eq!(back.issued_at(), None);
        assert!(back.expires_at().is_some());
    }

    /// The token type is kept through the record (issue 24); a record without it (written by
    /// an earlier version) reads as Bearer, the spelling of the type does not matter, and a
    /// type tokengate cannot present is refused without quoting anything.
    #[test]
    fn the_token_type_round_trips_and_records_without_it_read_as_bearer() {
        let rec = Record::from_tokens(&Tokens::new("a")).unwrap();
        let json = String::from_utf8(rec.to_json()).unwrap();
        assert!(json.contains("\"token_type\": \"Bearer\""), "{json}");
        let back = parse(json.as_bytes(), &"token file t.json").unwrap();
        assert!(back == rec);
        assert_eq!(back.to_tokens().token_type(), "Bearer");

        for old in [
            &br#"{"version":1,"access_token":"a"}"#[..],
            br#"{"version":1,"access_token":"a","token_type":null}"#,
            br#"{"version":1,"access_token":"a","token_type":"bearer"}"#,
        ] {
            let back = parse(old, &"token file t.json").unwrap().to_tokens();
            assert_eq!(back.kind(), TokenType::Bearer);
        }

        for bad in [
            &br#"{"version":1,"access_token":"SECRET","token_type":"mac"}"#[..],
            br#"{"version":1,"access_token":"SECRET","token_type":7}"#,
        ] {
            let Err(e) = parse(bad, &"token file t.json") else {
                panic!("a token type tokengate cannot present was read");
            };
            let e = e.to_string();
            assert!(e.contains("\"token_type\""), "{e}");
            assert!(!e.contains("SECRET") && !e.contains("mac"), "{e}");
        }
    }

    /// The lineage is kept through the file (issue 23), and a file without it (written by an
    /// earlier version) reads as of no known lineage; an invalid one is refused.
    #[test]
    fn the_lineage_round_trips_and_files_without_it_still_read() {
        let t = Tokens::new("a")
            .with_refresh_token("r")
            .with_lineage(Lineage::parse("0123456789abcdef").unwrap());
        let rec = Record::from_tokens(&t).unwrap();
        let json = String::from_utf8(rec.to_json()).unwrap();
        assert!(json.contains("\"lineage\": \"0123456789abcdef\""), "{json}");
        let back = parse(json.as_bytes(), &"token file t.json")
            .unwrap()
            .to_tokens();
        assert_eq!(
            back.lineage().map(|l| l.to_hex()).as_deref(),
            Some("0123456789abcdef")
        );

        let old = br#"{"version":1,"access_token":"a"}"#;
        let back = parse(old, &"token file t.json").unwrap().to_tokens();
        assert_eq!(back.lineage(), None);

        let bad = br#"{"version":1,"access_token":"a","lineage":"has space"}"#;
        let Err(e) = parse(bad, &"token file t.json") else {
            panic!("an invalid lineage was read");
        };
        assert!(
            e.to_string()
                .contains("\"lineage\" that is not 16 hex digits"),
            "{e}"
        );
    }

    /// Issue 25: the ID token is kept through the record, a record without it (written by an
    /// earlier version) reads as without one, and one of ~4 KB (a large real one) fits well
    /// within the record size limit.
    #[test]
    fn the_id_token_round_trips_and_records_without_it_still_read() {
        let id_token = format!("eyJhbGciOiJSUzI1NiJ9.{}.sig", "p".repeat(4096));
        let t = Tokens::new("a")
            .with_refresh_token("r")
            .with_id_token(id_token.clone());
        let rec = Record::from_tokens(&t).unwrap();
        let json = rec.to_json();
        assert!((json.len() as u64) < MAX_RECORD_LEN / 32, "{}", json.len());
        let back = parse(&json, &"token file t.json").unwrap();
        assert!(back == rec);
        assert_eq!(
            back.to_tokens().id_token().map(|i| i.secret()),
            Some(id_token.as_str())
        );

        let old = br#"{"version":1,"access_token":"a","token_type":"Bearer","refresh_token":"r"}"#;
        let back = parse(old, &"token file t.json").unwrap().to_tokens();
        assert!(back.id_token().is_none());
        assert_eq!(back.refresh_token().unwrap().secret(), "r");

        for (bad, what) in [
            (
                &br#"{"version":1,"access_token":"a","id_token":"SECRET x"}"#[..],
                "invalid id token",
            ),
            (
                br#"{"version":1,"access_token":"a","id_token":["SECRET"]}"#,
                "\"id_token\" that is not a string",
            ),
        ] {
            let Err(e) = parse(bad, &"token file t.json") else {
                panic!("an invalid id_token was read");
            };
            let e = e.to_string();
            assert!(e.contains(what) && !e.contains("SECRET"), "{e}");
        }
    }
}
