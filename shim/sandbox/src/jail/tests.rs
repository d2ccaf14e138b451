use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::*;
use crate::sandbox::process;

const IDS: Ids = Ids {
    uid: DEFAULT_JAIL_ID_BASE + 7,
    gid: DEFAULT_JAIL_ID_BASE + 7,
};

#[test]
fn a_sandbox_gets_stable_ids_in_the_range() {
    let a = Ids::for_sandbox("pod-1a2b3c4d", DEFAULT_JAIL_ID_BASE);
    assert_eq!(a, Ids::for_sandbox("pod-1a2b3c4d", DEFAULT_JAIL_ID_BASE));
    assert_eq!(a.uid, a.gid);
    assert!((DEFAULT_JAIL_ID_BASE..DEFAULT_JAIL_ID_BASE + JAIL_ID_COUNT).contains(&a.uid));
    assert_ne!(a, Ids::for_sandbox("pod-1a2b3c4e", DEFAULT_JAIL_ID_BASE));
    // Never uid 0 or -1 ("unchanged" to setresuid), whatever the base.
    for base in [0, u32::MAX] {
        let ids = Ids::for_sandbox("x", base);
        assert!(ids.uid != 0 && ids.uid != u32::MAX, "{ids:?}");
    }
}

#[test]
fn a_dynamic_executable_brings_its_loader_and_libraries() {
    let me = std::env::current_exe().expect("test binary");
    let mut jail = Jail::new(Path::new("/run/j"), IDS);
    let exe = jail.bind_executable(&me, "probe").expect("bind");
    assert_eq!(exe.path, Path::new("/probe"));
    assert_eq!(exe.library_path, Some("/lib"));
    let targets: Vec<_> = jail.binds.iter().map(|b| b.target.clone()).collect();
    assert!(targets.contains(&PathBuf::from("probe")), "{targets:?}");
    assert!(
        targets.contains(&PathBuf::from("lib/libc.so.6")),
        "{targets:?}"
    );
    let linking = read_linking(&me).expect("ELF");
    let loader = linking.interpreter.expect("a loader");
    assert!(
        targets.contains(&relative(Path::new(&loader)).expect("absolute")),
        "{targets:?} lacks {loader}"
    );
    assert!(jail.binds.iter().all(|b| b.read_only));
}

#[test]
fn a_static_executable_comes_alone() {
    // Debian's ldconfig is static-pie.
    let mut jail = Jail::new(Path::new("/run/j"), IDS);
    let exe = jail
        .bind_executable(Path::new("/sbin/ldconfig"), "tool")
        .expect("bind");
    assert_eq!(exe.library_path, None);
    assert_eq!(jail.binds.len(), 1);
}

#[test]
fn what_the_jail_cannot_read_is_refused_by_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = dir.path().join("vmlinux");
    fs::write(&secret, b"kernel").expect("write");
    fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod");
    let mut jail = Jail::new(&dir.path().join("vm"), IDS);
    let err = jail
        .bind_read_only("guest kernel", &secret, "vmlinux")
        .expect_err("mode 0600");
    let text = err.to_string();
    assert!(text.contains("guest kernel"), "{text}");
    assert!(text.contains(&secret.display().to_string()), "{text}");
    assert!(text.contains("mode 600"), "{text}");
    let err = jail
        .bind_read_only("text", Path::new("/etc/hostname"), "../x")
        .expect_err("not a plain name");
    assert!(matches!(err, JailError::BadTarget(_)), "{err}");
    let err = jail
        .bind_executable(Path::new("/etc/hostname"), "x")
        .expect_err("not ELF");
    assert!(matches!(err, JailError::Elf { .. }), "{err}");
}

#[test]
fn paths_under_the_root_map_into_the_jail() {
    let jail = Jail::new(Path::new("/run/s/vm"), IDS);
    assert_eq!(
        jail.inside(Path::new("/run/s/vm/vsock.sock")),
        Some(PathBuf::from("/vsock.sock"))
    );
    assert_eq!(
        jail.inside(Path::new("/run/s/vm")),
        Some(PathBuf::from("/"))
    );
    assert_eq!(jail.inside(Path::new("/run/s/console.log")), None);
}

/// `/proc/PID/status` field `name`.
fn status_field(pid: u32, name: &str) -> String {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
        .trim()
        .to_string()
}

fn only_child(pid: u32) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let children =
            fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        if let Some(child) = children.split_whitespace().next() {
            return child.parse().expect("pid");
        }
        assert!(Instant::now() < deadline, "{pid} has no child");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn namespace(pid: u32, kind: &str) -> PathBuf {
    fs::read_link(format!("/proc/{pid}/ns/{kind}")).expect("ns link")
}

fn jailed(root: &Path, program: &str, name: &str, args: &[&str]) -> std::process::Child {
    let mut jail = Jail::new(root, IDS);
    let exe = jail
        .bind_executable(Path::new(program), name)
        .expect("bind");
    jail.bind_read_only("text", Path::new("/etc/hostname"), "hostname")
        .expect("bind");
    let prepared = jail.prepare(&[]).expect("prepare");
    let mut cmd = Command::new(&exe.path);
    cmd.args(args)
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(path) = exe.library_path {
        cmd.env("LD_LIBRARY_PATH", path);
    }
    process::spawn_jailed(cmd, prepared).expect("spawn in the jail")
}

#[test]
#[ignore = "needs root: makes namespaces and mounts, changes uid"]
fn a_jailed_process_sees_only_its_root_and_holds_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("vm");

    let ls = jailed(&root, "/bin/ls", "ls", &["-1an", "/", "/lib"]);
    let out = ls.wait_with_output().expect("ls");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let top: Vec<&str> = text
        .split("\n\n")
        .next()
        .unwrap_or("")
        .lines()
        .filter_map(|l| l.split_whitespace().nth(8))
        .filter(|n| *n != "." && *n != "..")
        .collect();
    let mut expected = vec!["hostname", "lib", "lib64", "ls"];
    expected.sort_unstable();
    let mut seen = top.clone();
    seen.sort_unstable();
    assert_eq!(seen, expected, "the jail's root:\n{text}");
    // The root is the jail's uid's; the bound files stay root's, read-only.
    assert!(
        text.lines()
            .any(|l| l.ends_with(" .") && l.contains(&format!(" {} {} ", IDS.uid, IDS.gid))),
        "{text}"
    );

    let sleep = jailed(&root, "/bin/sleep", "sleep", &["30"]);
    let waiter = sleep.id();
    let pid = only_child(only_child(waiter));
    // The child stays the waiter's until exec; wait for the jailed program itself.
    let deadline = Instant::now() + Duration::from_secs(10);
    while fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default() != "sleep\n" {
        assert!(Instant::now() < deadline, "pid {pid} never became sleep");
        std::thread::sleep(Duration::from_millis(10));
    }
    let ids = format!("{0}\t{0}\t{0}\t{0}", IDS.uid);
    assert_eq!(status_field(pid, "Uid"), ids);
    assert_eq!(
        status_field(pid, "Gid"),
        ids.replace(&IDS.uid.to_string(), &IDS.gid.to_string())
    );
    assert_eq!(status_field(pid, "Groups"), "");
    for caps in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(status_field(pid, caps), "0000000000000000", "{caps}");
    }
    assert_eq!(status_field(pid, "NoNewPrivs"), "1");
    let me = std::process::id();
    for kind in ["mnt", "pid", "ipc", "uts", "net"] {
        assert_ne!(
            namespace(pid, kind),
            namespace(me, kind),
            "{kind} namespace shared"
        );
    }
    // Its own PID namespace: it is PID 2 there (under our init).
    assert_eq!(
        status_field(pid, "NSpid").split_whitespace().last(),
        Some("2")
    );
    // The host never sees the binds.
    let mounts = fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    assert!(!mounts.contains(&root.display().to_string()), "{mounts}");

    let mut sleep = sleep;
    sleep.kill().expect("kill");
    sleep.wait().expect("wait");
    let deadline = Instant::now() + Duration::from_secs(10);
    while Path::new(&format!("/proc/{pid}")).exists() {
        assert!(
            Instant::now() < deadline,
            "the jailed sleep outlived its waiter"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
#[ignore = "needs root: makes namespaces and mounts, changes uid"]
fn a_failing_jail_step_fails_the_spawn_and_names_itself() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("vm");
    let mut jail = Jail::new(&root, IDS);
    let exe = jail
        .bind_executable(Path::new("/bin/true"), "true")
        .expect("bind");
    let prepared = jail.prepare(&[]).expect("prepare");
    // The mount point of the program goes away: the bind fails.
    fs::remove_file(root.join("true")).expect("remove");
    let log = dir.path().join("stderr");
    let mut cmd = Command::new(&exe.path);
    cmd.stderr(fs::File::create(&log).expect("log"));
    let err = process::spawn_jailed(cmd, prepared).expect_err("no mount point");
    assert_eq!(err.raw_os_error(), Some(libc::ENOENT), "{err}");
    let said = fs::read_to_string(&log).expect("log");
    assert!(
        said.contains("rust-vm jail: cannot bind a file into the jail"),
        "{said}"
    );
}
