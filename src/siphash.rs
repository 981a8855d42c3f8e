//! SipHash with a 128-bit output: the keyed hash of idempotency keys (see `dedup`).
//!
//! A window keeps 128 bits of each key's hash so that two distinct keys share an
//! entry with negligible probability. The standard library's keyed hasher
//! (`RandomState`, SipHash-1-3) gives 64 bits, so the key used to be hashed twice,
//! with two seeds. SipHash's own 128-bit mode gives both words from one pass, for
//! about half the instructions of two. It is the reference algorithm (Aumasson and
//! Bernstein, `siphash.c` with `outlen = 16`), with the standard library's rounds: 1
//! per 8-byte word, 3 to finish (the variant rustc uses for its own 128-bit hashes).
//!
//! The hash is keyed with two random words per bus, so keys chosen by an adversary
//! cannot be made to collide (SipHash is a PRF), and nothing outside the process
//! ever sees a hash.

use std::hash::Hasher;

/// A SipHash-`C`-`D` state with a 128-bit output; `Sip13` is the one crier uses.
#[derive(Clone)]
pub(crate) struct Sip<const C: usize, const D: usize> {
    v: [u64; 4],
    /// Bytes written since the last whole word, little-endian, `pending` of them.
    tail: u64,
    pending: usize,
    /// Bytes written in all (only its low byte counts).
    length: usize,
}

/// SipHash-1-3.
pub(crate) type Sip13 = Sip<1, 3>;

impl<const C: usize, const D: usize> Sip<C, D> {
    pub(crate) fn new(k0: u64, k1: u64) -> Self {
        Sip {
            v: [
                k0 ^ 0x736f_6d65_7073_6575,
                // 0xee: the 128-bit mode's mark, so its first word differs from the
                // 64-bit mode's output.
                k1 ^ 0x646f_7261_6e64_6f6d ^ 0xee,
                k0 ^ 0x6c79_6765_6e65_7261,
                k1 ^ 0x7465_6462_7974_6573,
            ],
            tail: 0,
            pending: 0,
            length: 0,
        }
    }

    fn round(v: &mut [u64; 4]) {
        v[0] = v[0].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(13) ^ v[0];
        v[0] = v[0].rotate_left(32);
        v[2] = v[2].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(16) ^ v[2];
        v[0] = v[0].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(21) ^ v[0];
        v[2] = v[2].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(17) ^ v[2];
        v[2] = v[2].rotate_left(32);
    }

    fn compress(v: &mut [u64; 4], word: u64) {
        v[3] ^= word;
        for _ in 0..C {
            Self::round(v);
        }
        v[0] ^= word;
    }

    fn finalize(v: &mut [u64; 4]) -> u64 {
        for _ in 0..D {
            Self::round(v);
        }
        v[0] ^ v[1] ^ v[2] ^ v[3]
    }

    /// The 128-bit hash of what was written, as two words (the reference's output
    /// bytes, read as two little-endian words).
    pub(crate) fn finish128(&self) -> (u64, u64) {
        let mut v = self.v;
        Self::compress(&mut v, ((self.length as u64) << 56) | self.tail);
        v[2] ^= 0xee;
        let first = Self::finalize(&mut v);
        v[1] ^= 0xdd;
        (first, Self::finalize(&mut v))
    }
}

/// Up to 8 bytes as a little-endian word.
fn word_of(bytes: &[u8]) -> u64 {
    let mut word = [0; 8];
    word[..bytes.len()].copy_from_slice(bytes);
    u64::from_le_bytes(word)
}

impl<const C: usize, const D: usize> Hasher for Sip<C, D> {
    fn write(&mut self, mut bytes: &[u8]) {
        self.length = self.length.wrapping_add(bytes.len());
        if self.pending > 0 {
            let taken = bytes.len().min(8 - self.pending);
            self.tail |= word_of(&bytes[..taken]) << (8 * self.pending);
            self.pending += taken;
            bytes = &bytes[taken..];
            if self.pending < 8 {
                return;
            }
            Self::compress(&mut self.v, self.tail);
            (self.tail, self.pending) = (0, 0);
        }
        let mut words = bytes.chunks_exact(8);
        for word in &mut words {
            Self::compress(&mut self.v, word_of(word));
        }
        let rest = words.remainder();
        (self.tail, self.pending) = (word_of(rest), rest.len());
    }

    /// The first word of [`finish128`](Self::finish128).
    fn finish(&self) -> u64 {
        self.finish128().0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The reference key, bytes 0 to 15.
    const K0: u64 = 0x0706_0504_0302_0100;
    const K1: u64 = 0x0f0e_0d0c_0b0a_0908;

    /// SipHash-2-4-128 of the bytes 0 to n-1 under the reference key, for n from 0 to
    /// 17: `vectors_sip128` of the reference implementation (github.com/veorq/SipHash,
    /// `vectors.h`), across both word boundaries.
    const VECTORS: [[u8; 16]; 18] = [
        [
            0xa3, 0x81, 0x7f, 0x04, 0xba, 0x25, 0xa8, 0xe6, 0x6d, 0xf6, 0x72, 0x14, 0xc7, 0x55, 0x02, 0x93,
        ],
        [
            0xda, 0x87, 0xc1, 0xd8, 0x6b, 0x99, 0xaf, 0x44, 0x34, 0x76, 0x59, 0x11, 0x9b, 0x22, 0xfc, 0x45,
        ],
        [
            0x81, 0x77, 0x22, 0x8d, 0xa4, 0xa4, 0x5d, 0xc7, 0xfc, 0xa3, 0x8b, 0xde, 0xf6, 0x0a, 0xff, 0xe4,
        ],
        [
            0x9c, 0x70, 0xb6, 0x0c, 0x52, 0x67, 0xa9, 0x4e, 0x5f, 0x33, 0xb6, 0xb0, 0x29, 0x85, 0xed, 0x51,
        ],
        [
            0xf8, 0x81, 0x64, 0xc1, 0x2d, 0x9c, 0x8f, 0xaf, 0x7d, 0x0f, 0x6e, 0x7c, 0x7b, 0xcd, 0x55, 0x79,
        ],
        [
            0x13, 0x68, 0x87, 0x59, 0x80, 0x77, 0x6f, 0x88, 0x54, 0x52, 0x7a, 0x07, 0x69, 0x0e, 0x96, 0x27,
        ],
        [
            0x14, 0xee, 0xca, 0x33, 0x8b, 0x20, 0x86, 0x13, 0x48, 0x5e, 0xa0, 0x30, 0x8f, 0xd7, 0xa1, 0x5e,
        ],
        [
            0xa1, 0xf1, 0xeb, 0xbe, 0xd8, 0xdb, 0xc1, 0x53, 0xc0, 0xb8, 0x4a, 0xa6, 0x1f, 0xf0, 0x82, 0x39,
        ],
        [
            0x3b, 0x62, 0xa9, 0xba, 0x62, 0x58, 0xf5, 0x61, 0x0f, 0x83, 0xe2, 0x64, 0xf3, 0x14, 0x97, 0xb4,
        ],
        [
            0x26, 0x44, 0x99, 0x06, 0x0a, 0xd9, 0xba, 0xab, 0xc4, 0x7f, 0x8b, 0x02, 0xbb, 0x6d, 0x71, 0xed,
        ],
        [
            0x00, 0x11, 0x0d, 0xc3, 0x78, 0x14, 0x69, 0x56, 0xc9, 0x54, 0x47, 0xd3, 0xf3, 0xd0, 0xfb, 0xba,
        ],
        [
            0x01, 0x51, 0xc5, 0x68, 0x38, 0x6b, 0x66, 0x77, 0xa2, 0xb4, 0xdc, 0x6f, 0x81, 0xe5, 0xdc, 0x18,
        ],
        [
            0xd6, 0x26, 0xb2, 0x66, 0x90, 0x5e, 0xf3, 0x58, 0x82, 0x63, 0x4d, 0xf6, 0x85, 0x32, 0xc1, 0x25,
        ],
        [
            0x98, 0x69, 0xe2, 0x47, 0xe9, 0xc0, 0x8b, 0x10, 0xd0, 0x29, 0x93, 0x4f, 0xc4, 0xb9, 0x52, 0xf7,
        ],
        [
            0x31, 0xfc, 0xef, 0xac, 0x66, 0xd7, 0xde, 0x9c, 0x7e, 0xc7, 0x48, 0x5f, 0xe4, 0x49, 0x49, 0x02,
        ],
        [
            0x54, 0x93, 0xe9, 0x99, 0x33, 0xb0, 0xa8, 0x11, 0x7e, 0x08, 0xec, 0x0f, 0x97, 0xcf, 0xc3, 0xd9,
        ],
        [
            0x6e, 0xe2, 0xa4, 0xca, 0x67, 0xb0, 0x54, 0xbb, 0xfd, 0x33, 0x15, 0xbf, 0x85, 0x23, 0x05, 0x77,
        ],
        [
            0x47, 0x3d, 0x06, 0xe8, 0x73, 0x8d, 0xb8, 0x98, 0x54, 0xc0, 0x66, 0xc4, 0x7a, 0xe4, 0x77, 0x40,
        ],
    ];

    fn bytes(expected: &[u8; 16]) -> (u64, u64) {
        (word_of(&expected[..8]), word_of(&expected[8..]))
    }

    #[test]
    fn sip_2_4_128_matches_the_reference_vectors() {
        for (n, expected) in VECTORS.iter().enumerate() {
            let message: Vec<u8> = (0..n as u8).collect();
            let mut sip = Sip::<2, 4>::new(K0, K1);
            sip.write(&message);
            assert_eq!(sip.finish128(), bytes(expected), "{n} bytes");
        }
    }

    #[test]
    fn the_key_and_the_rounds_change_the_hash() {
        let hash = |sip: &mut Sip13| {
            sip.write(b"order-1");
            sip.finish128()
        };
        let reference = hash(&mut Sip13::new(K0, K1));
        assert_ne!(reference, hash(&mut Sip13::new(K0, K1 + 1)), "the key");
        let mut two_four = Sip::<2, 4>::new(K0, K1);
        two_four.write(b"order-1");
        assert_ne!(reference, two_four.finish128(), "the rounds");
    }

    proptest! {
        /// However the bytes are split into writes, the hash is the same: the tail
        /// carried between writes is the reference's block.
        #[test]
        fn writes_split_anywhere_hash_alike(
            message in prop::collection::vec(any::<u8>(), 0..80),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
        ) {
            let mut whole = Sip13::new(K0, K1);
            whole.write(&message);
            let mut cuts: Vec<usize> = cuts.iter().map(|cut| cut.index(message.len() + 1)).collect();
            cuts.sort_unstable();
            let mut split = Sip13::new(K0, K1);
            let mut from = 0;
            for cut in cuts.into_iter().chain([message.len()]) {
                split.write(&message[from..cut]);
                from = cut;
            }
            prop_assert_eq!(split.finish128(), whole.finish128());
        }
    }
}
