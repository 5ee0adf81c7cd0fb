//! Dropping root after binding: switch the whole process to an unprivileged user.
//!
//! `main.rs` calls [`drop_to`] once the listeners are bound, when `[server] user` is set and the
//! process runs as root. It sets the user's supplementary groups, its primary group, then its
//! user ID (in that order, so no step can be undone), and checks that root cannot be regained.
//! It does nothing else: no chroot, no capability juggling (see docs/reliability.md for running
//! with only CAP_NET_BIND_SERVICE instead).

use nix::unistd::{Gid, Uid, User};
use std::ffi::CString;

/// Why dropping root failed. Each message names the cause and the fix.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PrivilegeError {
    /// The configured name cannot be a user name.
    #[error("[server] user = {0:?} contains a NUL byte; name a real user")]
    NulInName(String),
    /// The password database has no such user (or could not be read).
    #[error("[server] user = {0:?}: no such user on this system; create it, or name an existing one such as \"nobody\"")]
    NoSuchUser(String),
    /// `initgroups` failed.
    #[error("cannot set the groups of user {name:?}: {source}")]
    Groups {
        /// The user.
        name: String,
        /// The system's reason.
        #[source]
        source: nix::Error,
    },
    /// `setgid` failed.
    #[error("cannot switch to group {gid} of user {name:?}: {source}")]
    Group {
        /// The user.
        name: String,
        /// Its primary group.
        gid: u32,
        /// The system's reason.
        #[source]
        source: nix::Error,
    },
    /// `setuid` failed.
    #[error("cannot switch to user {name:?} (uid {uid}): {source}")]
    User {
        /// The user.
        name: String,
        /// Its user ID.
        uid: u32,
        /// The system's reason.
        #[source]
        source: nix::Error,
    },
    /// After the switch, `setuid(0)` still worked.
    #[error("switched to user {0:?} but could regain root; refusing to run like this")]
    RootRegainable(String),
}

/// Whether the process runs with effective user ID 0.
pub fn is_root() -> bool {
    Uid::effective().is_root()
}

/// A user's IDs, from the password database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserIds {
    /// User ID.
    pub uid: u32,
    /// Primary group ID.
    pub gid: u32,
}

/// Looks `name` up in the password database.
pub fn lookup(name: &str) -> Result<UserIds, PrivilegeError> {
    if name.contains('\0') {
        return Err(PrivilegeError::NulInName(name.to_string()));
    }
    match User::from_name(name) {
        Ok(Some(u)) => Ok(UserIds {
            uid: u.uid.as_raw(),
            gid: u.gid.as_raw(),
        }),
        _ => Err(PrivilegeError::NoSuchUser(name.to_string())),
    }
}

/// Switches the process to `name` (groups, group, user). Must run as root.
pub fn drop_to(name: &str) -> Result<UserIds, PrivilegeError> {
    let ids = lookup(name)?;
    let c = CString::new(name).map_err(|_| PrivilegeError::NulInName(name.to_string()))?;
    let named = || name.to_string();
    // The order (groups, gid, uid) is the one that cannot leave root half-kept.
    nix::unistd::initgroups(&c, Gid::from_raw(ids.gid)).map_err(|source| {
        PrivilegeError::Groups {
            name: named(),
            source,
        }
    })?;
    nix::unistd::setgid(Gid::from_raw(ids.gid)).map_err(|source| PrivilegeError::Group {
        name: named(),
        gid: ids.gid,
        source,
    })?;
    nix::unistd::setuid(Uid::from_raw(ids.uid)).map_err(|source| PrivilegeError::User {
        name: named(),
        uid: ids.uid,
        source,
    })?;
    if ids.uid != 0 && nix::unistd::setuid(Uid::from_raw(0)).is_ok() {
        return Err(PrivilegeError::RootRegainable(named()));
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_known_and_unknown_users() {
        assert_eq!(lookup("root"), Ok(UserIds { uid: 0, gid: 0 }));
        let e = lookup("no-such-user-dockns-test").unwrap_err().to_string();
        assert!(e.contains("no such user"), "{e}");
        assert!(lookup("a\0b").unwrap_err().to_string().contains("NUL byte"));
    }
}
