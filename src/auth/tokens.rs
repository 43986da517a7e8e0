//! Registry tokens: what `GetAuthorizationToken` hands out and `/v2/` accepts
//! as the Basic-auth password of user `AWS`.
//!
//! A token is `v1.<payload>.<mac>`, both parts base64url without padding (so
//! it never contains `:`, which the AWS CLI splits on). The payload names the
//! access key that asked for it, its account and its expiry; the MAC is
//! HMAC-SHA256 under the token-signing key, which is stored sealed in the
//! metadata database so that every node verifies every other node's tokens.
//! A token dies with its expiry or when its access key is deactivated.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// How long a token lives, as in ECR.
pub const TOKEN_LIFETIME_SECS: i64 = 12 * 3600;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenClaims {
    /// Access key that requested the token.
    pub k: String,
    /// Account of that key.
    pub a: String,
    /// Issued at, epoch seconds.
    pub i: i64,
    /// Expires at, epoch seconds.
    pub e: i64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("the authorization token is malformed")]
    Malformed,
    #[error("the authorization token's signature is invalid")]
    BadSignature,
    #[error("the authorization token has expired")]
    Expired,
}

type HmacSha256 = hmac::Hmac<Sha256>;

pub struct TokenSigner {
    key: Vec<u8>,
}

impl TokenSigner {
    pub fn new(key: &[u8]) -> TokenSigner {
        TokenSigner { key: key.to_vec() }
    }

    fn mac(&self, payload: &str) -> Vec<u8> {
        let mut m =
            <HmacSha256 as KeyInit>::new_from_slice(&self.key).expect("HMAC takes any key length");
        m.update(b"berth-registry-token-v1\0");
        m.update(payload.as_bytes());
        m.finalize().into_bytes().to_vec()
    }

    pub fn issue(&self, claims: &TokenClaims) -> String {
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).expect("claims serialise"));
        let mac = URL_SAFE_NO_PAD.encode(self.mac(&payload));
        format!("v1.{payload}.{mac}")
    }

    /// Check the MAC and expiry; `now` is epoch seconds.
    pub fn verify(&self, token: &str, now: i64) -> Result<TokenClaims, TokenError> {
        let mut parts = token.split('.');
        let (Some("v1"), Some(payload), Some(mac), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let given = URL_SAFE_NO_PAD
            .decode(mac)
            .map_err(|_| TokenError::Malformed)?;
        if !bool::from(given.ct_eq(&self.mac(payload))) {
            return Err(TokenError::BadSignature);
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| TokenError::Malformed)?;
        let claims: TokenClaims =
            serde_json::from_slice(&bytes).map_err(|_| TokenError::Malformed)?;
        if now >= claims.e {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_verify_tamper_expire() {
        let s = TokenSigner::new(b"k1");
        let c = TokenClaims {
            k: "AKIAX".into(),
            a: "123456789012".into(),
            i: 100,
            e: 100 + TOKEN_LIFETIME_SECS,
        };
        let t = s.issue(&c);
        assert!(!t.contains(':'));
        assert_eq!(s.verify(&t, 200).unwrap(), c);
        assert_eq!(
            s.verify(&t, 100 + TOKEN_LIFETIME_SECS),
            Err(TokenError::Expired)
        );
        assert_eq!(
            TokenSigner::new(b"k2").verify(&t, 200),
            Err(TokenError::BadSignature)
        );
        let forged = {
            let evil = URL_SAFE_NO_PAD.encode(
                serde_json::to_vec(&TokenClaims {
                    e: i64::MAX,
                    ..c.clone()
                })
                .unwrap(),
            );
            let mac = t.rsplit('.').next().unwrap();
            format!("v1.{evil}.{mac}")
        };
        assert_eq!(s.verify(&forged, 200), Err(TokenError::BadSignature));
        assert_eq!(s.verify("garbage", 200), Err(TokenError::Malformed));
    }
}
