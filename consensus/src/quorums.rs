//! Flexible quorums for a group of `replica_count` replicas (TigerBeetle's table):
//! replication = min(3, ceil(n/2)) (n = 2 uses 2), view change = n − replication + 1 (2 when
//! n = 2),
//! nack = n − replication + 1 (1 when n = 2). Any replication quorum intersects any
//! view-change quorum, and a nack quorum proves no replication quorum holds an op.

pub const REPLICAS_MAX: u8 = 6;
const QUORUM_REPLICATION_MAX: u8 = 3;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quorums {
    pub replication: u8,
    pub view_change: u8,
    pub nack: u8,
}

impl Quorums {
    pub fn new(replica_count: u8) -> Quorums {
        assert!((1..=REPLICAS_MAX).contains(&replica_count));
        let n = replica_count;
        let replication = if n == 2 {
            2
        } else {
            QUORUM_REPLICATION_MAX.min(n.div_ceil(2))
        };
        let view_change = if n == 2 { 2 } else { n - replication + 1 };
        let nack = if n == 2 { 1 } else { n - replication + 1 };
        let quorums = Quorums {
            replication,
            view_change,
            nack,
        };
        // Replication and view-change quorums must intersect.
        assert!(quorums.replication + quorums.view_change > n);
        quorums
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_matches_tigerbeetle() {
        let expect = [
            (1, 1, 1, 1),
            (2, 2, 2, 1),
            (3, 2, 2, 2),
            (4, 2, 3, 3),
            (5, 3, 3, 3),
            (6, 3, 4, 4),
        ];
        for (n, replication, view_change, nack) in expect {
            let q = Quorums::new(n);
            assert_eq!(
                (q.replication, q.view_change, q.nack),
                (replication, view_change, nack),
                "n={n}"
            );
        }
    }
}
