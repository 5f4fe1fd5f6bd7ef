//! Uploads (`gigafab_exec::files::write`) are written whole, then renamed
//! over what they replace: one that runs out of room leaves the old file
//! as it was and nothing beside it; a replacement keeps the old file's
//! mode; a link or a directory is never replaced.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

/// Unmounts and removes the test's small file system, whatever happens.
struct Mounted(std::path::PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[ignore = "needs root: mounts a 1 MiB tmpfs (cargo test -- --include-ignored, as root)"]
#[test]
fn an_upload_out_of_room_leaves_the_old_file_whole() {
    // SAFETY: plain syscall.
    assert_eq!(unsafe { libc::geteuid() }, 0, "needs root (mounts a tmpfs)");
    let d = std::env::temp_dir().join(format!("gf-upload-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    let st = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&d)
        .status()
        .unwrap();
    assert!(st.success());
    let _m = Mounted(d.clone());
    let write = |rel: &str, data: &[u8]| gigafab_exec::files::write(None, &d, rel, data, 0o640);
    write("f.txt", b"old").unwrap();
    assert_eq!(
        std::fs::metadata(d.join("f.txt"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o640
    );
    // 2 MiB into 1 MiB: refused, the old file whole, no temporary left
    let e = write("f.txt", &vec![7u8; 2 << 20]).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
    assert_eq!(std::fs::read_to_string(d.join("f.txt")).unwrap(), "old");
    let names: Vec<String> = std::fs::read_dir(&d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["f.txt".to_string()]);
    // a replacement keeps the mode of what it replaces
    std::fs::set_permissions(d.join("f.txt"), std::fs::Permissions::from_mode(0o600)).unwrap();
    write("f.txt", b"new").unwrap();
    assert_eq!(std::fs::read_to_string(d.join("f.txt")).unwrap(), "new");
    assert_eq!(
        std::fs::metadata(d.join("f.txt"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    // a link or a directory is not replaced
    std::os::unix::fs::symlink("/etc/hostname", d.join("l")).unwrap();
    let e = write("l", b"x").unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput, "{e}");
    assert!(d.join("l").is_symlink());
    std::fs::create_dir(d.join("sub")).unwrap();
    let e = write("sub", b"x").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EISDIR), "{e}");
    // into a directory, and not through a link to one
    write("sub/g", b"g").unwrap();
    std::os::unix::fs::symlink(d.join("sub"), d.join("ls")).unwrap();
    assert!(write("ls/h", b"h").is_err());
    assert!(!d.join("sub/h").exists());
}
