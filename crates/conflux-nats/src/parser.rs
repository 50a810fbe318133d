//! Sans-IO parser of the client side of the NATS protocol (CONNECT, PUB, HPUB, SUB, UNSUB,
//! PING, PONG). Operations borrow from the read buffer; nothing is copied here.

/// One client operation.
#[derive(Debug, PartialEq)]
pub enum Op<'a> {
    Connect(&'a [u8]),
    Pub {
        subject: &'a [u8],
        reply: Option<&'a [u8]>,
        /// Header block length (HPUB), 0 for PUB.
        header_len: usize,
        /// Headers followed by payload.
        data: &'a [u8],
        headers: bool,
    },
    Sub {
        subject: &'a [u8],
        queue: Option<&'a [u8]>,
        sid: &'a [u8],
    },
    Unsub {
        sid: &'a [u8],
        max: Option<u64>,
    },
    Ping,
    Pong,
    /// `+OK` / `-ERR` / `INFO` sent by a client: ignored.
    Ignored,
}

/// A protocol violation; every one closes the connection. `text()` is nats-server's.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum ParseError {
    ControlLine,
    MaxPayload,
    UnknownOp,
    BadArgs,
}

impl ParseError {
    pub fn text(self) -> &'static str {
        match self {
            ParseError::ControlLine => "Maximum Control Line Exceeded",
            ParseError::MaxPayload => "Maximum Payload Violation",
            ParseError::UnknownOp => "Unknown Protocol Operation",
            ParseError::BadArgs => "Unknown Protocol Operation",
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_control_line: usize,
    pub max_payload: usize,
}

/// Parses one operation at the start of `buf`: `Ok(None)` if more bytes are needed, else the
/// operation and the number of bytes it used.
pub fn parse(buf: &[u8], limits: Limits) -> Result<Option<(Op<'_>, usize)>, ParseError> {
    let scan = &buf[..buf.len().min(limits.max_control_line + 2)];
    let Some(nl) = memchr(b'\n', scan) else {
        if buf.len() > limits.max_control_line {
            return Err(ParseError::ControlLine);
        }
        return Ok(None);
    };
    let line_end = if nl > 0 && buf[nl - 1] == b'\r' {
        nl - 1
    } else {
        nl
    };
    if line_end > limits.max_control_line {
        return Err(ParseError::ControlLine);
    }
    let line = &buf[..line_end];
    let after = nl + 1;
    let (verb, rest) = split_verb(line);
    let mut args = [&b""[..]; 5];
    let op = match verb.len() {
        3 if verb.eq_ignore_ascii_case(b"PUB") => {
            let n = split_args(rest, &mut args)?;
            let (subject, reply, size) = match n {
                2 => (args[0], None, args[1]),
                3 => (args[0], Some(args[1]), args[2]),
                _ => return Err(ParseError::BadArgs),
            };
            let size = parse_size(size)?;
            return payload(buf, after, size, limits).map(|o| {
                o.map(|(data, used)| {
                    (
                        Op::Pub {
                            subject,
                            reply,
                            header_len: 0,
                            data,
                            headers: false,
                        },
                        used,
                    )
                })
            });
        }
        4 if verb.eq_ignore_ascii_case(b"HPUB") => {
            let n = split_args(rest, &mut args)?;
            let (subject, reply, hsize, size) = match n {
                3 => (args[0], None, args[1], args[2]),
                4 => (args[0], Some(args[1]), args[2], args[3]),
                _ => return Err(ParseError::BadArgs),
            };
            let hsize = parse_size(hsize)?;
            let size = parse_size(size)?;
            if hsize > size {
                return Err(ParseError::BadArgs);
            }
            return payload(buf, after, size, limits).map(|o| {
                o.map(|(data, used)| {
                    (
                        Op::Pub {
                            subject,
                            reply,
                            header_len: hsize,
                            data,
                            headers: true,
                        },
                        used,
                    )
                })
            });
        }
        3 if verb.eq_ignore_ascii_case(b"SUB") => {
            let n = split_args(rest, &mut args)?;
            match n {
                2 => Op::Sub {
                    subject: args[0],
                    queue: None,
                    sid: args[1],
                },
                3 => Op::Sub {
                    subject: args[0],
                    queue: Some(args[1]),
                    sid: args[2],
                },
                _ => return Err(ParseError::BadArgs),
            }
        }
        5 if verb.eq_ignore_ascii_case(b"UNSUB") => {
            let n = split_args(rest, &mut args)?;
            match n {
                1 => Op::Unsub {
                    sid: args[0],
                    max: None,
                },
                2 => Op::Unsub {
                    sid: args[0],
                    max: Some(parse_size(args[1])? as u64),
                },
                _ => return Err(ParseError::BadArgs),
            }
        }
        4 if verb.eq_ignore_ascii_case(b"PING") => Op::Ping,
        4 if verb.eq_ignore_ascii_case(b"PONG") => Op::Pong,
        7 if verb.eq_ignore_ascii_case(b"CONNECT") => Op::Connect(trim(rest)),
        3 if verb.eq_ignore_ascii_case(b"+OK") => Op::Ignored,
        4 if verb.eq_ignore_ascii_case(b"-ERR") => Op::Ignored,
        4 if verb.eq_ignore_ascii_case(b"INFO") => Op::Ignored,
        0 if rest.is_empty() => Op::Ignored,
        _ => return Err(ParseError::UnknownOp),
    };
    Ok(Some((op, after)))
}

fn payload(
    buf: &[u8],
    start: usize,
    size: usize,
    limits: Limits,
) -> Result<Option<(&[u8], usize)>, ParseError> {
    if size > limits.max_payload {
        return Err(ParseError::MaxPayload);
    }
    let end = start + size;
    if buf.len() < end + 2 {
        return Ok(None);
    }
    if &buf[end..end + 2] != b"\r\n" {
        return Err(ParseError::BadArgs);
    }
    Ok(Some((&buf[start..end], end + 2)))
}

fn split_verb(line: &[u8]) -> (&[u8], &[u8]) {
    let line = trim(line);
    match line.iter().position(|b| *b == b' ' || *b == b'\t') {
        Some(i) => (&line[..i], &line[i + 1..]),
        None => (line, &[]),
    }
}

fn trim(s: &[u8]) -> &[u8] {
    let start = s
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |i| i + 1);
    &s[start..end.max(start)]
}

fn split_args<'a>(rest: &'a [u8], out: &mut [&'a [u8]; 5]) -> Result<usize, ParseError> {
    let mut n = 0;
    for tok in rest
        .split(|b| *b == b' ' || *b == b'\t')
        .filter(|t| !t.is_empty())
    {
        if n == out.len() {
            return Err(ParseError::BadArgs);
        }
        out[n] = tok;
        n += 1;
    }
    Ok(n)
}

fn parse_size(s: &[u8]) -> Result<usize, ParseError> {
    if s.is_empty() || s.len() > 12 {
        return Err(ParseError::BadArgs);
    }
    let mut v: usize = 0;
    for &b in s {
        if !b.is_ascii_digit() {
            return Err(ParseError::BadArgs);
        }
        v = v * 10 + usize::from(b - b'0');
    }
    Ok(v)
}

fn memchr(needle: u8, hay: &[u8]) -> Option<usize> {
    hay.iter().position(|b| *b == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: Limits = Limits {
        max_control_line: 64,
        max_payload: 16,
    };

    #[test]
    fn parses_every_op_and_waits_for_more() {
        let (op, n) = parse(b"PUB a.b r 3\r\nabc\r\nPING\r\n", L)
            .unwrap()
            .unwrap();
        assert_eq!(n, 18);
        assert!(matches!(
            op,
            Op::Pub {
                subject: b"a.b",
                reply: Some(b"r"),
                data: b"abc",
                ..
            }
        ));
        assert_eq!(parse(b"PUB a 3\r\nab", L).unwrap(), None);
        assert_eq!(parse(b"PUB a", L).unwrap(), None);
        let (op, _) = parse(b"hpub a 2 5\r\nhhxyz\r\n", L).unwrap().unwrap();
        assert!(matches!(
            op,
            Op::Pub {
                header_len: 2,
                data: b"hhxyz",
                headers: true,
                ..
            }
        ));
        let (op, _) = parse(b"SUB a q 1\r\n", L).unwrap().unwrap();
        assert_eq!(
            op,
            Op::Sub {
                subject: b"a",
                queue: Some(b"q"),
                sid: b"1"
            }
        );
        let (op, _) = parse(b"UNSUB 1 5\r\n", L).unwrap().unwrap();
        assert_eq!(
            op,
            Op::Unsub {
                sid: b"1",
                max: Some(5)
            }
        );
        assert_eq!(parse(b"ping\r\n", L).unwrap().unwrap().0, Op::Ping);
        assert_eq!(
            parse(b"CONNECT {}\r\n", L).unwrap().unwrap().0,
            Op::Connect(b"{}")
        );
    }

    #[test]
    fn limits_and_garbage_are_errors() {
        assert_eq!(parse(b"PUB a 17\r\n", L), Err(ParseError::MaxPayload));
        assert_eq!(parse(&[b'x'; 80], L), Err(ParseError::ControlLine));
        assert_eq!(parse(b"FOO\r\n", L), Err(ParseError::UnknownOp));
        assert_eq!(parse(b"PUB a x\r\n", L), Err(ParseError::BadArgs));
        assert_eq!(parse(b"PUB a 1\r\nab\r\n", L), Err(ParseError::BadArgs));
        assert_eq!(parse(b"HPUB a 3 2\r\n", L), Err(ParseError::BadArgs));
    }
}
