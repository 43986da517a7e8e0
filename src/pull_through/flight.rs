//! Single flight: concurrent requests for the same key on this node share
//! one piece of work (one upstream fetch). The first caller leads and
//! publishes the outcome; the others wait for it. Per node only: two nodes
//! that miss at once each fetch once (their pushes are idempotent).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

type Slot<T, E> = watch::Receiver<Option<Result<T, E>>>;

pub struct Flights<T, E> {
    map: Arc<Mutex<HashMap<String, Slot<T, E>>>>,
}

impl<T, E> Default for Flights<T, E> {
    fn default() -> Self {
        Flights {
            map: Arc::default(),
        }
    }
}

pub enum Joined<T, E> {
    Lead(Lead<T, E>),
    Follow(Follow<T, E>),
}

/// The leader's duty: publish the outcome. Dropped unpublished (the task
/// died), followers see `abandoned`.
pub struct Lead<T, E> {
    key: String,
    tx: watch::Sender<Option<Result<T, E>>>,
    map: Arc<Mutex<HashMap<String, Slot<T, E>>>>,
    abandoned: Option<E>,
}

pub struct Follow<T, E> {
    rx: Slot<T, E>,
    abandoned: E,
}

impl<T: Clone, E: Clone> Flights<T, E> {
    /// Lead the work for `key`, or follow the flight already under way.
    /// `abandoned` is the error followers get if the leader disappears.
    pub fn join(&self, key: &str, abandoned: E) -> Joined<T, E> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(rx) = map.get(key) {
            return Joined::Follow(Follow {
                rx: rx.clone(),
                abandoned,
            });
        }
        let (tx, rx) = watch::channel(None);
        map.insert(key.to_string(), rx);
        Joined::Lead(Lead {
            key: key.to_string(),
            tx,
            map: self.map.clone(),
            abandoned: Some(abandoned),
        })
    }

    /// Whether a flight for `key` is under way, to wait for it.
    pub fn follow(&self, key: &str, abandoned: E) -> Option<Follow<T, E>> {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.get(key).map(|rx| Follow {
            rx: rx.clone(),
            abandoned,
        })
    }
}

impl<T: Clone, E: Clone> Lead<T, E> {
    /// Publish the outcome and end the flight (the next caller leads anew).
    pub fn finish(mut self, outcome: Result<T, E>) {
        self.abandoned = None;
        self.end(outcome);
    }

    fn end(&mut self, outcome: Result<T, E>) {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.key);
        let _ = self.tx.send(Some(outcome));
    }
}

impl<T, E> Drop for Lead<T, E> {
    fn drop(&mut self) {
        if let Some(e) = self.abandoned.take() {
            self.map
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&self.key);
            let _ = self.tx.send(Some(Err(e)));
        }
    }
}

impl<T: Clone, E: Clone> Follow<T, E> {
    pub async fn wait(mut self) -> Result<T, E> {
        match self.rx.wait_for(Option::is_some).await {
            Ok(v) => v.clone().unwrap_or(Err(self.abandoned.clone())),
            Err(_) => Err(self.abandoned),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_leader_many_followers() {
        let f: Flights<u32, String> = Flights::default();
        let Joined::Lead(lead) = f.join("k", "gone".into()) else {
            panic!("first caller leads")
        };
        let Joined::Follow(a) = f.join("k", "gone".into()) else {
            panic!("second caller follows")
        };
        let b = f.follow("k", "gone".into()).unwrap();
        let waiting = tokio::spawn(a.wait());
        lead.finish(Ok(7));
        assert_eq!(waiting.await.unwrap(), Ok(7));
        assert_eq!(b.wait().await, Ok(7));
        assert!(f.follow("k", String::new()).is_none());
        assert!(matches!(f.join("k", "gone".into()), Joined::Lead(_)));
    }

    #[tokio::test]
    async fn a_dropped_leader_is_abandoned() {
        let f: Flights<u32, String> = Flights::default();
        let lead = f.join("k", "gone".into());
        let Joined::Follow(a) = f.join("k", "gone".into()) else {
            panic!()
        };
        drop(lead);
        assert_eq!(a.wait().await, Err("gone".to_string()));
        assert!(f.follow("k", String::new()).is_none());
    }
}
