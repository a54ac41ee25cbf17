//! An upstream message over the size limit, cut off in the transport: the rule, and
//! [`Lines`], which applies it to a stdio upstream's output.
//!
//! A result larger than `max_result_bytes` is refused (502 `upstream-result-too-large`).
//! The transports must not wait for all of it first, nor read it as the upstream's
//! failure: the stdio and legacy SSE readers stop keeping a message once it crosses
//! [`transport_limit`], discard the rest up to the message's end, and hand rmcp a small
//! JSON-RPC error in its place, answering the same request id, which the call reads as
//! "too large" (see [`is_too_large`]). Only the first and last [`KEPT`] bytes of the
//! message are kept, to find its id: serializers put `"id"` first (serde, pydantic) or
//! last (the TypeScript SDK).

use serde_json::Value;

/// Bytes kept from each end of an oversize message, to find its id.
pub const KEPT: usize = 4096;

/// What a JSON-RPC envelope may add to a result (`jsonrpc`, `id`, escaping of a text
/// that holds quotes or newlines counts against the result itself).
const ENVELOPE: usize = 64 * 1024;

/// The marker in the substituted error's `data`.
const MARKER: &str = "io.omni-bridge/result-too-large";

/// The most one upstream message may hold, for a gateway refusing results over `max_result`.
pub fn transport_limit(max_result: usize) -> usize {
    max_result.saturating_add(ENVELOPE)
}

/// The gateway's result limit that `transport_limit` was made from, for messages that
/// name the limit the operator set.
pub fn result_limit(transport_limit: usize) -> usize {
    transport_limit.saturating_sub(ENVELOPE)
}

/// The error that stands in for an oversize answer to request `id`; `limit` is the
/// gateway's result limit.
pub fn substitute(id: &Value, limit: usize, seen: usize) -> Vec<u8> {
    let error = serde_json::json!({
        "jsonrpc": "2.0",
        "id": id,
        "error": {
            "code": -32603,
            "message": format!("the answer was over {limit} bytes; omni-bridge discarded it"),
            "data": {MARKER: {"limit": limit, "seen": seen}},
        },
    });
    let mut line = serde_json::to_vec(&error).expect("a JSON value serializes");
    line.push(b'\n');
    line
}

/// If `data` (an error's `data`) marks a substituted answer: the limit and the bytes seen.
pub fn is_too_large(data: Option<&Value>) -> Option<(usize, usize)> {
    let marked = data?.get(MARKER)?;
    let number = |key: &str| marked.get(key).and_then(Value::as_u64).map(|n| n as usize);
    Some((number("limit")?, number("seen")?))
}

/// An id is a string or an integer; anything else is not one.
fn id_value(text: &[u8]) -> Option<Value> {
    match serde_json::from_slice::<Value>(text).ok()? {
        v @ (Value::String(_) | Value::Number(_)) => Some(v),
        _ => None,
    }
}

/// The id of a message cut off after `head` and before `tail` (its first and last bytes;
/// they may overlap or be the same for a short message).
pub fn id_of(head: &[u8], tail: &[u8]) -> Option<Value> {
    id_in_head(head).or_else(|| id_at_end(tail))
}

/// `"id"` as a member of the top-level object, read forward from the message's start.
fn id_in_head(head: &[u8]) -> Option<Value> {
    top_level_value(head, b"\"id\"").and_then(id_value)
}

/// Whether the message whose first bytes are `head` is a request or notification (it has
/// a top-level `"method"`), not an answer. Read from the head only: serializers put
/// `"method"` before `"params"`, so a message of any size costs at most [`KEPT`] bytes.
pub fn is_request(head: &[u8]) -> bool {
    let head = &head[..head.len().min(KEPT)];
    top_level_value(head, b"\"method\"").is_some()
}

/// The raw text of the top-level member `key` (quoted), if it is a string or a scalar
/// and lies within `head`.
fn top_level_value<'a>(head: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    let mut depth = 0usize;
    let mut i = 0;
    while i < head.len() {
        match head[i] {
            b'"' => {
                let end = string_end(head, i)?;
                if depth == 1 && &head[i..=end] == key {
                    let mut j = end + 1;
                    while head.get(j).is_some_and(u8::is_ascii_whitespace) {
                        j += 1;
                    }
                    if head.get(j) == Some(&b':') {
                        j += 1;
                        while head.get(j).is_some_and(u8::is_ascii_whitespace) {
                            j += 1;
                        }
                        let value_end = match head.get(j)? {
                            b'"' => string_end(head, j)? + 1,
                            _ => {
                                j + head[j..].iter().position(|b| {
                                    matches!(b, b',' | b'}') || b.is_ascii_whitespace()
                                })?
                            }
                        };
                        return Some(&head[j..value_end]);
                    }
                }
                i = end + 1;
            }
            b'{' | b'[' => {
                depth += 1;
                i += 1;
            }
            b'}' | b']' => {
                depth = depth.saturating_sub(1);
                i += 1;
            }
            _ => i += 1,
        }
    }
    None
}

/// The index of the quote closing the string that opens at `start`.
fn string_end(bytes: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' => return Some(i),
            _ => i += 1,
        }
    }
    None
}

/// `"id": VALUE}` as the last member of the top-level object, read back from its end.
fn id_at_end(tail: &[u8]) -> Option<Value> {
    let trimmed = tail.trim_ascii_end();
    let body = trimmed.strip_suffix(b"}")?;
    let at = body.windows(4).rposition(|w| w == b"\"id\"")?;
    let rest = body[at + 4..].trim_ascii_start().strip_prefix(b":")?;
    id_value(rest.trim_ascii())
}

/// Follows one message at a time through a byte stream: keeps its first and last bytes,
/// and says when it has crossed the limit.
#[derive(Debug)]
pub struct Cut {
    limit: usize,
    len: usize,
    head: Vec<u8>,
    tail: std::collections::VecDeque<u8>,
    /// Over the limit: what follows, up to the message's end, is discarded.
    pub discarding: bool,
}

impl Cut {
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            len: 0,
            head: Vec::new(),
            tail: std::collections::VecDeque::new(),
            discarding: false,
        }
    }

    /// Takes the next bytes of the current message; true when they took it over the
    /// limit (from then on `discarding`, and the bytes are not to be passed on).
    pub fn take(&mut self, bytes: &[u8]) -> bool {
        self.len += bytes.len();
        let room = KEPT.saturating_sub(self.head.len());
        self.head.extend_from_slice(&bytes[..room.min(bytes.len())]);
        if self.discarding || self.len > self.limit {
            let keep = &bytes[bytes.len().saturating_sub(KEPT)..];
            self.tail.extend(keep);
            let excess = self.tail.len().saturating_sub(KEPT);
            self.tail.drain(..excess);
            let crossed = !self.discarding;
            self.discarding = true;
            return crossed;
        }
        false
    }

    /// The message ended. For one that was cut: the error to pass on in its place (or
    /// nothing, with a warning, when its id cannot be found).
    pub fn end(&mut self, server: &str) -> Option<Vec<u8>> {
        let answer = self.discarding.then(|| {
            let tail: Vec<u8> = self.tail.iter().copied().collect();
            // An oversize request of the upstream's is dropped: answering "its" id would
            // fail our own request that happens to have the same number.
            let id = match is_request(&self.head) {
                true => None,
                false => id_of(&self.head, &tail),
            };
            match id {
                Some(id) => {
                    log::warn!(
                        "[{server}] an answer of {} bytes is over the limit of {}; discarded",
                        self.len,
                        self.limit
                    );
                    Some(substitute(&id, result_limit(self.limit), self.len))
                }
                None => {
                    log::warn!(
                        "[{server}] discarded a message of {} bytes, over the limit of {}, \
                         whose id could not be found",
                        self.len,
                        self.limit
                    );
                    None
                }
            }
        });
        self.len = 0;
        self.head.clear();
        self.tail.clear();
        self.discarding = false;
        answer.flatten()
    }
}

/// A stdio upstream's output with every line over the limit replaced (see the module's
/// comment): the part of the line already passed on is ended with a newline (rmcp skips it
/// as unparsable), the rest is discarded as it arrives, and the substitute follows.
pub struct Lines<R> {
    inner: R,
    server: String,
    cut: Cut,
    /// What is ready to be read, and from where.
    out: Vec<u8>,
    at: usize,
    scratch: Box<[u8]>,
}

impl<R> Lines<R> {
    pub fn new(inner: R, server: &str, limit: usize) -> Self {
        Self {
            inner,
            server: server.to_owned(),
            cut: Cut::new(limit),
            out: Vec::new(),
            at: 0,
            scratch: vec![0; 64 * 1024].into_boxed_slice(),
        }
    }

    /// Passes `bytes` through the rule into `out`.
    fn process(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let newline = memchr(bytes);
            let (line, rest) = match newline {
                Some(at) => bytes.split_at(at + 1),
                None => (bytes, &[][..]),
            };
            let body = line.strip_suffix(b"\n").unwrap_or(line);
            let was_discarding = self.cut.discarding;
            if self.cut.take(body) {
                // Ends the part already passed on.
                self.out.push(b'\n');
            } else if !was_discarding {
                self.out.extend_from_slice(body);
            }
            if newline.is_some() {
                match self.cut.end(&self.server) {
                    Some(substitute) => self.out.extend_from_slice(&substitute),
                    None if was_discarding || self.cut.discarding => {}
                    None => self.out.push(b'\n'),
                }
            }
            bytes = rest;
        }
    }
}

fn memchr(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|b| *b == b'\n')
}

impl<R: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Lines<R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::task::Poll;
        let this = &mut *self;
        while this.at == this.out.len() {
            this.out.clear();
            this.at = 0;
            let mut read = tokio::io::ReadBuf::new(&mut this.scratch);
            match std::pin::Pin::new(&mut this.inner).poll_read(cx, &mut read) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) if read.filled().is_empty() => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(())) => {
                    let n = read.filled().len();
                    // Processed where it was read: no copy per read.
                    let scratch = std::mem::take(&mut this.scratch);
                    this.process(&scratch[..n]);
                    this.scratch = scratch;
                }
            }
        }
        let n = buf.remaining().min(this.out.len() - this.at);
        buf.put_slice(&this.out[this.at..this.at + n]);
        this.at += n;
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_id_is_found_first_or_last_but_never_inside_the_result() {
        let first = br#"{"jsonrpc":"2.0","id":7,"result":{"content":[{"type":"text","text":"xx"#;
        assert_eq!(id_of(first, b"xxx\"}]}}"), Some(json!(7)));
        let named = br#"{ "id" : "a\"b", "result": {"#;
        assert_eq!(id_of(named, b""), Some(json!("a\"b")));
        // An "id" inside the result, at depth 2, is not the message's.
        let nested = br#"{"result":{"id":99,"content":[{"text":"xxxx"#;
        assert_eq!(
            id_of(nested, br#"xxx"}]},"jsonrpc":"2.0","id":12}"#),
            Some(json!(12))
        );
        // A string that merely contains "id" is passed over.
        let quoted = br#"{"result":{"text":"\"id\":5 xxx"#;
        assert_eq!(id_of(quoted, br#"xx"}}"#), None);
        assert_eq!(id_of(b"{\"id\":null,", b""), None);
    }

    #[test]
    fn an_oversize_request_of_the_upstream_answers_nothing() {
        let mut cut = Cut::new(transport_limit(10));
        let filler = "0".repeat(ENVELOPE + 20);
        let head = br#"{"jsonrpc":"2.0","id":4,"method":"sampling/createMessage","params":{"t":""#;
        assert!(cut.take(head) || cut.take(filler.as_bytes()));
        assert_eq!(cut.end("s"), None, "our own request 4 must not be failed");
        // The same with the method after the id, and an answer still gets its error.
        let answer = br#"{"jsonrpc":"2.0","id":4,"result":{"t":""#;
        assert!(cut.take(answer) || cut.take(filler.as_bytes()));
        assert!(cut.end("s").is_some());
    }

    #[test]
    fn a_cut_message_becomes_an_error_for_its_id_and_the_next_passes() {
        let mut cut = Cut::new(transport_limit(10));
        let filler = "0".repeat(ENVELOPE + 20);
        let pieces: [&[u8]; 3] = [br#"{"id":3,"#, filler.as_bytes(), b"more"];
        assert!(!cut.take(pieces[0]));
        assert!(cut.take(pieces[1]));
        assert!(!cut.take(pieces[2]), "crossed only once");
        let answer = cut.end("s").unwrap();
        let error: Value = serde_json::from_slice(&answer).unwrap();
        assert_eq!(error["id"], 3);
        let seen = pieces.iter().map(|p| p.len()).sum();
        assert_eq!(
            is_too_large(error["error"].get("data")),
            Some((10, seen)),
            "{error}"
        );
        assert!(!cut.take(b"{\"id\":4}"));
        assert_eq!(cut.end("s"), None);
    }

    #[tokio::test]
    async fn a_stdio_line_over_the_limit_reads_as_an_error_for_its_request() {
        use tokio::io::AsyncReadExt;
        let big = format!(
            r#"{{"jsonrpc":"2.0","id":5,"result":{{"text":"{}"}}}}"#,
            "x".repeat(ENVELOPE + 500)
        );
        let input = format!("{{\"id\":1}}\n{big}\n{{\"id\":2}}\n");
        // Fed in small pieces, as a pipe delivers them.
        let (mut tx, rx) = tokio::io::duplex(7);
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            tx.write_all(input.as_bytes()).await.unwrap();
        });
        let mut out = String::new();
        Lines::new(rx, "s", transport_limit(100))
            .read_to_string(&mut out)
            .await
            .unwrap();
        writer.await.unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], r#"{"id":1}"#);
        // The start of the big line, ended: rmcp skips it as unparsable JSON.
        assert!(
            lines[1].len() <= transport_limit(100) && lines[1].starts_with(r#"{"jsonrpc""#),
            "{}",
            &out[..200]
        );
        let error: Value = serde_json::from_str(lines[2]).unwrap();
        assert_eq!(error["id"], 5);
        assert!(is_too_large(error["error"].get("data")).is_some());
        assert_eq!(lines[3], r#"{"id":2}"#);
        assert_eq!(lines.len(), 4);
    }
}
