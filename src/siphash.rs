//! SipHash with a 128-bit output: the keyed hash of idempotency keys (see `dedup`).
//!
//! A window keeps 128 bits of each key's hash so that two distinct keys share an
//! entry with negligible probability. The standard library's keyed hasher
//! (`RandomState`, SipHash-1-3) gives 64 bits, so the key used to be hashed twice,
//! with two seeds. SipHash's own 128-bit mode gives both words from one pass, for
//! about half the instructions of two. It is the reference algorithm (Aumasson and
//! Bernstein, `siphash.c` with `outlen = 16`), with the standard library's rounds: 1
//! per 8-byte word, 3 to finish.
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

    /// The hash of `bytes` and then one byte more, `last`, from this fresh state: what
    /// `write(bytes)`, `write(&[last])` and [`finish128`](Self::finish128) give, in one
    /// pass over whole words with no tail carried between writes. A key's text is
    /// hashed so, with the `0xff` that `str`'s `Hash` writes after it.
    pub(crate) fn finish128_of(mut self, bytes: &[u8], last: u8) -> (u64, u64) {
        let mut words = bytes.chunks_exact(8);
        for word in &mut words {
            Self::compress(&mut self.v, word_of(word));
        }
        // At most 7 bytes are left, so `last` fits in their word.
        let rest = words.remainder();
        self.tail = word_of(rest) | (u64::from(last) << (8 * rest.len()));
        if rest.len() == 7 {
            Self::compress(&mut self.v, self.tail);
            self.tail = 0;
        }
        self.length = bytes.len().wrapping_add(1);
        self.finish128()
    }
}

/// Up to 8 bytes as a little-endian word. A short tail is folded byte by byte: copying
/// a slice of unknown length into a buffer calls `memcpy`, which costs more than the
/// few bytes of a typical key's tail.
fn word_of(bytes: &[u8]) -> u64 {
    match <[u8; 8]>::try_from(bytes) {
        Ok(word) => u64::from_le_bytes(word),
        Err(_) => bytes.iter().rev().fold(0, |word, &byte| (word << 8) | u64::from(byte)),
    }
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
    const VECTORS: [&str; 18] = [
        "a3817f04ba25a8e66df67214c7550293",
        "da87c1d86b99af44347659119b22fc45",
        "8177228da4a45dc7fca38bdef60affe4",
        "9c70b60c5267a94e5f33b6b02985ed51",
        "f88164c12d9c8faf7d0f6e7c7bcd5579",
        "1368875980776f8854527a07690e9627",
        "14eeca338b208613485ea0308fd7a15e",
        "a1f1ebbed8dbc153c0b84aa61ff08239",
        "3b62a9ba6258f5610f83e264f31497b4",
        "264499060ad9baabc47f8b02bb6d71ed",
        "00110dc378146956c95447d3f3d0fbba",
        "0151c568386b6677a2b4dc6f81e5dc18",
        "d626b266905ef35882634df68532c125",
        "9869e247e9c08b10d029934fc4b952f7",
        "31fcefac66d7de9c7ec7485fe4494902",
        "5493e99933b0a8117e08ec0f97cfc3d9",
        "6ee2a4ca67b054bbfd3315bf85230577",
        "473d06e8738db89854c066c47ae47740",
    ];

    /// The reference's output bytes, in order, as two little-endian words.
    fn words(hex: &str) -> (u64, u64) {
        let bytes = u128::from_str_radix(hex, 16).expect("a vector is hex").to_be_bytes();
        (word_of(&bytes[..8]), word_of(&bytes[8..]))
    }

    #[test]
    fn sip_2_4_128_matches_the_reference_vectors() {
        for (n, expected) in VECTORS.iter().enumerate() {
            let message: Vec<u8> = (0..n as u8).collect();
            let mut sip = Sip::<2, 4>::new(K0, K1);
            sip.write(&message);
            assert_eq!(sip.finish128(), words(expected), "{n} bytes");
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
        /// The one-pass hash of bytes and a last byte is the hash of the two writes.
        #[test]
        fn one_pass_hashes_as_two_writes(message in prop::collection::vec(any::<u8>(), 0..80), last: u8) {
            let mut written = Sip13::new(K0, K1);
            written.write(&message);
            written.write(&[last]);
            prop_assert_eq!(Sip13::new(K0, K1).finish128_of(&message, last), written.finish128());
        }

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
