//! Roles and the one permission matrix. Every privileged operation of the
//! API names the [`Permission`] it needs and asks [`allows`]; nothing else
//! decides who may do what (the shells only hide what [`allows`] refuses,
//! and the backend refuses it regardless).

use serde::{Deserialize, Serialize};
use ts_rs::TS;

/// An operator's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, TS)]
#[serde(rename_all = "snake_case")]
#[ts(export, export_to = "../../../ui/src/bindings/")]
pub enum Role {
    /// Provisions devices at the bench: provision, retry, scan work orders.
    Technician,
    /// Re-verifies devices and records verdicts.
    Qa,
    /// Reports, revocation, work orders, releasing quarantined records.
    Supervisor,
    /// Settings, signer and CA set-up, operators, central database administration.
    Admin,
}

impl Role {
    pub const ALL: &'static [Role] = &[Role::Technician, Role::Qa, Role::Supervisor, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Technician => "technician",
            Role::Qa => "qa",
            Role::Supervisor => "supervisor",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.iter().copied().find(|r| r.as_str().eq_ignore_ascii_case(s.trim()))
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an operation needs. Closed: a new privileged operation picks one
/// (or adds one here and a row to [`MATRIX`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, TS)]
#[serde(rename_all = "snake_case")]
#[ts(export, export_to = "../../../ui/src/bindings/")]
pub enum Permission {
    /// See the bench, History, a record, Health and the center's state.
    View,
    /// Provision and retry devices, switch auto/manual, start every waiting device.
    Provision,
    /// Set the work order (a `WO:` scan or typed).
    ScanWorkOrder,
    /// Attach simulated devices (development or training CA only).
    Simulate,
    /// Ask the sync worker for a round now.
    SyncNow,
    /// Verify devices and record QA verdicts.
    Verify,
    /// Reports and exports (CSV, PDF, cloud registration files).
    Report,
    /// Revoke certificates.
    Revoke,
    /// Authorise rework (re-provisioning) of a device serial.
    Rework,
    /// Create, change and close work orders.
    WorkOrders,
    /// Release records quarantined by the sync.
    ReleaseQuarantine,
    /// Change the station's settings.
    Settings,
    /// Create or import the CA, change the signer.
    CaSetup,
    /// Add, disable, enable, change the role or reset the PIN of operators.
    Operators,
    /// Administer the central database (migrate, add stations and readers).
    CentralAdmin,
    /// Read the audit trail and verify it.
    Audit,
    /// Take a backup of the store (`imprint backup`).
    Backup,
    /// Replace the store with a backup (`imprint restore`).
    Restore,
}

impl Permission {
    pub const ALL: &'static [Permission] = &[
        Permission::View,
        Permission::Provision,
        Permission::ScanWorkOrder,
        Permission::Simulate,
        Permission::SyncNow,
        Permission::Verify,
        Permission::Report,
        Permission::Revoke,
        Permission::Rework,
        Permission::WorkOrders,
        Permission::ReleaseQuarantine,
        Permission::Settings,
        Permission::CaSetup,
        Permission::Operators,
        Permission::CentralAdmin,
        Permission::Audit,
        Permission::Backup,
        Permission::Restore,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Permission::View => "view",
            Permission::Provision => "provision",
            Permission::ScanWorkOrder => "scan_work_order",
            Permission::Simulate => "simulate",
            Permission::SyncNow => "sync_now",
            Permission::Verify => "verify",
            Permission::Report => "report",
            Permission::Revoke => "revoke",
            Permission::Rework => "rework",
            Permission::WorkOrders => "work_orders",
            Permission::ReleaseQuarantine => "release_quarantine",
            Permission::Settings => "settings",
            Permission::CaSetup => "ca_setup",
            Permission::Operators => "operators",
            Permission::CentralAdmin => "central_admin",
            Permission::Audit => "audit",
            Permission::Backup => "backup",
            Permission::Restore => "restore",
        }
    }
}

const T: bool = true;
const F: bool = false;

/// The permission matrix: for each permission, whether a technician, QA,
/// supervisor and admin (in that order) hold it. The one place that
/// decides; pinned row by row by `the_permission_matrix_is_the_documented_one`.
pub const MATRIX: &[(Permission, [bool; 4])] = &[
    //                                tech qa  sup  admin
    (Permission::View, /*           */ [T, T, T, T]),
    (Permission::Provision, /*      */ [T, F, T, T]),
    (Permission::ScanWorkOrder, /*  */ [T, F, T, T]),
    (Permission::Simulate, /*       */ [T, F, T, T]),
    (Permission::SyncNow, /*        */ [T, T, T, T]),
    (Permission::Verify, /*         */ [F, T, T, T]),
    (Permission::Report, /*         */ [F, F, T, T]),
    (Permission::Revoke, /*         */ [F, F, T, T]),
    (Permission::Rework, /*         */ [F, F, T, T]),
    (Permission::WorkOrders, /*     */ [F, F, T, T]),
    (Permission::ReleaseQuarantine, [F, F, T, T]),
    (Permission::Settings, /*       */ [F, F, F, T]),
    (Permission::CaSetup, /*        */ [F, F, F, T]),
    (Permission::Operators, /*      */ [F, F, F, T]),
    (Permission::CentralAdmin, /*   */ [F, F, F, T]),
    (Permission::Audit, /*          */ [F, F, T, T]),
    (Permission::Backup, /*         */ [F, F, F, T]),
    (Permission::Restore, /*        */ [F, F, F, T]),
];

fn column(role: Role) -> usize {
    match role {
        Role::Technician => 0,
        Role::Qa => 1,
        Role::Supervisor => 2,
        Role::Admin => 3,
    }
}

/// Does `role` hold `permission`?
pub fn allows(role: Role, permission: Permission) -> bool {
    MATRIX.iter().find(|(p, _)| *p == permission).is_some_and(|(_, row)| row[column(role)])
}

/// The lowest role that holds `permission` (for the `forbidden` message).
pub fn needed(permission: Permission) -> Option<Role> {
    Role::ALL.iter().copied().find(|r| allows(*r, permission))
}

/// Everything `role` may do (the app hides the rest).
pub fn permissions(role: Role) -> Vec<Permission> {
    Permission::ALL.iter().copied().filter(|p| allows(role, *p)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_permission_has_exactly_one_matrix_row() {
        for p in Permission::ALL {
            assert_eq!(MATRIX.iter().filter(|(q, _)| q == p).count(), 1, "{p:?}");
        }
        assert_eq!(MATRIX.len(), Permission::ALL.len());
    }

    #[test]
    fn the_permission_matrix_is_the_documented_one() {
        // docs/roles.md shows this table; change both together.
        let text: Vec<String> = MATRIX
            .iter()
            .map(|(p, row)| format!("{} {}", p.as_str(), row.iter().map(|b| if *b { 'x' } else { '-' }).collect::<String>()))
            .collect();
        assert_eq!(
            text,
            [
                "view xxxx",
                "provision x-xx",
                "scan_work_order x-xx",
                "simulate x-xx",
                "sync_now xxxx",
                "verify -xxx",
                "report --xx",
                "revoke --xx",
                "rework --xx",
                "work_orders --xx",
                "release_quarantine --xx",
                "settings ---x",
                "ca_setup ---x",
                "operators ---x",
                "central_admin ---x",
                "audit --xx",
                "backup ---x",
                "restore ---x",
            ]
        );
        assert!(Role::ALL.iter().all(|r| allows(*r, Permission::View)));
        assert_eq!(needed(Permission::Settings), Some(Role::Admin));
        assert_eq!(needed(Permission::Verify), Some(Role::Qa));
    }

    #[test]
    fn roles_parse_their_own_names_only() {
        for r in Role::ALL {
            assert_eq!(Role::parse(r.as_str()), Some(*r));
        }
        assert_eq!(Role::parse("root"), None);
        assert_eq!(Role::parse(""), None);
    }
}
