//! `google.protobuf.Duration` as `xs:duration`: `PT1.5S`, `-PT0.000000001S`, `P2DT3H`.

/// Duration's range: ±10,000 years in seconds (google/protobuf/duration.proto).
const MAX_SECONDS: i64 = 315_576_000_000;

/// Seconds and nanoseconds, with the same sign, from an `xs:duration`. Years and months have no
/// fixed length and are refused unless zero.
pub(super) fn parse(text: &str) -> Result<(i64, i32), String> {
    let bad = |why: &str| format!("{:?} is not an xs:duration ({why}), e.g. PT1.5S", super::decode::shorten(text));
    let (negative, rest) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let rest = rest.strip_prefix('P').ok_or_else(|| bad("it must start with P"))?;
    let (date, time) = match rest.split_once('T') {
        Some((_, "")) => return Err(bad("T must be followed by a time")),
        Some((date, time)) => (date, Some(time)),
        None => (rest, None),
    };
    if date.is_empty() && time.is_none() {
        return Err(bad("it has no parts"));
    }
    let mut nanos: i128 = 0;
    let mut parts = |section: &str, units: &[(u8, i128)], fraction_unit: Option<u8>| -> Result<(), String> {
        let mut number = String::new();
        let mut allowed = units;
        for c in section.chars() {
            if c.is_ascii_digit() || c == '.' {
                number.push(c);
                continue;
            }
            let position = allowed
                .iter()
                .position(|(u, _)| *u as char == c)
                .ok_or_else(|| bad("parts out of order or unknown"))?;
            let per = allowed[position].1;
            allowed = &allowed[position + 1..];
            if number.is_empty() {
                return Err(bad("a part without a number"));
            }
            if let Some((whole, fraction)) = number.split_once('.') {
                if fraction_unit != Some(c as u8) || fraction.len() > 9 || whole.is_empty() || fraction.is_empty() {
                    return Err(bad("only seconds may have a fraction, to nanoseconds"));
                }
                if whole.len() > 20 {
                    return Err(bad("a number too large"));
                }
                let whole: i128 = whole.parse().map_err(|_| bad("a number too large"))?;
                let digits: i128 = fraction.parse().map_err(|_| bad("a bad fraction"))?;
                let part =
                    whole.checked_mul(per).and_then(|n| n.checked_add(digits * 10i128.pow(9 - fraction.len() as u32)));
                nanos = part.and_then(|p| nanos.checked_add(p)).ok_or_else(|| bad("a number too large"))?;
            } else {
                if number.len() > 20 {
                    return Err(bad("a number too large"));
                }
                let n: i128 = number.parse().map_err(|_| bad("a number too large"))?;
                if per == 0 && n != 0 {
                    return Err(bad("years and months have no fixed length; use days"));
                }
                let part = n.checked_mul(per).ok_or_else(|| bad("a number too large"))?;
                nanos = nanos.checked_add(part).ok_or_else(|| bad("a number too large"))?;
            }
            number.clear();
        }
        if number.is_empty() { Ok(()) } else { Err(bad("a number without a unit")) }
    };
    const SECOND: i128 = 1_000_000_000;
    parts(date, &[(b'Y', 0), (b'M', 0), (b'D', 86_400 * SECOND)], None)?;
    if let Some(time) = time {
        parts(time, &[(b'H', 3_600 * SECOND), (b'M', 60 * SECOND), (b'S', SECOND)], Some(b'S'))?;
    }
    if nanos > MAX_SECONDS as i128 * SECOND + 999_999_999 {
        return Err(format!("{text:?} is longer than a Duration can be (10,000 years)"));
    }
    let nanos = if negative { -nanos } else { nanos };
    Ok(((nanos / SECOND) as i64, (nanos % SECOND) as i32))
}

/// The `xs:duration` of seconds and nanoseconds: `PT1.5S`, `-PT0.25S`, `PT0S`; None for a
/// Duration the type does not allow (out of range, nanos of a second or more, mixed signs).
pub(super) fn format(seconds: i64, nanos: i32) -> Option<String> {
    let valid = seconds.unsigned_abs() <= MAX_SECONDS as u64
        && nanos.unsigned_abs() < 1_000_000_000
        && !(seconds > 0 && nanos < 0 || seconds < 0 && nanos > 0);
    if !valid {
        return None;
    }
    let negative = seconds < 0 || nanos < 0;
    let (seconds, nanos) = (seconds.unsigned_abs(), nanos.unsigned_abs());
    let mut text = String::from(if negative { "-PT" } else { "PT" });
    text.push_str(&seconds.to_string());
    if nanos > 0 {
        let fraction = format!("{nanos:09}");
        text.push('.');
        text.push_str(fraction.trim_end_matches('0'));
    }
    text.push('S');
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_both_ways() {
        assert_eq!(parse("PT1.5S"), Ok((1, 500_000_000)));
        assert_eq!(parse("-PT0.000000001S"), Ok((0, -1)));
        assert_eq!(parse("P1DT2H3M4S"), Ok((93_784, 0)));
        assert_eq!(parse("PT0S"), Ok((0, 0)));
        assert_eq!(parse("P0Y0M1D"), Ok((86_400, 0)));
        assert!(parse("P1M").is_err(), "months have no length");
        assert!(parse("P1Y").is_err());
        assert!(parse("PT").is_err());
        assert!(parse("P").is_err());
        assert!(parse("1S").is_err());
        assert!(parse("PT1.5M").is_err(), "only seconds have fractions");
        assert!(parse("PT1S2M").is_err(), "out of order");
        assert!(parse("PT0.0000000001S").is_err(), "beyond nanoseconds");
        assert!(parse("PT315576000001S").is_err(), "beyond 10,000 years");
        assert!(parse("PT99999999999999999999999H").is_err());
        assert!(parse("PT999999999999999999999999999999.5S").is_err(), "no overflow");
        assert!(parse("P99999999999999999999DT99999999999999999999H99999999999999999999M").is_err());
        assert_eq!(format(1, 500_000_000).as_deref(), Some("PT1.5S"));
        assert_eq!(format(0, -1).as_deref(), Some("-PT0.000000001S"));
        assert_eq!(format(-3, 0).as_deref(), Some("-PT3S"));
        assert_eq!(format(0, 0).as_deref(), Some("PT0S"));
        for (s, n) in [(1, 500_000_000), (0, -1), (-3, -20), (315_576_000_000, 999_999_999)] {
            assert_eq!(format(s, n).map(|text| parse(&text)), Some(Ok((s, n))));
        }
        for (s, n) in [(0, 1_500_000_000), (1, -5), (-1, 5), (315_576_000_001, 0), (i64::MIN, 0)] {
            assert_eq!(format(s, n), None, "{s}s {n}ns is no Duration");
        }
    }
}
