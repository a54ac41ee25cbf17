//! API key secrets: made from 32 random bytes, shown once, stored only as their SHA-256.

use rand::RngCore;
use sha2::{Digest, Sha256};

/// Every secret starts with this, so a leaked one is easy to recognise in a scan.
pub const PREFIX: &str = "obk_";

/// A new secret: the prefix and 64 hex digits (256 random bits).
pub fn generate() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{PREFIX}{hex}")
}

/// The stored form: SHA-256 of the secret, hex.
pub fn digest(secret: &str) -> String {
    Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Equality whose time does not depend on where the inputs differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_fresh_and_their_digest_is_what_is_compared() {
        let (a, b) = (generate(), generate());
        assert_ne!(a, b);
        assert!(a.starts_with(PREFIX) && a.len() == PREFIX.len() + 64);
        assert_eq!(digest(&a).len(), 64);
        assert!(constant_time_eq(
            digest(&a).as_bytes(),
            digest(&a).as_bytes()
        ));
        assert!(!constant_time_eq(
            digest(&a).as_bytes(),
            digest(&b).as_bytes()
        ));
        assert!(!constant_time_eq(b"ab", b"abc"));
    }
}
