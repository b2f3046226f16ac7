//! The MQTT event queue (migration 0003): provisioning events written in the
//! same transaction as the pass they announce, sent by the station's
//! publisher, marked sent only after the broker's PUBACK.

use crate::records::{finish_in, AttemptEnd};
use crate::{now_text, Store, StoreError};
use rusqlite::params;
use serde::Serialize;

/// An event to queue with a pass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewMqttEvent {
    /// UUIDv7; also the `event_id` inside the payload.
    pub id: String,
    pub topic: String,
    /// The JSON event, exactly as it will be published.
    pub payload: String,
}

/// A queued event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MqttEvent {
    pub id: String,
    pub attempt_id: String,
    pub topic: String,
    pub payload: String,
    pub created_at: String,
    pub state: String,
    pub tries: i64,
    pub last_error: Option<String>,
    pub sent_at: Option<String>,
}

/// Counts for health displays.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct MqttEventCounts {
    pub pending: i64,
    pub sent: i64,
}

const COLS: &str = "id, attempt_id, topic, payload, created_at, state, tries, last_error, sent_at";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<MqttEvent> {
    Ok(MqttEvent {
        id: r.get(0)?,
        attempt_id: r.get(1)?,
        topic: r.get(2)?,
        payload: r.get(3)?,
        created_at: r.get(4)?,
        state: r.get(5)?,
        tries: r.get(6)?,
        last_error: r.get(7)?,
        sent_at: r.get(8)?,
    })
}

impl Store {
    /// [`Store::finish_attempt`] plus, in the same transaction, the queued
    /// event (when given): the pass and its event are durable together or
    /// not at all.
    pub fn finish_attempt_with_event(
        &self,
        attempt_id: &str,
        end: AttemptEnd,
        bytes_to_device: u64,
        bytes_from_device: u64,
        event: Option<NewMqttEvent>,
    ) -> Result<(), StoreError> {
        let id = attempt_id.to_string();
        let station = self.station_id();
        self.write_final(move |t| {
            finish_in(t, &station, &id, end.clone(), bytes_to_device, bytes_from_device)?;
            if let Some(e) = &event {
                t.execute(
                    "INSERT INTO mqtt_events(id, attempt_id, topic, payload, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![e.id, id, e.topic, e.payload, now_text()],
                )?;
            }
            Ok(())
        })
    }

    /// Up to `limit` pending events, oldest first.
    pub fn pending_mqtt_events(&self, limit: usize) -> Result<Vec<MqttEvent>, StoreError> {
        self.read(move |c| {
            let mut s = c.prepare(&format!("SELECT {COLS} FROM mqtt_events WHERE state='pending' ORDER BY created_at, id LIMIT ?1"))?;
            let rows = s.query_map([limit as i64], row)?.collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
    }

    /// Every event of an attempt.
    pub fn mqtt_events_of(&self, attempt_id: &str) -> Result<Vec<MqttEvent>, StoreError> {
        let a = attempt_id.to_string();
        self.read(move |c| {
            let mut s = c.prepare(&format!("SELECT {COLS} FROM mqtt_events WHERE attempt_id=?1 ORDER BY id"))?;
            let rows = s.query_map([a], row)?.collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
    }

    /// Mark events sent (their PUBACK arrived).
    pub fn mark_mqtt_events_sent(&self, ids: &[String]) -> Result<(), StoreError> {
        let ids = ids.to_vec();
        self.write(move |t| {
            let at = now_text();
            for id in ids {
                t.execute("UPDATE mqtt_events SET state='sent', sent_at=?2 WHERE id=?1 AND state='pending'", params![id, at])?;
            }
            Ok(())
        })
    }

    /// Note a failed publish round for an event that stays pending.
    pub fn note_mqtt_event_failure(&self, id: &str, error: &str) -> Result<(), StoreError> {
        let (id, e) = (id.to_string(), error.to_string());
        self.write(move |t| {
            t.execute("UPDATE mqtt_events SET tries=tries+1, last_error=?2 WHERE id=?1 AND state='pending'", params![id, e])?;
            Ok(())
        })
    }

    pub fn mqtt_event_counts(&self) -> Result<MqttEventCounts, StoreError> {
        self.read(|c| {
            Ok(c.query_row("SELECT coalesce(sum(state='pending'), 0), coalesce(sum(state='sent'), 0) FROM mqtt_events", [], |r| {
                Ok(MqttEventCounts { pending: r.get(0)?, sent: r.get(1)? })
            })?)
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::AttemptStatus;

    #[test]
    fn a_pass_and_its_event_commit_together_and_are_marked_sent_after_puback() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(&d.path().join("s.db")).unwrap();
        let a = s.begin_attempt("p", None).unwrap();
        let ev = NewMqttEvent { id: crate::new_id(), topic: "t".into(), payload: "{}".into() };
        s.finish_attempt_with_event(&a, AttemptEnd::Passed { resumed: false }, 1, 2, Some(ev.clone())).unwrap();
        assert_eq!(s.attempt(&a).unwrap().unwrap().status, AttemptStatus::Passed);
        let p = s.pending_mqtt_events(10).unwrap();
        assert_eq!((p.len(), p[0].id.as_str(), p[0].attempt_id.as_str()), (1, ev.id.as_str(), a.as_str()));
        s.note_mqtt_event_failure(&ev.id, "broker down").unwrap();
        assert_eq!(s.pending_mqtt_events(10).unwrap()[0].tries, 1);
        s.mark_mqtt_events_sent(std::slice::from_ref(&ev.id)).unwrap();
        assert!(s.pending_mqtt_events(10).unwrap().is_empty());
        assert_eq!(s.mqtt_event_counts().unwrap(), MqttEventCounts { pending: 0, sent: 1 });
    }

    #[test]
    fn an_event_for_an_unknown_attempt_rolls_back_the_whole_write() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(&d.path().join("s.db")).unwrap();
        let ev = NewMqttEvent { id: crate::new_id(), topic: "t".into(), payload: "{}".into() };
        assert!(s.finish_attempt_with_event("nope", AttemptEnd::Passed { resumed: false }, 0, 0, Some(ev)).is_err());
        assert_eq!(s.mqtt_event_counts().unwrap(), MqttEventCounts::default());
    }
}
