//! The `wharf-*` record headers of typed topics, read by pure functions: when a record on a
//! `delay` topic is due, what a record on a `transaction` topic asks for, a record's message
//! id. Only typed topics (and topics with a dedup window) call these.

/// Delay in milliseconds from the broker's receipt (decimal).
pub const DELAY_MS: &str = "wharf-delay-ms";
/// Delivery time in epoch milliseconds (decimal).
pub const DELIVER_AT: &str = "wharf-deliver-at";
/// Added to a delayed record when it is delivered: where it waited.
pub const DELAYED_FROM: &str = "wharf-delayed-from";
/// A message id for deduplication.
pub const MSG_ID: &str = "wharf-msg-id";
/// `prepare`, `commit` or `rollback` on a `transaction` topic.
pub const TXN: &str = "wharf-txn";
pub const TXN_ID: &str = "wharf-txn-id";
pub const TXN_GROUP: &str = "wharf-txn-group";
/// On a check-back record: the topic of the half message.
pub const TXN_TOPIC: &str = "wharf-txn-topic";
/// On a check-back record: which check this is, from 1.
pub const TXN_CHECK_COUNT: &str = "wharf-txn-check-count";

type Header<'a> = (&'a [u8], Option<&'a [u8]>);

/// The value of the first header named `name`; `Some(None)` for a header with a null value.
pub fn find<'a>(headers: &[Header<'a>], name: &str) -> Option<Option<&'a [u8]>> {
    headers
        .iter()
        .find(|(n, _)| *n == name.as_bytes())
        .map(|(_, v)| *v)
}

/// A decimal integer as a header value: ASCII digits with an optional leading '-'.
fn decimal(name: &str, value: Option<&[u8]>) -> Result<i64, String> {
    let text = value
        .and_then(|v| std::str::from_utf8(v).ok())
        .ok_or_else(|| format!("header {name} is not a decimal number"))?;
    let digits = text.strip_prefix('-').unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("header {name}={text:?} is not a decimal number"));
    }
    text.parse()
        .map_err(|_| format!("header {name}={text:?} is out of range"))
}

/// When a record on a `delay` topic is due: `None` when it has no delay header or is
/// already due (append now), `Some(due_ms)` otherwise. Negative values, both headers at
/// once, or a delay past `max_delay_ms` are refused with the reason.
pub fn delay_due(
    headers: &[Header<'_>],
    now_ms: i64,
    max_delay_ms: i64,
) -> Result<Option<i64>, String> {
    let delay = find(headers, DELAY_MS);
    let at = find(headers, DELIVER_AT);
    let due = match (delay, at) {
        (None, None) => return Ok(None),
        (Some(_), Some(_)) => return Err(format!("both {DELAY_MS} and {DELIVER_AT} are set")),
        (Some(v), None) => {
            let ms = decimal(DELAY_MS, v)?;
            if ms < 0 {
                return Err(format!("{DELAY_MS}={ms} is negative"));
            }
            if ms > max_delay_ms {
                return Err(format!(
                    "{DELAY_MS}={ms} exceeds max_delay_ms {max_delay_ms}"
                ));
            }
            now_ms.saturating_add(ms)
        }
        (None, Some(v)) => {
            let at = decimal(DELIVER_AT, v)?;
            if at < 0 {
                return Err(format!("{DELIVER_AT}={at} is negative"));
            }
            if at.saturating_sub(now_ms) > max_delay_ms {
                return Err(format!(
                    "{DELIVER_AT}={at} is more than max_delay_ms {max_delay_ms} away"
                ));
            }
            at
        }
    };
    Ok((due > now_ms).then_some(due))
}

/// The `wharf-msg-id` of a record, if any.
pub fn msg_id<'a>(headers: &[Header<'a>]) -> Option<&'a [u8]> {
    find(headers, MSG_ID).flatten()
}

/// What a record on a `transaction` topic asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnAction {
    /// No `wharf-txn` header: an ordinary record, appended now.
    None,
    Prepare {
        txn_id: String,
        group: String,
    },
    Commit {
        txn_id: String,
    },
    Rollback {
        txn_id: String,
    },
}

fn text(headers: &[Header<'_>], name: &str) -> Result<String, String> {
    let value = find(headers, name)
        .flatten()
        .ok_or_else(|| format!("header {name} is missing"))?;
    let s = std::str::from_utf8(value).map_err(|_| format!("header {name} is not UTF-8"))?;
    if s.is_empty() {
        return Err(format!("header {name} is empty"));
    }
    Ok(s.to_string())
}

/// Reads the `wharf-txn*` headers of a record on a `transaction` topic.
pub fn txn_action(headers: &[Header<'_>]) -> Result<TxnAction, String> {
    let Some(action) = find(headers, TXN) else {
        return Ok(TxnAction::None);
    };
    match action.unwrap_or_default() {
        b"prepare" => Ok(TxnAction::Prepare {
            txn_id: text(headers, TXN_ID)?,
            group: text(headers, TXN_GROUP)?,
        }),
        b"commit" => Ok(TxnAction::Commit {
            txn_id: text(headers, TXN_ID)?,
        }),
        b"rollback" => Ok(TxnAction::Rollback {
            txn_id: text(headers, TXN_ID)?,
        }),
        other => Err(format!(
            "{TXN}={:?} is not prepare, commit or rollback",
            String::from_utf8_lossy(other)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h<'a>(name: &'a str, value: &'a str) -> Header<'a> {
        (name.as_bytes(), Some(value.as_bytes()))
    }

    #[test]
    fn delay_headers_give_due_times() {
        assert_eq!(delay_due(&[], 1_000, 10_000), Ok(None));
        assert_eq!(delay_due(&[h("other", "5")], 1_000, 10_000), Ok(None));
        assert_eq!(
            delay_due(&[h(DELAY_MS, "500")], 1_000, 10_000),
            Ok(Some(1_500))
        );
        assert_eq!(delay_due(&[h(DELAY_MS, "0")], 1_000, 10_000), Ok(None));
        assert_eq!(
            delay_due(&[h(DELIVER_AT, "4000")], 1_000, 10_000),
            Ok(Some(4_000))
        );
        assert_eq!(delay_due(&[h(DELIVER_AT, "999")], 1_000, 10_000), Ok(None));
        assert_eq!(
            delay_due(&[h(DELAY_MS, "10000")], 1_000, 10_000),
            Ok(Some(11_000))
        );
    }

    #[test]
    fn bad_delays_are_refused() {
        for bad in [
            vec![h(DELAY_MS, "-1")],
            vec![h(DELAY_MS, "10001")],
            vec![h(DELAY_MS, "1.5")],
            vec![h(DELAY_MS, "")],
            vec![h(DELAY_MS, "99999999999999999999")],
            vec![h(DELIVER_AT, "-5")],
            vec![h(DELIVER_AT, "11001")],
            vec![h(DELAY_MS, "1"), h(DELIVER_AT, "2000")],
            vec![(DELAY_MS.as_bytes(), None)],
        ] {
            assert!(delay_due(&bad, 1_000, 10_000).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn txn_headers_are_read() {
        assert_eq!(txn_action(&[h(MSG_ID, "x")]), Ok(TxnAction::None));
        assert_eq!(
            txn_action(&[h(TXN, "prepare"), h(TXN_ID, "t1"), h(TXN_GROUP, "g")]),
            Ok(TxnAction::Prepare {
                txn_id: "t1".into(),
                group: "g".into()
            })
        );
        assert_eq!(
            txn_action(&[h(TXN, "commit"), h(TXN_ID, "t1")]),
            Ok(TxnAction::Commit {
                txn_id: "t1".into()
            })
        );
        assert_eq!(
            txn_action(&[h(TXN, "rollback"), h(TXN_ID, "t1")]),
            Ok(TxnAction::Rollback {
                txn_id: "t1".into()
            })
        );
        assert!(txn_action(&[h(TXN, "prepare"), h(TXN_ID, "t1")]).is_err());
        assert!(txn_action(&[h(TXN, "maybe"), h(TXN_ID, "t1")]).is_err());
        assert!(txn_action(&[h(TXN, "commit")]).is_err());
    }
}
