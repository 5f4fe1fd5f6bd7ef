//! Whose identity jobs run under (docs/security.md): one account for all,
//! or each user's (or organisation's) own POSIX account.

use std::collections::BTreeMap;

use crate::names::valid_name;

/// Whose identity jobs run under (docs/security.md).
#[derive(Clone, Debug)]
pub enum Isolation {
    /// Every job runs as the server's own account `user`: nothing separates
    /// tenants' jobs from each other. Unless the operator `accepted` it
    /// (`--single-user`), a second organisation is refused.
    Shared { user: String, accepted: bool },
    /// Each job runs as the POSIX account of its user, else of its
    /// organisation (the server runs as root and drops to it).
    Accounts(AccountMap),
}

impl Isolation {
    /// One identity for all, accepted: tests, benchmarks, one-tenant machines.
    pub fn single_user() -> Isolation {
        Isolation::Shared {
            user: String::new(),
            accepted: true,
        }
    }
}

/// gigafab users and organisations → POSIX accounts (`--job-accounts`).
#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountMap {
    /// User login (`ORG/NAME`, or the plain name of an admin or operator)
    /// → account (wins over the organisation's).
    #[serde(default)]
    pub users: BTreeMap<String, String>,
    /// Organisation name → the account of all its members.
    #[serde(default)]
    pub orgs: BTreeMap<String, String>,
}

impl AccountMap {
    /// The account of the user whose login is `user` (`ORG/NAME` for an
    /// organisation's member, the plain name for admins and operators) in
    /// `org`.
    /// Checks the map's keys: `[users]` keys are `ORG/NAME` or a plain
    /// name, `[orgs]` keys an organisation name.
    pub fn check(&self) -> Result<(), String> {
        let name_ok = |n: &str| valid_name(n, "name").is_ok();
        for key in self.users.keys() {
            let ok = match key.split_once('/') {
                Some((o, n)) => name_ok(o) && name_ok(n),
                None => name_ok(key),
            };
            if !ok {
                return Err(format!(
                    "[users] `{}`: a key is ORG/NAME for an organisation's member or NAME for an admin or operator",
                    gigafab_core::time::excerpt(key, 80)
                ));
            }
        }
        for key in self.orgs.keys() {
            if !name_ok(key) {
                return Err(format!(
                    "[orgs] `{}`: not an organisation name",
                    gigafab_core::time::excerpt(key, 80)
                ));
            }
        }
        Ok(())
    }

    pub fn account(&self, user: &str, org: &str) -> Option<&str> {
        self.users
            .get(user)
            .or_else(|| self.orgs.get(org))
            .map(String::as_str)
    }
}
