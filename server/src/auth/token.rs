//! Token and session secrets: how they look, how they are made, checked and stored.
//!
//! A token reads `plume_<kind>_<id>_<secret>_<checksum>`: the kind in clear (so a leaked token says
//! what it can do, and secret scanners can match each kind), a public 64-bit id (for logs, the audit
//! trail and revocation), 256 random bits of secret, and a CRC-32 of everything before it, so that a
//! mistyped or truncated token is refused without a database lookup. Only the SHA-256 of the secret
//! is stored; it is compared in constant time.

use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::Kind;

/// Every token starts with this.
pub const PREFIX: &str = "plume_";

/// A token parsed from its text: its kind, public id and the hash of its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedToken {
    /// The kind the token says it is (checked against its client's kind).
    pub kind: Kind,
    /// The public id: 16 lowercase hex digits.
    pub id: String,
    /// SHA-256 of the secret part.
    pub secret_sha256: [u8; 32],
}

/// A newly made token: its text (shown once) and what is stored of it.
#[derive(Debug)]
pub struct NewToken {
    /// The whole token, for the one who asked for it and nobody else.
    pub text: String,
    /// Its public id.
    pub id: String,
    /// SHA-256 of its secret.
    pub secret_sha256: [u8; 32],
}

impl NewToken {
    /// A fresh random token of `kind`.
    pub fn generate(kind: Kind) -> Self {
        let mut id = [0u8; 8];
        let mut secret = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut id);
        rand::rngs::OsRng.fill_bytes(&mut secret);
        let (id, secret) = (hex::encode(id), hex::encode(secret));
        Self {
            text: assemble(kind, &id, &secret),
            secret_sha256: sha256(secret.as_bytes()),
            id,
        }
    }
}

/// The text of a token of `kind` with this id and secret, checksum included.
pub fn assemble(kind: Kind, id: &str, secret: &str) -> String {
    let body = format!("{PREFIX}{}_{id}_{secret}", kind.as_str());
    let checksum = crc32(body.as_bytes());
    format!("{body}_{checksum:08x}")
}

/// Parses a token's text; `None` for anything that is not a well-formed token with a good checksum.
pub fn parse(text: &str) -> Option<ParsedToken> {
    if text.len() > 200 || !text.starts_with(PREFIX) {
        return None;
    }
    let (body, checksum) = text.rsplit_once('_')?;
    let checksum = u32::from_str_radix(checksum, 16)
        .ok()
        .filter(|_| checksum.len() == 8)?;
    if crc32(body.as_bytes()) != checksum {
        return None;
    }
    let mut parts = body[PREFIX.len()..].split('_');
    let kind = Kind::parse(parts.next()?)?;
    let id = parts.next().filter(|id| is_lower_hex(id, 16))?;
    let secret = parts.next().filter(|secret| is_lower_hex(secret, 64))?;
    if parts.next().is_some() {
        return None;
    }
    Some(ParsedToken {
        kind,
        id: id.to_owned(),
        secret_sha256: sha256(secret.as_bytes()),
    })
}

/// A fresh session id (the cookie's value) and its hash (what is stored).
pub fn new_session_id() -> (String, [u8; 32]) {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let id = hex::encode(bytes);
    let hash = sha256(id.as_bytes());
    (id, hash)
}

/// The stored form of a session cookie's value, if it is one plume could have issued.
pub fn session_hash(cookie: &str) -> Option<[u8; 32]> {
    is_lower_hex(cookie, 64).then(|| sha256(cookie.as_bytes()))
}

/// Whether two secret hashes are equal, in time that does not depend on where they differ.
pub fn same_secret(stored: &[u8], presented: &[u8; 32]) -> bool {
    stored.ct_eq(presented).into()
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

fn is_lower_hex(text: &str, len: usize) -> bool {
    text.len() == len
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// CRC-32 (IEEE), as zlib computes it.
fn crc32(bytes: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(bytes);
    hasher.finalize()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_token_parses_back_to_its_id_and_hash() {
        let token = NewToken::generate(Kind::Ingest);
        assert!(token.text.starts_with("plume_ingest_"));
        let parsed = parse(&token.text).expect("a generated token parses");
        assert_eq!(parsed.kind, Kind::Ingest);
        assert_eq!(parsed.id, token.id);
        assert!(same_secret(&token.secret_sha256, &parsed.secret_sha256));
    }

    #[test]
    fn any_changed_character_fails_the_checksum() {
        let token = NewToken::generate(Kind::Read).text;
        for at in PREFIX.len()..token.len() {
            let mut bytes = token.clone().into_bytes();
            bytes[at] = if bytes[at] == b'0' { b'1' } else { b'0' };
            let changed = String::from_utf8(bytes).unwrap();
            assert_eq!(parse(&changed), None, "changed at {at}: {changed}");
        }
    }

    #[test]
    fn malformed_tokens_are_refused() {
        for text in [
            "",
            "plume_",
            "plume_admin_00_00_00000000",
            "ghp_0123456789",
            "plume_root_0123456789abcdef_0000000000000000000000000000000000000000000000000000000000000000_00000000",
        ] {
            assert_eq!(parse(text), None, "{text}");
        }
        // Well formed but for the kind, with a checksum that matches: still refused.
        let body = format!("plume_root_0123456789abcdef_{}", "0".repeat(64));
        let text = format!("{body}_{:08x}", crc32(body.as_bytes()));
        assert_eq!(parse(&text), None);
    }

    #[test]
    fn session_ids_are_hashed_and_checked_for_shape() {
        let (id, hash) = new_session_id();
        assert_eq!(session_hash(&id), Some(hash));
        assert_eq!(session_hash("not-a-session"), None);
    }
}
