//! Whether a job's account can enter a working directory, asked with the
//! account's own rights (`gigafab_exec::local::can_enter`).

use std::os::unix::fs::PermissionsExt;

#[test]
fn an_account_enters_only_what_its_rights_allow() {
    // SAFETY: plain syscall.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root (another account's rights)");
        return;
    }
    let nobody = gigafab_exec::posix::lookup("nobody").expect("the nobody account");
    let base = std::env::temp_dir().join(format!("gf-workdir-{}", std::process::id()));
    let open = base.join("open");
    let closed = base.join("closed");
    let inner = closed.join("inner");
    std::fs::create_dir_all(&open).unwrap();
    std::fs::create_dir_all(&inner).unwrap();
    std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::set_permissions(&inner, std::fs::Permissions::from_mode(0o777)).unwrap();
    let check = |d: &std::path::Path| gigafab_exec::local::can_enter(Some(&nobody), d);
    assert_eq!(check(&open), Ok(()));
    // root may, nobody may not: a closed directory, and one below it
    assert_eq!(gigafab_exec::local::can_enter(None, &closed), Ok(()));
    let e = check(&closed).unwrap_err();
    assert!(
        e.contains("account `nobody` cannot enter it") && e.contains("ermission denied"),
        "{e}"
    );
    assert!(check(&inner).is_err());
    assert!(
        check(&base.join("absent"))
            .unwrap_err()
            .contains("No such file")
    );
    // a file is not a directory
    std::fs::write(base.join("f"), "x").unwrap();
    assert!(check(&base.join("f")).is_err());
    // the calling thread's own rights are untouched
    assert!(std::fs::read_dir(&closed).is_ok());
    let _ = std::fs::remove_dir_all(&base);
}
