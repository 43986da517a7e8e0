//! Console passwords (an IAM user's login profile): what a password must
//! be, and how it is kept — PBKDF2-HMAC-SHA256 (AWS-LC's), 600,000
//! iterations (OWASP's figure for this hash), a random 16-byte salt per
//! password, stored as `pbkdf2-sha256$<iterations>$<salt>$<hash>` (base64url).
//! Verification recomputes the hash and compares in constant time; a stored
//! iteration count is honoured within bounds, so the cost can be raised
//! later without invalidating passwords already set.

use std::num::NonZeroU32;
use std::sync::OnceLock;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Iterations of new hashes.
pub const ITERATIONS: u32 = 600_000;
/// The most iterations a stored hash may ask for (a bound on one sign-in's cost).
const MAX_ITERATIONS: u32 = 10_000_000;
const SCHEME: &str = "pbkdf2-sha256";
const SALT_LEN: usize = 16;
const HASH_LEN: usize = 32;
/// AWS IAM's bounds on a password (its default policy's minimum, and its maximum).
pub const MIN_LEN: usize = 8;
pub const MAX_LEN: usize = 128;

/// Why a password is refused (IAM's PasswordPolicyViolation).
pub fn check_policy(password: &str) -> Result<(), String> {
    let n = password.chars().count();
    if n < MIN_LEN {
        return Err(format!(
            "Password should have a minimum length of {MIN_LEN}"
        ));
    }
    if n > MAX_LEN {
        return Err(format!(
            "Password should have a maximum length of {MAX_LEN}"
        ));
    }
    if password.chars().any(char::is_control) {
        return Err("Password must not contain control characters".into());
    }
    Ok(())
}

/// The stored form of `password`, under a fresh salt.
pub fn hash(password: &str) -> String {
    let mut salt = [0u8; SALT_LEN];
    crate::secrets::random_bytes(&mut salt);
    hash_with(password, &salt, ITERATIONS)
}

fn hash_with(password: &str, salt: &[u8], iterations: u32) -> String {
    let mut out = [0u8; HASH_LEN];
    aws_lc_rs::pbkdf2::derive(
        aws_lc_rs::pbkdf2::PBKDF2_HMAC_SHA256,
        NonZeroU32::new(iterations).expect("iterations > 0"),
        salt,
        password.as_bytes(),
        &mut out,
    );
    format!(
        "{SCHEME}${iterations}${}${}",
        URL_SAFE_NO_PAD.encode(salt),
        URL_SAFE_NO_PAD.encode(out)
    )
}

/// The parts of a stored hash, if it is one this module made.
fn parse(stored: &str) -> Option<(NonZeroU32, Vec<u8>, Vec<u8>)> {
    let mut parts = stored.split('$');
    if parts.next()? != SCHEME {
        return None;
    }
    let iterations: u32 = parts.next()?.parse().ok()?;
    if iterations > MAX_ITERATIONS {
        return None;
    }
    let salt = URL_SAFE_NO_PAD.decode(parts.next()?).ok()?;
    let hash = URL_SAFE_NO_PAD.decode(parts.next()?).ok()?;
    if parts.next().is_some() || hash.is_empty() || salt.is_empty() {
        return None;
    }
    Some((NonZeroU32::new(iterations)?, salt, hash))
}

/// Whether `password` is the one `stored` was made from (constant time in
/// the comparison; a malformed `stored` matches nothing).
pub fn verify(password: &str, stored: &str) -> bool {
    let Some((iterations, salt, hash)) = parse(stored) else {
        return false;
    };
    aws_lc_rs::pbkdf2::verify(
        aws_lc_rs::pbkdf2::PBKDF2_HMAC_SHA256,
        iterations,
        &salt,
        password.as_bytes(),
        &hash,
    )
    .is_ok()
}

/// Spend the time a verification takes, for a user that has no password:
/// a wrong user name costs what a wrong password does, so timing does not
/// tell which user names exist.
pub fn verify_nothing(password: &str) {
    static DUMMY: OnceLock<String> = OnceLock::new();
    let stored = DUMMY.get_or_init(|| hash_with("", &[0u8; SALT_LEN], ITERATIONS));
    let _ = verify(password, stored);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_verifies_its_password_only() {
        let h = hash("correct horse battery");
        assert!(h.starts_with("pbkdf2-sha256$600000$"), "{h}");
        assert!(!h.contains("correct"));
        assert!(verify("correct horse battery", &h));
        assert!(!verify("correct horse batterY", &h));
        assert!(!verify("", &h));
        // A fresh salt each time: the same password hashes differently.
        assert_ne!(h, hash("correct horse battery"));
    }

    #[test]
    fn rfc_vectors_match() {
        // PBKDF2-HMAC-SHA256, "passwd" / "salt", 1 iteration (RFC 7914 §11).
        let h = hash_with("passwd", b"salt", 1);
        let got = URL_SAFE_NO_PAD
            .decode(h.rsplit('$').next().unwrap())
            .unwrap();
        assert_eq!(
            hex::encode(got),
            "55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc"
        );
        // "password" / "salt", 4096 iterations (a common SHA-256 vector).
        let h = hash_with("password", b"salt", 4096);
        let got = URL_SAFE_NO_PAD
            .decode(h.rsplit('$').next().unwrap())
            .unwrap();
        assert_eq!(
            hex::encode(got),
            "c5e478d59288c841aa530db6845c4c8d962893a001ce4e11a4963873aa98134a"
        );
        assert!(verify("password", &h));
    }

    #[test]
    fn malformed_or_costly_hashes_match_nothing() {
        let h = hash_with("pw", b"salt", 10);
        assert!(verify("pw", &h));
        for bad in [
            "",
            "pw",
            &h.replace("pbkdf2-sha256", "pbkdf2-sha1"),
            &h.replace("$10$", "$0$"),
            &h.replace("$10$", "$99999999999$"),
            &h.replace("$10$", "$20000000$"),
            &format!("{h}$extra"),
        ] {
            assert!(!verify("pw", bad), "{bad}");
        }
    }

    #[test]
    fn the_policy_bounds_length_and_characters() {
        assert!(check_policy("short").is_err());
        assert!(check_policy("long enough").is_ok());
        assert!(check_policy(&"x".repeat(129)).is_err());
        assert!(check_policy(&"x".repeat(128)).is_ok());
        assert!(check_policy("with a\nnewline").is_err());
    }
}
