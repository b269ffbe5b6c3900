//! Byte sizes on the command line: `4096`, `4K`, `64KiB`, `1M`, `16MiB`, `1G`
//! (K, M, G are binary multiples, as in transfer_engine_bench).

/// Parses a size; the error names the bad text.
pub fn parse(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(digits);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid size {s:?}: expected a number with an optional K/M/G suffix"))?;
    let mult: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(format!("invalid size {s:?}: unknown unit {unit:?}")),
    };
    let v = n
        .checked_mul(mult)
        .ok_or_else(|| format!("invalid size {s:?}: too large"))?;
    if v == 0 {
        return Err(format!("invalid size {s:?}: must be positive"));
    }
    Ok(v)
}

/// Prints a size the way it is parsed: `4K`, `64K`, `1M`.
pub fn show(v: u64) -> String {
    for (unit, m) in [("G", 1u64 << 30), ("M", 1 << 20), ("K", 1 << 10)] {
        if v >= m && v.is_multiple_of(m) {
            return format!("{}{unit}", v / m);
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
        assert!(parse("0").unwrap_err().contains("positive"));
        assert!(parse("12X").unwrap_err().contains("\"X\""));
        assert!(parse("").is_err());
        assert!(parse("99999999999G").unwrap_err().contains("too large"));
        assert_eq!(show(65536), "64K");
        assert_eq!(show(1000), "1000");
    }
}
