//! Fixture slots: each port keeps its slot number across restarts, so a slot
//! is a position on the fixture, not an order of arrival. The map lives in
//! the local store (`meta` key `bench_slots`: port path → slot).

use imprint_store::Store;
use std::collections::BTreeSet;

const KEY: &str = "bench_slots";

/// Ports whose slots are remembered; past this many the least recently seen
/// is forgotten (ports named per device, `/dev/serial/by-id/...`, would
/// otherwise grow the map, and the write on every arrival, for ever).
pub const MAX_SAVED_SLOTS: usize = 256;

/// The saved map, least recently seen first. Saved as a JSON array of
/// `[port, slot]`; the first format, an object `{port: slot}`, still reads.
fn load(store: &Store) -> Vec<(String, u32)> {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Saved {
        Recent(Vec<(String, u32)>),
        Map(std::collections::BTreeMap<String, u32>),
    }
    match store.meta(KEY) {
        Ok(Some(text)) => match serde_json::from_str::<Saved>(&text) {
            Ok(Saved::Recent(v)) => v,
            Ok(Saved::Map(m)) => m.into_iter().collect(),
            Err(e) => {
                tracing::warn!(error = %e, "the saved slot map is unreadable: slots are assigned afresh");
                Vec::new()
            }
        },
        Ok(None) => Vec::new(),
        Err(e) => {
            tracing::warn!(error = %e, "could not read the saved slot map");
            Vec::new()
        }
    }
}

fn save(store: &Store, map: &[(String, u32)]) {
    match serde_json::to_string(map) {
        Ok(text) => {
            if let Err(e) = store.set_meta(KEY, &text) {
                tracing::warn!(error = %e, "could not save the slot map: slot numbers may change after a restart");
            }
        }
        Err(e) => tracing::warn!(error = %e, "could not encode the slot map"),
    }
}

/// The slot of `port`: the one it had before, else the lowest slot neither
/// saved for another port nor shown on the bench (`in_use`), saved at once.
pub fn slot_for(store: &Store, port: &str, in_use: impl Iterator<Item = u32>) -> u32 {
    let mut map = load(store);
    if let Some(i) = map.iter().position(|(p, _)| p == port) {
        let slot = map[i].1;
        if i + 1 != map.len() {
            // Seen again: it becomes the most recent.
            let entry = map.remove(i);
            map.push(entry);
            save(store, &map);
        }
        return slot;
    }
    if map.len() >= MAX_SAVED_SLOTS {
        map.drain(..=map.len() - MAX_SAVED_SLOTS);
    }
    let taken: BTreeSet<u32> = map.iter().map(|(_, s)| *s).chain(in_use).collect();
    let slot = (1..).find(|s| !taken.contains(s)).unwrap_or(1);
    map.push((port.to_string(), slot));
    save(store, &map);
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

    #[test]
    fn the_slot_map_forgets_the_least_recently_seen_port_past_its_bound() {
        // Regression (issue 17's soak): every device on a new port path added
        // an entry for ever, and the whole map was rewritten on each arrival.
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("station.db")).unwrap();
        assert_eq!(slot_for(&store, "/dev/fixture-a", std::iter::empty()), 1);
        for i in 0..MAX_SAVED_SLOTS * 3 {
            slot_for(&store, &format!("/dev/serial/by-id/device-{i}"), std::iter::empty());
            // The fixture's port is seen again now and then: it stays.
            if i % 100 == 0 {
                assert_eq!(slot_for(&store, "/dev/fixture-a", std::iter::empty()), 1);
            }
        }
        assert_eq!(load(&store).len(), MAX_SAVED_SLOTS);
        assert_eq!(slot_for(&store, "/dev/fixture-a", std::iter::empty()), 1, "a recently seen port kept its slot");
        // The oldest device path was forgotten; slots never exceed the bound.
        assert!(load(&store).iter().all(|(p, s)| p != "/dev/serial/by-id/device-0" && (*s as usize) <= MAX_SAVED_SLOTS));
    }

    #[test]
    fn a_slot_map_saved_in_the_first_format_still_reads() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("station.db")).unwrap();
        store.set_meta(KEY, r#"{"/dev/a": 2, "/dev/b": 1}"#).unwrap();
        assert_eq!(slot_for(&store, "/dev/a", std::iter::empty()), 2);
        assert_eq!(slot_for(&store, "/dev/b", std::iter::empty()), 1);
        assert_eq!(slot_for(&store, "/dev/c", std::iter::empty()), 3);
    }
}
