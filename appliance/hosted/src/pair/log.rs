//! The replicas' and the arbiter's event log on stderr: one line per event that matters (a
//! role change, the partner lost or found, an arbiter decision, fencing, divergence), each
//! with its UTC time, level, event name and epoch, as `key=value` pairs (logfmt) or one JSON
//! object per line, at the level the config's `log_level` chooses; what a log shipper parses.
use std::fmt::Write as _;
use std::sync::OnceLock;

/// How much is said, from least to most.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Error,
    Warn,
    Info,
    Debug,
}

impl Level {
    pub fn parse(text: &str) -> Option<Level> {
        Some(match text {
            "error" => Level::Error,
            "warn" => Level::Warn,
            "info" => Level::Info,
            "debug" => Level::Debug,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Level::Error => "error",
            Level::Warn => "warn",
            Level::Info => "info",
            Level::Debug => "debug",
        }
    }
}

/// How a line is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `ts=... level=info event=role_change epoch=2 from=backup to="solo primary"`.
    KeyValue,
    /// `{"ts":"...","level":"info","event":"role_change","epoch":2,...}`.
    Json,
}

impl Format {
    pub fn parse(text: &str) -> Option<Format> {
        match text {
            "keyvalue" => Some(Format::KeyValue),
            "json" => Some(Format::Json),
            _ => None,
        }
    }
}

static SETTINGS: OnceLock<(Level, Format)> = OnceLock::new();

/// Chooses the level and format for the process (the first call wins).
pub fn init(level: Level, format: Format) {
    let _ = SETTINGS.set((level, format));
}

/// A value of a field: a number stays one in JSON.
pub enum Value<'a> {
    Text(&'a str),
    Number(u64),
}

impl<'a> From<&'a str> for Value<'a> {
    fn from(text: &'a str) -> Self {
        Value::Text(text)
    }
}

impl<'a> From<&'a String> for Value<'a> {
    fn from(text: &'a String) -> Self {
        Value::Text(text)
    }
}

impl From<u64> for Value<'_> {
    fn from(number: u64) -> Self {
        Value::Number(number)
    }
}

/// Writes one event when `level` is at or above the chosen one (info and logfmt by default).
pub fn event(level: Level, name: &str, epoch: u64, fields: &[(&str, Value)]) {
    let (chosen, format) = *SETTINGS.get_or_init(|| (Level::Info, Format::KeyValue));
    if level > chosen {
        return;
    }
    eprintln!(
        "{}",
        line(
            &super::replica::utc_now(),
            level,
            format,
            name,
            epoch,
            fields
        )
    );
}

/// One line, without its end.
pub fn line(
    time: &str,
    level: Level,
    format: Format,
    name: &str,
    epoch: u64,
    fields: &[(&str, Value)],
) -> String {
    match format {
        Format::KeyValue => {
            let mut out = format!(
                "ts={time} level={} event={name} epoch={epoch}",
                level.name()
            );
            for (key, value) in fields {
                match value {
                    Value::Number(number) => {
                        let _ = write!(out, " {key}={number}");
                    }
                    Value::Text(text) => {
                        let _ = write!(out, " {key}={}", logfmt_value(text));
                    }
                }
            }
            out
        }
        Format::Json => {
            let mut object = serde_json::Map::new();
            object.insert("ts".into(), time.into());
            object.insert("level".into(), level.name().into());
            object.insert("event".into(), name.into());
            object.insert("epoch".into(), epoch.into());
            for (key, value) in fields {
                let value = match value {
                    Value::Number(number) => serde_json::Value::from(*number),
                    Value::Text(text) => serde_json::Value::from(*text),
                };
                object.insert((*key).to_owned(), value);
            }
            serde_json::Value::Object(object).to_string()
        }
    }
}

use understudy_replica::logfmt::value as logfmt_value;

#[cfg(test)]
mod tests {
    use super::*;

    const TIME: &str = "2026-12-06T23:45:01.123Z";

    #[test]
    fn key_value_lines_quote_only_what_needs_it() {
        assert_eq!(
            line(
                TIME,
                Level::Info,
                Format::KeyValue,
                "role_change",
                2,
                &[("from", "backup".into()), ("to", "solo primary".into())]
            ),
            "ts=2026-12-06T23:45:01.123Z level=info event=role_change epoch=2 from=backup to=\"solo primary\""
        );
        assert_eq!(
            line(
                TIME,
                Level::Warn,
                Format::KeyValue,
                "frame_refused",
                1,
                &[("reason", "a \"quoted\" = \\ word".into()), ("count", 3.into())]
            ),
            "ts=2026-12-06T23:45:01.123Z level=warn event=frame_refused epoch=1 reason=\"a \\\"quoted\\\" = \\\\ word\" count=3"
        );
    }

    #[test]
    fn json_lines_are_one_object_with_typed_fields() {
        let text = line(
            TIME,
            Level::Error,
            Format::Json,
            "halted",
            3,
            &[("reason", "fenced".into()), ("at", 7.into())],
        );
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            value,
            serde_json::json!({
                "ts": TIME, "level": "error", "event": "halted", "epoch": 3,
                "reason": "fenced", "at": 7
            })
        );
    }

    #[test]
    fn levels_order_from_error_to_debug_and_parse_by_name() {
        assert!(Level::Error < Level::Warn && Level::Warn < Level::Info);
        assert!(Level::Info < Level::Debug);
        assert_eq!(Level::parse("warn"), Some(Level::Warn));
        assert_eq!(Level::parse("verbose"), None);
        assert_eq!(Format::parse("json"), Some(Format::Json));
    }
}
