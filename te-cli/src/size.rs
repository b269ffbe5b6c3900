//! Byte sizes on the command line: `4096`, `4K`, `64KiB`, `1.5M`, `16MiB`,
//! `1G`, `2T` (K, M, G, T are binary multiples, as in transfer_engine_bench
//! and nixlbench).

/// The units a size may carry, as the errors list them.
pub const UNITS: &str = "B, K, M, G, T (binary multiples; KB/KiB, MB/MiB, GB/GiB, TB/TiB too)";

/// Parses a positive size; a fraction (`1.5M`) must come to whole bytes.
/// The error names the bad text and lists the accepted units.
pub fn parse(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let bad = |why: &str| format!("invalid size {s:?}: {why}");
    if t.starts_with('-') {
        return Err(bad("must be positive"));
    }
    let end = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(end);
    let (whole, frac) = num.split_once('.').unwrap_or((num, ""));
    if whole.is_empty() && frac.is_empty() || frac.contains('.') {
        return Err(bad(&format!(
            "expected a number with an optional unit: {UNITS}, e.g. 4K or 1.5M"
        )));
    }
    let mult: u128 = match unit.trim_start().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return Err(bad(&format!("unknown unit {unit:?}; accepted units: {UNITS}"))),
    };
    let too_large = || bad("too large");
    let digits = |d: &str| -> Result<u128, String> {
        if d.len() > 30 {
            return Err(too_large());
        }
        Ok(if d.is_empty() {
            0
        } else {
            d.parse().map_err(|_| too_large())?
        })
    };
    let scale = 10u128.pow(frac.len() as u32);
    let scaled = digits(whole)?
        .checked_mul(scale)
        .and_then(|w| w.checked_add(digits(frac).ok()?))
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(too_large)?;
    if !scaled.is_multiple_of(scale) {
        return Err(bad("not a whole number of bytes"));
    }
    let v = u64::try_from(scaled / scale).map_err(|_| too_large())?;
    if v == 0 {
        return Err(bad("must be positive"));
    }
    Ok(v)
}

/// Parses one item of a list flag: a size, or `START..MAX`, every size
/// from START doubling up to MAX (nixlbench's `--start_block_size` and
/// `--max_block_size`).
pub fn parse_sweep(s: &str) -> Result<Vec<u64>, String> {
    crate::flags::doubling(s, parse)
}

/// Prints a size the way it is parsed: `4K`, `64K`, `1M`, `1.5G`
/// (whole units where exact, else up to two decimals of the largest unit).
pub fn show(v: u64) -> String {
    for (unit, m) in [("T", 1u64 << 40), ("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)] {
        if v >= m && v.is_multiple_of(m) {
            return format!("{}{unit}", v / m);
        }
    }
    v.to_string()
}

/// An approximate size for messages: `21.4G`, `512M`, `900` (bytes).
pub fn approx(v: u64) -> String {
    for (unit, m) in [("T", 1u64 << 40), ("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)] {
        if v >= m {
            let x = v as f64 / m as f64;
            return if v.is_multiple_of(m) {
                format!("{}{unit}", v / m)
            } else {
                format!("{x:.1}{unit}")
            };
        }
    }
    v.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_and_print() {
        assert_eq!(parse("4096"), Ok(4096));
        assert_eq!(parse("4K"), Ok(4096));
        assert_eq!(parse("64KiB"), Ok(65536));
        assert_eq!(parse("16m"), Ok(16 << 20));
        assert_eq!(parse("1G"), Ok(1 << 30));
        assert_eq!(parse("2T"), Ok(2 << 40));
        assert_eq!(parse("1.5M"), Ok(3 << 19));
        assert_eq!(parse("0.5K"), Ok(512));
        assert_eq!(parse(".5K"), Ok(512));
        assert_eq!(parse("1.25 GiB"), Ok(5 << 28));
        assert!(parse("0.1K").unwrap_err().contains("whole number of bytes"));
        assert!(parse("0").unwrap_err().contains("positive"));
        assert!(parse("-4K").unwrap_err().contains("positive"));
        let unit = parse("12X").unwrap_err();
        assert!(unit.contains("\"X\"") && unit.contains("T (binary"), "{unit}");
        assert!(parse("").unwrap_err().contains("accepted units") || parse("").unwrap_err().contains("unit"));
        assert!(parse("1.2.3K").is_err());
        assert!(parse("99999999999G").unwrap_err().contains("too large"));
        assert!(parse("16777216T").unwrap_err().contains("too large"));
        assert!(parse("1234567890123456789012345678901234567890")
            .unwrap_err()
            .contains("too large"));
        assert_eq!(show(65536), "64K");
        assert_eq!(show(1000), "1000");
        assert_eq!(show(3 << 40), "3T");
        assert_eq!(approx(3 << 29), "1.5G");
        assert_eq!(approx(512 << 20), "512M");
    }
}
