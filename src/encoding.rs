//! Encodings with no secrets of their own: base64 (HTTP Basic, JWT segments),
//! `application/x-www-form-urlencoded` bodies, query components and hex digits; and the
//! 64-bit FNV-1a hash tokengate keeps of bytes it only compares for equality.

/// 64-bit FNV-1a of `bytes`: cheap, not cryptographic. For values compared only for equality
/// among a few (a token file's revision, the fingerprints of a client's spent refresh tokens).
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const B64URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Standard base64 with padding (RFC 4648 §4), as HTTP Basic authentication needs.
pub(crate) fn base64_encode(input: &[u8]) -> String {
    encode(input, B64, true)
}

/// Unpadded base64url (RFC 4648 §5), as PKCE's `code_challenge` (RFC 7636 §4.2) needs.
pub(crate) fn base64url_encode(input: &[u8]) -> String {
    encode(input, B64URL, false)
}

fn encode(input: &[u8], alphabet: &[u8; 64], pad: bool) -> String {
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let sextets = [(n >> 18) & 63, (n >> 12) & 63, (n >> 6) & 63, n & 63];
        for (i, s) in sextets.iter().enumerate() {
            if i <= chunk.len() {
                out.push(alphabet[*s as usize] as char);
            } else if pad {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes unpadded (or padded) base64url (RFC 4648 §5), as JWT segments use.
/// Returns `None` on any character outside the alphabet or an impossible length.
pub(crate) fn base64url_decode(input: &str) -> Option<Vec<u8>> {
    decode(input, B64URL)
}

/// Decodes padded (or unpadded) standard base64 (RFC 4648 §4), as HTTP Basic credentials
/// arrive. Returns `None` on any character outside the alphabet or an impossible length.
#[cfg(feature = "testing")]
pub(crate) fn base64_decode(input: &str) -> Option<Vec<u8>> {
    decode(input, B64)
}

fn decode(input: &str, alphabet: &[u8; 64]) -> Option<Vec<u8>> {
    let input = input.trim_end_matches('=');
    if input.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(input.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0u32;
    for c in input.bytes() {
        let v = alphabet.iter().position(|&a| a == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// Parses an `application/x-www-form-urlencoded` body (or a query) into its pairs, in order:
/// `+` is a space, `%XX` a byte, anything else itself; a bad escape is kept as written.
/// Names and values that are not UTF-8 are decoded lossily.
pub(crate) fn form_decode(input: &[u8]) -> Vec<(String, String)> {
    input
        .split(|&b| b == b'&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let mut kv = pair.splitn(2, |&b| b == b'=');
            let k = kv.next().unwrap_or_default();
            let v = kv.next().unwrap_or_default();
            (form_component(k), form_component(v))
        })
        .collect()
}

/// One `application/x-www-form-urlencoded` name or value, decoded: `+` is a space, `%XX` a
/// byte, a bad escape kept as written; not UTF-8 is decoded lossily.
pub(crate) fn form_component(s: &[u8]) -> String {
    let hex = |b: Option<&u8>| b.and_then(|&b| char::from(b).to_digit(16));
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match (s[i], hex(s.get(i + 1)), hex(s.get(i + 2))) {
            (b'+', _, _) => out.push(b' '),
            (b'%', Some(hi), Some(lo)) => {
                out.push((hi * 16 + lo) as u8);
                i += 2;
            }
            (b, _, _) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `application/x-www-form-urlencoded` byte serializer (WHATWG URL §5.2):
/// alphanumerics and `*-._` stay, space becomes `+`, everything else is `%XX`.
pub(crate) fn form_encode_into(out: &mut String, s: &str) {
    for &b in s.as_bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => push_pct(out, b),
        }
    }
}

/// Percent-encodes a query component: unreserved characters (RFC 3986 §2.3) stay.
pub(crate) fn query_encode_into(out: &mut String, s: &str) {
    for &b in s.as_bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(b as char)
            }
            _ => push_pct(out, b),
        }
    }
}

fn push_pct(out: &mut String, b: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.push('%');
    out.push(HEX[usize::from(b >> 4)] as char);
    out.push(HEX[usize::from(b & 15)] as char);
}

/// Serializes pairs as an `application/x-www-form-urlencoded` body.
pub(crate) fn form_body<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut out = String::new();
    for (k, v) in pairs {
        if !out.is_empty() {
            out.push('&');
        }
        form_encode_into(&mut out, k);
        out.push('=');
        form_encode_into(&mut out, v);
    }
    out
}

/// `bytes` as lowercase hex digits.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(feature = "testing")]
    #[test]
    fn decoders_invert_encoders() {
        for input in [
            &b""[..],
            b"f",
            b"fo",
            b"foo",
            b"foob",
            b"fooba",
            b"foobar",
            b"\xff\xfe?>",
        ] {
            assert_eq!(base64_decode(&base64_encode(input)).as_deref(), Some(input));
            assert_eq!(
                base64url_decode(&base64url_encode(input)).as_deref(),
                Some(input)
            );
        }
        assert_eq!(base64url_encode(b"\xfb\xff"), "-_8");
        assert_eq!(base64_decode("a*=="), None);
        let pairs = form_decode(b"a=1+2&b=%41%zz%4&&c&d=%E2%82%AC");
        let want = [("a", "1 2"), ("b", "A%zz%4"), ("c", ""), ("d", "\u{20ac}")];
        assert_eq!(pairs.len(), want.len());
        for ((k, v), (wk, wv)) in pairs.iter().zip(want) {
            assert_eq!((k.as_str(), v.as_str()), (wk, wv));
        }
        let body = form_body([("x y", "a&b=c+%")]);
        assert_eq!(
            form_decode(body.as_bytes()),
            [("x y".to_owned(), "a&b=c+%".to_owned())]
        );
    }

    #[test]
    fn base64_matches_rfc4648_vectors() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, enc) in cases {
            assert_eq!(base64_encode(plain.as_bytes()), enc);
            assert_eq!(base64url_decode(enc).unwrap(), plain.as_bytes());
        }
        assert_eq!(base64url_decode("-_8"), Some(vec![0xfb, 0xff]));
        assert_eq!(base64url_decode("a"), None);
        assert_eq!(base64url_decode("a+b/"), None);
    }

    #[test]
    fn fnv1a_matches_the_reference_vectors() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn form_encoding_follows_whatwg() {
        assert_eq!(
            form_body([("a b", "x&y=z"), ("k", "é~*")]),
            "a+b=x%26y%3Dz&k=%C3%A9%7E*"
        );
    }
}
