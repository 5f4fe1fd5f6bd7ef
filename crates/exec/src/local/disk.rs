//! What a job holds on disk, measured without following links and
//! without asking a file system of the job's making.

use super::*;

/// Deepest nesting measured; a tree deeper than this counts as past any
/// limit (no job needs it, and a walk holds one descriptor a level).
const MAX_DEPTH: usize = 256;

/// Disk space under `dir`: the blocks allocated to every file, directory
/// and link (not their sizes: a file grown by `fallocate --keep-size` or
/// with holes counts what it holds on disk). The walk goes through
/// descriptors opened without following links and stays on `dir`'s file
/// system, so that no entry the job swaps for a link takes it elsewhere;
/// counting stops once past `stop_after`.
pub(super) fn dir_size(dir: &Path, stop_after: u64) -> u64 {
    dir_size_within(dir, stop_after, usize::MAX).unwrap_or(u64::MAX)
}

/// [`dir_size`], giving up (None) after `max_entries` entries: a tree of
/// millions of empty files holds little but takes long to walk.
pub(super) fn dir_size_within(dir: &Path, stop_after: u64, max_entries: usize) -> Option<u64> {
    use rustix::fs::{AtFlags, CWD, Dir, FileType, Mode, OFlags, fstat, openat, statat};
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let Ok(top) = openat(CWD, dir, flags, Mode::empty()) else {
        return Some(0);
    };
    let Ok(st) = fstat(&top) else { return Some(0) };
    let mut seen = 0usize;
    let dev = st.st_dev;
    let mut total = (st.st_blocks as u64).saturating_mul(512);
    let mut stack = vec![Dir::read_from(&top).ok().map(|d| (top, d))];
    while !stack.is_empty() {
        let depth = stack.len();
        let Some(Some((fd, entries))) = stack.last_mut() else {
            stack.pop();
            continue;
        };
        let Some(Ok(ent)) = entries.next() else {
            stack.pop();
            continue;
        };
        let name = ent.file_name();
        if name.to_bytes() == b"." || name.to_bytes() == b".." {
            continue;
        }
        seen += 1;
        if seen > max_entries {
            return None;
        }
        let Ok(st) = statat(&*fd, name, AtFlags::SYMLINK_NOFOLLOW) else {
            continue;
        };
        total = total.saturating_add((st.st_blocks as u64).saturating_mul(512));
        if total > stop_after {
            return Some(total);
        }
        if FileType::from_raw_mode(st.st_mode) == FileType::Directory && st.st_dev == dev {
            if depth >= MAX_DEPTH {
                return Some(u64::MAX);
            }
            let sub = openat(&*fd, name, flags, Mode::empty())
                .ok()
                .and_then(|f| Dir::read_from(&f).ok().map(|d| (f, d)));
            stack.push(sub);
        }
    }
    Some(total)
}

/// The mount id of descriptor `fd` of process `pid` (`mnt_id` of its
/// fdinfo), read from /proc without touching the file's own file system.
fn fd_mount(pid: &str, fd: &str) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("mnt_id:"))
        .and_then(|v| v.trim().parse().ok())
}

/// The device (`major:minor`) of mount `id` in process `pid`'s mount table.
fn mount_device(pid: &str, id: u64) -> Option<String> {
    let text = fs::read_to_string(format!("/proc/{pid}/mountinfo")).ok()?;
    text.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        let mid: u64 = f.next()?.parse().ok()?;
        f.next()?;
        let dev = f.next()?;
        (mid == id).then(|| dev.to_string())
    })
}

/// Disk space held by files that processes `pids` removed but keep open
/// (not in any directory, still on disk), each file once; only files on
/// `device` (the job directory's, `major:minor`), told from /proc alone,
/// so that no file system of the job's making (FUSE) is ever asked and no
/// answer of its can stall the check.
pub(super) fn unlinked_open(pids: &[i32], device: Option<String>) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Some(device) = device else {
        return 0;
    };
    let mut seen = std::collections::HashSet::new();
    let mut total = 0u64;
    for pid in pids {
        let pid = pid.to_string();
        let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let name = fd.file_name();
            let Some(n) = name.to_str() else { continue };
            // removed files only, on the job directory's file system
            let removed = fs::read_link(fd.path())
                .is_ok_and(|t| t.as_os_str().as_bytes().ends_with(b" (deleted)"));
            if !removed
                || fd_mount(&pid, n)
                    .and_then(|m| mount_device(&pid, m))
                    .as_ref()
                    != Some(&device)
            {
                continue;
            }
            // the descriptor's file itself (its /proc link is followed)
            let Ok(m) = fs::metadata(fd.path()) else {
                continue;
            };
            if m.is_file() && m.nlink() == 0 && seen.insert((m.dev(), m.ino())) {
                total = total.saturating_add(m.blocks().saturating_mul(512));
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_walk_gives_up_past_its_entries() {
        let d = std::env::temp_dir().join(format!("gf-walk-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(d.join("sub")).unwrap();
        for i in 0..5 {
            fs::write(d.join("sub").join(i.to_string()), vec![1u8; 8192]).unwrap();
        }
        // 6 entries: sub and its 5 files
        assert_eq!(dir_size_within(&d, u64::MAX, 5), None);
        let n = dir_size_within(&d, u64::MAX, 6).unwrap();
        assert!(n >= 5 * 8192, "{n}");
        assert_eq!(dir_size(&d, u64::MAX), n);
        let _ = fs::remove_dir_all(&d);
    }
}
