//! Names as the API takes them and the store keeps them: shared by the
//! store, the controller and every resource's handlers.

use crate::error::ApiError;

/// A name of an organisation, project, user, node or catalog entry: 1 to
/// 64 of `A-Z a-z 0-9 - _ .` (`what` names the field in the error).
pub fn valid_name(s: &str, what: &str) -> Result<(), ApiError> {
    if s.is_empty()
        || s.len() > 64
        // names become directories (project spaces): never `.` or `..`
        || s.chars().all(|c| c == '.')
        || !s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(ApiError::invalid(format!(
            "{what}: `{}` is not a valid name (1-64 of A-Z a-z 0-9 - _ .)",
            s.chars().take(80).collect::<String>()
        )));
    }
    Ok(())
}

/// A user's name without its organisation: the store keeps members as
/// `ORG/NAME` (names are unique within an organisation only).
pub fn short_name(stored: String) -> String {
    match stored.rsplit_once('/') {
        Some((_, name)) => name.to_string(),
        None => stored,
    }
}

/// The login of `name` in `org` as the store keeps it (see [`short_name`]).
pub fn login(org: Option<&str>, name: &str) -> String {
    match org {
        Some(o) => format!("{o}/{name}"),
        None => name.to_string(),
    }
}

/// ISO 3166-1 alpha-2: two capital letters.
pub fn valid_country(c: &str) -> bool {
    c.len() == 2 && c.bytes().all(|b| b.is_ascii_uppercase())
}

/// An e-mail address as a mail relay takes it (one mailbox, no display
/// name, no line breaks: nothing a tenant writes reaches a mail header
/// unparsed).
pub fn valid_email(e: &str) -> Result<String, ApiError> {
    let bad = || {
        ApiError::invalid(format!(
            "email: `{}` is not an e-mail address (local@domain)",
            e.chars().take(80).collect::<String>()
        ))
    };
    if e.len() > 254 || e.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(bad());
    }
    let a: lettre::Address = e.parse().map_err(|_| bad())?;
    Ok(a.to_string())
}
