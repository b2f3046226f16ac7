//! Fixture slots: each port keeps its slot number across restarts, so a slot
//! is a position on the fixture, not an order of arrival. The map lives in
//! the local store (`meta` key `bench_slots`: port path → slot).

use imprint_store::Store;
use std::collections::{BTreeMap, BTreeSet};

const KEY: &str = "bench_slots";

fn load(store: &Store) -> BTreeMap<String, u32> {
    match store.meta(KEY) {
        Ok(Some(text)) => serde_json::from_str(&text).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "the saved slot map is unreadable: slots are assigned afresh");
            BTreeMap::new()
        }),
        Ok(None) => BTreeMap::new(),
        Err(e) => {
            tracing::warn!(error = %e, "could not read the saved slot map");
            BTreeMap::new()
        }
    }
}

/// The slot of `port`: the one it had before, else the lowest slot neither
/// saved for another port nor shown on the bench (`in_use`), saved at once.
pub fn slot_for(store: &Store, port: &str, in_use: impl Iterator<Item = u32>) -> u32 {
    let mut map = load(store);
    if let Some(s) = map.get(port) {
        return *s;
    }
    let taken: BTreeSet<u32> = map.values().copied().chain(in_use).collect();
    let slot = (1..).find(|s| !taken.contains(s)).unwrap_or(1);
    map.insert(port.to_string(), slot);
    match serde_json::to_string(&map) {
        Ok(text) => {
            if let Err(e) = store.set_meta(KEY, &text) {
                tracing::warn!(error = %e, "could not save the slot map: slot numbers may change after a restart");
            }
        }
        Err(e) => tracing::warn!(error = %e, "could not encode the slot map"),
    }
    slot
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_numbers_stay_with_their_port_after_a_restart() {
        // Regression: slots were handed out in order of arrival, so a restart shifted them.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("station.db");
        {
            let store = Store::open(&path).unwrap();
            assert_eq!(slot_for(&store, "/dev/b", std::iter::empty()), 1);
            assert_eq!(slot_for(&store, "/dev/a", [1].into_iter()), 2);
            store.close();
        }
        let store = Store::open(&path).unwrap();
        // After a restart /dev/a arrives first: it keeps slot 2.
        assert_eq!(slot_for(&store, "/dev/a", std::iter::empty()), 2);
        assert_eq!(slot_for(&store, "/dev/b", [2].into_iter()), 1);
        assert_eq!(slot_for(&store, "/dev/c", [1, 2].into_iter()), 3);
    }
}
