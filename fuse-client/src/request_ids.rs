//! Request ids for exactly-once mutations: this client's random id, and a
//! pool of slots, each with its own sequence numbers.
//!
//! The metadata service remembers the last answer per (client, slot). A
//! request holds its slot until it has its final answer, through every
//! retry, so a slot never has two requests in flight and a retry (same
//! id) is answered as the first try was. Concurrent requests take
//! different slots; the lowest free one is reused first, so the service
//! keeps as many entries for this client as it ever had requests in
//! flight at once.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use bigfs_proto::pb;

/// This client's id and its slots.
#[derive(Debug)]
pub struct RequestIds {
    client: u64,
    slots: Mutex<Slots>,
}

#[derive(Debug, Default)]
struct Slots {
    /// Free slots and the last sequence number each used.
    free: BTreeMap<u32, u64>,
    /// Slots made so far (the next new one gets this number).
    made: u32,
}

/// A slot held for one request; the slot is free again when it is dropped.
#[derive(Debug)]
pub struct Held {
    ids: Arc<RequestIds>,
    id: pb::RequestId,
}

impl RequestIds {
    /// A new client identity: a random id, no slots yet.
    pub fn new() -> Arc<Self> {
        Arc::new(RequestIds {
            client: rand::random(),
            slots: Mutex::new(Slots::default()),
        })
    }

    pub fn client(&self) -> u64 {
        self.client
    }

    /// Takes the lowest free slot (or a new one) and its next sequence
    /// number, for one request and all its retries.
    pub fn next(self: &Arc<Self>) -> Held {
        let (slot, last) = {
            let mut s = self.lock();
            match s.free.pop_first() {
                Some(free) => free,
                None => {
                    s.made += 1;
                    (s.made - 1, 0)
                }
            }
        };
        Held {
            ids: Arc::clone(self),
            id: pb::RequestId {
                client: self.client,
                slot,
                seq: last + 1,
            },
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Slots> {
        // The lock guards plain integers updated in one step each: a panic
        // elsewhere cannot leave them half-changed, so a poisoned lock is
        // still good to use.
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Held {
    /// The id to send with the request (and with each retry of it).
    pub fn id(&self) -> pb::RequestId {
        self.id
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.ids.lock().free.insert(self.id.slot, self.id.seq);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrent_requests_get_distinct_slots_and_a_freed_slot_counts_on() {
        let ids = RequestIds::new();
        let a = ids.next();
        let b = ids.next();
        assert_eq!((a.id().slot, a.id().seq), (0, 1));
        assert_eq!((b.id().slot, b.id().seq), (1, 1));
        assert_eq!(a.id().client, ids.client());
        drop(a);
        let c = ids.next();
        assert_eq!(
            (c.id().slot, c.id().seq),
            (0, 2),
            "lowest free slot, next seq"
        );
        drop(b);
        drop(c);
        let d = ids.next();
        assert_eq!((d.id().slot, d.id().seq), (0, 3));
    }

    #[test]
    fn two_clients_have_different_ids() {
        assert_ne!(RequestIds::new().client(), RequestIds::new().client());
    }
}
