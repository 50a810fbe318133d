//! Where a stream-queue consumer starts reading, from its `x-stream-offset` argument, as
//! RabbitMQ accepts it: `first`, `last`, `next`, an offset (integer), a point in time (AMQP
//! timestamp, seconds), or an interval back from now (`"30s"`, `"5m"`, `"1h"`, `"7D"`, `"2M"`,
//! `"1Y"`). Times are found with the partition log's time index, as Kafka's ListOffsets does.

use amq_protocol::types::AMQPValue;
use conflux_broker::Partition;

use crate::frame::code;
use crate::server::{str_arg, AResult, AmqpError};

/// Where the consumer starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamStart {
    First,
    /// The end of the log: only messages published from now on.
    Next,
    Offset(i64),
    /// The first message stored at or after this time (ms since the epoch).
    Time(i64),
}

/// Parses an `x-stream-offset` value (absent: `next`, as RabbitMQ).
pub fn parse(value: Option<&AMQPValue>, now_ms: i64) -> AResult<StreamStart> {
    let Some(value) = value else {
        return Ok(StreamStart::Next);
    };
    let bad = || {
        AmqpError::new(
            code::PRECONDITION_FAILED,
            "x-stream-offset must be first, last, next, an offset, a timestamp or an interval \
             such as 30s, 5m, 1h, 7D",
        )
    };
    if let Some(text) = str_arg(value) {
        return match text.as_str() {
            "first" => Ok(StreamStart::First),
            // The last chunk of a RabbitMQ stream; a Conflux stream has no chunks to go back
            // to, so `last` starts at the end like `next`.
            "last" | "next" => Ok(StreamStart::Next),
            interval => interval_ms(interval)
                .map(|ms| StreamStart::Time(now_ms.saturating_sub(ms)))
                .ok_or_else(bad),
        };
    }
    match value {
        AMQPValue::Timestamp(s) => i64::try_from(*s)
            .ok()
            .and_then(|s| s.checked_mul(1000))
            .map(StreamStart::Time)
            .ok_or_else(bad),
        AMQPValue::ShortShortInt(n) => Ok(StreamStart::Offset(i64::from(*n))),
        AMQPValue::ShortShortUInt(n) => Ok(StreamStart::Offset(i64::from(*n))),
        AMQPValue::ShortInt(n) => Ok(StreamStart::Offset(i64::from(*n))),
        AMQPValue::ShortUInt(n) => Ok(StreamStart::Offset(i64::from(*n))),
        AMQPValue::LongInt(n) => Ok(StreamStart::Offset(i64::from(*n))),
        AMQPValue::LongUInt(n) => Ok(StreamStart::Offset(i64::from(*n))),
        AMQPValue::LongLongInt(n) => Ok(StreamStart::Offset(*n)),
        _ => Err(bad()),
    }
}

/// `"<n><unit>"` in milliseconds; units as RabbitMQ: Y(ears), M(onths), D(ays), h, m, s.
pub fn interval_ms(text: &str) -> Option<i64> {
    const SECOND_MS: i64 = 1000;
    const DAY_MS: i64 = 86_400 * SECOND_MS;
    let unit = text.chars().last()?;
    let digits = &text[..text.len() - unit.len_utf8()];
    if digits.is_empty() || digits.len() > 12 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: i64 = digits.parse().ok()?;
    let unit_ms = match unit {
        'Y' => 365 * DAY_MS,
        'M' => 30 * DAY_MS,
        'D' => DAY_MS,
        'h' => 3600 * SECOND_MS,
        'm' => 60 * SECOND_MS,
        's' => SECOND_MS,
        _ => return None,
    };
    n.checked_mul(unit_ms)
}

/// The log offset a consumer starting at `start` reads first. Looking a time up reads the
/// time index and segment headers, so it runs on a blocking thread.
pub async fn resolve(
    partition: Option<std::sync::Arc<Partition>>,
    start: StreamStart,
) -> AResult<i64> {
    let Some(p) = partition else {
        return Ok(0);
    };
    let (first, end) = (p.log.log_start_offset(), p.log.high_watermark());
    Ok(match start {
        StreamStart::First => first,
        StreamStart::Next => end,
        StreamStart::Offset(o) => o.clamp(first, end),
        StreamStart::Time(ts_ms) => {
            let found = tokio::task::spawn_blocking(move || p.log.offset_for_timestamp(ts_ms))
                .await
                .map_err(|e| AmqpError::new(code::INTERNAL_ERROR, e.to_string()))?
                .map_err(|e| AmqpError::new(code::INTERNAL_ERROR, format!("storage error: {e}")))?;
            // Nothing stored at or after that time: only what comes next.
            found.map_or(end, |(offset, _)| offset.clamp(first, end))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_positions_offsets_times_and_intervals() {
        let now = 10_000_000_000;
        assert_eq!(parse(None, now).unwrap(), StreamStart::Next);
        let s = |t: &str| parse(Some(&AMQPValue::LongString(t.into())), now);
        assert_eq!(s("first").unwrap(), StreamStart::First);
        assert_eq!(s("last").unwrap(), StreamStart::Next);
        assert_eq!(s("30s").unwrap(), StreamStart::Time(now - 30_000));
        assert_eq!(s("5m").unwrap(), StreamStart::Time(now - 300_000));
        assert_eq!(s("1h").unwrap(), StreamStart::Time(now - 3_600_000));
        assert_eq!(s("7D").unwrap(), StreamStart::Time(now - 7 * 86_400_000));
        for bad in ["", "h", "1x", "-1h", "1.5h", "9999999999999D", "soon"] {
            assert!(s(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse(Some(&AMQPValue::Timestamp(1_700_000_000)), now).unwrap(),
            StreamStart::Time(1_700_000_000_000)
        );
        assert_eq!(
            parse(Some(&AMQPValue::LongLongInt(42)), now).unwrap(),
            StreamStart::Offset(42)
        );
        assert!(parse(Some(&AMQPValue::Boolean(true)), now).is_err());
        assert!(parse(Some(&AMQPValue::Timestamp(u64::MAX)), now).is_err());
    }
}
