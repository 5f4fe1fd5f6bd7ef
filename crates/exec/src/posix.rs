//! POSIX accounts that jobs run as, and cgroup v2 process tracking.

use std::ffi::{CStr, CString};
use std::path::{Path, PathBuf};

/// A POSIX account a job runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (the primary one included), as `initgroups`
    /// would set them.
    pub groups: Vec<u32>,
    pub home: PathBuf,
}

/// Whether this process runs as root (and so can start jobs as others).
pub fn is_root() -> bool {
    // SAFETY: plain syscall without arguments.
    unsafe { libc::geteuid() == 0 }
}

/// The name of the account this process runs as.
pub fn current_user() -> String {
    // SAFETY: plain syscall without arguments.
    let uid = unsafe { libc::geteuid() };
    lookup_uid(uid).unwrap_or_else(|| uid.to_string())
}

fn lookup_uid(uid: u32) -> Option<String> {
    let mut buf = vec![0u8; 16 * 1024];
    // SAFETY: zeroed passwd is a valid out-parameter; buf outlives the call.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut out: *mut libc::passwd = std::ptr::null_mut();
    let r =
        unsafe { libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr().cast(), buf.len(), &mut out) };
    if r != 0 || out.is_null() {
        return None;
    }
    // SAFETY: on success pw_name points into buf, NUL-terminated.
    Some(
        unsafe { CStr::from_ptr(pwd.pw_name) }
            .to_string_lossy()
            .into_owned(),
    )
}

/// Looks up account `name` in the system's user database (files, LDAP, ...).
pub fn lookup(name: &str) -> Result<Account, String> {
    let cname = CString::new(name).map_err(|_| format!("account `{name}`: a NUL in the name"))?;
    let mut buf = vec![0u8; 16 * 1024];
    // SAFETY: zeroed passwd is a valid out-parameter; buf outlives the call.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut out: *mut libc::passwd = std::ptr::null_mut();
    let r = unsafe {
        libc::getpwnam_r(
            cname.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut out,
        )
    };
    if r != 0 || out.is_null() {
        return Err(format!("no POSIX account `{name}` on this machine"));
    }
    let (uid, gid) = (pwd.pw_uid, pwd.pw_gid);
    if uid == 0 {
        return Err(format!("account `{name}` is root: jobs never run as root"));
    }
    // SAFETY: on success pw_dir points into buf, NUL-terminated.
    let home = PathBuf::from(
        unsafe { CStr::from_ptr(pwd.pw_dir) }
            .to_string_lossy()
            .into_owned(),
    );
    let mut n: libc::c_int = 64;
    let mut groups: Vec<libc::gid_t> = vec![0; n as usize];
    loop {
        // SAFETY: groups has room for n entries; n is updated on return.
        let r = unsafe { libc::getgrouplist(cname.as_ptr(), gid, groups.as_mut_ptr(), &mut n) };
        if r >= 0 {
            groups.truncate(n as usize);
            break;
        }
        if n as usize <= groups.len() || n > 65_536 {
            groups = vec![gid];
            break;
        }
        groups = vec![0; n as usize];
    }
    Ok(Account {
        name: name.to_string(),
        uid,
        gid,
        groups,
        home,
    })
}

/// Where the unified (v2) cgroup hierarchy is mounted: `/sys/fs/cgroup`, or
/// `/sys/fs/cgroup/unified` on hybrid machines.
pub fn cgroup2_mount() -> Option<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    text.lines().find_map(|l| {
        // `... mount-point ... - cgroup2 cgroup2 rw`
        let (left, right) = l.split_once(" - ")?;
        if right.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        left.split_whitespace().nth(4).map(PathBuf::from)
    })
}

/// Where the legacy (v1) hierarchy of `controller` (`memory`, `cpu`) is
/// mounted, on machines that still have one (hybrid v1/v2).
pub fn cgroup1_mount(controller: &str) -> Option<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    text.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        let mut r = right.split_whitespace();
        if r.next()? != "cgroup" {
            return None;
        }
        let opts = r.nth(1)?;
        opts.split(',')
            .any(|o| o == controller)
            .then(|| left.split_whitespace().nth(4).map(PathBuf::from))?
    })
}

/// A cgroup (v2) for the jobs of this server, `<mount>/<name>`, created if
/// needed; `None` where there is no writable v2 hierarchy (then jobs are
/// tracked by process group only).
pub fn jobs_cgroup(name: &str) -> Option<PathBuf> {
    let mount = cgroup2_mount()?;
    let dir = mount.join(name);
    if std::fs::create_dir_all(&dir).is_err() {
        return None;
    }
    // memory and CPU limits per job where those controllers are here
    // (best effort: a hierarchy that lacks them keeps jobs tracked only)
    for parent in [&mount, &dir] {
        let _ = std::fs::write(parent.join("cgroup.subtree_control"), "+memory +cpu");
    }
    // writable and usable: a probe cgroup with cgroup.procs
    let probe = dir.join(format!("probe-{}", std::process::id()));
    let ok = std::fs::create_dir(&probe).is_ok() && probe.join("cgroup.procs").exists();
    let _ = std::fs::remove_dir(&probe);
    ok.then_some(dir)
}

/// The pids in cgroup `dir` (empty when it is gone).
pub fn cgroup_pids(dir: &Path) -> Vec<i32> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .map(|t| {
            t.lines()
                .filter_map(|l| l.trim().parse().ok())
                .filter(|p: &i32| *p > 0)
                .collect()
        })
        .unwrap_or_default()
}

/// Sends `signal` to every process of cgroup `dir`; SIGKILL also uses
/// `cgroup.kill` (Linux 5.14+), which no process can dodge by forking.
pub fn cgroup_signal(dir: &Path, signal: libc::c_int) {
    if signal == libc::SIGKILL {
        let _ = std::fs::write(dir.join("cgroup.kill"), "1");
    }
    for pid in cgroup_pids(dir) {
        if pid > 0 {
            // SAFETY: plain syscall.
            unsafe { libc::kill(pid, signal) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_and_unknown_accounts() {
        assert!(lookup("root").unwrap_err().contains("never run as root"));
        let e = lookup("gigafab-no-such-account").unwrap_err();
        assert!(e.contains("no POSIX account"), "{e}");
        assert!(lookup("a\0b").is_err());
        assert!(!current_user().is_empty());
    }
}
