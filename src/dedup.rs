//! Idempotency windows: the keys seen recently, bounded by count and by age.
//!
//! Two users: a subscriber remembers the keys that *succeeded* for it (under its run
//! lock, like the handler), and a topic remembers the keys it *accepted*, each with the
//! `seq` it was accepted at (under its commit lock, see `topic`). A topic's inline
//! subscribers keep their windows in one table of the topic's (`key_table`), each
//! with exactly the semantics of a window of its own.
//!
//! # Design
//!
//! A window keeps a 128-bit hash of each key, never the key itself, so an entry costs
//! the same whatever the key's size, and a window of `capacity` entries stays flat
//! however many distinct keys pass; `seen` is the store (a ring in insertion order
//! and a flat index over it), and `DedupWindow`'s docs give the measured bytes per
//! key. The hash is SipHash-1-3 with a 128-bit output, keyed with two random words
//! drawn per bus (`KeyHasher`, `siphash`), so keys chosen by an adversary cannot be
//! made to collide; two distinct keys share an entry with probability about
//! `n² / 2^129` for `n` keys. An event's key is hashed once, by the first window that
//! needs it, and the hash travels with the event (`IdempotencyKey`); a topic hashes
//! outside its lock, so a 1 MiB key costs its publisher, not everyone waiting for the
//! lock.
//!
//! Ages are counted in *event time*: a key is stamped with the publish time of the
//! event that succeeded (or was accepted), and a later event is compared by its own
//! publish time. So a subscriber reads no clock per delivery, a topic and its
//! subscribers count the same interval, and replaying old events screens them as they
//! were screened live, however fast the replay runs.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::time::Duration;

use crate::stamp::Stamp;

use crate::seen::Seen;
use crate::siphash::Sip13;
use crate::sync::{AtomicU64, Ordering};

/// The most keys a window holds: its store names entries by 32-bit positions.
pub(crate) const MAX_CAPACITY: usize = 1 << 31;

/// How long, and for how many keys, an idempotency key is remembered: by a subscriber
/// once it succeeded ([`SubscriberBuilder::dedup`](crate::SubscriberBuilder::dedup)),
/// or by a topic once a publish was accepted
/// ([`Topic::set_dedup_window`](crate::Topic::set_dedup_window)).
///
/// For a subscriber, an event is skipped and counted as `deduplicated` when an event
/// with the same key *succeeded* for it and was published less than `max_age` before
/// this one (or after it), and that key is still among the last `capacity` keys it
/// remembered. A key is remembered only once its event succeeded, so a retry of a failed
/// event is never skipped for its own sake. At exactly `max_age` the key is forgotten
/// and the event is delivered again. For a topic, read "accepted" for "succeeded": a
/// publish whose key was accepted less than `max_age` earlier is not published again.
/// Both bounds must be above zero, and `capacity` at most 2^31 (`subscribe` and
/// `set_dedup_window` refuse them otherwise).
///
/// Ages run in *event time*, [`Envelope::published_at`](crate::Envelope::published_at)
/// on the bus [`Clock`](crate::Clock), not in the time the handler ran: a key is
/// remembered from its event's publish, and a late retry is compared by its own
/// publish time, so a retry that runs long after a duplicate of it succeeded is still
/// skipped, and events replayed later are screened as they were when they happened
/// (SQS FIFO counts its deduplication interval the same way, from the send). Keys that
/// aged out are dropped by later deliveries and when the stats are read.
///
/// # Memory
///
/// A key costs the same whatever its length: the window keeps a keyed 128-bit hash of
/// it. Measured with a counting allocator, a full window of 100,000 keys after a
/// million distinct keys holds 5.7 MB in an inline subscriber (57 bytes per key, no
/// more at the peak), 4.5 MB in a pool subscriber (45 bytes, peaking at 69), and 5.3
/// MB in a topic (53 bytes, with the `seq` of each, peaking at 74): budget 100 bytes
/// per key of capacity (`benches/tests/memory_bounds.rs` pins that bound). An empty
/// window costs next to nothing; it grows with the keys it holds, and gives memory
/// back when [`Topic::set_dedup_window`](crate::Topic::set_dedup_window) makes it
/// smaller.
///
/// The inline subscribers of a topic keep their windows in one table of the topic's:
/// a key that several of them remember is kept once, in about 32 bytes plus 4 per
/// subscriber that remembers it, so 8 inline subscribers that succeed for the same
/// keys hold about a quarter of what 8 windows of their own would. Each still has its
/// own capacity, ages and evictions, exactly as a window of its own. Their table
/// keeps the memory its largest set of windows needed until the last of them
/// unsubscribes. (Pool and thread subscribers and ack receivers run in parallel, and
/// keep windows of their own, so they never wait for each other's.)
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use crier::DedupWindow;
///
/// // Like SQS FIFO's 5-minute deduplication interval, at most 100,000 keys.
/// let window = DedupWindow::new(100_000, Duration::from_secs(300));
/// assert_eq!(window.capacity(), 100_000);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct DedupWindow {
    capacity: usize,
    max_age: Duration,
}

impl DedupWindow {
    /// At most `capacity` keys, each for less than `max_age`.
    pub fn new(capacity: usize, max_age: Duration) -> DedupWindow {
        DedupWindow { capacity, max_age }
    }

    /// The most keys remembered at once.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// How long a key is remembered.
    pub fn max_age(&self) -> Duration {
        self.max_age
    }

    pub(crate) fn check(&self) -> Result<(), &'static str> {
        if self.capacity == 0 {
            return Err("a dedup window must hold at least 1 key");
        }
        if self.max_age.is_zero() {
            return Err("a dedup window must last longer than zero");
        }
        if self.capacity > MAX_CAPACITY {
            return Err("a dedup window holds at most 2^31 keys");
        }
        Ok(())
    }
}

/// A key's 128-bit hash, as two words: without `u128`'s 16-byte alignment an entry of
/// a topic's window takes 40 bytes instead of 48.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct KeyHash(pub(crate) u64, pub(crate) u64);

/// An event's idempotency key, as [`Message::idempotency_key`](crate::Message::idempotency_key)
/// takes it: text, or an integer, which is the same key as its decimal text (`42_u64`
/// and `"42"` are one key).
///
/// It converts from `&str`, `String`, `&String`, `Box<str>`, `Cow<str>` and the
/// integer types. A key of up to 22 bytes (every integer up to 64 bits) is kept inline
/// in its event, so publishing it allocates nothing; a longer one is boxed.
///
/// ```
/// use crier::IdempotencyKey;
///
/// assert_eq!(IdempotencyKey::from(42_u64), IdempotencyKey::from("42"));
/// assert_eq!(IdempotencyKey::from(-7_i32).as_str(), "-7");
/// ```
//
// Inside: the key's hash once a window needed it. Every window on a bus hashes with
// the bus's one `KeyHasher`, so the key is hashed at most once however many windows
// look at it. The hash's second word doubles as the "hashed" flag, since
// `KeyHasher::hash` always sets its top bit (`HASHED`): the first word is stored
// before the second (`Release`), and read after the second was seen hashed
// (`Acquire`). Threads that race to hash the key store the same words, so a reader
// sees them whole whichever stores it sees; cheaper than a `OnceLock`, whose first
// call runs its once-only protocol for every event. loom model:
// `loom_key_hash_raced_by_two_windows_is_the_same_for_both`.
pub struct IdempotencyKey {
    text: KeyText,
    hash: [AtomicU64; 2],
}

/// The most bytes of key text kept inline: as many as fit beside the enum's tag in the
/// 24 bytes it takes anyway (a boxed `str` and a tag).
const INLINE: usize = 22;

/// The most decimal digits of a `u64`.
const U64_DIGITS: usize = 20;

/// "00" to "99": two digits per division, half the divisions of one at a time.
const DIGIT_PAIRS: &[u8; 200] = b"\
    0001020304050607080910111213141516171819\
    2021222324252627282930313233343536373839\
    4041424344454647484950515253545556575859\
    6061626364656667686970717273747576777879\
    8081828384858687888990919293949596979899";

/// `n`'s decimal digits, written at the end of `scratch`.
fn decimal_digits(mut n: u64, scratch: &mut [u8; U64_DIGITS]) -> &[u8] {
    let mut start = U64_DIGITS;
    while n >= 100 {
        let pair = (n % 100) as usize * 2;
        n /= 100;
        start -= 2;
        scratch[start..start + 2].copy_from_slice(&DIGIT_PAIRS[pair..pair + 2]);
    }
    if n >= 10 {
        let pair = n as usize * 2;
        start -= 2;
        scratch[start..start + 2].copy_from_slice(&DIGIT_PAIRS[pair..pair + 2]);
    } else {
        start -= 1;
        scratch[start] = b'0' + n as u8;
    }
    &scratch[start..]
}

/// A key's text: inline up to [`INLINE`] bytes, boxed beyond.
///
/// Why inline: the publisher allocates the box and whichever thread drops the event
/// last frees it, so with pull receivers every keyed event made a free across threads,
/// which the allocator pays for in contention as well as in instructions. Keeping short
/// keys inline made B1's at-least-once + dedup variant about 8% faster on the clock
/// (BENCHMARKS.md), although it counts slightly more instructions (the copy).
#[derive(Clone)]
enum KeyText {
    Inline { len: u8, bytes: [u8; INLINE] },
    Boxed(Box<str>),
}

impl KeyText {
    /// `text`, inline if it fits (`None` if not).
    fn inline(text: &str) -> Option<KeyText> {
        let mut bytes = [0; INLINE];
        bytes.get_mut(..text.len())?.copy_from_slice(text.as_bytes());
        Some(KeyText::Inline {
            len: text.len() as u8,
            bytes,
        })
    }

    /// A number's decimal text, as `Display` writes it: inline, written in place, for
    /// up to 22 characters (every integer up to 64 bits).
    fn decimal(negative: bool, magnitude: u128) -> KeyText {
        let sign = usize::from(negative);
        let mut bytes = [0; INLINE];
        if negative {
            bytes[0] = b'-';
        }
        // 64-bit division where it is enough: a 128-bit one is a library call.
        if let Ok(magnitude) = u64::try_from(magnitude) {
            let mut scratch = [0; U64_DIGITS];
            let digits = decimal_digits(magnitude, &mut scratch);
            let len = sign + digits.len();
            bytes[sign..len].copy_from_slice(digits);
            return KeyText::Inline { len: len as u8, bytes };
        }
        let digits = magnitude.checked_ilog10().map_or(1, |log| log as usize + 1);
        let len = sign + digits;
        let Some(places) = bytes.get_mut(sign..len) else {
            let sign = if negative { "-" } else { "" };
            return KeyText::Boxed(format!("{sign}{magnitude}").into_boxed_str());
        };
        let mut rest = magnitude;
        for place in places.iter_mut().rev() {
            *place = b'0' + (rest % 10) as u8;
            rest /= 10;
        }
        KeyText::Inline { len: len as u8, bytes }
    }

    fn as_bytes(&self) -> &[u8] {
        match self {
            KeyText::Inline { len, bytes } => &bytes[..usize::from(*len)],
            KeyText::Boxed(text) => text.as_bytes(),
        }
    }

    fn as_str(&self) -> &str {
        match self {
            // The whole of a `str`'s bytes, or ASCII digits: always UTF-8, so never the
            // default.
            KeyText::Inline { .. } => std::str::from_utf8(self.as_bytes()).unwrap_or_default(),
            KeyText::Boxed(text) => text,
        }
    }
}

impl From<&str> for KeyText {
    fn from(text: &str) -> KeyText {
        KeyText::inline(text).unwrap_or_else(|| KeyText::Boxed(text.into()))
    }
}

impl From<String> for KeyText {
    /// A long key keeps the string's allocation.
    fn from(text: String) -> KeyText {
        KeyText::inline(&text).unwrap_or_else(|| KeyText::Boxed(text.into_boxed_str()))
    }
}

/// Set in the second word of every [`KeyHash`]: a cached hash whose second word has
/// it is computed. The hash keeps 127 random bits.
const HASHED: u64 = 1 << 63;

impl IdempotencyKey {
    fn of(text: KeyText) -> IdempotencyKey {
        IdempotencyKey {
            text,
            hash: [AtomicU64::new(0), AtomicU64::new(0)],
        }
    }

    /// The key's text (an integer's in decimal).
    pub fn as_str(&self) -> &str {
        self.text.as_str()
    }

    /// The key's hash by `hasher`, which must be the bus's (every call uses the same).
    pub(crate) fn hash(&self, hasher: &KeyHasher) -> KeyHash {
        let second = self.hash[1].load(Ordering::Acquire);
        if second & HASHED != 0 {
            return KeyHash(self.hash[0].load(Ordering::Relaxed), second);
        }
        let hash = hasher.hash_bytes_of_text(self.text.as_bytes());
        self.hash[0].store(hash.0, Ordering::Relaxed);
        self.hash[1].store(hash.1, Ordering::Release);
        hash
    }
}

impl Clone for IdempotencyKey {
    fn clone(&self) -> IdempotencyKey {
        // The second word first, as `hash` reads them: a copy that has it hashed has
        // the first word that goes with it.
        let second = self.hash[1].load(Ordering::Acquire);
        let first = self.hash[0].load(Ordering::Relaxed);
        IdempotencyKey {
            text: self.text.clone(),
            hash: [AtomicU64::new(first), AtomicU64::new(second)],
        }
    }
}

impl std::fmt::Debug for IdempotencyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.as_str().fmt(f)
    }
}

impl std::fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Keys are equal when their texts are.
impl PartialEq for IdempotencyKey {
    fn eq(&self, other: &IdempotencyKey) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for IdempotencyKey {}

impl From<&str> for IdempotencyKey {
    fn from(text: &str) -> IdempotencyKey {
        IdempotencyKey::of(KeyText::from(text))
    }
}

impl From<String> for IdempotencyKey {
    fn from(text: String) -> IdempotencyKey {
        IdempotencyKey::of(KeyText::from(text))
    }
}

impl From<&String> for IdempotencyKey {
    fn from(text: &String) -> IdempotencyKey {
        IdempotencyKey::from(text.as_str())
    }
}

impl From<Box<str>> for IdempotencyKey {
    fn from(text: Box<str>) -> IdempotencyKey {
        IdempotencyKey::from(String::from(text))
    }
}

impl From<std::borrow::Cow<'_, str>> for IdempotencyKey {
    fn from(text: std::borrow::Cow<'_, str>) -> IdempotencyKey {
        IdempotencyKey::from(text.into_owned())
    }
}

macro_rules! from_unsigned {
    ($($int:ty),*) => {$(
        impl From<$int> for IdempotencyKey {
            /// Its decimal text, with no allocation.
            fn from(n: $int) -> IdempotencyKey {
                IdempotencyKey::of(KeyText::decimal(false, n as u128))
            }
        }
    )*};
}

macro_rules! from_signed {
    ($($int:ty),*) => {$(
        impl From<$int> for IdempotencyKey {
            /// Its decimal text, with no allocation.
            fn from(n: $int) -> IdempotencyKey {
                IdempotencyKey::of(KeyText::decimal(n < 0, n.unsigned_abs() as u128))
            }
        }
    )*};
}

from_unsigned!(u8, u16, u32, u64, u128, usize);
from_signed!(i8, i16, i32, i64, i128, isize);

/// Hashes idempotency keys for one bus's windows, with a SipHash key of its own
/// (see `siphash`).
pub(crate) struct KeyHasher(u64, u64);

impl KeyHasher {
    pub(crate) fn new() -> KeyHasher {
        // Random words, from the standard library's per-process random seed.
        let random = RandomState::new();
        KeyHasher(random.hash_one(0_u8), random.hash_one(1_u8))
    }

    /// The key's hash (a `str` key and the same `String` hash alike), with the top bit
    /// of its second word set ([`HASHED`]).
    pub(crate) fn hash<K: std::hash::Hash + ?Sized>(&self, key: &K) -> KeyHash {
        let mut sip = Sip13::new(self.0, self.1);
        key.hash(&mut sip);
        let (first, second) = sip.finish128();
        KeyHash(first, second | HASHED)
    }

    /// [`hash`](Self::hash) of a `str`, in one pass: about half the instructions for
    /// a short key.
    pub(crate) fn hash_text(&self, text: &str) -> KeyHash {
        self.hash_bytes_of_text(text.as_bytes())
    }

    /// [`hash_text`](Self::hash_text) of the `str` whose bytes these are.
    fn hash_bytes_of_text(&self, bytes: &[u8]) -> KeyHash {
        // `str`'s `Hash` writes its bytes and then `0xff`.
        let (first, second) = Sip13::new(self.0, self.1).finish128_of(bytes, 0xff);
        KeyHash(first, second | HASHED)
    }
}

/// A topic's window: the keys it accepted recently, each with the `seq` it was
/// accepted at.
pub(crate) type Accepted = Seen<u64>;

impl Accepted {
    /// Step 3 of the publish protocol (see `topic`), under the commit lock once the
    /// publish can no longer be refused: `Err(original seq)` if `key` was accepted
    /// within the window, otherwise records it as accepted at `seq`. One call, so the
    /// look-up and the record share one hold of the lock (and one probe).
    pub(crate) fn admit(&mut self, key: KeyHash, now: Stamp, seq: u64) -> Result<(), u64> {
        match self.insert(key, now, seq) {
            Some(original) => Err(original),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_topic_admits_a_key_once_within_the_window_and_keeps_its_seq() {
        let mut accepted = Accepted::new(DedupWindow::new(10, Duration::from_millis(100)));
        let key = KeyHasher::new().hash("order-1");
        let at = |ms: i64| Stamp(ms * 1_000_000);
        assert_eq!(accepted.admit(key, at(0), 7), Ok(()));
        assert_eq!(accepted.admit(key, at(99), 8), Err(7));
        assert_eq!(accepted.admit(key, at(100), 9), Ok(()), "forgotten at exactly max_age");
        assert_eq!(accepted.admit(key, at(150), 10), Err(9));
    }

    #[test]
    fn a_key_is_hashed_once_and_alike_by_every_window_of_a_bus() {
        let hasher = KeyHasher::new();
        let key = IdempotencyKey::from("pay-1");
        assert_eq!(key.hash(&hasher), hasher.hash("pay-1"));
        for text in ["", "pay-1", "1234567", "12345678", &"x".repeat(1000)] {
            assert_eq!(hasher.hash_text(text), hasher.hash(text), "{} bytes", text.len());
        }
        assert_eq!(key.hash(&hasher), key.hash(&hasher));
        assert_ne!(key.hash(&hasher), KeyHasher::new().hash("pay-1"), "seeds of its own");
        // The flag a cached hash is read by: a key whose hash has no such bit would be
        // hashed again at every look.
        assert_ne!(hasher.hash("").1 & HASHED, 0);
    }

    #[test]
    fn integer_keys_at_the_ends_of_their_ranges_are_their_text() {
        let inline = |key: &IdempotencyKey| matches!(key.text, KeyText::Inline { .. });
        for (key, text) in [
            (IdempotencyKey::from(0_u8), "0"),
            (IdempotencyKey::from(u64::MAX), "18446744073709551615"),
            (IdempotencyKey::from(i64::MIN), "-9223372036854775808"),
        ] {
            assert_eq!((key.as_str(), inline(&key)), (text, true));
        }
        let min = IdempotencyKey::from(i128::MIN);
        assert_eq!(min.as_str(), "-170141183460469231731687303715884105728");
        assert!(!inline(&min), "40 bytes: boxed");
    }

    proptest::proptest! {
        /// An integer key is its `Display` text, inline up to 22 bytes.
        #[test]
        fn an_integer_key_is_its_decimal_text(n: i128, m: u64) {
            for (key, text) in [
                (IdempotencyKey::from(n), n.to_string()),
                (IdempotencyKey::from(m), m.to_string()),
                (IdempotencyKey::from(n as i64), (n as i64).to_string()),
                (IdempotencyKey::from(n as u128), (n as u128).to_string()),
                (IdempotencyKey::from(n as i8), (n as i8).to_string()),
                // Every length of digits, from 1 to 20.
                (IdempotencyKey::from(m >> (m % 64)), (m >> (m % 64)).to_string()),
                (IdempotencyKey::from(-((m >> (m % 64)) as i128)), (-((m >> (m % 64)) as i128)).to_string()),
            ] {
                proptest::prop_assert_eq!(key.as_str(), text.as_str());
                proptest::prop_assert_eq!(matches!(key.text, KeyText::Inline { .. }), text.len() <= INLINE);
            }
        }

        /// A key keeps its text whole, inline or boxed, and hashes as that text does,
        /// cloned or not: texts up to 40 characters, one to four bytes each, so that
        /// the inline limit falls on and between characters.
        #[test]
        fn a_key_keeps_its_text_and_hashes_as_it(text in "\\PC{0,40}") {
            let hasher = KeyHasher::new();
            let key = IdempotencyKey::from(text.clone());
            proptest::prop_assert_eq!(&key, &IdempotencyKey::from(text.as_str()));
            proptest::prop_assert_eq!(key.as_str(), text.as_str());
            proptest::prop_assert_eq!(matches!(key.text, KeyText::Inline { .. }), text.len() <= INLINE);
            proptest::prop_assert_eq!(key.hash(&hasher), hasher.hash(text.as_str()));
            let copy = key.clone();
            proptest::prop_assert_eq!((copy.as_str(), copy.hash(&hasher)), (text.as_str(), hasher.hash(text.as_str())));
        }
    }

    #[test]
    fn out_of_bounds_windows_are_refused() {
        assert!(DedupWindow::new(0, Duration::from_secs(1)).check().is_err());
        assert!(DedupWindow::new(1, Duration::ZERO).check().is_err());
        assert!(DedupWindow::new(1, Duration::from_nanos(1)).check().is_ok());
        assert!(DedupWindow::new(MAX_CAPACITY, Duration::MAX).check().is_ok());
        assert!(DedupWindow::new(MAX_CAPACITY + 1, Duration::MAX).check().is_err());
    }
}
