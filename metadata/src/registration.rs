//! When a node registration is refused rather than believed.
//!
//! A registration rewrites the node's address and unlists every copy its
//! inventory lacks; the node then deletes what the table no longer lists.
//! Two kinds of registration must therefore never be taken as the truth:
//!
//! - one from another process claiming the id of a node that is alive at a
//!   different address (a cloned VM, a copied config): it would take over
//!   the id and unlist the live node's copies;
//! - one whose inventory lacks most of the copies listed for the node (a
//!   data disk that did not mount, a wrong `data_dir`): that is a disk
//!   problem to report, not a loss to record, until an operator says so.
//!
//! A node with several disks tells an unmounted disk from an empty one
//! itself (each disk carries a `.bigfs-disk` marker written at first use)
//! and names its failed disks in the registration. Such a declared loss
//! (at least one bad disk, at least one good one, and some of its copies
//! still reported) is not refused however large: the node says where the
//! copies went, and they are unlisted and healed elsewhere at once. An
//! inventory that lacks every copy stays refused even then: good disks
//! holding nothing is not explained by the bad one.

use bigfs_proto::pb::NodeState;
use serde::{Deserialize, Serialize};

use crate::chunks::Reconciliation;
use crate::error::MetaError;

/// When an inventory counts as "much smaller" (`[registration]` in the
/// metadata configuration).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistrationConfig {
    /// A registration is refused when its inventory lacks more than this
    /// fraction of the Available copies listed for the node... Default 0.5:
    /// a disk that did not mount, a wrong `data_dir` or an empty clone
    /// report (almost) nothing, while a healthy node lacks at most a few
    /// copies (corrupt ones it quarantined, a deletion whose unlisting a
    /// crash lost). A partial disk failure losing over half of a node is
    /// worth an operator's look too.
    pub inventory_loss_fraction: f64,
    /// ... and at least this many of them. Default 8: on a node listing a
    /// handful of copies, "more than half" is one or two chunks, which the
    /// audit and repair handle routinely; refusing there would block new and
    /// test nodes for nothing. Above it, an unlisted copy that may be the
    /// last one is worth a human decision. 0 refuses on the fraction alone.
    pub inventory_loss_min: u64,
}

impl Default for RegistrationConfig {
    fn default() -> Self {
        RegistrationConfig {
            inventory_loss_fraction: 0.5,
            inventory_loss_min: 8,
        }
    }
}

impl RegistrationConfig {
    pub fn validate(&self) -> Result<(), String> {
        let f = self.inventory_loss_fraction;
        if !(0.0..=1.0).contains(&f) {
            return Err(format!(
                "registration.inventory_loss_fraction must be between 0 and 1, got {f}"
            ));
        }
        Ok(())
    }
}

/// Why a registration was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Refusal {
    #[error(
        "node id {node} is in use by a live node at {live_address} (last heard {state}); \
         this process at {address} has the same id: give it its own node id (a cloned \
         machine or a copied config?), or, if the node moved, wait until the old address \
         is Down and start it again"
    )]
    IdInUse {
        node: String,
        live_address: String,
        address: String,
        state: &'static str,
    },
    #[error(
        "node {node} lists {listed} copies but reported only {reported} of them \
         ({missing} missing); check its data disk (mounted? right data_dir?); start it \
         with --accept-inventory to accept the loss"
    )]
    InventoryLoss {
        node: String,
        listed: usize,
        reported: usize,
        missing: usize,
    },
}

impl Refusal {
    /// The `reason` label of the refusal counter.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::IdInUse { .. } => "id_in_use",
            Refusal::InventoryLoss { .. } => "inventory_loss",
        }
    }
}

impl From<Refusal> for MetaError {
    fn from(r: Refusal) -> Self {
        MetaError::FailedPrecondition(r.to_string())
    }
}

/// Refuses a registration of `node` from `address` when the id is held by
/// a live node (Up or Suspect: heard from within the liveness window) at
/// another address. The same address is the same node restarting.
pub fn check_id_conflict(
    node: &str,
    address: &str,
    registered: Option<(&str, NodeState)>,
) -> Result<(), Refusal> {
    let Some((live_address, state)) = registered else {
        return Ok(());
    };
    let state = match state {
        NodeState::Up => "up",
        NodeState::Suspect => "suspect",
        _ => return Ok(()),
    };
    if live_address == address {
        return Ok(());
    }
    Err(Refusal::IdInUse {
        node: node.to_string(),
        live_address: live_address.to_string(),
        address: address.to_string(),
        state,
    })
}

/// The disks a registering node names bad, out of how many.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiskLoss {
    pub bad: usize,
    pub total: usize,
}

impl DiskLoss {
    pub fn of(disks: &[bigfs_proto::pb::DiskStatus]) -> DiskLoss {
        DiskLoss {
            bad: disks.iter().filter(|d| d.bad).count(),
            total: disks.len(),
        }
    }

    /// Some disks failed and some still serve: the node accounts for the
    /// copies it lacks.
    pub fn declared(&self) -> bool {
        self.bad > 0 && self.bad < self.total
    }
}

/// Refuses a registration whose inventory lacks more than the configured
/// share of the node's Available copies, unless the operator accepts it or
/// the node declares them lost with a failed disk (see the module).
pub fn check_inventory(
    node: &str,
    rec: &Reconciliation,
    config: &RegistrationConfig,
    accept: bool,
    disks: DiskLoss,
) -> Result<(), Refusal> {
    let (listed, missing) = (rec.listed_available, rec.lost_available);
    let too_many = missing as f64 > listed as f64 * config.inventory_loss_fraction
        && missing as u64 >= config.inventory_loss_min.max(1);
    let declared = disks.declared() && missing < listed;
    if !too_many || accept || declared {
        return Ok(());
    }
    Err(Refusal::InventoryLoss {
        node: node.to_string(),
        listed,
        reported: listed - missing,
        missing,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(listed: usize, lost: usize) -> Reconciliation {
        Reconciliation {
            listed_available: listed,
            lost_available: lost,
            ..Reconciliation::default()
        }
    }

    #[test]
    fn a_live_node_at_another_address_keeps_its_id() {
        for state in [NodeState::Up, NodeState::Suspect] {
            let r = check_id_conflict("n1", "b:2", Some(("a:1", state))).unwrap_err();
            assert_eq!(r.reason(), "id_in_use");
            let msg = r.to_string();
            assert!(
                msg.contains("node id n1 is in use by a live node at a:1"),
                "{msg}"
            );
        }
    }

    #[test]
    fn same_address_down_or_unknown_node_may_register() {
        assert_eq!(
            check_id_conflict("n1", "a:1", Some(("a:1", NodeState::Up))),
            Ok(())
        );
        assert_eq!(
            check_id_conflict("n1", "b:2", Some(("a:1", NodeState::Down))),
            Ok(())
        );
        assert_eq!(check_id_conflict("n1", "b:2", None), Ok(()));
    }

    #[test]
    fn an_empty_inventory_of_a_node_holding_data_is_refused_and_named() {
        let c = RegistrationConfig::default();
        let r = check_inventory("n1", &rec(20, 20), &c, false, DiskLoss::default()).unwrap_err();
        assert_eq!(
            r,
            Refusal::InventoryLoss {
                node: "n1".into(),
                listed: 20,
                reported: 0,
                missing: 20
            }
        );
        assert!(
            r.to_string()
                .contains("lists 20 copies but reported only 0")
        );
        // Just over half, and at the minimum count.
        assert!(check_inventory("n1", &rec(15, 8), &c, false, DiskLoss::default()).is_err());
    }

    #[test]
    fn small_losses_small_nodes_and_the_override_pass() {
        let c = RegistrationConfig::default();
        // Half, not more than half.
        assert!(check_inventory("n1", &rec(20, 10), &c, false, DiskLoss::default()).is_ok());
        // More than half, but under the minimum count.
        assert!(check_inventory("n1", &rec(3, 3), &c, false, DiskLoss::default()).is_ok());
        // A new node lists nothing.
        assert!(check_inventory("n1", &rec(0, 0), &c, false, DiskLoss::default()).is_ok());
        // The operator accepts the loss.
        assert!(check_inventory("n1", &rec(20, 20), &c, true, DiskLoss::default()).is_ok());
        // A zero minimum still needs one missing copy.
        let c0 = RegistrationConfig {
            inventory_loss_min: 0,
            ..c
        };
        assert!(check_inventory("n1", &rec(0, 0), &c0, false, DiskLoss::default()).is_ok());
        assert!(check_inventory("n1", &rec(1, 1), &c0, false, DiskLoss::default()).is_err());
    }

    #[test]
    fn a_loss_declared_with_a_bad_disk_passes_but_not_an_empty_inventory() {
        let c = RegistrationConfig::default();
        let one_of_two = DiskLoss { bad: 1, total: 2 };
        assert!(check_inventory("n1", &rec(20, 15), &c, false, one_of_two).is_ok());
        // Good disks that hold nothing are not explained by the bad one.
        assert!(check_inventory("n1", &rec(20, 20), &c, false, one_of_two).is_err());
        // Every disk bad, or none named bad: the plain rule.
        let all = DiskLoss { bad: 2, total: 2 };
        assert!(check_inventory("n1", &rec(20, 15), &c, false, all).is_err());
        assert!(check_inventory("n1", &rec(20, 15), &c, false, DiskLoss::default()).is_err());
    }

    #[test]
    fn fraction_outside_zero_to_one_is_refused() {
        let bad = RegistrationConfig {
            inventory_loss_fraction: 1.5,
            ..RegistrationConfig::default()
        };
        assert!(
            bad.validate()
                .unwrap_err()
                .contains("inventory_loss_fraction")
        );
    }
}
