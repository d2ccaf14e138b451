//! Reading and validating OCI runtime specs. Every refusal names the field (OCI JSON spelling).

use std::collections::HashSet;
use std::path::Path;

use oci_spec::runtime::{LinuxNamespaceType, LinuxResources, Spec};

use super::error::SpecError;

/// OCI's spelling of namespace types.
const KNOWN_NAMESPACES: &[&str] = &[
    "pid", "network", "mount", "ipc", "uts", "user", "cgroup", "time",
];

/// Parses a spec from JSON. Fields whose problems serde would only report vaguely (an unknown
/// namespace type, a mount without a destination) are checked first so the error names them.
pub fn parse_spec_json(json: &[u8]) -> Result<Spec, SpecError> {
    let value: serde_json::Value =
        serde_json::from_slice(json).map_err(|e| SpecError::new("(spec)", e.to_string()))?;
    precheck_json(&value)?;
    serde_json::from_value(value).map_err(|e| SpecError::new("(spec)", e.to_string()))
}

fn precheck_json(value: &serde_json::Value) -> Result<(), SpecError> {
    if let Some(namespaces) = value
        .pointer("/linux/namespaces")
        .and_then(|v| v.as_array())
    {
        for (i, ns) in namespaces.iter().enumerate() {
            let field = format!("linux.namespaces[{i}].type");
            match ns.get("type").and_then(|t| t.as_str()) {
                None => return Err(SpecError::new(field, "missing")),
                Some(t) if !KNOWN_NAMESPACES.contains(&t) => {
                    return Err(SpecError::new(
                        field,
                        format!("unknown namespace type {t:?}"),
                    ))
                }
                Some(_) => {}
            }
        }
    }
    if let Some(mounts) = value.get("mounts").and_then(|v| v.as_array()) {
        for (i, m) in mounts.iter().enumerate() {
            if m.get("destination").and_then(|d| d.as_str()).is_none() {
                return Err(SpecError::new(
                    format!("mounts[{i}].destination"),
                    "missing",
                ));
            }
        }
    }
    if let Some(process) = value.get("process") {
        for field in ["args", "cwd", "user"] {
            if process.get(field).is_none() {
                return Err(SpecError::new(format!("process.{field}"), "missing"));
            }
        }
    }
    Ok(())
}

/// What the agent can offer to a spec.
#[derive(Debug, Clone, Copy)]
pub struct Capabilities {
    pub cgroups: bool,
}

/// Checks everything that can be checked before any resource is touched.
pub fn validate(spec: &Spec, offer: Capabilities) -> Result<(), SpecError> {
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| SpecError::new("process", "missing"))?;
    validate_process(process, "process")?;

    let root = spec
        .root()
        .as_ref()
        .ok_or_else(|| SpecError::new("root", "missing"))?;
    if root.path().as_os_str().is_empty() {
        return Err(SpecError::new("root.path", "missing"));
    }
    if !root.path().is_absolute() {
        return Err(SpecError::new(
            "root.path",
            format!("{} is not an absolute path", root.path().display()),
        ));
    }

    for (i, m) in spec.mounts().iter().flatten().enumerate() {
        let dest = m.destination();
        if dest.as_os_str().is_empty() {
            return Err(SpecError::new(format!("mounts[{i}].destination"), "empty"));
        }
        if !dest.is_absolute() {
            return Err(SpecError::new(
                format!("mounts[{i}].destination"),
                format!("{} is not an absolute path", dest.display()),
            ));
        }
        mount_options::parse_options(m.options().as_deref().unwrap_or_default())
            .map_err(|reason| SpecError::new(format!("mounts[{i}].options"), reason))?;
        let is_bind = m.typ().as_deref() == Some("bind")
            || m.options()
                .iter()
                .flatten()
                .any(|o| o == "bind" || o == "rbind");
        if is_bind {
            match m.source() {
                None => {
                    return Err(SpecError::new(
                        format!("mounts[{i}].source"),
                        "a bind mount needs a source",
                    ))
                }
                Some(s) if !s.is_absolute() => {
                    return Err(SpecError::new(
                        format!("mounts[{i}].source"),
                        format!("{} is not an absolute path", s.display()),
                    ))
                }
                Some(_) => {}
            }
        } else if m.typ().is_none() {
            return Err(SpecError::new(
                format!("mounts[{i}].type"),
                "missing (only bind mounts may omit it)",
            ));
        }
        if m.uid_mappings().is_some() || m.gid_mappings().is_some() {
            return Err(SpecError::new(
                format!("mounts[{i}].uidMappings"),
                "id-mapped mounts are not supported",
            ));
        }
    }

    let linux = spec.linux().as_ref();
    let namespaces = linux.and_then(|l| l.namespaces().as_ref());
    let mut seen = HashSet::new();
    let has = |t: LinuxNamespaceType| namespaces.is_some_and(|v| v.iter().any(|n| n.typ() == t));
    for (i, ns) in namespaces.into_iter().flatten().enumerate() {
        let field = format!("linux.namespaces[{i}]");
        if !seen.insert(ns.typ()) {
            return Err(SpecError::new(
                format!("{field}.type"),
                format!("namespace {} listed twice", ns.typ()),
            ));
        }
        if ns.typ() == LinuxNamespaceType::Time {
            return Err(SpecError::new(
                format!("{field}.type"),
                "time namespaces are not supported",
            ));
        }
        if let Some(p) = ns.path() {
            if !p.is_absolute() {
                return Err(SpecError::new(
                    format!("{field}.path"),
                    format!("{} is not an absolute path", p.display()),
                ));
            }
        }
    }
    // Without its own mount namespace the rootfs setup (and pivot_root) would happen in the
    // agent's namespace.
    match namespaces
        .into_iter()
        .flatten()
        .position(|n| n.typ() == LinuxNamespaceType::Mount)
    {
        None => {
            return Err(SpecError::new(
                "linux.namespaces",
                "a mount namespace is required",
            ))
        }
        Some(i)
            if namespaces
                .into_iter()
                .flatten()
                .nth(i)
                .is_some_and(|n| n.path().is_some()) =>
        {
            return Err(SpecError::new(
                format!("linux.namespaces[{i}].path"),
                "joining an existing mount namespace is not supported",
            ))
        }
        Some(_) => {}
    }
    let user_ns = has(LinuxNamespaceType::User);
    let new_user_ns = namespaces.is_some_and(|v| {
        v.iter()
            .any(|n| n.typ() == LinuxNamespaceType::User && n.path().is_none())
    });
    if let Some(l) = linux {
        for (name, maps) in [
            ("uidMappings", l.uid_mappings()),
            ("gidMappings", l.gid_mappings()),
        ] {
            let maps = maps.as_deref().unwrap_or_default();
            if !maps.is_empty() && !user_ns {
                return Err(SpecError::new(
                    format!("linux.{name}"),
                    "id mappings need a user namespace in linux.namespaces",
                ));
            }
            if new_user_ns && maps.is_empty() {
                return Err(SpecError::new(
                    format!("linux.{name}"),
                    "a new user namespace needs at least one mapping",
                ));
            }
            for (i, m) in maps.iter().enumerate() {
                if m.size() == 0 {
                    return Err(SpecError::new(format!("linux.{name}[{i}].size"), "is 0"));
                }
            }
        }
        for (key, _) in l.sysctl().iter().flatten() {
            if key.is_empty()
                || key.contains('/')
                || key.split('.').any(|p| p.is_empty() || p == "..")
            {
                return Err(SpecError::new(
                    format!("linux.sysctl.{key}"),
                    "not a valid sysctl name",
                ));
            }
        }
        for (name, paths) in [
            ("maskedPaths", l.masked_paths()),
            ("readonlyPaths", l.readonly_paths()),
        ] {
            for (i, p) in paths.iter().flatten().enumerate() {
                if !Path::new(p).is_absolute() {
                    return Err(SpecError::new(
                        format!("linux.{name}[{i}]"),
                        format!("{p} is not an absolute path"),
                    ));
                }
            }
        }
        for (i, d) in l.devices().iter().flatten().enumerate() {
            if !d.path().is_absolute() || !d.path().starts_with("/dev") {
                return Err(SpecError::new(
                    format!("linux.devices[{i}].path"),
                    format!("{} is not under /dev", d.path().display()),
                ));
            }
        }
        if let Some(p) = l.rootfs_propagation() {
            if mount_options::propagation_flags(p).is_none() {
                return Err(SpecError::new(
                    "linux.rootfsPropagation",
                    format!("unknown propagation {p:?}"),
                ));
            }
        }
        if let Some(r) = l.resources() {
            validate_resources(r, offer)?;
        }
        if l.intel_rdt().is_some() {
            return Err(SpecError::new("linux.intelRdt", "not supported"));
        }
        if l.personality().is_some() {
            return Err(SpecError::new("linux.personality", "not supported"));
        }
        if l.time_offsets().is_some() {
            return Err(SpecError::new("linux.timeOffsets", "not supported"));
        }
        if l.memory_policy().is_some() {
            return Err(SpecError::new("linux.memoryPolicy", "not supported"));
        }
        if let Some(cg) = l.cgroups_path() {
            let bad = cg
                .components()
                .any(|c| matches!(c, std::path::Component::ParentDir));
            if bad {
                return Err(SpecError::new(
                    "linux.cgroupsPath",
                    format!("{} must not contain ..", cg.display()),
                ));
            }
        }
        if let Some(seccomp) = l.seccomp() {
            super::seccomp::compile(seccomp)?;
        }
    }
    if spec.hostname().as_deref().is_some_and(|h| !h.is_empty()) && !has(LinuxNamespaceType::Uts) {
        return Err(SpecError::new(
            "hostname",
            "setting a hostname needs a uts namespace in linux.namespaces",
        ));
    }
    if spec.domainname().as_deref().is_some_and(|h| !h.is_empty()) && !has(LinuxNamespaceType::Uts)
    {
        return Err(SpecError::new(
            "domainname",
            "setting a domainname needs a uts namespace in linux.namespaces",
        ));
    }
    if spec.hooks().is_some() {
        return Err(SpecError::new(
            "hooks",
            "hooks are not supported inside the VM",
        ));
    }
    Ok(())
}

/// Checks a process (the container's or an exec'd one). `prefix` is its JSON path.
pub fn validate_process(
    process: &oci_spec::runtime::Process,
    prefix: &str,
) -> Result<(), SpecError> {
    match process.args() {
        None => return Err(SpecError::new(format!("{prefix}.args"), "missing")),
        Some(a) if a.is_empty() => return Err(SpecError::new(format!("{prefix}.args"), "empty")),
        Some(a) if a[0].is_empty() => {
            return Err(SpecError::new(
                format!("{prefix}.args[0]"),
                "empty program name",
            ))
        }
        Some(_) => {}
    }
    if !process.cwd().is_absolute() {
        return Err(SpecError::new(
            format!("{prefix}.cwd"),
            format!("{} is not an absolute path", process.cwd().display()),
        ));
    }
    for (i, e) in process.env().iter().flatten().enumerate() {
        if !e.contains('=') || e.starts_with('=') {
            return Err(SpecError::new(
                format!("{prefix}.env[{i}]"),
                format!("{e:?} is not NAME=VALUE"),
            ));
        }
        if e.contains('\0') {
            return Err(SpecError::new(format!("{prefix}.env[{i}]"), "contains NUL"));
        }
    }
    for (i, a) in process.args().iter().flatten().enumerate() {
        if a.contains('\0') {
            return Err(SpecError::new(
                format!("{prefix}.args[{i}]"),
                "contains NUL",
            ));
        }
    }
    let mut kinds = Vec::new();
    for (i, r) in process.rlimits().iter().flatten().enumerate() {
        if kinds.contains(&r.typ()) {
            return Err(SpecError::new(
                format!("{prefix}.rlimits[{i}].type"),
                format!("{} listed twice", r.typ()),
            ));
        }
        kinds.push(r.typ());
        if r.soft() > r.hard() {
            return Err(SpecError::new(
                format!("{prefix}.rlimits[{i}]"),
                format!("soft limit {} is above hard limit {}", r.soft(), r.hard()),
            ));
        }
    }
    if process.io_priority().is_some() {
        return Err(SpecError::new(
            format!("{prefix}.ioPriority"),
            "not supported",
        ));
    }
    if process.scheduler().is_some() {
        return Err(SpecError::new(
            format!("{prefix}.scheduler"),
            "not supported",
        ));
    }
    if process.exec_cpu_affinity().is_some() {
        return Err(SpecError::new(
            format!("{prefix}.execCPUAffinity"),
            "not supported",
        ));
    }
    Ok(())
}

/// Resources: only what cgroup v2 here implements; with cgroups off, no limit at all.
pub fn validate_resources(r: &LinuxResources, offer: Capabilities) -> Result<(), SpecError> {
    let limits_asked = [
        ("linux.resources.memory", r.memory().is_some()),
        ("linux.resources.cpu", r.cpu().is_some()),
        ("linux.resources.pids", r.pids().is_some()),
        (
            "linux.resources.unified",
            r.unified().as_ref().is_some_and(|u| !u.is_empty()),
        ),
    ];
    if !offer.cgroups {
        if let Some((field, _)) = limits_asked.iter().find(|(_, asked)| *asked) {
            return Err(SpecError::new(
                *field,
                "resource limits need cgroups, which are disabled in this agent",
            ));
        }
    }
    let unsupported = [
        ("linux.resources.blockIO", r.block_io().is_some()),
        (
            "linux.resources.hugepageLimits",
            r.hugepage_limits().as_ref().is_some_and(|h| !h.is_empty()),
        ),
        ("linux.resources.network", r.network().is_some()),
        (
            "linux.resources.rdma",
            r.rdma().as_ref().is_some_and(|h| !h.is_empty()),
        ),
    ];
    if let Some((field, _)) = unsupported.iter().find(|(_, set)| *set) {
        return Err(SpecError::new(*field, "not supported by this agent"));
    }
    if let Some(list) = r.devices() {
        super::devices::rules_from_spec(list, super::cgroup::DEVICES_FIELD)?;
    }
    super::cgroup::resource_writes(r).map(|_| ())
}
