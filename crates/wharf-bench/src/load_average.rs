//! The machine's load average, noted at the start of a run: a run with load > 1 from
//! something else is repeated.

/// Parses the first three fields of `/proc/loadavg`.
pub fn parse(text: &str) -> Option<[f64; 3]> {
    let mut fields = text.split_whitespace().map(str::parse::<f64>);
    let one = fields.next()?.ok()?;
    let five = fields.next()?.ok()?;
    let fifteen = fields.next()?.ok()?;
    Some([one, five, fifteen])
}

/// The 1, 5 and 15 minute load averages, where `/proc/loadavg` exists.
pub fn read() -> Option<[f64; 3]> {
    parse(&std::fs::read_to_string("/proc/loadavg").ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_three_averages() {
        assert_eq!(
            parse("0.96 0.92 0.51 3/412 9001\n"),
            Some([0.96, 0.92, 0.51])
        );
    }

    #[test]
    fn rejects_short_or_garbled_text() {
        assert_eq!(parse("0.96 0.92"), None);
        assert_eq!(parse("high 0.92 0.51"), None);
        assert_eq!(parse(""), None);
    }
}
