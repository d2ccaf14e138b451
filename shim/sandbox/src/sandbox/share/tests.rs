use std::os::unix::fs::PermissionsExt;

use super::*;

/// A stand-in for virtiofsd: records its arguments and whether fd 3 is a socket, then waits.
/// It runs in the share's namespace, so `/proc/<pid>/root` shows what virtiofsd would serve.
fn fake_virtiofsd(dir: &Path) -> PathBuf {
    let path = dir.join("fake-virtiofsd");
    fs::write(
        &path,
        format!(
            "#!/bin/sh\necho \"$@\" > {0}/args\n[ -S /proc/self/fd/3 ] && echo socket >> {0}/args\nexec sleep 600\n",
            dir.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn options(virtiofsd: PathBuf) -> ShareOptions {
    ShareOptions {
        virtiofsd,
        cache: VirtiofsCache::Auto,
        thread_pool_size: 0,
        log_level: LogLevel::Warn,
        cgroup_procs: Vec::new(),
    }
}

fn wait_for(path: &Path) {
    for _ in 0..200 {
        if fs::read_to_string(path).is_ok_and(|s| s.contains("socket")) {
            return;
        }
        thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("{} never appeared", path.display());
}

fn bind(index: usize, source: &Path, read_only: bool) -> HostBind {
    HostBind {
        index,
        destination: PathBuf::from(format!("/dest{index}")),
        source: source.to_path_buf(),
        read_only,
        recursive: false,
    }
}

#[test]
#[ignore = "needs root (mount namespaces)"]
fn containers_enter_the_share_in_its_namespace_only() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    fs::create_dir(&state).unwrap();
    let rootfs = tmp.path().join("rootfs");
    fs::create_dir(&rootfs).unwrap();
    fs::write(rootfs.join("hello"), "from the host").unwrap();
    let hosts = tmp.path().join("hosts");
    fs::write(&hosts, "127.0.0.1 pod\n").unwrap();
    let config = tmp.path().join("config");
    fs::create_dir(&config).unwrap();
    fs::write(config.join("key"), "v").unwrap();

    let mut share = Share::start(
        "t",
        Layout::new(&state, &state),
        &options(fake_virtiofsd(tmp.path())),
    )
    .unwrap();
    wait_for(&tmp.path().join("args"));
    let args = fs::read_to_string(tmp.path().join("args")).unwrap();
    let export = share.layout().export.clone();
    assert!(args.contains("--fd=3"), "{args}");
    assert!(
        args.contains(&format!("--shared-dir={}", export.display())),
        "{args}"
    );
    assert!(
        args.contains("--cache=auto") && args.contains("--sandbox=namespace"),
        "{args}"
    );

    share
        .add_container(
            "c1",
            Some(&rootfs),
            &[bind(3, &hosts, false), bind(4, &config, true)],
        )
        .unwrap();
    let pid = share.virtiofsd_pid().unwrap();
    let seen = |rel: &str| PathBuf::from(format!("/proc/{pid}/root{}/{rel}", export.display()));
    assert_eq!(
        fs::read_to_string(seen("c1/rootfs/hello")).unwrap(),
        "from the host"
    );
    assert_eq!(
        fs::read_to_string(seen("c1/mounts/3")).unwrap(),
        "127.0.0.1 pod\n"
    );
    assert_eq!(fs::read_to_string(seen("c1/mounts/4/key")).unwrap(), "v");

    // What the guest writes to a writable bind or its rootfs is on the host file.
    fs::write(seen("c1/mounts/3"), "rewritten\n").unwrap();
    assert_eq!(fs::read_to_string(&hosts).unwrap(), "rewritten\n");
    fs::write(seen("c1/rootfs/new"), "x").unwrap();
    assert!(rootfs.join("new").exists());
    // Read-only stays read-only, and nothing can be created at the top of the export.
    let ro = fs::write(seen("c1/mounts/4/key"), "w").unwrap_err();
    assert_eq!(ro.raw_os_error(), Some(libc::EROFS), "{ro}");
    let top = fs::write(seen("intruder"), "w").unwrap_err();
    assert_eq!(top.raw_os_error(), Some(libc::EROFS), "{top}");

    // The host's namespace sees only empty mount points.
    let host_view = share.layout().staging.join("c1/rootfs");
    assert!(fs::read_dir(&host_view).unwrap().next().is_none());

    // Twice is an error; a missing source names the mount and changes nothing.
    assert!(matches!(
        share.add_container("c1", None, &[]),
        Err(ShareError::AlreadyShared(_))
    ));
    let missing = bind(5, &tmp.path().join("nope"), false);
    let err = share
        .add_container("c2", Some(&rootfs), &[missing])
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "mounts[5] (/dest5): source {}",
            tmp.path().join("nope").display()
        )
    );
    assert!(!share.layout().staging.join("c2").exists());

    share.remove_container("c1").unwrap();
    assert!(!seen("c1").exists());
    assert!(!share.layout().staging.join("c1").exists());
    assert!(
        rootfs.join("hello").exists(),
        "the rootfs itself is untouched"
    );
    share.remove_container("c1").unwrap();

    share.add_container("c3", Some(&rootfs), &[]).unwrap();
    share.shutdown();
    // The namespace is gone with its thread and virtiofsd: nothing is mounted anywhere, so the
    // state directory comes off without touching the rootfs.
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
    fs::remove_dir_all(&state).unwrap();
    assert!(rootfs.join("hello").exists());
}

#[test]
#[ignore = "needs root (mount namespaces)"]
fn a_missing_virtiofsd_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let err = Share::start(
        "t",
        Layout::new(tmp.path(), tmp.path()),
        &options("/nonexistent/virtiofsd".into()),
    )
    .err()
    .expect("no virtiofsd");
    assert_eq!(
        err.to_string(),
        "cannot start virtiofsd /nonexistent/virtiofsd"
    );
}

#[test]
fn virtiofsd_gets_the_export_its_socket_and_the_options() {
    let layout = Layout::new(Path::new("/run/s"), Path::new("/run/s"));
    let mut opts = options("/usr/local/lib/rust-vm/bin/virtiofsd".into());
    opts.cache = VirtiofsCache::Never;
    opts.thread_pool_size = 4;
    let cmd = virtiofsd_command(&layout, &opts);
    let args: Vec<_> = cmd
        .get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        args,
        [
            "--fd=3",
            "--shared-dir=/run/s/share/export",
            "--cache=never",
            "--sandbox=namespace",
            "--announce-submounts",
            "--xattr",
            "--thread-pool-size=4",
            "--log-level=warn",
        ]
    );
    assert_eq!(layout.socket, Path::new("/run/s/virtiofsd.sock"));
}

/// virtiofsd's own sandbox child is the init of a PID namespace of its own, which the kernel
/// protects from the SIGTERM virtiofsd gives it as its parent-death signal: it must still go
/// when the share does, before any VMM ever connected.
#[test]
#[ignore = "needs root and virtiofsd (scripts/setup.sh)"]
fn no_virtiofsd_process_outlives_the_share() {
    let tmp = tempfile::tempdir().unwrap();
    let virtiofsd = PathBuf::from(crate::config::DEFAULT_VIRTIOFSD);
    assert!(
        virtiofsd.exists(),
        "{} missing: run scripts/setup.sh",
        virtiofsd.display()
    );
    let mut opts = options(virtiofsd);
    opts.log_level = LogLevel::Info;
    let mut share = Share::start("t", Layout::new(tmp.path(), tmp.path()), &opts).unwrap();
    let export = share.layout().export.display().to_string();
    let mentioning = || {
        let mut pids = Vec::new();
        for entry in fs::read_dir("/proc").unwrap().flatten() {
            let Ok(cmdline) = fs::read(entry.path().join("cmdline")) else {
                continue;
            };
            if String::from_utf8_lossy(&cmdline).contains(&export) {
                pids.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        pids
    };
    // virtiofsd is in its sandbox, waiting for a VMM.
    let log = share.layout().log.clone();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !fs::read_to_string(&log).is_ok_and(|l| l.contains("Waiting for vhost-user socket")) {
        assert!(
            std::time::Instant::now() < deadline,
            "virtiofsd did not start: {:?}",
            fs::read_to_string(&log)
        );
        thread::sleep(std::time::Duration::from_millis(20));
    }
    thread::sleep(std::time::Duration::from_millis(200));
    share.shutdown();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !mentioning().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "virtiofsd processes left behind: {:?}",
            mentioning()
        );
        thread::sleep(std::time::Duration::from_millis(20));
    }
}
