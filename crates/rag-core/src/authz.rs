//! What a caller may *do* in a tenant, as opposed to what it may *read* (that is the
//! [`AccessFilter`](crate::AccessFilter)'s job). A verified token grants
//! [`ServiceRole`]s in one tenant; [`authorize`] is the one check a service and the
//! pipeline share before an [`Operation`] runs.
//!
//! | role | query, read a document | ingest, delete | erase, administer |
//! |---|---|---|---|
//! | `reader` | yes | no | no |
//! | `ingester` | yes | yes | no |
//! | `admin` | yes | yes | yes |

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};
use crate::ids::TenantId;

/// A role a caller holds in a tenant's service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ServiceRole {
    /// Asks questions and reads the documents it may see.
    Reader,
    /// A reader that also writes and deletes documents.
    Ingester,
    /// An ingester that also erases documents and administers the tenant.
    Admin,
}

impl ServiceRole {
    /// The role's name in tokens and configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceRole::Reader => "reader",
            ServiceRole::Ingester => "ingester",
            ServiceRole::Admin => "admin",
        }
    }

    /// Whether the role allows `op`.
    pub fn allows(self, op: Operation) -> bool {
        let needed = match op {
            Operation::Query | Operation::ReadDocument => ServiceRole::Reader,
            Operation::Ingest | Operation::Delete => ServiceRole::Ingester,
            Operation::Erase | Operation::Administer => ServiceRole::Admin,
        };
        self >= needed
    }
}

impl fmt::Display for ServiceRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A text that names no [`ServiceRole`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown service role {0:?}: expected reader, ingester or admin")]
pub struct ParseRoleError(pub String);

impl FromStr for ServiceRole {
    type Err = ParseRoleError;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s {
            "reader" => Ok(ServiceRole::Reader),
            "ingester" => Ok(ServiceRole::Ingester),
            "admin" => Ok(ServiceRole::Admin),
            _ => Err(ParseRoleError(s.to_owned())),
        }
    }
}

/// Something a caller asks a service to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    /// Ask a question.
    Query,
    /// Read a stored document (still filtered by its ACL).
    ReadDocument,
    /// Write documents.
    Ingest,
    /// Delete documents.
    Delete,
    /// Erase documents and every copy of their content.
    Erase,
    /// Change the tenant's directory, keys or settings.
    Administer,
}

impl Operation {
    /// The operation's name in errors and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Query => "query",
            Operation::ReadDocument => "read a document",
            Operation::Ingest => "ingest",
            Operation::Delete => "delete",
            Operation::Erase => "erase",
            Operation::Administer => "administer",
        }
    }
}

/// The service roles a caller holds, in exactly one tenant.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Grants {
    /// The tenant the roles hold in.
    pub tenant: TenantId,
    /// The roles.
    pub roles: BTreeSet<ServiceRole>,
}

impl Grants {
    /// Grants of `roles` in `tenant`.
    pub fn new(tenant: impl Into<TenantId>, roles: impl IntoIterator<Item = ServiceRole>) -> Self {
        Self {
            tenant: tenant.into(),
            roles: roles.into_iter().collect(),
        }
    }
}

/// Allows `op` in `tenant` only if `grants` are for that tenant and one of their
/// roles allows it; otherwise [`Error::Denied`]. Fail-closed: no roles, or roles of
/// another tenant, allow nothing.
pub fn authorize(grants: &Grants, tenant: &TenantId, op: Operation) -> Result<()> {
    if grants.tenant != *tenant || grants.tenant.as_str().is_empty() {
        return Err(Error::Denied {
            reason: format!("not permitted to {} in this tenant", op.as_str()),
        });
    }
    if grants.roles.iter().any(|r| r.allows(op)) {
        Ok(())
    } else {
        Err(Error::Denied {
            reason: format!("no role permits {}", op.as_str()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPS: [Operation; 6] = [
        Operation::Query,
        Operation::ReadDocument,
        Operation::Ingest,
        Operation::Delete,
        Operation::Erase,
        Operation::Administer,
    ];

    #[test]
    fn each_role_allows_exactly_its_column() {
        let table = [
            (ServiceRole::Reader, 2),
            (ServiceRole::Ingester, 4),
            (ServiceRole::Admin, 6),
        ];
        for (role, allowed) in table {
            let g = Grants::new("acme", [role]);
            for (i, op) in OPS.into_iter().enumerate() {
                let ok = authorize(&g, &TenantId::new("acme"), op).is_ok();
                assert_eq!(ok, i < allowed, "{role} {op:?}");
            }
        }
    }

    #[test]
    fn another_tenant_or_no_role_allows_nothing() {
        let admin = Grants::new("acme", [ServiceRole::Admin]);
        let none = Grants::new("acme", []);
        let empty = Grants::new("", [ServiceRole::Admin]);
        for op in OPS {
            assert!(authorize(&admin, &TenantId::new("globex"), op).is_err());
            assert!(authorize(&none, &TenantId::new("acme"), op).is_err());
            assert!(authorize(&empty, &TenantId::new(""), op).is_err());
        }
    }

    #[test]
    fn role_names_round_trip() {
        for r in [
            ServiceRole::Reader,
            ServiceRole::Ingester,
            ServiceRole::Admin,
        ] {
            assert_eq!(r.as_str().parse::<ServiceRole>(), Ok(r));
        }
        assert!("Admin".parse::<ServiceRole>().is_err());
    }
}
