//! Registry tokens: what `GetAuthorizationToken` hands out and `/v2/` accepts
//! as the Basic-auth password of user `AWS`.
//!
//! A token is `v1.<payload>.<mac>`, both parts base64url without padding (so
//! it never contains `:`, which the AWS CLI splits on). The payload names the
//! access key that asked for it, its account and its expiry; the MAC is
//! HMAC-SHA256 under the token-signing key, which is stored sealed in the
//! metadata database so that every node verifies every other node's tokens.
//! A token dies with its expiry or when its access key is deactivated.
//!
//! Download grants (the presigned URLs of GetDownloadUrlForLayer) are a
//! second kind, `d1.<payload>.<mac>`, MACed under a different domain tag: a
//! grant names one blob in one repository and authorizes one thing, a GET of
//! that blob until it expires. Neither kind verifies as the other.

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

/// What a download URL lets its holder do: GET blob `d` of repository `n`
/// in registry `r` until `e`, on behalf of access key `k`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DownloadGrant {
    pub k: String,
    pub r: String,
    pub n: String,
    pub d: String,
    pub e: i64,
}

type HmacSha256 = hmac::Hmac<Sha256>;

const REGISTRY_DOMAIN: &[u8] = b"berth-registry-token-v1\0";
const DOWNLOAD_DOMAIN: &[u8] = b"berth-download-grant-v1\0";

pub struct TokenSigner {
    key: Vec<u8>,
}

impl TokenSigner {
    pub fn new(key: &[u8]) -> TokenSigner {
        TokenSigner { key: key.to_vec() }
    }

    fn mac(&self, domain: &[u8], payload: &str) -> Vec<u8> {
        let mut m =
            <HmacSha256 as KeyInit>::new_from_slice(&self.key).expect("HMAC takes any key length");
        m.update(domain);
        m.update(payload.as_bytes());
        m.finalize().into_bytes().to_vec()
    }

    fn seal<T: Serialize>(&self, prefix: &str, domain: &[u8], claims: &T) -> String {
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).expect("claims serialise"));
        let mac = URL_SAFE_NO_PAD.encode(self.mac(domain, &payload));
        format!("{prefix}.{payload}.{mac}")
    }

    fn open<T: serde::de::DeserializeOwned>(
        &self,
        prefix: &str,
        domain: &[u8],
        token: &str,
    ) -> Result<T, TokenError> {
        let mut parts = token.split('.');
        let (Some(p), Some(payload), Some(mac), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        if p != prefix {
            return Err(TokenError::Malformed);
        }
        let given = URL_SAFE_NO_PAD
            .decode(mac)
            .map_err(|_| TokenError::Malformed)?;
        if !bool::from(given.ct_eq(&self.mac(domain, payload))) {
            return Err(TokenError::BadSignature);
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| TokenError::Malformed)?;
        serde_json::from_slice(&bytes).map_err(|_| TokenError::Malformed)
    }

    pub fn issue(&self, claims: &TokenClaims) -> String {
        self.seal("v1", REGISTRY_DOMAIN, claims)
    }

    /// Check the MAC and expiry; `now` is epoch seconds.
    pub fn verify(&self, token: &str, now: i64) -> Result<TokenClaims, TokenError> {
        let claims: TokenClaims = self.open("v1", REGISTRY_DOMAIN, token)?;
        if now >= claims.e {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }

    pub fn issue_grant(&self, grant: &DownloadGrant) -> String {
        self.seal("d1", DOWNLOAD_DOMAIN, grant)
    }

    /// Check a download grant's MAC and expiry; `now` is epoch seconds.
    pub fn verify_grant(&self, token: &str, now: i64) -> Result<DownloadGrant, TokenError> {
        let grant: DownloadGrant = self.open("d1", DOWNLOAD_DOMAIN, token)?;
        if now >= grant.e {
            return Err(TokenError::Expired);
        }
        Ok(grant)
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

    #[test]
    fn download_grants_and_registry_tokens_are_not_interchangeable() {
        let s = TokenSigner::new(b"k1");
        let g = DownloadGrant {
            k: "AKIAX".into(),
            r: "123456789012".into(),
            n: "team/app".into(),
            d: "sha256:00".into(),
            e: 1000,
        };
        let grant = s.issue_grant(&g);
        assert_eq!(s.verify_grant(&grant, 999).unwrap(), g);
        assert_eq!(s.verify_grant(&grant, 1000), Err(TokenError::Expired));
        // A grant is no registry token, and a token is no grant, even with the
        // prefix swapped: the MAC domains differ.
        assert!(s.verify(&grant, 0).is_err());
        assert!(s.verify(&grant.replacen("d1", "v1", 1), 0).is_err());
        let token = s.issue(&TokenClaims {
            k: "AKIAX".into(),
            a: "123456789012".into(),
            i: 0,
            e: 1000,
        });
        assert!(s.verify_grant(&token, 0).is_err());
        assert!(s.verify_grant(&token.replacen("v1", "d1", 1), 0).is_err());
    }
}
