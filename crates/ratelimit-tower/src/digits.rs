//! Integers as header values, without the allocations `HeaderValue::from`
//! makes.
//!
//! `HeaderValue::from(u64)` writes into a 20-byte `BytesMut` and freezes
//! it; as the digits fill less than the buffer, freezing allocates a
//! second block to share the first. Every response carries three or four
//! such fields, most of them small numbers (a quota, what is left of it, a
//! number of seconds), so small numbers come from a static table and
//! larger ones take one allocation of their exact size.

use bytes::Bytes;
use http::HeaderValue;

/// Numbers below this are served from [`TABLE`].
const SMALL: usize = 1000;

/// The width of one entry of [`TABLE`]: `SMALL - 1` has this many digits.
const WIDTH: usize = 3;

/// `000001002...999`: number `n` is the last digits of `TABLE[n * WIDTH..][..WIDTH]`.
static TABLE: [u8; SMALL * WIDTH] = {
    let mut table = [0; SMALL * WIDTH];
    let mut n = 0;
    while n < SMALL {
        let mut rest = n;
        let mut i = WIDTH;
        while i > 0 {
            i -= 1;
            table[n * WIDTH + i] = b'0' + (rest % 10) as u8;
            rest /= 10;
        }
        n += 1;
    }
    table
};

/// `n` in decimal as a header value.
pub(crate) fn value(n: u64) -> HeaderValue {
    let bytes = match usize::try_from(n) {
        Ok(small) if small < SMALL => {
            let digits = if small >= 100 {
                3
            } else if small >= 10 {
                2
            } else {
                1
            };
            let end = (small + 1) * WIDTH;
            Bytes::from_static(&TABLE[end - digits..end])
        }
        _ => Bytes::copy_from_slice(itoa::Buffer::new().format(n).as_bytes()),
    };
    // Digits are always valid in a header value.
    HeaderValue::from_maybe_shared(bytes).expect("decimal digits are a valid header value")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_number_reads_as_its_decimal_text() {
        let edges = [0, 1, 9, 10, 11, 99, 100, 101, 998, 999, 1000, 1001, 65_535];
        for n in (0..2_000)
            .chain(edges)
            .chain([u64::from(u32::MAX), u64::MAX])
        {
            assert_eq!(value(n), n.to_string().as_str(), "{n}");
        }
    }
}
