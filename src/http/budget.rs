//! The memory budget for request bodies that must be held whole before they
//! can be used (ECR API calls, whose signature covers the body, and manifests):
//! `body_memory` bytes at once for the whole server and `body_memory_per_ip`
//! for one client address. A body reserves its declared size (or its
//! operation's cap when the length is not declared) before a byte is read and
//! gives it back when it is dropped (an IPv6 client is its /64:
//! [`super::client_addr::limit_key`]); a client that cannot get a reservation
//! within [`WAIT`] is told to slow down instead of queueing.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How long a body waits for room in the budget.
pub const WAIT: Duration = Duration::from_secs(2);

pub struct BodyBudget {
    total: Arc<Semaphore>,
    per_ip_max: usize,
    per_ip: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// Why no reservation was made.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum BudgetError {
    #[error("this client already has {held} bytes of request bodies in flight")]
    ClientBusy { held: usize },
    #[error("the server is holding as many request bodies as it may; retry shortly")]
    ServerBusy,
    #[error("a body of {0} bytes is larger than the server's whole body budget")]
    TooLarge(usize),
}

/// Room for one body; released on drop.
pub struct Reservation {
    _permit: OwnedSemaphorePermit,
    _share: Share,
}

/// One address's share of the per-address budget, given back on drop: taken
/// before the wait for the total budget, so a wait that ends in any way (a
/// timeout, an error, or the request being dropped mid-wait) returns it.
struct Share {
    per_ip: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
    bytes: usize,
}

impl Drop for Share {
    fn drop(&mut self) {
        let mut m = self.per_ip.lock().expect("budget lock");
        if let Some(held) = m.get_mut(&self.ip) {
            *held = held.saturating_sub(self.bytes);
            if *held == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

impl BodyBudget {
    pub fn new(total: usize, per_ip: usize) -> BodyBudget {
        BodyBudget {
            total: Arc::new(Semaphore::new(total.min(Semaphore::MAX_PERMITS))),
            per_ip_max: per_ip,
            per_ip: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Reserve `bytes` for a body from `ip`.
    pub async fn reserve(&self, ip: IpAddr, bytes: usize) -> Result<Reservation, BudgetError> {
        let ip = super::client_addr::limit_key(ip);
        let bytes = bytes.max(1);
        let permits = u32::try_from(bytes).map_err(|_| BudgetError::TooLarge(bytes))?;
        let share = {
            let mut m = self.per_ip.lock().expect("budget lock");
            let held = m.get(&ip).copied().unwrap_or(0);
            if held + bytes > self.per_ip_max {
                return Err(BudgetError::ClientBusy { held });
            }
            *m.entry(ip).or_insert(0) += bytes;
            Share {
                per_ip: self.per_ip.clone(),
                ip,
                bytes,
            }
        };
        let acquire = self.total.clone().acquire_many_owned(permits);
        match tokio::time::timeout(WAIT, acquire).await {
            Ok(Ok(permit)) => Ok(Reservation {
                _permit: permit,
                _share: share,
            }),
            Ok(Err(_)) | Err(_) => Err(BudgetError::ServerBusy),
        }
    }

    /// Bytes reserved now by `ip` (for tests and metrics).
    pub fn held_by(&self, ip: IpAddr) -> usize {
        let ip = super::client_addr::limit_key(ip);
        self.per_ip
            .lock()
            .expect("budget lock")
            .get(&ip)
            .copied()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn per_client_and_total_caps() {
        let b = BodyBudget::new(100, 60);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let c: IpAddr = "10.0.0.2".parse().unwrap();
        let r1 = b.reserve(a, 50).await.unwrap();
        assert_eq!(
            b.reserve(a, 20).await.err(),
            Some(BudgetError::ClientBusy { held: 50 })
        );
        let r2 = b.reserve(c, 40).await.unwrap();
        // 90 of 100 held: a further 20 waits, then gives up.
        let d: IpAddr = "10.0.0.3".parse().unwrap();
        assert_eq!(b.reserve(d, 20).await.err(), Some(BudgetError::ServerBusy));
        assert_eq!(b.held_by(d), 0);
        drop(r1);
        assert_eq!(b.held_by(a), 0);
        let r3 = b.reserve(d, 20).await.unwrap();
        drop((r2, r3));
        assert_eq!(b.total.available_permits(), 100);
    }

    #[tokio::test(start_paused = true)]
    async fn ipv6_clients_share_one_budget_per_64() {
        let b = BodyBudget::new(100, 60);
        let r = b.reserve("2001:db8::1".parse().unwrap(), 50).await.unwrap();
        assert_eq!(
            b.reserve("2001:db8::2".parse().unwrap(), 20).await.err(),
            Some(BudgetError::ClientBusy { held: 50 })
        );
        assert_eq!(b.held_by("2001:db8::ffff".parse().unwrap()), 50);
        assert!(
            b.reserve("2001:db8:0:1::1".parse().unwrap(), 20)
                .await
                .is_ok()
        );
        drop(r);
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_given_up_returns_the_share() {
        let b = BodyBudget::new(100, 60);
        let full = b.reserve("10.0.0.1".parse().unwrap(), 60).await.unwrap();
        let _more = b.reserve("10.0.0.2".parse().unwrap(), 40).await.unwrap();
        let a: IpAddr = "10.0.0.3".parse().unwrap();
        // The request goes away (the client disconnected) while its body
        // waits for room: the wait future is dropped before WAIT runs out.
        let waiting = tokio::time::timeout(Duration::from_millis(100), b.reserve(a, 30));
        assert!(waiting.await.is_err());
        assert_eq!(b.held_by(a), 0);
        // The same, dropped after its first poll by hand.
        {
            let mut fut = Box::pin(b.reserve(a, 30));
            assert!(futures_util::poll!(fut.as_mut()).is_pending());
            assert_eq!(b.held_by(a), 30);
        }
        assert_eq!(b.held_by(a), 0);
        drop(full);
        assert!(b.reserve(a, 60).await.is_ok());
    }
}
