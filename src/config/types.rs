//! Scalar types shared by the raw config model: protobuf-JSON durations and
//! Envoy enums whose names may be written in any case.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// A `google.protobuf.Duration` as it appears in Envoy YAML: `"0.25s"`, `"10s"`,
/// or the object form `{seconds: 1, nanos: 500000000}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PbDuration(pub Duration);

impl PbDuration {
    /// Parses the string form. Only seconds with an optional fraction and the `s`
    /// suffix are valid protobuf JSON; anything else is refused.
    pub fn parse(text: &str) -> Result<Self, String> {
        let expected = || format!("invalid duration `{text}`: expected seconds like \"0.25s\" or \"10s\"");
        let digits = text.strip_suffix('s').ok_or_else(expected)?;
        if digits.is_empty() || digits.starts_with('-') || digits.starts_with('+') {
            return Err(expected());
        }
        let (whole, frac) = match digits.split_once('.') {
            Some((w, f)) => (w, f),
            None => (digits, ""),
        };
        if whole.is_empty() && frac.is_empty() {
            return Err(expected());
        }
        if !whole.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
            return Err(expected());
        }
        if frac.len() > 9 {
            return Err(format!("invalid duration `{text}`: at most 9 fractional digits"));
        }
        let secs: u64 = if whole.is_empty() { 0 } else { whole.parse().map_err(|_| expected())? };
        // Protobuf caps durations at roughly 10,000 years.
        if secs > 315_576_000_000 {
            return Err(format!("invalid duration `{text}`: out of range"));
        }
        let mut nanos: u32 = 0;
        for (i, b) in frac.bytes().enumerate() {
            nanos += u32::from(b - b'0') * 10u32.pow(8 - i as u32);
        }
        Ok(PbDuration(Duration::new(secs, nanos)))
    }
}

impl fmt::Display for PbDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        if d.subsec_nanos() == 0 {
            write!(f, "{}s", d.as_secs())
        } else {
            let frac = format!("{:09}", d.subsec_nanos());
            write!(f, "{}.{}s", d.as_secs(), frac.trim_end_matches('0'))
        }
    }
}

impl Serialize for PbDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PbDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = PbDuration;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration like \"0.25s\" or {seconds, nanos}")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<PbDuration, E> {
                PbDuration::parse(v).map_err(E::custom)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<PbDuration, A::Error> {
                let mut secs: u64 = 0;
                let mut nanos: u32 = 0;
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "seconds" => secs = map.next_value()?,
                        "nanos" => nanos = map.next_value()?,
                        other => {
                            return Err(de::Error::unknown_field(other, &["seconds", "nanos"]));
                        }
                    }
                }
                if nanos >= 1_000_000_000 || secs > 315_576_000_000 {
                    return Err(de::Error::custom("duration out of range"));
                }
                Ok(PbDuration(Duration::new(secs, nanos)))
            }
        }
        d.deserialize_any(V)
    }
}

/// Declares an Envoy enum that deserializes from its name in any letter case
/// (`STRICT_DNS`, `strict_dns`) and serializes to Envoy's canonical spelling.
macro_rules! envoy_enum {
    ($(#[$meta:meta])* $vis:vis enum $name:ident { $($variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        $vis enum $name { $($variant),+ }

        impl $name {
            pub const NAMES: &'static [&'static str] = &[$($text),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                $(if text.eq_ignore_ascii_case($text) { return Ok($name::$variant); })+
                Err(serde::de::Error::custom(format!(
                    "unknown value `{}`, expected one of {}",
                    text,
                    Self::NAMES.join(", ")
                )))
            }
        }
    };
}
pub(crate) use envoy_enum;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_like_protobuf_json() {
        let ok = [
            ("0.25s", Duration::from_millis(250)),
            ("10s", Duration::from_secs(10)),
            ("1.000000001s", Duration::new(1, 1)),
            (".5s", Duration::from_millis(500)),
            ("0s", Duration::ZERO),
        ];
        for (text, want) in ok {
            assert_eq!(PbDuration::parse(text).map(|d| d.0), Ok(want), "{text}");
        }
        for bad in ["", "s", "10", "1m", "-1s", "1.2.3s", "1.0000000001s", "abc", "1e3s", "99999999999999999999s"] {
            assert!(PbDuration::parse(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn durations_print_back() {
        assert_eq!(PbDuration(Duration::from_millis(250)).to_string(), "0.25s");
        assert_eq!(PbDuration(Duration::from_secs(3600)).to_string(), "3600s");
    }
}
