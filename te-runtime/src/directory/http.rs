//! A bounded HTTP/1.1 client for one request per connection: what etcd's
//! JSON gateway needs and nothing more (no TLS, no redirects).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::time::Duration;

use super::{dial, REPLY_MAX};

fn bad(why: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why.into())
}

/// POSTs `body` (JSON) to `path` at `endpoint`; the status code and the
/// body of the answer, at most [`REPLY_MAX`] bytes.
pub(super) fn post(endpoint: &str, path: &str, body: &[u8], timeout: Duration) -> io::Result<(u16, Vec<u8>)> {
    let mut s = dial(endpoint, timeout)?;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {endpoint}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    read_response(BufReader::new(s.take(REPLY_MAX as u64 + 4096)))
}

/// One line of the head, without its CRLF.
fn line(r: &mut impl BufRead) -> io::Result<String> {
    let mut l = String::new();
    if r.read_line(&mut l)? == 0 {
        return Err(bad("connection closed in the response head"));
    }
    Ok(l.trim_end_matches(['\r', '\n']).to_string())
}

fn read_response(mut r: impl BufRead) -> io::Result<(u16, Vec<u8>)> {
    let status = line(&mut r)?;
    let code = status
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok())
        .filter(|_| status.starts_with("HTTP/1."))
        .ok_or_else(|| {
            bad(format!(
                "not an HTTP response: {:?}",
                status.chars().take(40).collect::<String>()
            ))
        })?;
    let (mut length, mut chunked) = (None, false);
    loop {
        let h = line(&mut r)?;
        if h.is_empty() {
            break;
        }
        let Some((name, value)) = h.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(value.parse::<usize>().map_err(|_| bad("bad Content-Length"))?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.eq_ignore_ascii_case("chunked");
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            let size = line(&mut r)?;
            let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| bad("bad chunk size"))?;
            if size == 0 {
                break;
            }
            if size > REPLY_MAX - body.len() {
                return Err(bad(format!("response beyond {REPLY_MAX} bytes")));
            }
            let at = body.len();
            body.resize(at + size, 0);
            r.read_exact(&mut body[at..])?;
            line(&mut r)?;
        }
    } else if let Some(n) = length {
        if n > REPLY_MAX {
            return Err(bad(format!("response of {n} bytes, beyond {REPLY_MAX}")));
        }
        body.resize(n, 0);
        r.read_exact(&mut body)?;
    } else {
        r.take(REPLY_MAX as u64).read_to_end(&mut body)?;
    }
    Ok((code, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_and_chunks_are_read() {
        let plain = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}trailing";
        assert_eq!(read_response(&plain[..]).unwrap(), (200, b"{}".to_vec()));
        let chunks = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{\"a\r\n3;x=1\r\n\":1\r\n1\r\n}\r\n0\r\n\r\n";
        assert_eq!(read_response(&chunks[..]).unwrap(), (200, b"{\"a\":1}".to_vec()));
        let to_close = b"HTTP/1.0 404 Not Found\r\n\r\nnope";
        assert_eq!(read_response(&to_close[..]).unwrap(), (404, b"nope".to_vec()));
    }

    #[test]
    fn bad_responses_are_errors_not_panics() {
        for r in [
            &b"SSH-2.0-OpenSSH\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffff\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\n",
            b"HTTP/1.1 200",
            b"",
        ] {
            assert!(read_response(r).is_err(), "{:?}", String::from_utf8_lossy(r));
        }
    }
}
