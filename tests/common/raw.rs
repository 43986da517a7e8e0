//! HTTP/1.1 spoken by hand over TCP: for tests that must control when each
//! byte is sent (headers and body apart, bodies that stall, connections that
//! say nothing) and see exactly what the server sends back and when it closes.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// A connection from the local address `from` (any 127.0.0.0/8 address works
/// on Linux loopback, so tests can act as several clients).
pub async fn connect_from(from: &str, addr: &str) -> TcpStream {
    let addr: SocketAddr = addr.parse().unwrap();
    let ip: IpAddr = from.parse().unwrap();
    let sock = TcpSocket::new_v4().unwrap();
    sock.bind(SocketAddr::new(ip, 0)).unwrap();
    sock.connect(addr).await.unwrap()
}

pub async fn connect(addr: &str) -> TcpStream {
    TcpStream::connect(addr).await.unwrap()
}

pub async fn send(s: &mut TcpStream, bytes: &[u8]) {
    s.write_all(bytes).await.unwrap();
    s.flush().await.unwrap();
}

/// A response as read off the wire.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    /// Lower-case names.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Read one response (head, then a `Content-Length` body) within `limit`;
/// `None` if the connection closed (or stayed silent) before a whole response.
pub async fn read_reply(s: &mut TcpStream, limit: Duration) -> Option<Reply> {
    tokio::time::timeout(limit, async {
        let mut buf = Vec::new();
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            let n = s.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let status: u16 = lines.next()?.split(' ').nth(1)?.parse().ok()?;
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let len: usize = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let mut body = buf[head_end..].to_vec();
        while body.len() < len {
            let mut chunk = vec![0u8; 65536];
            let n = s.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            body.extend_from_slice(&chunk[..n]);
        }
        body.truncate(len);
        Some(Reply {
            status,
            headers,
            body,
        })
    })
    .await
    .ok()
    .flatten()
}

/// Whether the server closed the connection within `limit` (a read returns
/// end-of-file or an error); bytes it sends meanwhile are discarded.
pub async fn closed_within(s: &mut TcpStream, limit: Duration) -> bool {
    tokio::time::timeout(limit, async {
        let mut chunk = [0u8; 65536];
        loop {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}
