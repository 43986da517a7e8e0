//! The AES-256-GCM operations of Berth's encryption at rest, on AWS-LC's
//! implementation (the one rustls already brings: about twice the speed of
//! a pure-Rust AES-GCM on this machine's AES-NI), as concrete functions in
//! a crate every profile builds optimised (the workspace's `Cargo.toml`), so
//! that a debug build of the registry does not run an unoptimised cipher.
//!
//! - [`SegmentCipher`]: one segment of a sealed object (the format is
//!   described in the registry's `storage::sealed`): `nonce ‖ ciphertext ‖
//!   tag`, with the segment's index and final flag as associated data.
//! - [`seal`] / [`open`]: a whole value (a manifest, a secret) with a
//!   context string bound as associated data.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};

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

fn key_of(key: &[u8; 32]) -> LessSafeKey {
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).expect("a 32-byte AES-256 key"))
}

/// Seal `plain` (in place, between `NONCE` bytes of room and `TAG` bytes of
/// room in `buf`) under `key` with `aad`.
fn seal_into(key: &LessSafeKey, aad: &[u8], buf: &mut [u8]) {
    assert!(buf.len() >= NONCE + TAG, "room for the nonce and tag");
    let (nonce, rest) = buf.split_at_mut(NONCE);
    random_bytes(nonce);
    let n: [u8; NONCE] = (&*nonce).try_into().expect("NONCE bytes");
    let split = rest.len() - TAG;
    let (plain, tag_room) = rest.split_at_mut(split);
    let tag = key
        .seal_in_place_separate_tag(Nonce::assume_unique_for_key(n), Aad::from(aad), plain)
        .expect("AES-GCM sealing cannot fail for in-memory data");
    tag_room.copy_from_slice(tag.as_ref());
}

/// Open `buf` (nonce, ciphertext, tag) in place under `key` with `aad`; the
/// plaintext is then `buf[NONCE..len - TAG]`.
fn open_into(key: &LessSafeKey, aad: &[u8], buf: &mut [u8]) -> Result<(), Unauthentic> {
    if buf.len() < NONCE + TAG {
        return Err(Unauthentic);
    }
    let n: [u8; NONCE] = buf[..NONCE].try_into().map_err(|_| Unauthentic)?;
    // Decrypted where it lies (`0..`: the ciphertext starts the slice), so
    // the plaintext stays after the nonce.
    key.open_within(
        Nonce::assume_unique_for_key(n),
        Aad::from(aad),
        &mut buf[NONCE..],
        0..,
    )
    .map_err(|_| Unauthentic)?;
    Ok(())
}

/// Seals and opens the segments of one object under its data key.
#[derive(Clone)]
pub struct SegmentCipher {
    key: std::sync::Arc<LessSafeKey>,
}

impl SegmentCipher {
    pub fn new(key: &[u8; 32]) -> SegmentCipher {
        SegmentCipher {
            key: std::sync::Arc::new(key_of(key)),
        }
    }

    /// Seal segment `index` (`last`: the final one) where it lies: `segment`
    /// is `NONCE` bytes of room, the plaintext, then `TAG` bytes of room;
    /// the nonce, ciphertext and tag are written over it. No copy is made.
    pub fn seal_in_place(&self, index: u64, last: bool, segment: &mut [u8]) {
        seal_into(&self.key, &segment_aad(index, last), segment);
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
        open_into(&self.key, &segment_aad(index, last), sealed)
    }
}

/// `plaintext` sealed under `key` (random nonce first), `context` bound as
/// associated data.
pub fn seal(key: &[u8; 32], plaintext: &[u8], context: &str) -> Vec<u8> {
    let mut out = vec![0u8; NONCE + plaintext.len() + TAG];
    out[NONCE..NONCE + plaintext.len()].copy_from_slice(plaintext);
    seal_into(&key_of(key), context.as_bytes(), &mut out);
    out
}

/// What [`seal`] sealed under `key` for `context`.
pub fn open(key: &[u8; 32], sealed: &[u8], context: &str) -> Result<Vec<u8>, Unauthentic> {
    let mut buf = sealed.to_vec();
    open_into(&key_of(key), context.as_bytes(), &mut buf)?;
    Ok(buf[NONCE..buf.len() - TAG].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `plain` sealed as segment `index` (through the in-place API).
    fn sealed(c: &SegmentCipher, index: u64, last: bool, plain: &[u8]) -> Vec<u8> {
        let mut room = vec![0u8; NONCE];
        room.extend_from_slice(plain);
        room.extend_from_slice(&[0u8; TAG]);
        c.seal_in_place(index, last, &mut room);
        room
    }

    /// The plaintext of sealed segment `index`, opened on a copy.
    fn opened(c: &SegmentCipher, index: u64, last: bool, s: &[u8]) -> Result<Vec<u8>, Unauthentic> {
        let mut buf = s.to_vec();
        c.open_in_place(index, last, &mut buf)?;
        Ok(buf[NONCE..buf.len() - TAG].to_vec())
    }

    #[test]
    fn segments_bind_index_and_finality() {
        let c = SegmentCipher::new(&[1; 32]);
        let s = sealed(&c, 3, false, b"hello");
        assert_eq!(opened(&c, 3, false, &s).unwrap(), b"hello");
        assert_eq!(opened(&c, 4, false, &s), Err(Unauthentic));
        assert_eq!(opened(&c, 3, true, &s), Err(Unauthentic));
        assert_eq!(
            opened(&SegmentCipher::new(&[2; 32]), 3, false, &s),
            Err(Unauthentic)
        );
        let mut bad = s.clone();
        bad[NONCE] ^= 1;
        assert_eq!(opened(&c, 3, false, &bad), Err(Unauthentic));
        assert_ne!(sealed(&c, 3, false, b"hello"), s, "nonces repeat");
        assert!(!s.windows(5).any(|w| w == b"hello"));
    }

    #[test]
    fn values_bind_their_context() {
        let s = seal(&[7; 32], b"secret", "a");
        assert_eq!(open(&[7; 32], &s, "a").unwrap(), b"secret");
        assert!(open(&[7; 32], &s, "b").is_err());
        assert!(!s.windows(6).any(|w| w == b"secret"));
    }
}
