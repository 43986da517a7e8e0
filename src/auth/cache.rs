//! A small cache with a time-to-live and a hard bound on its size, for the
//! per-node views of keys, policies and authorization decisions.
//!
//! Two generations: entries go into `current`; when it holds half the
//! capacity it becomes `previous` (the older `previous` is dropped) and a new
//! `current` starts. A hit in `previous` moves the entry forward. So the cache
//! never holds more than `capacity` entries whatever the callers ask for (a
//! client probing random repository names cannot grow it), recently used
//! entries survive a rotation, and no per-entry bookkeeping is needed.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct TtlCache<V> {
    ttl: Duration,
    half: usize,
    inner: Mutex<Generations<V>>,
}

struct Generations<V> {
    current: HashMap<String, (Instant, V)>,
    previous: HashMap<String, (Instant, V)>,
}

impl<V: Clone> TtlCache<V> {
    /// A cache of at most `capacity` entries (at least 2), each trusted for `ttl`.
    pub fn new(capacity: usize, ttl: Duration) -> TtlCache<V> {
        TtlCache {
            ttl,
            half: (capacity / 2).max(1),
            inner: Mutex::new(Generations {
                current: HashMap::new(),
                previous: HashMap::new(),
            }),
        }
    }

    /// The value for `key` and when it was stored, if it is younger than the TTL.
    pub fn get(&self, key: &str) -> Option<(V, Instant)> {
        let mut g = self.inner.lock().expect("cache lock");
        if let Some((at, v)) = g.current.get(key) {
            return (at.elapsed() < self.ttl).then(|| (v.clone(), *at));
        }
        let (at, v) = g.previous.remove(key)?;
        if at.elapsed() >= self.ttl {
            return None;
        }
        let out = (v.clone(), at);
        Self::put(&mut g, self.half, key.to_string(), (at, v));
        Some(out)
    }

    /// Store `value` for `key`, as read at `at`.
    pub fn insert_at(&self, key: String, value: V, at: Instant) {
        let mut g = self.inner.lock().expect("cache lock");
        Self::put(&mut g, self.half, key, (at, value));
    }

    pub fn insert(&self, key: String, value: V) {
        self.insert_at(key, value, Instant::now());
    }

    fn put(g: &mut Generations<V>, half: usize, key: String, entry: (Instant, V)) {
        if g.current.len() >= half && !g.current.contains_key(&key) {
            g.previous = std::mem::take(&mut g.current);
        }
        g.current.insert(key, entry);
    }

    pub fn remove(&self, key: &str) {
        let mut g = self.inner.lock().expect("cache lock");
        g.current.remove(key);
        g.previous.remove(key);
    }

    pub fn clear(&self) {
        let mut g = self.inner.lock().expect("cache lock");
        g.current.clear();
        g.previous.clear();
    }

    /// Entries held (fresh or not).
    pub fn len(&self) -> usize {
        let g = self.inner.lock().expect("cache lock");
        g.current.len() + g.previous.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_whatever_the_keys() {
        let c = TtlCache::new(1000, Duration::from_secs(60));
        for i in 0..100_000 {
            c.insert(format!("repo/{i}"), i);
            assert!(c.len() <= 1000);
        }
        assert_eq!(c.get("repo/99999").map(|(v, _)| v), Some(99_999));
        assert!(c.get("repo/1").is_none());
    }

    #[test]
    fn recently_used_entries_survive_rotation_and_expire_with_ttl() {
        let c = TtlCache::new(4, Duration::from_secs(60));
        c.insert("hot".into(), 1);
        c.insert("a".into(), 2);
        // Rotates: hot and a move to `previous`.
        c.insert("b".into(), 3);
        // A hit brings hot forward, so the next rotation keeps it.
        assert_eq!(c.get("hot").map(|(v, _)| v), Some(1));
        c.insert("c".into(), 4);
        assert_eq!(c.get("hot").map(|(v, _)| v), Some(1));
        assert!(c.get("a").is_none());
        let stale = TtlCache::new(4, Duration::from_millis(0));
        stale.insert("x".into(), 1);
        assert!(stale.get("x").is_none());
        c.remove("hot");
        assert!(c.get("hot").is_none());
        c.clear();
        assert!(c.is_empty());
    }
}
