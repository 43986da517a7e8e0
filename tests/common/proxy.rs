//! A TCP proxy the tests can cut: stands between Berth and a backing server
//! (PostgreSQL, S3) to make it vanish and come back, as an outage or a
//! restart does, without disturbing the other tests that share the server.

use std::io;
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct FaultProxy {
    pub addr: SocketAddr,
    cut: Arc<AtomicBool>,
    live: Arc<Mutex<Vec<TcpStream>>>,
}

impl FaultProxy {
    /// A proxy on a free port of 127.0.0.1 to `target`.
    pub fn start(target: SocketAddr) -> FaultProxy {
        FaultProxy::start_on("127.0.0.1".parse().unwrap(), target)
    }

    /// A proxy on a free port of `bind` to `target`.
    pub fn start_on(bind: IpAddr, target: SocketAddr) -> FaultProxy {
        let listener = TcpListener::bind((bind, 0)).unwrap();
        let addr = listener.local_addr().unwrap();
        let cut = Arc::new(AtomicBool::new(false));
        let live: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (c, l) = (cut.clone(), live.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if c.load(Ordering::SeqCst) {
                    // Down: the connection is dropped at once.
                    drop(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect_timeout(&target, Duration::from_secs(5)) else {
                    continue;
                };
                let mut live = l.lock().unwrap();
                live.retain(|s| s.peer_addr().is_ok());
                live.push(client.try_clone().unwrap());
                live.push(server.try_clone().unwrap());
                pipe(client.try_clone().unwrap(), server.try_clone().unwrap());
                pipe(server, client);
            }
        });
        FaultProxy { addr, cut, live }
    }

    /// The server goes away: every open connection is reset and new ones are
    /// dropped until [`FaultProxy::restore`].
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for s in self.live.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    /// The server is back.
    pub fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let _ = io::copy(&mut from, &mut to);
        let _ = to.shutdown(Shutdown::Write);
    });
}
