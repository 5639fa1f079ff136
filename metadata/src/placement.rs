//! Where a chunk goes: distinct eligible nodes, weighted by free space.
//!
//! Pure functions; the caller passes the random source so tests are
//! deterministic and `apply` never sees randomness (the chosen nodes are
//! written into the command).

use std::collections::BTreeSet;

use rand::Rng;

/// A node as placement sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub node_id: String,
    /// Up (recent heartbeat) and not decommissioned.
    pub usable: bool,
    /// Bytes free (capacity minus used).
    pub free: u64,
}

/// Chooses up to `n` distinct nodes among the usable candidates with at
/// least `len` bytes free that are not in `exclude`, each pick weighted by
/// free space. Returns fewer than `n` when fewer are eligible.
pub fn choose<R: Rng + ?Sized>(
    candidates: &[Candidate],
    n: usize,
    len: u64,
    exclude: &BTreeSet<String>,
    rng: &mut R,
) -> Vec<String> {
    let mut pool: Vec<&Candidate> = candidates
        .iter()
        .filter(|c| c.usable && c.free >= len && !exclude.contains(&c.node_id))
        .collect();
    // Deterministic for a given rng regardless of the caller's order.
    pool.sort_by(|a, b| a.node_id.cmp(&b.node_id));
    pool.dedup_by(|a, b| a.node_id == b.node_id);
    let mut out = Vec::with_capacity(n.min(pool.len()));
    while out.len() < n && !pool.is_empty() {
        // A node with zero bytes free can still take a zero-length chunk;
        // give it a weight so it can be picked.
        let total: u128 = pool.iter().map(|c| u128::from(c.free.max(1))).sum();
        let mut ticket = rng.random_range(0..total);
        let mut pick = pool.len() - 1;
        for (i, c) in pool.iter().enumerate() {
            let w = u128::from(c.free.max(1));
            if ticket < w {
                pick = i;
                break;
            }
            ticket -= w;
        }
        out.push(pool.remove(pick).node_id.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn cand(id: &str, free: u64) -> Candidate {
        Candidate {
            node_id: id.into(),
            usable: true,
            free,
        }
    }

    #[test]
    fn picks_distinct_nodes_up_to_n() {
        let cs = vec![cand("a", 10), cand("b", 10), cand("c", 10)];
        let mut rng = StdRng::seed_from_u64(1);
        for _ in 0..50 {
            let got = choose(&cs, 3, 1, &BTreeSet::new(), &mut rng);
            let set: BTreeSet<_> = got.iter().collect();
            assert_eq!(got.len(), 3);
            assert_eq!(set.len(), 3);
        }
        assert_eq!(choose(&cs, 5, 1, &BTreeSet::new(), &mut rng).len(), 3);
    }

    #[test]
    fn skips_excluded_unusable_and_full_nodes() {
        let mut down = cand("d", 100);
        down.usable = false;
        let cs = vec![cand("a", 100), cand("b", 5), cand("c", 100), down];
        let exclude = BTreeSet::from(["a".to_string()]);
        let mut rng = StdRng::seed_from_u64(2);
        for _ in 0..20 {
            assert_eq!(
                choose(&cs, 3, 50, &exclude, &mut rng),
                vec!["c".to_string()]
            );
        }
    }

    #[test]
    fn no_eligible_node_gives_nothing() {
        let mut rng = StdRng::seed_from_u64(3);
        assert!(choose(&[], 2, 1, &BTreeSet::new(), &mut rng).is_empty());
        assert!(choose(&[cand("a", 1)], 2, 2, &BTreeSet::new(), &mut rng).is_empty());
    }

    #[test]
    fn weighting_favours_free_space() {
        let cs = vec![cand("big", 900), cand("small", 100)];
        let mut rng = StdRng::seed_from_u64(4);
        let big = (0..2000)
            .filter(|_| choose(&cs, 1, 1, &BTreeSet::new(), &mut rng)[0] == "big")
            .count();
        // Expected 1800 of 2000.
        assert!((1700..1900).contains(&big), "big chosen {big} times");
    }
}
