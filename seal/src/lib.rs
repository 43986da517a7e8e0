//! The AES-256-GCM operations of Berth's encryption at rest, as concrete
//! (non-generic) functions, so that the cipher is compiled in this crate —
//! which every profile builds optimised (the workspace's `Cargo.toml`) —
//! rather than instantiated, unoptimised, in a debug build of the registry:
//! there it ran at a few MB/s, here at the machine's AES-NI speed.
//!
//! - [`SegmentCipher`]: one segment of a sealed object (the format is
//!   described in the registry's `storage::sealed`): `nonce ‖ ciphertext ‖
//!   tag`, with the segment's index and final flag as associated data.
//! - [`seal`] / [`open`]: a whole value (a manifest, a secret) with a
//!   context string bound as associated data.

use aes_gcm::aead::{Aead, AeadInPlace, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};

/// Bytes of the random nonce that starts every sealed piece.
pub const NONCE: usize = 12;
/// Bytes of the authentication tag that ends it.
pub const TAG: usize = 16;

/// Fill `buf` from the operating system's random source.
pub fn random_bytes(buf: &mut [u8]) {
    getrandom::fill(buf).expect("the operating system's random source failed");
}

/// A sealed piece failed authentication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unauthentic;

fn segment_aad(index: u64, last: bool) -> [u8; 17] {
    let mut a = [0u8; 17];
    a[..8].copy_from_slice(b"berthseg");
    a[8..16].copy_from_slice(&index.to_be_bytes());
    a[16] = last as u8;
    a
}

/// Seals and opens the segments of one object under its data key.
#[derive(Clone)]
pub struct SegmentCipher {
    cipher: Aes256Gcm,
}

impl SegmentCipher {
    pub fn new(key: &[u8; 32]) -> SegmentCipher {
        SegmentCipher {
            cipher: Aes256Gcm::new(key.into()),
        }
    }

    /// Segment `index` (`last`: the final one) of `plain`, sealed.
    pub fn seal(&self, index: u64, last: bool, plain: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(NONCE + plain.len() + TAG);
        let mut nonce = [0u8; NONCE];
        random_bytes(&mut nonce);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plain);
        let tag = self
            .cipher
            .encrypt_in_place_detached(
                &Nonce::from(nonce),
                &segment_aad(index, last),
                &mut out[NONCE..],
            )
            .expect("AES-GCM sealing cannot fail for in-memory data");
        out.extend_from_slice(&tag);
        out
    }

    /// Seal segment `index` (`last`: the final one) where it lies: `segment`
    /// is `NONCE` bytes of room, the plaintext, then `TAG` bytes of room;
    /// the nonce, ciphertext and tag are written over it. No copy is made.
    pub fn seal_in_place(&self, index: u64, last: bool, segment: &mut [u8]) {
        assert!(
            segment.len() >= NONCE + TAG,
            "a segment has room for its nonce and tag"
        );
        let (nonce, rest) = segment.split_at_mut(NONCE);
        random_bytes(nonce);
        let split = rest.len() - TAG;
        let (plain, tag_room) = rest.split_at_mut(split);
        let nonce: [u8; NONCE] = (&*nonce).try_into().expect("NONCE bytes");
        let tag = self
            .cipher
            .encrypt_in_place_detached(&Nonce::from(nonce), &segment_aad(index, last), plain)
            .expect("AES-GCM sealing cannot fail for in-memory data");
        tag_room.copy_from_slice(&tag);
    }

    /// Open sealed segment `index` (final exactly when `last`) where it
    /// lies: the plaintext is decrypted over the ciphertext, and is then
    /// `sealed[NONCE..sealed.len() - TAG]`. No copy is made.
    pub fn open_in_place(
        &self,
        index: u64,
        last: bool,
        sealed: &mut [u8],
    ) -> Result<(), Unauthentic> {
        if sealed.len() < NONCE + TAG {
            return Err(Unauthentic);
        }
        let (nonce, rest) = sealed.split_at_mut(NONCE);
        let split = rest.len() - TAG;
        let (ct, tag) = rest.split_at_mut(split);
        let nonce: [u8; NONCE] = (&*nonce).try_into().map_err(|_| Unauthentic)?;
        let tag: [u8; TAG] = (&*tag).try_into().map_err(|_| Unauthentic)?;
        self.cipher
            .decrypt_in_place_detached(
                &Nonce::from(nonce),
                &segment_aad(index, last),
                ct,
                (&tag).into(),
            )
            .map_err(|_| Unauthentic)
    }

    /// The plaintext of sealed segment `index`, which must be final exactly when `last`.
    pub fn open(&self, index: u64, last: bool, sealed: &[u8]) -> Result<Vec<u8>, Unauthentic> {
        if sealed.len() < NONCE + TAG {
            return Err(Unauthentic);
        }
        let (nonce, rest) = sealed.split_at(NONCE);
        let (ct, tag) = rest.split_at(rest.len() - TAG);
        let nonce: [u8; NONCE] = nonce.try_into().map_err(|_| Unauthentic)?;
        let mut plain = ct.to_vec();
        self.cipher
            .decrypt_in_place_detached(
                &Nonce::from(nonce),
                &segment_aad(index, last),
                &mut plain,
                tag.into(),
            )
            .map_err(|_| Unauthentic)?;
        Ok(plain)
    }
}

/// `plaintext` sealed under `key` (random nonce first), `context` bound as
/// associated data.
pub fn seal(key: &[u8; 32], plaintext: &[u8], context: &str) -> Vec<u8> {
    let mut nonce = [0u8; NONCE];
    random_bytes(&mut nonce);
    let ct = Aes256Gcm::new(key.into())
        .encrypt(
            &Nonce::from(nonce),
            Payload {
                msg: plaintext,
                aad: context.as_bytes(),
            },
        )
        .expect("AES-GCM sealing cannot fail for in-memory data");
    let mut out = nonce.to_vec();
    out.extend_from_slice(&ct);
    out
}

/// What [`seal`] sealed under `key` for `context`.
pub fn open(key: &[u8; 32], sealed: &[u8], context: &str) -> Result<Vec<u8>, Unauthentic> {
    if sealed.len() < NONCE + TAG {
        return Err(Unauthentic);
    }
    let (nonce, ct) = sealed.split_at(NONCE);
    let nonce: [u8; NONCE] = nonce.try_into().map_err(|_| Unauthentic)?;
    Aes256Gcm::new(key.into())
        .decrypt(
            &Nonce::from(nonce),
            Payload {
                msg: ct,
                aad: context.as_bytes(),
            },
        )
        .map_err(|_| Unauthentic)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_bind_index_and_finality() {
        let c = SegmentCipher::new(&[1; 32]);
        let s = c.seal(3, false, b"hello");
        assert_eq!(c.open(3, false, &s).unwrap(), b"hello");
        assert_eq!(c.open(4, false, &s), Err(Unauthentic));
        assert_eq!(c.open(3, true, &s), Err(Unauthentic));
        assert_eq!(
            SegmentCipher::new(&[2; 32]).open(3, false, &s),
            Err(Unauthentic)
        );
        let mut bad = s.clone();
        bad[NONCE] ^= 1;
        assert_eq!(c.open(3, false, &bad), Err(Unauthentic));
        assert_ne!(c.seal(3, false, b"hello"), s, "nonces repeat");
        let mut room = vec![0u8; NONCE];
        room.extend_from_slice(b"hello");
        room.extend_from_slice(&[0u8; TAG]);
        c.seal_in_place(3, false, &mut room);
        assert_eq!(c.open(3, false, &room).unwrap(), b"hello");
        let mut inplace = s.clone();
        c.open_in_place(3, false, &mut inplace).unwrap();
        assert_eq!(&inplace[NONCE..inplace.len() - TAG], b"hello");
        let mut inplace = s.clone();
        assert_eq!(c.open_in_place(2, false, &mut inplace), Err(Unauthentic));
    }

    #[test]
    fn values_bind_their_context() {
        let s = seal(&[7; 32], b"secret", "a");
        assert_eq!(open(&[7; 32], &s, "a").unwrap(), b"secret");
        assert!(open(&[7; 32], &s, "b").is_err());
        assert!(!s.windows(6).any(|w| w == b"secret"));
    }
}
