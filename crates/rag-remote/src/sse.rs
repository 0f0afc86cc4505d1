//! A bounded reader of `text/event-stream` bodies: the `data` of each event, in
//! order, with a cap on line length so a hostile server cannot grow memory.

use std::io::{BufRead, Read};

use crate::error::RemoteError;

/// Reads server-sent events from a byte stream.
pub(crate) struct EventReader<R> {
    inner: R,
    max_line: usize,
    line: Vec<u8>,
}

impl<R: BufRead> EventReader<R> {
    pub(crate) fn new(inner: R, max_line: usize) -> Self {
        Self {
            inner,
            max_line,
            line: Vec::new(),
        }
    }

    /// The next event's data (its `data:` lines joined by `\n`), or `None` at the end
    /// of the stream. Comments, `event:`, `id:` and `retry:` fields are skipped.
    pub(crate) fn next_data(&mut self) -> Result<Option<String>, RemoteError> {
        let mut data: Option<String> = None;
        loop {
            self.line.clear();
            let n = Read::by_ref(&mut self.inner)
                .take(self.max_line as u64 + 1)
                .read_until(b'\n', &mut self.line)
                .map_err(read_error)?;
            if n == 0 {
                // End of stream: an event without its blank line still counts.
                return Ok(data);
            }
            if self.line.len() > self.max_line {
                return Err(RemoteError::Malformed(format!(
                    "an event-stream line is over {} bytes",
                    self.max_line
                )));
            }
            let line = std::str::from_utf8(&self.line)
                .map_err(|_| RemoteError::Malformed("event stream is not UTF-8".into()))?;
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                if data.is_some() {
                    return Ok(data);
                }
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = match line.split_once(':') {
                Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                None => (line, ""),
            };
            match field {
                "data" => match &mut data {
                    Some(d) => {
                        d.push('\n');
                        d.push_str(value);
                    }
                    None => data = Some(value.to_owned()),
                },
                "event" | "id" | "retry" => {}
                _ => {
                    return Err(RemoteError::Malformed(
                        "an event-stream line has an unknown field".into(),
                    ));
                }
            }
        }
    }
}

fn read_error(e: std::io::Error) -> RemoteError {
    // reqwest's blocking body reports its own errors (timeouts included) through
    // io::Error; keep the reqwest error when there is one.
    match e.into_inner() {
        Some(inner) => match inner.downcast::<reqwest::Error>() {
            Ok(re) => RemoteError::from_reqwest(*re),
            Err(other) => RemoteError::Malformed(format!("reading the event stream: {other}")),
        },
        None => RemoteError::ClosedMidStream,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(body: &str) -> Result<Vec<String>, RemoteError> {
        let mut r = EventReader::new(body.as_bytes(), 64);
        let mut out = Vec::new();
        while let Some(d) = r.next_data()? {
            out.push(d);
        }
        Ok(out)
    }

    #[test]
    fn events_split_on_blank_lines_and_skip_comments() {
        let got =
            all(": keep-alive\n\ndata: a\n\nevent: x\ndata: b\ndata: c\r\n\r\ndata:d").unwrap();
        assert_eq!(got, ["a", "b\nc", "d"]);
    }

    #[test]
    fn an_overlong_line_or_unknown_field_is_malformed() {
        assert!(matches!(
            all(&format!("data: {}\n\n", "x".repeat(100))),
            Err(RemoteError::Malformed(_))
        ));
        assert!(matches!(
            all("garbage here\n\n"),
            Err(RemoteError::Malformed(_))
        ));
        assert_eq!(all("data: \u{0}\u{ff}\n").unwrap(), ["\u{0}\u{ff}"]);
    }
}
