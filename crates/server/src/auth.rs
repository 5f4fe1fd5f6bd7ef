//! Tokens, roles and who may see what.

use sha2::{Digest, Sha256};

/// A user's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Admin,
    Operator,
    Owner,
    Member,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::Owner => "owner",
            Role::Member => "member",
        }
    }
    /// The role as the API types it.
    pub fn api(self) -> gigafab_api::Role {
        match self {
            Role::Admin => gigafab_api::Role::Admin,
            Role::Operator => gigafab_api::Role::Operator,
            Role::Owner => gigafab_api::Role::Owner,
            Role::Member => gigafab_api::Role::Member,
        }
    }
    pub fn parse(s: &str) -> Option<Role> {
        Some(match s {
            "admin" => Role::Admin,
            "operator" => Role::Operator,
            "owner" => Role::Owner,
            "member" => Role::Member,
            _ => return None,
        })
    }
    /// Roles that belong to an organisation.
    pub fn in_org(self) -> bool {
        matches!(self, Role::Owner | Role::Member)
    }
}

/// The caller of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub user_id: i64,
    pub name: String,
    /// `ORG/NAME` for an organisation's member, the name otherwise: what
    /// the audit log and `--job-accounts` name.
    pub login: String,
    pub role: Role,
    pub org_id: Option<i64>,
    pub token_id: i64,
    /// When the token stops working; None: never.
    pub expires_ms: Option<crate::time::Ms>,
}

impl Principal {
    /// The caller of a public read (no token): no user, no organisation,
    /// the least role. Only [`crate::ctl::Action::Offer`] is asked with it.
    pub fn anonymous() -> Principal {
        Principal {
            user_id: 0,
            name: "anonymous".into(),
            login: "anonymous".into(),
            role: Role::Member,
            org_id: None,
            token_id: 0,
            expires_ms: None,
        }
    }

    /// Sees every organisation's objects.
    pub fn global(&self) -> bool {
        matches!(self.role, Role::Admin | Role::Operator)
    }
    /// May see objects of `org`.
    pub fn sees_org(&self, org: i64) -> bool {
        self.global() || self.org_id == Some(org)
    }
}

/// A new random token: `gf_` and 43 URL-safe characters (256 bits).
pub fn new_token() -> String {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).expect("the operating system's random source failed");
    let mut s = String::with_capacity(46);
    s.push_str("gf_");
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut acc: u32 = 0;
    let mut bits = 0;
    for &x in &b {
        acc = (acc << 8) | x as u32;
        bits += 8;
        while bits >= 6 {
            bits -= 6;
            s.push(A[((acc >> bits) & 63) as usize] as char);
        }
    }
    if bits > 0 {
        s.push(A[((acc << (6 - bits)) & 63) as usize] as char);
    }
    s
}

/// Hex SHA-256 of a token: what the store keeps.
pub fn hash_token(token: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let d = Sha256::digest(token.as_bytes());
    let mut s = String::with_capacity(64);
    for b in d {
        s.push(HEX[(b >> 4) as usize] as char);
        s.push(HEX[(b & 15) as usize] as char);
    }
    s
}

/// The portal's session cookie: the portal sets it, and the sessions'
/// proxy never lets an app see or set it.
pub const PORTAL_COOKIE: &str = "gf_session";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_hashed() {
        let (a, b) = (new_token(), new_token());
        assert_ne!(a, b);
        assert_eq!(a.len(), 46);
        assert!(a.starts_with("gf_"));
        assert_eq!(
            hash_token("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_ne!(hash_token(&a), hash_token(&b));
    }
}
