//! Content digests: parsing and validating `algorithm:hex` strings, and the
//! streaming hasher whose state can be saved between the chunks of an upload.
//!
//! Uploads are hashed with SHA-256 while the bytes stream in. The hasher's
//! internal state is serialisable, so a chunked upload can be continued by any
//! node (or after a restart) without re-reading the bytes already stored.
//! `sha512` digests are accepted too; they are verified at commit time by
//! the blob store, which re-reads the staged bytes with a [`Hasher`] (see
//! `registry::uploads`).

use std::fmt;
use std::str::FromStr;

use sha2::digest::common::hazmat::{SerializableState, SerializedState};
use sha2::{Digest as _, Sha256, Sha512};

/// Hash algorithms a digest may name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Algorithm {
    Sha256,
    Sha512,
}

impl Algorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }
}

/// A validated digest such as `sha256:e3b0…`. The encoded part is lower-case hex
/// of exactly the algorithm's length.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(String);

/// What a manifest says of content it references: the digest and the size
/// in bytes (which must be the size of what is stored under that digest).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Descriptor {
    pub digest: Digest,
    pub size: u64,
}

/// Why a digest string was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DigestError {
    #[error("digest must have the form algorithm:hex")]
    Malformed,
    #[error("unsupported digest algorithm {0:?} (sha256 and sha512 are supported)")]
    UnsupportedAlgorithm(String),
    #[error("digest hex for {0} must be {1} lower-case hexadecimal characters")]
    BadEncoding(&'static str, usize),
}

impl Digest {
    pub fn algorithm(&self) -> Algorithm {
        if self.0.starts_with("sha512:") {
            Algorithm::Sha512
        } else {
            Algorithm::Sha256
        }
    }

    /// The hex part after the colon.
    pub fn hex(&self) -> &str {
        let i = self.0.find(':').expect("validated digest has a colon");
        &self.0[i + 1..]
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// SHA-256 of a byte slice, as a digest.
    pub fn sha256_of(bytes: &[u8]) -> Digest {
        Digest(format!("sha256:{}", hex::encode(Sha256::digest(bytes))))
    }

    /// The digest of `bytes` under `algorithm`.
    pub fn of(algorithm: Algorithm, bytes: &[u8]) -> Digest {
        match algorithm {
            Algorithm::Sha256 => Self::sha256_of(bytes),
            Algorithm::Sha512 => Digest(format!("sha512:{}", hex::encode(Sha512::digest(bytes)))),
        }
    }
}

impl FromStr for Digest {
    type Err = DigestError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (alg, enc) = s.split_once(':').ok_or(DigestError::Malformed)?;
        if alg.is_empty() || enc.is_empty() {
            return Err(DigestError::Malformed);
        }
        let algorithm = match alg {
            "sha256" => Algorithm::Sha256,
            "sha512" => Algorithm::Sha512,
            other => {
                // The spec's grammar for algorithm components; anything else is malformed.
                let ok = other
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+._-".contains(c));
                return Err(if ok {
                    DigestError::UnsupportedAlgorithm(other.to_string())
                } else {
                    DigestError::Malformed
                });
            }
        };
        let want = algorithm.hex_len();
        if enc.len() != want || !enc.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(DigestError::BadEncoding(algorithm.as_str(), want));
        }
        Ok(Digest(s.to_string()))
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A SHA-256 hasher whose progress can be saved as bytes and restored later.
#[derive(Clone, Default)]
pub struct ResumableSha256 {
    inner: Sha256,
}

impl ResumableSha256 {
    pub fn new() -> Self {
        Self::default()
    }

    /// Restore from bytes produced by [`ResumableSha256::state`].
    pub fn from_state(state: &[u8]) -> Option<Self> {
        let arr = SerializedState::<Sha256>::try_from(state).ok()?;
        Sha256::deserialize(&arr).ok().map(|inner| Self { inner })
    }

    /// The hasher's progress, for storing in the upload session.
    pub fn state(&self) -> Vec<u8> {
        self.inner.serialize().to_vec()
    }

    pub fn update(&mut self, bytes: &[u8]) {
        self.inner.update(bytes);
    }

    pub fn finish(self) -> Digest {
        Digest(format!("sha256:{}", hex::encode(self.inner.finalize())))
    }
}

/// A hasher for any supported algorithm (for verifying bytes already stored).
pub enum Hasher {
    Sha256(Sha256),
    Sha512(Sha512),
}

impl Hasher {
    pub fn new(algorithm: Algorithm) -> Hasher {
        match algorithm {
            Algorithm::Sha256 => Hasher::Sha256(Sha256::new()),
            Algorithm::Sha512 => Hasher::Sha512(Sha512::new()),
        }
    }

    pub fn update(&mut self, bytes: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(bytes),
            Hasher::Sha512(h) => h.update(bytes),
        }
    }

    pub fn finish(self) -> Digest {
        match self {
            Hasher::Sha256(h) => Digest(format!("sha256:{}", hex::encode(h.finalize()))),
            Hasher::Sha512(h) => Digest(format!("sha512:{}", hex::encode(h.finalize()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects() {
        let empty = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert_eq!(empty.parse::<Digest>().unwrap().hex().len(), 64);
        assert_eq!(
            "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855"
                .parse::<Digest>(),
            Err(DigestError::BadEncoding("sha256", 64))
        );
        assert_eq!("sha256".parse::<Digest>(), Err(DigestError::Malformed));
        assert_eq!(
            "md5:abc".parse::<Digest>(),
            Err(DigestError::UnsupportedAlgorithm("md5".into()))
        );
        assert_eq!("SHA256:abc".parse::<Digest>(), Err(DigestError::Malformed));
        let d512 = Digest::of(Algorithm::Sha512, b"x");
        assert_eq!(d512.algorithm(), Algorithm::Sha512);
        assert_eq!(d512.as_str().parse::<Digest>().unwrap(), d512);
    }

    #[test]
    fn hasher_state_round_trips() {
        let mut h = ResumableSha256::new();
        h.update(b"hello ");
        let saved = h.state();
        let mut restored = ResumableSha256::from_state(&saved).unwrap();
        restored.update(b"world");
        assert_eq!(restored.finish(), Digest::sha256_of(b"hello world"));
        assert!(ResumableSha256::from_state(b"short").is_none());
    }
}
