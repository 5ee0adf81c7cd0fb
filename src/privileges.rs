//! Dropping root after binding: switch the whole process to an unprivileged user.
//!
//! `main.rs` calls [`drop_to`] once the listeners are bound, when `[server] user` is set and the
//! process runs as root. It sets the user's supplementary groups, its primary group, then its
//! user ID (in that order, so no step can be undone), and checks that root cannot be regained.
//! It does nothing else: no chroot, no capability juggling (see docs/reliability.md for running
//! with only CAP_NET_BIND_SERVICE instead).

use std::ffi::CString;

/// Whether the process runs with effective user ID 0.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
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
pub fn lookup(name: &str) -> Result<UserIds, String> {
    let c = CString::new(name)
        .map_err(|_| format!("[server] user = {name:?} contains a NUL byte; name a real user"))?;
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call; buf outlives the use of pwd's strings (none).
    let rc = unsafe {
        libc::getpwnam_r(
            c.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 || result.is_null() {
        return Err(format!(
            "[server] user = {name:?}: no such user on this system; create it, or name an existing one such as \"nobody\""
        ));
    }
    Ok(UserIds {
        uid: pwd.pw_uid,
        gid: pwd.pw_gid,
    })
}

/// Switches the process to `name` (groups, group, user). Must run as root.
pub fn drop_to(name: &str) -> Result<UserIds, String> {
    let ids = lookup(name)?;
    let c = CString::new(name).map_err(|e| e.to_string())?;
    // SAFETY: plain syscalls with valid arguments; the process is single-purpose and the order
    // (groups, gid, uid) is the one that cannot leave root half-kept.
    unsafe {
        if libc::initgroups(c.as_ptr(), ids.gid as _) != 0 {
            return Err(format!(
                "cannot set the groups of user {name:?}: {}",
                std::io::Error::last_os_error()
            ));
        }
        if libc::setgid(ids.gid) != 0 {
            return Err(format!(
                "cannot switch to group {} of user {name:?}: {}",
                ids.gid,
                std::io::Error::last_os_error()
            ));
        }
        if libc::setuid(ids.uid) != 0 {
            return Err(format!(
                "cannot switch to user {name:?} (uid {}): {}",
                ids.uid,
                std::io::Error::last_os_error()
            ));
        }
        if ids.uid != 0 && libc::setuid(0) == 0 {
            return Err(format!(
                "switched to user {name:?} but could regain root; refusing to run like this"
            ));
        }
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_known_and_unknown_users() {
        assert_eq!(lookup("root"), Ok(UserIds { uid: 0, gid: 0 }));
        let e = lookup("no-such-user-dockns-test").unwrap_err();
        assert!(e.contains("no such user"), "{e}");
        assert!(lookup("a\0b").is_err());
    }
}
