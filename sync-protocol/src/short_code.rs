//! Short codes (DESIGN §2.2): `XXXX-XXXX-XXXX` for manual entry and badges printed without a QR.
//!
//! Twelve Crockford base32 characters: eleven carry a 55-bit value, the twelfth is a check
//! character. The check is a linear code over GF(32): with distinct non-zero weights `w_i = α^i`
//! every valid code satisfies `Σ w_i·v_i = 0`. A single wrong character `e` at position `i` leaves
//! the syndrome `w_i·e ≠ 0`; swapping neighbours `a, b` leaves `(w_i + w_{i+1})·(a + b) ≠ 0`
//! (characteristic 2: plus is minus). So every single-character typo and every adjacent swap,
//! including those touching the check character, is caught — exhaustively tested below.
//!
//! What people type is normalised first: case, spaces and dashes are ignored, and the letters
//! Crockford reserves as look-alikes are mapped (`O`→`0`, `I`/`L`→`1`).

use std::fmt;
use std::str::FromStr;

/// Crockford's base32 alphabet: no I, L, O, U.
const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
/// Characters in a code, check character included.
pub const CODE_LEN: usize = 12;
const DATA_LEN: usize = CODE_LEN - 1;
/// Largest value a short code carries (55 bits).
pub const MAX_VALUE: u64 = (1 << (5 * DATA_LEN)) - 1;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShortCodeError {
    #[error("a short code has {CODE_LEN} characters, this one has {0}")]
    WrongLength(usize),
    #[error("{0:?} is not a short-code character")]
    InvalidCharacter(char),
    #[error("check character does not match: the code was mistyped")]
    BadCheck,
    #[error("value {0} does not fit in a short code")]
    ValueTooLarge(u64),
}

/// A validated short code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShortCode(u64);

// GF(32) with the primitive polynomial x^5 + x^2 + 1.
fn gf_mul(mut a: u8, mut b: u8) -> u8 {
    let mut r = 0u8;
    while b != 0 {
        if b & 1 != 0 {
            r ^= a;
        }
        b >>= 1;
        a <<= 1;
        if a & 0x20 != 0 {
            a ^= 0x25;
        }
    }
    r
}

/// `α^(i+1)` for position `i`: distinct and non-zero for all twelve positions (α has order 31).
const fn weight(i: usize) -> u8 {
    let mut w = 1u8;
    let mut k = 0;
    while k <= i {
        w <<= 1;
        if w & 0x20 != 0 {
            w ^= 0x25;
        }
        k += 1;
    }
    w
}

fn gf_inv(a: u8) -> u8 {
    // a^30 = a^-1 in GF(32)*, which has order 31.
    let mut r = 1u8;
    for _ in 0..30 {
        r = gf_mul(r, a);
    }
    r
}

fn check_symbol(data: &[u8; DATA_LEN]) -> u8 {
    let s = data
        .iter()
        .enumerate()
        .fold(0u8, |acc, (i, &v)| acc ^ gf_mul(weight(i), v));
    gf_mul(s, gf_inv(weight(DATA_LEN)))
}

fn symbol_value(c: char) -> Option<u8> {
    let c = match c.to_ascii_uppercase() {
        'O' => '0',
        'I' | 'L' => '1',
        c => c,
    };
    ALPHABET
        .iter()
        .position(|&a| a as char == c)
        .map(|p| p as u8)
}

impl ShortCode {
    /// A code for a 55-bit value (the server draws them at random and checks uniqueness).
    pub fn from_value(value: u64) -> Result<Self, ShortCodeError> {
        if value > MAX_VALUE {
            return Err(ShortCodeError::ValueTooLarge(value));
        }
        Ok(Self(value))
    }

    /// The 55-bit value.
    pub fn value(self) -> u64 {
        self.0
    }

    fn symbols(self) -> [u8; CODE_LEN] {
        let mut data = [0u8; DATA_LEN];
        for (i, d) in data.iter_mut().enumerate() {
            *d = ((self.0 >> (5 * (DATA_LEN - 1 - i))) & 31) as u8;
        }
        let mut out = [0u8; CODE_LEN];
        out[..DATA_LEN].copy_from_slice(&data);
        out[DATA_LEN] = check_symbol(&data);
        out
    }

    /// The canonical form without dashes (`ABCD2345WXYZ`): what the replica stores and looks up.
    pub fn compact(self) -> String {
        self.symbols()
            .iter()
            .map(|&v| ALPHABET[v as usize] as char)
            .collect()
    }

    /// Parses what a person typed. Ignores case, spaces and dashes; maps O→0 and I/L→1.
    pub fn parse(input: &str) -> Result<Self, ShortCodeError> {
        let mut symbols = [0u8; CODE_LEN];
        let mut n = 0usize;
        for c in input.chars() {
            if c == '-' || c.is_whitespace() {
                continue;
            }
            let v = symbol_value(c).ok_or(ShortCodeError::InvalidCharacter(c))?;
            if n < CODE_LEN {
                symbols[n] = v;
            }
            n += 1;
        }
        if n != CODE_LEN {
            return Err(ShortCodeError::WrongLength(n));
        }
        let syndrome = symbols
            .iter()
            .enumerate()
            .fold(0u8, |acc, (i, &v)| acc ^ gf_mul(weight(i), v));
        if syndrome != 0 {
            return Err(ShortCodeError::BadCheck);
        }
        let value = symbols[..DATA_LEN]
            .iter()
            .fold(0u64, |acc, &v| (acc << 5) | u64::from(v));
        Ok(Self(value))
    }
}

impl fmt::Display for ShortCode {
    /// `XXXX-XXXX-XXXX`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = self.compact();
        write!(f, "{}-{}-{}", &c[0..4], &c[4..8], &c[8..12])
    }
}

impl FromStr for ShortCode {
    type Err = ShortCodeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl serde::Serialize for ShortCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for ShortCode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn weights_are_distinct_and_non_zero() {
        let w: Vec<u8> = (0..CODE_LEN).map(weight).collect();
        for (i, a) in w.iter().enumerate() {
            assert_ne!(*a, 0);
            for b in &w[i + 1..] {
                assert_ne!(a, b);
            }
        }
        for a in 1..32u8 {
            assert_eq!(gf_mul(a, gf_inv(a)), 1);
        }
    }

    #[test]
    fn formats_and_round_trips() {
        let code = ShortCode::from_value(0).unwrap();
        assert_eq!(code.to_string(), "0000-0000-0000");
        let code = ShortCode::from_value(MAX_VALUE).unwrap();
        assert_eq!(ShortCode::parse(&code.to_string()).unwrap(), code);
        assert_eq!(
            ShortCode::from_value(MAX_VALUE + 1),
            Err(ShortCodeError::ValueTooLarge(MAX_VALUE + 1))
        );
        let code = ShortCode::from_value(0x1234_5678_9ABC).unwrap();
        let s = code.to_string();
        assert_eq!(s.len(), 14);
        assert_eq!(&s[4..5], "-");
        assert!(s.chars().all(|c| c == '-' || ALPHABET.contains(&(c as u8))));
    }

    #[test]
    fn normalises_what_people_type() {
        // A code whose compact form has 0 and 1 in it, typed with look-alikes.
        let code = ShortCode::from_value(0b00001_00000_00001 << 40).unwrap();
        let canon = code.compact();
        assert!(canon.starts_with("101"), "{canon}");
        let typed = format!(
            " {} - {}  {}",
            canon[..4].replace('1', "l").replace('0', "o"),
            canon[4..8].to_lowercase(),
            &canon[8..]
        );
        assert_eq!(ShortCode::parse(&typed).unwrap(), code);
        assert_eq!(
            ShortCode::parse(&canon.replacen('1', "I", 1)).unwrap(),
            code
        );
        assert_eq!(
            ShortCode::parse("ABCD-EFGH-JKM"),
            Err(ShortCodeError::WrongLength(11))
        );
        assert_eq!(
            ShortCode::parse("ABCD-EFGH-JKMNP"),
            Err(ShortCodeError::WrongLength(13))
        );
        assert_eq!(
            ShortCode::parse("ABCD-EFGH-JKU0"),
            Err(ShortCodeError::InvalidCharacter('U'))
        );
        assert_eq!(
            ShortCode::parse("ABCD-EFGH-JK#0"),
            Err(ShortCodeError::InvalidCharacter('#'))
        );
    }

    fn typo_and_swap_variants(code: &str) -> Vec<String> {
        let chars: Vec<char> = code.chars().collect();
        let mut out = Vec::new();
        for i in 0..chars.len() {
            for &a in ALPHABET {
                let a = a as char;
                if a != chars[i] {
                    let mut c = chars.clone();
                    c[i] = a;
                    out.push(c.into_iter().collect());
                }
            }
            if i + 1 < chars.len() && chars[i] != chars[i + 1] {
                let mut c = chars.clone();
                c.swap(i, i + 1);
                out.push(c.into_iter().collect());
            }
        }
        out
    }

    #[test]
    fn every_single_typo_and_adjacent_swap_is_caught_exhaustively() {
        for value in [0, 1, MAX_VALUE, 0x0123_4567_89AB_CDEF & MAX_VALUE, 31 << 50] {
            let code = ShortCode::from_value(value).unwrap().compact();
            for variant in typo_and_swap_variants(&code) {
                assert_eq!(
                    ShortCode::parse(&variant),
                    Err(ShortCodeError::BadCheck),
                    "{code} -> {variant} was not caught"
                );
            }
        }
    }

    proptest! {
        #[test]
        fn any_value_round_trips(value in 0..=MAX_VALUE) {
            let code = ShortCode::from_value(value).unwrap();
            prop_assert_eq!(ShortCode::parse(&code.to_string()).unwrap().value(), value);
            prop_assert_eq!(ShortCode::parse(&code.compact()).unwrap().value(), value);
        }

        #[test]
        fn typos_and_swaps_of_random_codes_are_caught(value in 0..=MAX_VALUE) {
            let code = ShortCode::from_value(value).unwrap().compact();
            for variant in typo_and_swap_variants(&code) {
                prop_assert_eq!(ShortCode::parse(&variant), Err(ShortCodeError::BadCheck));
            }
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,40}") {
            let _ = ShortCode::parse(&s);
        }
    }
}
