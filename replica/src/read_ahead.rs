//! Read-ahead for a partition's consumers: after a poll, the record of the next committed op
//! is read from the log while the reply travels, so the consumer's next poll finds it in
//! memory instead of waiting for the device (a pinned consumer polls op after op).
//!
//! Only committed ops are read ahead, and a committed prepare never changes, so what is held
//! is never stale. A partition holds at most `READ_AHEAD_OPS` ops, and the shard's groups
//! together at most `READ_AHEAD_BYTES_MAX` bytes (a budget they share). An op held and not
//! asked for by the next poll is dropped then.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::task::{Poll, Waker};

use galgo_consensus::Message;
use galgo_storage::Disk;

use crate::journal::SegmentJournal;

/// Ops a partition reads ahead at once.
pub const READ_AHEAD_OPS: usize = 1;
/// Bytes all of a shard's read-ahead may hold.
pub const READ_AHEAD_BYTES_MAX: u64 = 64 << 20;
/// Waiters on one op being read (polls of the same op at once); more read it themselves.
const WAITERS_MAX: usize = 64;

// At most one slot per partition: boxing the message would only add an allocation per poll.
#[allow(clippy::large_enum_variant)]
enum SlotState {
    /// Being read; the polls waiting for it.
    Reading(Vec<Waker>),
    /// Read and verified (`None`: missing or damaged, the poll reads it itself).
    Ready(Option<Message>),
}

struct Slot {
    /// Which `start` made it (a slot dropped and made again is another slot).
    id: u64,
    state: SlotState,
    /// Of the shard's budget: the record's length once its index entry is read, 0 before.
    bytes: u64,
}

/// A shard's budget of read-ahead bytes, shared by its groups.
#[derive(Default)]
pub struct ReadAheadBudget {
    held: Cell<u64>,
}

impl ReadAheadBudget {
    pub fn held(&self) -> u64 {
        self.held.get()
    }

    fn take(&self, bytes: u64) -> bool {
        let held = self.held.get();
        if held + bytes > READ_AHEAD_BYTES_MAX {
            return false;
        }
        self.held.set(held + bytes);
        true
    }

    fn give_back(&self, bytes: u64) {
        let held = self.held.get();
        assert!(bytes <= held, "read-ahead gives back only what it took");
        self.held.set(held - bytes);
    }
}

/// One partition's read-ahead.
pub struct ReadAhead {
    budget: Rc<ReadAheadBudget>,
    slots: RefCell<BTreeMap<u64, Slot>>,
    next_id: Cell<u64>,
}

impl ReadAhead {
    pub fn new(budget: Rc<ReadAheadBudget>) -> ReadAhead {
        ReadAhead {
            budget,
            slots: RefCell::new(BTreeMap::new()),
            next_id: Cell::new(0),
        }
    }

    /// Starts reading committed op `op` ahead of the poll that will ask for it, unless it is
    /// held or being read already, or the partition holds its share. A poll that asks for it
    /// from now on waits for this read. Nothing is held if the shard's budget is spent.
    pub fn start<D: Disk + 'static>(
        self: &Rc<Self>,
        journal: &Rc<SegmentJournal<'static, D>>,
        op: u64,
    ) {
        let id = self.next_id.get();
        {
            let mut slots = self.slots.borrow_mut();
            if slots.contains_key(&op) || slots.len() >= READ_AHEAD_OPS {
                return;
            }
            self.next_id.set(id + 1);
            let state = SlotState::Reading(Vec::new());
            slots.insert(
                op,
                Slot {
                    id,
                    state,
                    bytes: 0,
                },
            );
        }
        let (journal, read_ahead) = (journal.clone(), self.clone());
        monoio::spawn(async move {
            // The index entry gives the record's length before it is read.
            let bytes = match journal.log().entry(op).await {
                Ok(entry) => u64::from(entry.length),
                Err(_) => return read_ahead.finish(op, id, None),
            };
            {
                let mut slots = read_ahead.slots.borrow_mut();
                let Some(slot) = slots.get_mut(&op).filter(|slot| slot.id == id) else {
                    return; // Dropped meanwhile: a poll asked for another op.
                };
                if !read_ahead.budget.take(bytes) {
                    drop(slots);
                    return read_ahead.finish(op, id, None);
                }
                slot.bytes = bytes;
            }
            let message = journal.read_prepare(op).await;
            read_ahead.finish(op, id, Some(message));
        });
    }

    /// Ends slot `id` of `op`: holds what was read, or drops the slot when nothing was (its
    /// waiters then read the op themselves). A slot no longer there is left alone.
    fn finish(&self, op: u64, id: u64, read: Option<Option<Message>>) {
        let waiters = {
            let mut slots = self.slots.borrow_mut();
            let Some(slot) = slots.get_mut(&op).filter(|slot| slot.id == id) else {
                return;
            };
            let state = match read {
                Some(message) => std::mem::replace(&mut slot.state, SlotState::Ready(message)),
                None => {
                    let slot = slots.remove(&op).expect("found");
                    self.budget.give_back(slot.bytes);
                    slot.state
                }
            };
            match state {
                SlotState::Reading(waiters) => waiters,
                SlotState::Ready(_) => unreachable!("a slot is read once"),
            }
        };
        for waiter in waiters {
            waiter.wake();
        }
    }

    /// The prepare of `op` if it was read ahead (waiting for a read under way), and drops
    /// every other op held: `None` when the caller must read it itself.
    pub async fn take(&self, op: u64) -> Option<Option<Message>> {
        self.drop_except(op);
        let mut waiting = false;
        std::future::poll_fn(|cx| {
            let mut slots = self.slots.borrow_mut();
            let Some(slot) = slots.get_mut(&op) else {
                return Poll::Ready(None);
            };
            match &mut slot.state {
                SlotState::Reading(waiters) => {
                    if !waiting && waiters.len() >= WAITERS_MAX {
                        return Poll::Ready(None);
                    }
                    waiting = true;
                    waiters.push(cx.waker().clone());
                    Poll::Pending
                }
                SlotState::Ready(_) => {
                    let slot = slots.remove(&op).expect("held");
                    self.budget.give_back(slot.bytes);
                    match slot.state {
                        SlotState::Ready(message) => Poll::Ready(Some(message)),
                        SlotState::Reading(_) => unreachable!("matched as ready"),
                    }
                }
            }
        })
        .await
    }

    /// Bytes this partition holds of the shard's budget.
    pub fn held(&self) -> u64 {
        self.slots.borrow().values().map(|slot| slot.bytes).sum()
    }

    fn drop_except(&self, op: u64) {
        let mut slots = self.slots.borrow_mut();
        let others: Vec<u64> = slots.keys().copied().filter(|o| *o != op).collect();
        for other in others {
            let slot = slots.remove(&other).expect("listed");
            self.budget.give_back(slot.bytes);
            if let SlotState::Reading(waiters) = slot.state {
                // Their poll finds no slot and reads the op itself.
                for waiter in waiters {
                    waiter.wake();
                }
            }
        }
    }
}

impl Drop for ReadAhead {
    fn drop(&mut self) {
        let held = self.held();
        self.budget.give_back(held);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::tests::{chain, open};
    use crate::journal::WriteOutcome;
    use galgo_consensus::durable::DurableState;
    use galgo_storage::file_disk::block_on;
    use galgo_storage::MemoryDisk;

    /// A journal holding prepares 1..=8, and a read-ahead on a budget of its own.
    async fn setup() -> (
        Rc<SegmentJournal<'static, MemoryDisk>>,
        Vec<Message>,
        Rc<ReadAheadBudget>,
        Rc<ReadAhead>,
    ) {
        let disk: &'static MemoryDisk = Box::leak(Box::new(MemoryDisk::new(9)));
        let durable: &'static DurableState = Box::leak(Box::new(DurableState::initial()));
        let (journal, _) = open(disk, durable).await;
        let messages = chain(8, 0, 1);
        for message in &messages {
            let written = journal.write_prepare(message.clone()).await.unwrap();
            assert_eq!(written, WriteOutcome::Written);
        }
        let budget = Rc::new(ReadAheadBudget::default());
        let read_ahead = Rc::new(ReadAhead::new(budget.clone()));
        (Rc::new(journal), messages, budget, read_ahead)
    }

    #[test]
    fn an_op_read_ahead_is_served_once_and_a_poll_waits_for_a_read_under_way() {
        block_on(async {
            let (journal, messages, budget, read_ahead) = setup().await;
            // Asked for before the read even began: the poll waits for it.
            read_ahead.start(&journal, 3);
            let served = read_ahead
                .take(3)
                .await
                .expect("read ahead")
                .expect("intact");
            assert_eq!(served.header.checksum, messages[2].header.checksum);
            assert_eq!(served.body, messages[2].body);
            assert_eq!((read_ahead.held(), budget.held()), (0, 0));
            // Taken once: the next poll of the same op reads it itself.
            assert!(read_ahead.take(3).await.is_none());
        });
    }

    #[test]
    fn an_op_the_next_poll_does_not_ask_for_is_dropped_and_its_budget_returned() {
        block_on(async {
            let (journal, _, budget, read_ahead) = setup().await;
            read_ahead.start(&journal, 5);
            // One op per partition: a second start is refused while the first is held.
            read_ahead.start(&journal, 6);
            while budget.held() == 0 {
                monoio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
            assert_eq!(read_ahead.held(), budget.held());
            assert!(read_ahead.take(2).await.is_none(), "2 was not read ahead");
            assert_eq!((read_ahead.held(), budget.held()), (0, 0));
            assert!(read_ahead.take(5).await.is_none(), "5 was dropped");
            assert!(read_ahead.take(6).await.is_none(), "6 was never started");
        });
    }

    #[test]
    fn a_spent_budget_holds_nothing_and_the_poll_reads_for_itself() {
        block_on(async {
            let (journal, _, budget, read_ahead) = setup().await;
            assert!(budget.take(READ_AHEAD_BYTES_MAX));
            read_ahead.start(&journal, 4);
            assert!(read_ahead.take(4).await.is_none());
            assert_eq!(read_ahead.held(), 0);
            budget.give_back(READ_AHEAD_BYTES_MAX);
            // An op past the log: its read fails, nothing is held, the poll goes on.
            read_ahead.start(&journal, 99);
            assert!(read_ahead.take(99).await.is_none());
            assert_eq!(budget.held(), 0);
        });
    }

    #[test]
    #[should_panic(expected = "read-ahead gives back only what it took")]
    fn giving_back_more_than_was_taken_is_caught() {
        let budget = ReadAheadBudget::default();
        assert!(budget.take(10));
        budget.give_back(11);
    }
}
