//! Webhook signatures as the Standard Webhooks specification defines them: `webhook-id`,
//! `webhook-timestamp` and `webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">`,
//! one signature per secret (space-separated) so a secret can be rotated without downtime. The
//! timestamp lets a receiver refuse a captured request replayed later.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Header carrying the message id (the event id).
pub const ID_HEADER: &str = "webhook-id";
/// Header carrying the send time, in Unix seconds.
pub const TIMESTAMP_HEADER: &str = "webhook-timestamp";
/// Header carrying `v1,<signature>` for each secret, space-separated.
pub const SIGNATURE_HEADER: &str = "webhook-signature";

/// How far a timestamp may be from the receiver's clock (the specification's suggestion).
pub const TOLERANCE_SECONDS: i64 = 5 * 60;

/// The HMAC key of a secret: a `whsec_` secret is base64 after its prefix; any other secret is
/// used as its bytes.
pub fn key(secret: &[u8]) -> Vec<u8> {
    secret
        .strip_prefix(b"whsec_")
        .and_then(|encoded| STANDARD.decode(encoded).ok())
        .unwrap_or_else(|| secret.to_vec())
}

/// The `webhook-signature` value: `v1,<base64>` for each secret, in order.
pub fn sign(secrets: &[Vec<u8>], id: &str, timestamp: i64, body: &[u8]) -> String {
    secrets
        .iter()
        .map(|secret| format!("v1,{}", STANDARD.encode(mac(secret, id, timestamp, body))))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether `header` holds a valid signature of `(id, timestamp, body)` under any of `secrets`, and
/// the timestamp is within [`TOLERANCE_SECONDS`] of `now` (Unix seconds). What a receiver runs.
pub fn verify(secrets: &[Vec<u8>], id: &str, timestamp: &str, body: &[u8], header: &str, now: i64) -> bool {
    let Ok(timestamp) = timestamp.parse::<i64>() else {
        return false;
    };
    if (now - timestamp).abs() > TOLERANCE_SECONDS {
        return false;
    }
    header
        .split(' ')
        .filter_map(|signature| signature.strip_prefix("v1,"))
        .filter_map(|encoded| STANDARD.decode(encoded).ok())
        .any(|expected| {
            secrets.iter().any(|secret| {
                hmac_of(secret, id, timestamp, body)
                    .verify_slice(&expected)
                    .is_ok()
            })
        })
}

fn hmac_of(secret: &[u8], id: &str, timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(&key(secret)).expect("HMAC takes a key of any length");
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    mac
}

fn mac(secret: &[u8], id: &str, timestamp: i64, body: &[u8]) -> Vec<u8> {
    hmac_of(secret, id, timestamp, body)
        .finalize()
        .into_bytes()
        .to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    // The example of the Standard Webhooks specification.
    const SECRET: &[u8] = b"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TIMESTAMP: i64 = 1_614_265_330;
    const BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    #[test]
    fn the_specifications_example_signs_and_verifies() {
        assert_eq!(sign(&[SECRET.to_vec()], ID, TIMESTAMP, BODY), SIGNATURE);
        assert!(verify(
            &[SECRET.to_vec()],
            ID,
            "1614265330",
            BODY,
            SIGNATURE,
            TIMESTAMP + 10
        ));
    }

    #[test]
    fn a_replay_outside_the_tolerance_or_a_changed_part_is_refused() {
        let secrets = [SECRET.to_vec()];
        let late = TIMESTAMP + TOLERANCE_SECONDS + 1;
        assert!(!verify(&secrets, ID, "1614265330", BODY, SIGNATURE, late));
        assert!(!verify(
            &secrets,
            "msg_other",
            "1614265330",
            BODY,
            SIGNATURE,
            TIMESTAMP
        ));
        assert!(!verify(&secrets, ID, "1614265331", BODY, SIGNATURE, TIMESTAMP));
        assert!(!verify(&secrets, ID, "1614265330", b"{}", SIGNATURE, TIMESTAMP));
        assert!(!verify(
            &[b"whsec_b3RoZXI=".to_vec()],
            ID,
            "1614265330",
            BODY,
            SIGNATURE,
            TIMESTAMP
        ));
    }

    #[test]
    fn two_secrets_sign_twice_so_either_verifies() {
        let new = b"a-new-secret-of-thirty-two-bytes!".to_vec();
        let both = sign(&[new.clone(), SECRET.to_vec()], ID, TIMESTAMP, BODY);
        assert!(both.ends_with(SIGNATURE) && both.starts_with("v1,"));
        assert!(verify(&[new], ID, "1614265330", BODY, &both, TIMESTAMP));
        assert!(verify(
            &[SECRET.to_vec()],
            ID,
            "1614265330",
            BODY,
            &both,
            TIMESTAMP
        ));
    }
}
