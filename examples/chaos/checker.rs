//! The chaos test's checker: compares what the producer sent (acknowledged, or left
//! indeterminate by an error) with what a final read of each partition returned and with what
//! the consumer saw while faults ran, and counts anomalies in the Jepsen vocabulary: lost
//! (acknowledged, never read), duplicated (read more than once), reordered (acknowledged
//! messages read out of send order), unexpected (never sent, or sent to another partition)
//! and inconsistent offsets (offsets not dense from 0, or an offset read twice with different
//! messages).

use std::collections::{BTreeMap, BTreeSet};

/// What the producer knows of one partition.
#[derive(Default, Debug)]
pub struct Sent {
    /// Sequence numbers of acknowledged messages, in send order.
    pub acked: Vec<u64>,
    /// Sequence numbers of messages whose send failed: each may be stored once, or not at all.
    pub indeterminate: BTreeSet<u64>,
}

/// One message as a read returned it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Read {
    pub offset: u64,
    pub payload: Vec<u8>,
}

#[derive(Default, Debug, Clone, PartialEq, Eq)]
pub struct Anomalies {
    pub lost: u64,
    pub duplicated: u64,
    pub reordered: u64,
    pub unexpected: u64,
    pub inconsistent_offsets: u64,
    /// Not anomalies: indeterminate sends that were stored, and that were not.
    pub indeterminate_stored: u64,
    pub indeterminate_absent: u64,
}

impl Anomalies {
    pub fn total(&self) -> u64 {
        self.lost + self.duplicated + self.reordered + self.unexpected + self.inconsistent_offsets
    }

    pub fn add(&mut self, other: &Anomalies) {
        self.lost += other.lost;
        self.duplicated += other.duplicated;
        self.reordered += other.reordered;
        self.unexpected += other.unexpected;
        self.inconsistent_offsets += other.inconsistent_offsets;
        self.indeterminate_stored += other.indeterminate_stored;
        self.indeterminate_absent += other.indeterminate_absent;
    }
}

/// The payload of message `sequence` of `partition`, padded to `size` bytes (at least the
/// label's length).
pub fn payload(partition: u32, sequence: u64, size: usize) -> Vec<u8> {
    let mut bytes = format!("chaos p{partition} s{sequence} ").into_bytes();
    if bytes.len() < size {
        bytes.resize(size, b'.');
    }
    bytes
}

/// `(partition, sequence)` of a payload made by `payload`.
pub fn parse(payload: &[u8]) -> Option<(u32, u64)> {
    let text = std::str::from_utf8(payload).ok()?;
    let mut words = text.split(' ');
    if words.next()? != "chaos" {
        return None;
    }
    let partition = words.next()?.strip_prefix('p')?.parse().ok()?;
    let sequence = words.next()?.strip_prefix('s')?.parse().ok()?;
    Some((partition, sequence))
}

/// Checks one partition: `sent` against the final read `read` (in offset order) and the
/// reads seen while faults ran (`live`: offset → payload).
pub fn check(
    partition: u32,
    sent: &Sent,
    read: &[Read],
    live: &BTreeMap<u64, Vec<u8>>,
) -> Anomalies {
    let mut anomalies = Anomalies::default();
    let acked: BTreeSet<u64> = sent.acked.iter().copied().collect();
    let mut seen: BTreeMap<u64, u64> = BTreeMap::new();
    // Position in send order of each acknowledged sequence.
    let order: BTreeMap<u64, usize> = sent
        .acked
        .iter()
        .enumerate()
        .map(|(index, sequence)| (*sequence, index))
        .collect();
    let mut last_position: Option<usize> = None;
    for (index, message) in read.iter().enumerate() {
        if message.offset != index as u64 {
            anomalies.inconsistent_offsets += 1;
        }
        if let Some(earlier) = live.get(&message.offset) {
            if *earlier != message.payload {
                anomalies.inconsistent_offsets += 1;
            }
        }
        let Some((from, sequence)) = parse(&message.payload) else {
            anomalies.unexpected += 1;
            continue;
        };
        if from != partition
            || !(acked.contains(&sequence) || sent.indeterminate.contains(&sequence))
        {
            anomalies.unexpected += 1;
            continue;
        }
        let count = seen.entry(sequence).or_default();
        *count += 1;
        if *count > 1 {
            anomalies.duplicated += 1;
            continue;
        }
        if let Some(position) = order.get(&sequence) {
            if last_position.is_some_and(|last| *position < last) {
                anomalies.reordered += 1;
            }
            last_position = Some(*position);
        }
    }
    // Offsets the consumer saw while faults ran must still be there.
    let end = read.len() as u64;
    anomalies.inconsistent_offsets += live.keys().filter(|offset| **offset >= end).count() as u64;
    anomalies.lost = acked.iter().filter(|s| !seen.contains_key(s)).count() as u64;
    for sequence in &sent.indeterminate {
        if seen.contains_key(sequence) {
            anomalies.indeterminate_stored += 1;
        } else {
            anomalies.indeterminate_absent += 1;
        }
    }
    anomalies
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reads(partition: u32, sequences: &[u64]) -> Vec<Read> {
        sequences
            .iter()
            .enumerate()
            .map(|(offset, s)| Read {
                offset: offset as u64,
                payload: payload(partition, *s, 40),
            })
            .collect()
    }

    fn sent(acked: &[u64], indeterminate: &[u64]) -> Sent {
        Sent {
            acked: acked.to_vec(),
            indeterminate: indeterminate.iter().copied().collect(),
        }
    }

    #[test]
    fn payloads_round_trip() {
        assert_eq!(parse(&payload(2, 77, 100)), Some((2, 77)));
        assert_eq!(payload(2, 77, 100).len(), 100);
        assert_eq!(parse(b"something else"), None);
    }

    #[test]
    fn a_clean_history_has_no_anomalies() {
        let anomalies = check(
            1,
            &sent(&[0, 1, 3], &[2]),
            &reads(1, &[0, 1, 3]),
            &BTreeMap::new(),
        );
        assert_eq!(anomalies.total(), 0);
        assert_eq!(anomalies.indeterminate_absent, 1);
        let anomalies = check(
            1,
            &sent(&[0, 1, 3], &[2]),
            &reads(1, &[0, 1, 2, 3]),
            &BTreeMap::new(),
        );
        assert_eq!(anomalies.total(), 0);
        assert_eq!(anomalies.indeterminate_stored, 1);
    }

    #[test]
    fn each_anomaly_is_counted() {
        let none = BTreeMap::new();
        let lost = check(0, &sent(&[0, 1, 2], &[]), &reads(0, &[0, 2]), &none);
        assert_eq!((lost.lost, lost.total()), (1, 1));
        let duplicated = check(0, &sent(&[0, 1], &[]), &reads(0, &[0, 1, 1]), &none);
        assert_eq!((duplicated.duplicated, duplicated.total()), (1, 1));
        let duplicated_retry = check(0, &sent(&[0], &[1]), &reads(0, &[0, 1, 1]), &none);
        assert_eq!(duplicated_retry.duplicated, 1);
        let reordered = check(0, &sent(&[0, 1, 2], &[]), &reads(0, &[0, 2, 1]), &none);
        assert_eq!((reordered.reordered, reordered.total()), (1, 1));
        let unexpected = check(0, &sent(&[0], &[]), &reads(0, &[0, 9]), &none);
        assert_eq!((unexpected.unexpected, unexpected.total()), (1, 1));
        let other_partition = check(0, &sent(&[0], &[]), &reads(3, &[0]), &none);
        assert_eq!(other_partition.unexpected, 1);
        let mut gap = reads(0, &[0, 1]);
        gap[1].offset = 5;
        let gap = check(0, &sent(&[0, 1], &[]), &gap, &none);
        assert_eq!((gap.inconsistent_offsets, gap.total()), (1, 1));
    }

    #[test]
    fn live_reads_must_agree_with_the_final_read() {
        let final_read = reads(0, &[0, 1]);
        let mut live = BTreeMap::new();
        live.insert(0, payload(0, 0, 40));
        assert_eq!(check(0, &sent(&[0, 1], &[]), &final_read, &live).total(), 0);
        live.insert(1, payload(0, 7, 40));
        assert_eq!(
            check(0, &sent(&[0, 1], &[]), &final_read, &live).inconsistent_offsets,
            1
        );
        let mut vanished = BTreeMap::new();
        vanished.insert(2, payload(0, 2, 40));
        assert_eq!(
            check(0, &sent(&[0, 1], &[]), &final_read, &vanished).inconsistent_offsets,
            1
        );
    }
}
