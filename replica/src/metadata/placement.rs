//! Where a partition's VSR group lives: its replica set and its placement offset, chosen so
//! that primaries (`members[(view + placement_offset) % n]` in view 0) spread evenly over the
//! nodes. Pure functions of the nodes and the current placements, so every replica decides
//! the same.

/// A partition group's members (node ids, ascending) and placement offset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    pub members: Vec<u8>,
    pub placement_offset: u8,
}

impl Placement {
    /// The node that leads in view 0 (and again after every full rotation of views).
    pub fn preferred_primary(&self) -> u8 {
        self.members[usize::from(self.placement_offset)]
    }
}

/// Places one new partition group of `replicas` members over `nodes` (ascending, distinct),
/// given how many groups each node already prefers to lead (`led[i]` for `nodes[i]`). The
/// preferred primary is the node leading fewest (lowest id on ties); the other members are the
/// nodes after it in ring order, which keeps backups spread as evenly as primaries.
pub fn place(nodes: &[u8], led: &[u32], replicas: u8) -> Placement {
    assert!(!nodes.is_empty());
    assert_eq!(nodes.len(), led.len());
    assert!(nodes.windows(2).all(|w| w[0] < w[1]), "nodes ascending");
    assert!(replicas >= 1 && usize::from(replicas) <= nodes.len());
    let mut primary_index = 0;
    for (index, count) in led.iter().enumerate() {
        if *count < led[primary_index] {
            primary_index = index;
        }
    }
    let mut members: Vec<u8> = (0..usize::from(replicas))
        .map(|k| nodes[(primary_index + k) % nodes.len()])
        .collect();
    let primary = nodes[primary_index];
    members.sort_unstable();
    let placement_offset = members
        .iter()
        .position(|m| *m == primary)
        .expect("the primary is a member") as u8;
    let placement = Placement {
        members,
        placement_offset,
    };
    assert_eq!(placement.preferred_primary(), primary);
    placement
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn six_partitions_on_three_nodes_lead_two_each() {
        let nodes = [0u8, 1, 2];
        let mut led = [0u32; 3];
        let mut backups = [0u32; 3];
        for _ in 0..6 {
            let placement = place(&nodes, &led, 3);
            assert_eq!(placement.members, vec![0, 1, 2]);
            let primary = placement.preferred_primary();
            led[usize::from(primary)] += 1;
            for member in &placement.members {
                if *member != primary {
                    backups[usize::from(*member)] += 1;
                }
            }
        }
        assert_eq!(led, [2, 2, 2]);
        assert_eq!(backups, [4, 4, 4]);
    }

    #[test]
    fn smaller_replica_sets_rotate_over_the_ring() {
        let nodes = [1u8, 4, 7, 9];
        let mut led = [0u32; 4];
        let mut members_per_node = [0u32; 4];
        for _ in 0..8 {
            let placement = place(&nodes, &led, 2);
            assert_eq!(placement.members.len(), 2);
            let primary = placement.preferred_primary();
            let index = nodes.iter().position(|n| *n == primary).unwrap();
            led[index] += 1;
            for member in &placement.members {
                members_per_node[nodes.iter().position(|n| n == member).unwrap()] += 1;
            }
        }
        assert_eq!(led, [2, 2, 2, 2]);
        assert_eq!(members_per_node, [4, 4, 4, 4]);
        // One node: the dev cluster.
        assert_eq!(
            place(&[0], &[5], 1),
            Placement {
                members: vec![0],
                placement_offset: 0
            }
        );
    }
}
