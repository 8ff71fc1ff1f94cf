//! Exact decimal text ⇄ `Decimal128(38, 18)`.
//!
//! Every money amount, price and quantity in tally is a `Decimal128` with precision 38 and
//! scale [`SCALE`] = 18: 20 integer digits and 18 fractional digits. Source text is parsed
//! exactly (plain decimals and E-notation such as `1.81E-8`); a value that would need more
//! than 18 fractional digits or more than 20 integer digits is *refused* with a reason,
//! never rounded, so no digit of the source text is ever lost.

use arrow::datatypes::{DataType, i256};

/// Fractional digits kept for every decimal column.
pub const SCALE: i8 = 18;
/// Total digits of every decimal column.
pub const PRECISION: u8 = 38;
/// 10^SCALE.
pub const ONE: i128 = 1_000_000_000_000_000_000;

/// The Arrow type of every FOCUS decimal column.
pub fn data_type() -> DataType {
    DataType::Decimal128(PRECISION, SCALE)
}

const MAX_ABS: i128 = 99_999_999_999_999_999_999_999_999_999_999_999_999; // 38 nines

/// Parses decimal text into units of 10^-18.
///
/// Accepts an optional sign, digits with an optional `.`, and an optional exponent
/// (`e`/`E`, signed). Leading/trailing ASCII whitespace is ignored. Thousands separators,
/// currency symbols, `+` inside the mantissa, `NaN` and `Inf` are refused.
pub fn parse(text: &str) -> Result<i128, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("empty number".into());
    }
    let (neg, body) = match s.as_bytes()[0] {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let (mantissa, exp) = match body.find(['e', 'E']) {
        Some(i) => {
            let e: i32 = body[i + 1..]
                .parse()
                .map_err(|_| format!("bad exponent in {text:?}"))?;
            (&body[..i], e)
        }
        None => (body, 0),
    };
    let (int_part, frac_part) = match mantissa.find('.') {
        Some(i) => (&mantissa[..i], &mantissa[i + 1..]),
        None => (mantissa, ""),
    };
    if int_part.is_empty() && frac_part.is_empty() {
        return Err(format!("not a number: {text:?}"));
    }
    if !int_part.bytes().all(|b| b.is_ascii_digit())
        || !frac_part.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(format!("not a number: {text:?}"));
    }
    // digits = int_part ++ frac_part, value = digits * 10^(exp - frac_len)
    let shift = exp as i64 - frac_part.len() as i64 + SCALE as i64; // power of ten to apply to `digits`
    let n = (int_part.len() + frac_part.len()) as i64;
    // When shift < 0 the last -shift digits fall below 10^-18.
    let keep = if shift < 0 { n + shift } else { n };
    // Significant digits are gathered 19 at a time in a u64 (no allocation, no 128-bit multiply
    // per digit); at most 38 of them fit Decimal128(38,18).
    let mut value: u128 = 0;
    let mut digits_in_value: i64 = 0;
    let mut chunk: u64 = 0;
    let mut chunk_len: usize = 0;
    let mut dropped_nonzero = false;
    let mut push_chunk = |chunk: u64, len: usize, value: &mut u128| -> Result<(), String> {
        digits_in_value += len as i64;
        if digits_in_value > PRECISION as i64 {
            return Err(too_large(text));
        }
        *value = *value * POW10[len] + chunk as u128;
        Ok(())
    };
    for (i, b) in int_part.bytes().chain(frac_part.bytes()).enumerate() {
        let d = b - b'0';
        if (i as i64) < keep {
            if value == 0 && chunk == 0 && d == 0 {
                continue; // a leading zero
            }
            chunk = chunk * 10 + d as u64;
            chunk_len += 1;
            if chunk_len == 19 {
                push_chunk(chunk, chunk_len, &mut value)?;
                (chunk, chunk_len) = (0, 0);
            }
        } else if d != 0 {
            dropped_nonzero = true;
            break;
        }
    }
    if dropped_nonzero {
        return Err(format!(
            "{text:?} needs more than {SCALE} decimal places; tally keeps {SCALE} and never rounds"
        ));
    }
    if chunk_len > 0 {
        push_chunk(chunk, chunk_len, &mut value)?;
    }
    if shift > 0 && value != 0 {
        if digits_in_value + shift > PRECISION as i64 {
            return Err(too_large(text));
        }
        value *= POW10[shift as usize];
    }
    if value > MAX_ABS as u128 {
        return Err(too_large(text));
    }
    let value = value as i128;
    Ok(if neg { -value } else { value })
}

/// 10^0 ..= 10^38: a chunk of up to 19 digits, or a shift that keeps a value within 38 digits.
const POW10: [u128; 39] = {
    let mut t = [1u128; 39];
    let mut i = 1;
    while i < 39 {
        t[i] = t[i - 1] * 10;
        i += 1;
    }
    t
};

/// 10^0 ..= 10^18 as doubles (each exact: powers of ten up to 10^22 are).
const POW10_F64: [f64; 19] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18,
];

/// What [`parse`] gives for the shortest decimal text that reads back as `x` (the text `ryu`
/// writes, and tally's Parquet reader with it), found without writing the text: `None` when
/// `x` is not finite or its shortest decimal has more than 18 places or 2^50 or more units in
/// its last place (then the caller goes through the text, which decides).
///
/// For `places` = 0, 1, …, the candidate is `k` = `x`·10^places rounded. While |k| < 2^50, the
/// rounding error of that product is below ¼, so `k` is the decimal with `places` places that
/// reads back as `x` if one exists, and no other such decimal can (two would be less than one
/// unit in the last place of `x` apart). Whether it reads back is `k` / 10^places == `x`: both
/// are exact doubles, so the division rounds the decimal's value correctly, as reading its text
/// does. The first `places` that works gives the shortest decimal, which is the one `ryu`
/// writes. A test holds this to `parse(ryu)` over millions of doubles.
pub fn from_f64_shortest(x: f64) -> Option<i128> {
    const LIMIT: f64 = (1u64 << 50) as f64;
    if !x.is_finite() {
        return None;
    }
    for (places, &p) in POW10_F64.iter().enumerate() {
        let k = (x * p).round();
        if k.abs() >= LIMIT {
            return None;
        }
        if k / p == x {
            return Some(k as i128 * POW10[SCALE as usize - places] as i128);
        }
    }
    None
}

fn too_large(text: &str) -> String {
    format!("{text:?} is too large for Decimal128(38,18) (at most 20 integer digits)")
}

/// Formats units of 10^-18 as plain decimal text without trailing zeros (`"0.0000000181"`).
pub fn format(units: i128) -> String {
    let neg = units < 0;
    let abs = units.unsigned_abs();
    let int = abs / ONE as u128;
    let frac = abs % ONE as u128;
    let mut s = if neg {
        String::from("-")
    } else {
        String::new()
    };
    s.push_str(&int.to_string());
    if frac != 0 {
        let f = format!("{frac:018}");
        s.push('.');
        s.push_str(f.trim_end_matches('0'));
    }
    s
}

/// Number of fractional digits a value actually uses (trailing zeros removed).
pub fn used_scale(units: i128) -> u32 {
    if units == 0 {
        return 0;
    }
    let u = units.unsigned_abs();
    // A 64-bit remainder is several times cheaper than a 128-bit one, and most amounts fit.
    match u64::try_from(u) {
        Ok(u) => scale_without_trailing_zeros(u),
        Err(_) => scale_without_trailing_zeros(u),
    }
}

/// [`SCALE`] less the trailing decimal zeros of `u` (at most [`SCALE`] of them).
fn scale_without_trailing_zeros<T>(mut u: T) -> u32
where
    T: Copy + PartialEq + From<u8> + std::ops::Rem<Output = T> + std::ops::Div<Output = T>,
{
    let (ten, zero) = (T::from(10), T::from(0));
    let mut scale = SCALE as u32;
    while scale > 0 && u % ten == zero {
        u = u / ten;
        scale -= 1;
    }
    scale
}

/// Does `cost = price × quantity` hold, to the precision the cost was printed with?
///
/// The product is computed exactly (at scale 36, in 256 bits) and the identity holds when the
/// cost equals it rounded to the cost's last significant decimal place, or to the cent when the
/// cost has fewer decimals ([`MIN_COST_SCALE`]): |cost − price × quantity| ≤ ½ unit in that place. A cost off by one unit in its last place therefore fails; so does a
/// provider's cost that was rounded from a quantity more precise than the one it printed (AWS
/// does this on aggregated line items: see the README).
pub fn identity_holds(cost: i128, price: i128, quantity: i128) -> bool {
    // One unit in the cost's last place, at scale 36: 10^(36 - places).
    let places = used_scale(cost).max(MIN_COST_SCALE) as usize;
    let tolerance = POW10[2 * SCALE as usize - places] as i128;
    // Nearly every line item's figures fit the exact check in 128 bits; 256 only when not.
    let narrow = price.checked_mul(quantity).and_then(|product| {
        cost.checked_mul(ONE)?
            .checked_sub(product)?
            .checked_abs()?
            .checked_mul(2)
    });
    match narrow {
        Some(twice_diff) => twice_diff <= tolerance,
        None => identity_holds_wide(cost, price, quantity, tolerance),
    }
}

/// [`identity_holds`] in 256 bits, for figures whose scale-36 product overflows 128.
fn identity_holds_wide(cost: i128, price: i128, quantity: i128, tolerance: i128) -> bool {
    let one = i256::from_i128(ONE);
    let product = i256::from_i128(price).wrapping_mul(i256::from_i128(quantity)); // scale 36
    let cost36 = i256::from_i128(cost).wrapping_mul(one);
    let twice_diff = cost36
        .wrapping_sub(product)
        .wrapping_abs()
        .wrapping_mul(i256::from_i128(2));
    twice_diff <= i256::from_i128(tolerance)
}

/// `a × b` at scale 18, rounded half to even from the exact 36-place product; `None` when the
/// result does not fit Decimal128(38,18). For derived figures (a list cost from a list price
/// and a quantity), never for source money, which is only ever parsed, summed and compared.
pub fn mul(a: i128, b: i128) -> Option<i128> {
    let one = i256::from_i128(ONE);
    let p = i256::from_i128(a).checked_mul(i256::from_i128(b))?;
    let q = p.checked_div(one)?;
    let r = p.checked_rem(one)?;
    let twice = r.wrapping_abs().wrapping_mul(i256::from_i128(2));
    let bump = match twice.cmp(&one) {
        std::cmp::Ordering::Greater => true,
        std::cmp::Ordering::Equal => q.checked_rem(i256::from_i128(2))? != i256::ZERO,
        std::cmp::Ordering::Less => false,
    };
    let q = if bump {
        if p.is_negative() {
            q.checked_sub(i256::ONE)?
        } else {
            q.checked_add(i256::ONE)?
        }
    } else {
        q
    };
    q.to_i128().filter(|v| v.unsigned_abs() <= MAX_ABS as u128)
}

/// `amount × weight / total` at scale 18, truncated toward zero (a share of a split): exact up
/// to the 18th place, so the shares of an amount add up to it less a remainder under one unit
/// per share, which the caller assigns. `None` when `total` is 0 or the result overflows.
pub fn share(amount: i128, weight: i128, total: i128) -> Option<i128> {
    if total == 0 {
        return None;
    }
    let p = i256::from_i128(amount).checked_mul(i256::from_i128(weight))?;
    p.checked_div(i256::from_i128(total))?.to_i128()
}

/// Adds `v` to the sum kept under `key`; an overflow of Decimal128 is an error, never a wrap.
pub fn accumulate<K: Ord>(
    sums: &mut std::collections::BTreeMap<K, i128>,
    key: K,
    v: i128,
) -> Result<(), String> {
    let e = sums.entry(key).or_default();
    *e = e
        .checked_add(v)
        .ok_or_else(|| "a money sum overflowed Decimal128(38,18)".to_string())?;
    Ok(())
}

/// Costs are taken to be printed to at least this many decimal places: the trailing zeros of a
/// value are gone once it is parsed, so "10.00" and "10" must not allow ±0.5.
pub const MIN_COST_SCALE: u32 = 2;

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> i128 {
        parse(s).unwrap()
    }

    /// The fast double → decimal gives what parsing ryu's text gives, or declines: over random
    /// bit patterns, and over decimals of 0 to 18 places as a billing export's doubles hold
    /// them (where it must decline almost never).
    #[test]
    fn a_double_types_as_its_shortest_text_does() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut text = ryu::Buffer::new();
        let mut check = |x: f64| -> bool {
            match from_f64_shortest(x) {
                Some(v) => {
                    assert_eq!(Ok(v), parse(text.format(x)), "{x:?} ({:#x})", x.to_bits());
                    true
                }
                None => false,
            }
        };
        for _ in 0..1_000_000 {
            check(f64::from_bits(next()));
        }
        let (mut decimals, mut typed) = (0, 0);
        for _ in 0..2_000_000 {
            let r = next();
            let places = (r % 19) as i32;
            let digits = 1 + (r >> 8) % 15;
            let k = ((r >> 16) % 10u64.pow(digits as u32)) as f64;
            let x = k / 10f64.powi(places) * if r & 1 << 7 == 0 { 1.0 } else { -1.0 };
            decimals += 1;
            typed += usize::from(check(x));
            check(x * 3.0);
            check(f64::from_bits(x.to_bits() + 1));
        }
        for x in [
            0.0, -0.0, 1.0, 0.1, 0.3, 35.712, 0.048, 1e-18, 1.5e-18, 1e15, 1e16, 2e-300,
        ] {
            check(x);
        }
        assert_eq!(from_f64_shortest(0.1), Some(ONE / 10));
        assert_eq!(from_f64_shortest(-0.0), Some(0));
        assert_eq!(
            from_f64_shortest(1e-19),
            None,
            "more than 18 places: the text decides"
        );
        assert_eq!(from_f64_shortest(f64::NAN), None);
        assert!(typed * 100 > decimals * 99, "{typed} of {decimals}");
    }

    #[test]
    fn parses_plain_and_exponent_forms_exactly() {
        assert_eq!(p("1"), ONE);
        assert_eq!(p("-0.5"), -ONE / 2);
        assert_eq!(p("1.81E-8"), 18_100_000_000);
        assert_eq!(p("1.0E-6"), 1_000_000_000_000);
        assert_eq!(p("2.5e3"), 2500 * ONE);
        assert_eq!(p(".25"), ONE / 4);
        assert_eq!(p("7."), 7 * ONE);
        assert_eq!(p("0.000000000000000001"), 1);
        assert_eq!(
            p("1.23000000000000000000"),
            123 * ONE / 100,
            "trailing zeros beyond scale are fine"
        );
        assert_eq!(p(" 12.5 "), 125 * ONE / 10);
        assert_eq!(p("99999999999999999999.999999999999999999"), MAX_ABS);
    }

    #[test]
    fn refuses_what_it_cannot_keep_exactly() {
        assert!(
            parse("1.3E-20")
                .unwrap_err()
                .contains("more than 18 decimal places")
        );
        assert!(parse("0.0000000000000000001").is_err());
        assert!(
            parse("100000000000000000000")
                .unwrap_err()
                .contains("too large")
        );
        for bad in [
            "", "abc", "1,000.00", "$5", "1e", "NaN", "inf", "1.2.3", "--1", ".",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn parses_long_digit_strings_across_its_19_digit_chunks() {
        assert_eq!(p("0000000000000000000000001.5"), 15 * ONE / 10);
        assert_eq!(
            p("1234567890123456789.01"),
            123_456_789_012_345_678_901 * ONE / 100
        );
        assert_eq!(
            p("12345678901234567890.123456789012345678"),
            12_345_678_901_234_567_890_123_456_789_012_345_678
        );
        assert_eq!(p("1e19"), 10_000_000_000_000_000_000 * ONE);
        assert_eq!(p("-0"), 0);
        assert_eq!(p("0e30"), 0);
        assert_eq!(p("0.100000000000000000000000000000"), ONE / 10);
        assert!(parse("1e20").unwrap_err().contains("too large"));
        // A digit below 10^-18 is named as such though the kept digits are also too many.
        assert!(
            parse("100000000000000000000.0000000000000000001")
                .unwrap_err()
                .contains("more than 18 decimal places")
        );
        assert!(
            parse("123456789012345678901.5")
                .unwrap_err()
                .contains("too large")
        );
    }

    #[test]
    fn identity_check_in_128_bits_agrees_with_256() {
        let figures = [
            "0",
            "0.01",
            "0.0000000181",
            "3",
            "20",
            "0.52",
            "10.4",
            "1234.5678",
            "99999.99",
            "0.333333333333333333",
            "1000000",
            "99999999999999999999.999999999999999999",
            "-12345678901234567890.5",
            "123456789.123456789",
        ];
        for c in figures {
            for pr in figures {
                for q in figures {
                    let (c, pr, q) = (p(c), p(pr), p(q));
                    let places = used_scale(c).max(MIN_COST_SCALE) as usize;
                    let tolerance = POW10[2 * SCALE as usize - places] as i128;
                    assert_eq!(
                        identity_holds(c, pr, q),
                        identity_holds_wide(c, pr, q, tolerance),
                        "{c} {pr} {q}"
                    );
                }
            }
        }
    }

    #[test]
    fn formats_round_trip() {
        for s in [
            "0",
            "1",
            "-1.5",
            "0.0000000181",
            "123456789.000000000000000001",
        ] {
            assert_eq!(format(p(s)), s);
        }
    }

    #[test]
    fn identity_allows_provider_rounding_but_not_one_ulp() {
        // 0.02 * 3 = 0.06
        assert!(identity_holds(p("0.06"), p("0.02"), p("3")));
        assert!(
            !identity_holds(p("0.07"), p("0.02"), p("3")),
            "off by one unit in the last place"
        );
        assert!(!identity_holds(p("0.05"), p("0.02"), p("3")));
        // AWS prints 2 significant digits: 0.0036 * 0.1214012512 = 0.00043704450432 printed 4.370445E-4
        assert!(identity_holds(
            p("4.370445E-4"),
            p("0.0036"),
            p("0.1214012512")
        ));
        assert!(!identity_holds(
            p("4.370446E-4"),
            p("0.0036"),
            p("0.1214012512")
        ));
        assert!(identity_holds(0, 0, p("5")));
        // trailing zeros are gone after parsing: a whole-number or zero cost is held to the cent
        assert!(
            !identity_holds(p("10.00"), p("0.52"), p("20")),
            "10.00 is not 0.52 × 20 = 10.40"
        );
        assert!(identity_holds(p("10.40"), p("0.52"), p("20")));
        assert!(
            !identity_holds(0, p("0.1"), p("3")),
            "a zero cost with a 0.30 product"
        );
        assert!(
            identity_holds(p("0.10"), p("0.0333"), p("3")),
            "0.0999 rounds to the cent"
        );
        assert!(identity_holds(p("-0.06"), p("0.02"), p("-3")));
    }

    #[test]
    fn products_round_half_even_at_the_eighteenth_place() {
        assert_eq!(mul(p("0.32085564"), p("0.0416")), Some(p("0.013347594624")));
        assert_eq!(mul(p("-2.5"), p("4")), Some(p("-10")));
        // 0.5e-18 rounds to even (0), 1.5e-18 to 2e-18.
        assert_eq!(mul(p("0.000000001"), p("0.0000000005")), Some(0));
        assert_eq!(mul(p("0.000000001"), p("0.0000000015")), Some(2));
        assert_eq!(mul(p("-0.000000001"), p("0.0000000015")), Some(-2));
        assert_eq!(mul(p("99999999999999999999"), p("10")), None);
    }

    #[test]
    fn shares_truncate_and_leave_a_small_remainder() {
        // 10.00 split three ways: 3.333333333333333333 each, remainder 1e-18.
        let third = share(p("10"), p("1"), p("3")).unwrap();
        assert_eq!(format(third), "3.333333333333333333");
        assert_eq!(p("10") - 3 * third, 1);
        assert_eq!(
            share(p("-1"), p("1"), p("3")),
            Some(-333_333_333_333_333_333)
        );
        assert_eq!(share(p("5"), p("25"), p("100")), Some(p("1.25")));
        assert_eq!(share(p("1"), p("1"), 0), None);
    }

    #[test]
    fn used_scale_counts_significant_fraction_digits() {
        assert_eq!(used_scale(p("1.2300")), 2);
        assert_eq!(used_scale(p("100")), 0);
        assert_eq!(used_scale(p("1E-18")), 18);
    }
}
