//! Conversions between protobuf timestamps and `chrono`. The stores keep microseconds,
//! so conversions to the domain truncate to whole microseconds.

use chrono::{DateTime, TimeZone, Utc};
use pbjson_types::Timestamp;

/// Converts a protobuf timestamp, or `None` when it is out of chrono's range or invalid.
pub fn from_proto(timestamp: &Timestamp) -> Option<DateTime<Utc>> {
    let nanos = u32::try_from(timestamp.nanos).ok()?;
    let parsed = Utc.timestamp_opt(timestamp.seconds, nanos).single()?;
    Some(truncate_to_micros(parsed))
}

/// Converts to a protobuf timestamp.
pub fn to_proto(time: DateTime<Utc>) -> Timestamp {
    Timestamp {
        seconds: time.timestamp(),
        nanos: i32::try_from(time.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

/// Drops sub-microsecond precision, which neither store keeps.
pub fn truncate_to_micros(time: DateTime<Utc>) -> DateTime<Utc> {
    let micros = time.timestamp_micros();
    DateTime::from_timestamp_micros(micros).unwrap_or(time)
}

/// The current time, truncated to microseconds.
pub fn now() -> DateTime<Utc> {
    truncate_to_micros(Utc::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_microseconds_and_drops_nanoseconds() {
        let proto = Timestamp {
            seconds: 1_700_000_000,
            nanos: 123_456_789,
        };
        let time = from_proto(&proto).expect("valid timestamp");
        assert_eq!(
            to_proto(time),
            Timestamp {
                seconds: 1_700_000_000,
                nanos: 123_456_000
            }
        );
    }

    #[test]
    fn negative_nanos_are_invalid() {
        assert!(
            from_proto(&Timestamp {
                seconds: 0,
                nanos: -1
            })
            .is_none()
        );
    }
}
