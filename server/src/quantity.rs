//! Exact quantities of methane.
//!
//! Every quantity is a whole number of milligrams held in an `i64`, from the JSON text of a request
//! to the bigint columns and back to the 6-decimal strings of a response: no value ever passes
//! through floating point. Parsing works on the literal text of the JSON number or string, so
//! `0.1` is exactly 100,000 mg, and a value that is not a whole number of milligrams after unit
//! conversion is refused rather than rounded.

use std::fmt;

use serde::{Serialize, Serializer};

/// Milligrams per kilogram.
const MG_PER_KG: i64 = 1_000_000;

/// An exact, non-negative mass of methane in milligrams. On the wire: kilograms as a string with
/// exactly six decimals (its schema in the API document is `Kilograms`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, utoipa::ToSchema)]
#[schema(
    as = Kilograms,
    value_type = String,
    pattern = r"^[0-9]+\.[0-9]{6}$",
    example = "120.500000"
)]
pub struct Milligrams(i64);

/// The unit a reading's value is expressed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MassUnit {
    /// Grams: 10^3 mg.
    Grams,
    /// Kilograms (the default): 10^6 mg.
    Kilograms,
    /// Metric tonnes: 10^9 mg.
    Tonnes,
}

impl MassUnit {
    /// Parses the `unit` field of a reading.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "g" => Some(Self::Grams),
            "kg" => Some(Self::Kilograms),
            "t" => Some(Self::Tonnes),
            _ => None,
        }
    }

    /// Powers of ten from this unit to milligrams.
    fn mg_exponent(self) -> i32 {
        match self {
            Self::Grams => 3,
            Self::Kilograms => 6,
            Self::Tonnes => 9,
        }
    }
}

/// Why a quantity was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    /// Not a JSON number or a decimal string.
    #[error("must be a number or a decimal string")]
    NotANumber,
    /// Below zero.
    #[error("must not be negative")]
    Negative,
    /// Finer than one milligram.
    #[error("is more precise than 1 mg (6 decimals in kg)")]
    TooPrecise,
    /// Larger than the allowed maximum.
    #[error("is larger than the maximum of {} kg", Milligrams((*.0).max(0)))]
    TooLarge(i64),
}

impl Milligrams {
    /// Zero.
    pub const ZERO: Self = Self(0);

    /// Wraps a stored milligram count (always ≥ 0 by the schema's checks).
    pub const fn from_mg(mg: i64) -> Self {
        Self(mg)
    }

    /// The milligram count.
    pub const fn mg(self) -> i64 {
        self.0
    }

    /// Parses the raw JSON text of a quantity: a number (`12.5`, `1e3`) or a string holding one
    /// (`"12.5"`), in `unit`, refusing anything negative, finer than 1 mg or above `max`.
    pub fn parse_json(raw: &str, unit: MassUnit, max: Self) -> Result<Self, QuantityError> {
        let raw = raw.trim();
        let text = match raw.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
            Some(inner) => inner,
            None => raw,
        };
        parse_decimal(text, unit.mg_exponent(), max.0).map(Self)
    }

    /// `self + other`, or `None` if it would not fit.
    pub fn checked_add(self, other: Self) -> Option<Self> {
        self.0.checked_add(other.0).map(Self)
    }

    /// `self` as a percentage of `whole`, rounded half up to hundredths: `"12.50"`.
    pub fn percent_of(self, whole: Self) -> String {
        if whole.0 <= 0 {
            return "0.00".to_string();
        }
        let hundredths = (i128::from(self.0) * 10_000 * 2 + i128::from(whole.0)) / (i128::from(whole.0) * 2);
        format!("{}.{:02}", hundredths / 100, hundredths % 100)
    }
}

impl fmt::Display for Milligrams {
    /// Kilograms with exactly six decimals: `120.500000`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        let per_kg = MG_PER_KG as u64;
        write!(f, "{sign}{}.{:06}", abs / per_kg, abs % per_kg)
    }
}

impl Serialize for Milligrams {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Milligrams {
    /// Reads back what [`Serialize`] wrote (stored receipts), in kilograms.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        parse_decimal(&text, MassUnit::Kilograms.mg_exponent(), i64::MAX)
            .map(Self)
            .map_err(serde::de::Error::custom)
    }
}

/// Parses `-?digits(.digits)?([eE][+-]?digits)?` into an integer count of `10^-exponent` units,
/// exactly, or says why it cannot.
fn parse_decimal(text: &str, exponent: i32, max: i64) -> Result<i64, QuantityError> {
    let bytes = text.as_bytes();
    let mut pos = 0;
    let negative = bytes.first() == Some(&b'-');
    if negative {
        pos += 1;
    }
    let int_start = pos;
    while pos < bytes.len() && bytes[pos].is_ascii_digit() {
        pos += 1;
    }
    let int_digits = &text[int_start..pos];
    let mut frac_digits = "";
    if pos < bytes.len() && bytes[pos] == b'.' {
        let frac_start = pos + 1;
        pos = frac_start;
        while pos < bytes.len() && bytes[pos].is_ascii_digit() {
            pos += 1;
        }
        frac_digits = &text[frac_start..pos];
        if frac_digits.is_empty() {
            return Err(QuantityError::NotANumber);
        }
    }
    if int_digits.is_empty() {
        return Err(QuantityError::NotANumber);
    }
    let mut scale = i64::from(exponent) - frac_digits.len() as i64;
    if pos < bytes.len() && (bytes[pos] == b'e' || bytes[pos] == b'E') {
        pos += 1;
        let exp_negative = match bytes.get(pos) {
            Some(b'-') => {
                pos += 1;
                true
            }
            Some(b'+') => {
                pos += 1;
                false
            }
            _ => false,
        };
        let exp_text = &text[pos..];
        if exp_text.is_empty() || !exp_text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(QuantityError::NotANumber);
        }
        // Anything beyond a few digits of exponent is out of range either way (or zero).
        // Saturates far beyond any representable value, so the checks below still refuse it
        // (too large, or too precise) instead of reading a different number.
        let significant = exp_text.trim_start_matches('0');
        let exp_value: i64 = if significant.len() > 15 {
            i64::from(i32::MAX)
        } else {
            significant.parse().unwrap_or(0)
        };
        scale += if exp_negative { -exp_value } else { exp_value };
        pos = bytes.len();
    }
    if pos != bytes.len() {
        return Err(QuantityError::NotANumber);
    }

    // All significant digits, then scaled by 10^scale.
    let digits = format!("{int_digits}{frac_digits}");
    let digits = digits.trim_start_matches('0');
    if digits.is_empty() {
        return Ok(0);
    }
    if negative {
        return Err(QuantityError::Negative);
    }
    let (digits, scale) = if scale < 0 {
        let drop = scale.unsigned_abs() as usize;
        if drop > digits.len() {
            return Err(QuantityError::TooPrecise);
        }
        let (kept, dropped) = digits.split_at(digits.len() - drop);
        if dropped.bytes().any(|b| b != b'0') {
            return Err(QuantityError::TooPrecise);
        }
        (kept, 0)
    } else {
        (digits, scale)
    };
    let too_large = QuantityError::TooLarge(max);
    if digits.len() as i64 + scale > 19 {
        return Err(too_large);
    }
    let mut value: i64 = digits.parse().map_err(|_| too_large)?;
    for _ in 0..scale {
        value = value.checked_mul(10).ok_or(too_large)?;
    }
    if value > max {
        return Err(too_large);
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: Milligrams = Milligrams(i64::MAX);

    fn kg(raw: &str) -> Result<i64, QuantityError> {
        Milligrams::parse_json(raw, MassUnit::Kilograms, MAX).map(Milligrams::mg)
    }

    #[test]
    fn parses_numbers_and_strings_exactly() {
        assert_eq!(kg("0.1"), Ok(100_000));
        assert_eq!(kg("\"0.1\""), Ok(100_000));
        assert_eq!(kg("120.5"), Ok(120_500_000));
        assert_eq!(kg("1e3"), Ok(1_000_000_000));
        assert_eq!(kg("1.5E-3"), Ok(1_500));
        assert_eq!(kg("0.000001"), Ok(1));
        assert_eq!(kg("0.0000010000"), Ok(1));
        assert_eq!(kg("0"), Ok(0));
        assert_eq!(kg("-0"), Ok(0));
        assert_eq!(kg("0e99999999999"), Ok(0));
        assert_eq!(kg("007"), Ok(7_000_000));
    }

    #[test]
    fn converts_units_exactly() {
        let g = Milligrams::parse_json("1.5", MassUnit::Grams, MAX).unwrap();
        let t = Milligrams::parse_json("0.000000001", MassUnit::Tonnes, MAX).unwrap();
        assert_eq!((g.mg(), t.mg()), (1_500, 1));
        assert_eq!(
            Milligrams::parse_json("0.0001", MassUnit::Grams, MAX),
            Err(QuantityError::TooPrecise)
        );
    }

    #[test]
    fn refuses_what_is_not_exact_or_valid() {
        assert_eq!(kg("0.0000001"), Err(QuantityError::TooPrecise));
        assert_eq!(kg("1e-7"), Err(QuantityError::TooPrecise));
        assert_eq!(kg("-1"), Err(QuantityError::Negative));
        for bad in [
            "", "abc", "1.", ".5", "1e", "1e+", "--1", "1.2.3", "\"\"", "true", "null", "[1]", "0x10", "1 2",
        ] {
            assert_eq!(kg(bad), Err(QuantityError::NotANumber), "{bad}");
        }
        assert_eq!(kg("1e30"), Err(QuantityError::TooLarge(i64::MAX)));
        assert_eq!(kg("99999999999999999999"), Err(QuantityError::TooLarge(i64::MAX)));
        // Long exponents offset by long digit strings are judged by their true magnitude.
        let huge = format!("0.{}5e+100000", "0".repeat(10_005));
        assert_eq!(kg(&huge), Err(QuantityError::TooLarge(i64::MAX)));
        let tiny = format!("5{}e-100000", "0".repeat(10_000));
        assert_eq!(kg(&tiny), Err(QuantityError::TooPrecise));
        assert_eq!(kg("1e-99999999999999999999"), Err(QuantityError::TooPrecise));
        assert_eq!(
            kg("1e99999999999999999999"),
            Err(QuantityError::TooLarge(i64::MAX))
        );
        let small_max = Milligrams::from_mg(1_000_000);
        assert!(matches!(
            Milligrams::parse_json("1.000001", MassUnit::Kilograms, small_max),
            Err(QuantityError::TooLarge(_))
        ));
    }

    #[test]
    fn displays_six_decimals() {
        assert_eq!(Milligrams(120_500_000).to_string(), "120.500000");
        assert_eq!(Milligrams(1).to_string(), "0.000001");
        assert_eq!(Milligrams(0).to_string(), "0.000000");
    }

    #[test]
    fn percentages_round_half_up() {
        let limit = Milligrams(3_000_000);
        assert_eq!(Milligrams(1_000_000).percent_of(limit), "33.33");
        assert_eq!(Milligrams(2_000_000).percent_of(limit), "66.67");
        assert_eq!(Milligrams(3_000_000).percent_of(limit), "100.00");
        assert_eq!(Milligrams(0).percent_of(limit), "0.00");
        assert_eq!(Milligrams(1).percent_of(Milligrams(200)), "0.50");
    }
}
