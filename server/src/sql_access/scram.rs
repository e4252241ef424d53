//! SCRAM-SHA-256 password verifiers, made here as `psql`'s `\password` makes them, so that the
//! password itself never reaches the server: not the statement text, not its log, not
//! `pg_stat_activity`. PostgreSQL stores a verifier given to `create role ... password` as it is.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};

/// PBKDF2 rounds, as PostgreSQL's own default (`scram_iterations`).
const ITERATIONS: u32 = 4096;

/// Bytes of random salt, as PostgreSQL uses.
const SALT_BYTES: usize = 16;

/// The verifier of `password` with a fresh random salt:
/// `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>` (RFC 5803), each part base64.
pub fn verifier(password: &str) -> String {
    let mut salt = [0_u8; SALT_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut salt);
    verifier_with(password, &salt, ITERATIONS)
}

/// The verifier of `password` with `salt` and `iterations` (RFC 5802 with SHA-256).
fn verifier_with(password: &str, salt: &[u8], iterations: u32) -> String {
    let salted = salted_password(password.as_bytes(), salt, iterations);
    let client_key = hmac(&salted, b"Client Key");
    let stored_key = Sha256::digest(client_key);
    let server_key = hmac(&salted, b"Server Key");
    format!(
        "SCRAM-SHA-256${iterations}:{}${}:{}",
        STANDARD.encode(salt),
        STANDARD.encode(stored_key),
        STANDARD.encode(server_key)
    )
}

/// PBKDF2-HMAC-SHA-256 with one 32-byte block: `Hi(password, salt, i)` of RFC 5802.
fn salted_password(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let mut block = Vec::with_capacity(salt.len() + 4);
    block.extend_from_slice(salt);
    block.extend_from_slice(&1_u32.to_be_bytes());
    let mut u = hmac(password, &block);
    let mut result = u;
    for _ in 1..iterations {
        u = hmac(password, &u);
        for (r, x) in result.iter_mut().zip(u) {
            *r ^= x;
        }
    }
    result
}

fn hmac(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(message);
    let mut out = [0_u8; 32];
    out.copy_from_slice(&mac.finalize().into_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verifier_matches_an_independent_computation() {
        // Python's hashlib.pbkdf2_hmac and hmac over the same password, salt 00..0f, 4096 rounds.
        let salt: Vec<u8> = (0..16).collect();
        assert_eq!(
            verifier_with("correct horse battery staple", &salt, 4096),
            "SCRAM-SHA-256$4096:AAECAwQFBgcICQoLDA0ODw==$ONYbSJBXtKl6bP6PVqw8pm9e7EiacprLnoUQPFS80Hw=:IPOtHuGJ2HifEQg74W2XXqqCrCyQG55GbPRHa6g6n9w="
        );
    }

    #[test]
    fn each_verifier_has_its_own_salt() {
        assert_ne!(verifier("same password"), verifier("same password"));
        assert!(verifier("x").starts_with("SCRAM-SHA-256$4096:"));
    }
}
