//! Spec validation: every refusal names the field.

use std::sync::Arc;

use super::support::{spec_from, spec_json};
use crate::spec::{validate, Capabilities};
use crate::syscalls::recording::RecordingSyscalls;
use crate::{
    parse_spec_json, CgroupConfig, Container, ContainerError, CreateRequest, RootfsSource,
    RuntimeConfig, StdioSpec, DEFAULT_STEP_TIMEOUT,
};

const NO_CGROUPS: Capabilities = Capabilities { cgroups: false };
const CGROUPS: Capabilities = Capabilities { cgroups: true };

/// The field named when `edit`ed spec JSON is parsed and validated.
fn refused_field(edit: impl FnOnce(&mut serde_json::Value)) -> String {
    refused_field_with(NO_CGROUPS, edit)
}

fn refused_field_with(offer: Capabilities, edit: impl FnOnce(&mut serde_json::Value)) -> String {
    let mut v = spec_json(&["sh"]);
    edit(&mut v);
    let result = parse_spec_json(v.to_string().as_bytes()).and_then(|spec| validate(&spec, offer));
    match result {
        Err(e) => e.field,
        Ok(()) => panic!("spec was accepted: {v}"),
    }
}

#[test]
fn the_base_spec_is_valid() {
    validate(&spec_from(&spec_json(&["sh"])), NO_CGROUPS).expect("valid");
}

#[test]
fn missing_or_empty_args_are_refused() {
    let f = refused_field(|v| {
        v["process"]
            .as_object_mut()
            .expect("process")
            .remove("args");
    });
    assert_eq!(f, "process.args");
    assert_eq!(
        refused_field(|v| v["process"]["args"] = serde_json::json!([])),
        "process.args"
    );
    let f = refused_field(|v| {
        v["process"].as_object_mut().expect("process").remove("cwd");
    });
    assert_eq!(f, "process.cwd");
    assert_eq!(
        refused_field(|v| v["process"]["args"] = serde_json::json!([""])),
        "process.args[0]"
    );
}

#[test]
fn a_relative_root_path_is_refused() {
    assert_eq!(
        refused_field(|v| v["root"]["path"] = "rootfs".into()),
        "root.path"
    );
    let f = refused_field(|v| {
        v["root"].as_object_mut().expect("root").remove("path");
    });
    assert_eq!(f, "root.path");
    let f = refused_field(|v| {
        v.as_object_mut().expect("spec").remove("root");
    });
    assert_eq!(f, "root");
}

#[test]
fn an_unknown_namespace_type_is_refused() {
    let f = refused_field(|v| {
        v["linux"]["namespaces"][1] = serde_json::json!({"type": "bogus"});
    });
    assert_eq!(f, "linux.namespaces[1].type");
    // runc's "net" shorthand is not OCI.
    let f = refused_field(|v| {
        v["linux"]["namespaces"][4] = serde_json::json!({"type": "net"});
    });
    assert_eq!(f, "linux.namespaces[4].type");
}

#[test]
fn duplicate_and_time_namespaces_are_refused() {
    let f = refused_field(|v| {
        v["linux"]["namespaces"][1] = serde_json::json!({"type": "pid"});
    });
    assert_eq!(f, "linux.namespaces[1].type");
    let f = refused_field(|v| {
        v["linux"]["namespaces"][1] = serde_json::json!({"type": "time"});
    });
    assert_eq!(f, "linux.namespaces[1].type");
    let f = refused_field(|v| {
        v["linux"]["namespaces"][0] = serde_json::json!({"type": "network", "path": "netns"});
    });
    assert_eq!(f, "linux.namespaces[0].path");
}

#[test]
fn a_new_mount_namespace_is_required() {
    let f = refused_field(|v| {
        v["linux"]["namespaces"]
            .as_array_mut()
            .expect("ns")
            .remove(1);
    });
    assert_eq!(f, "linux.namespaces");
    let f = refused_field(|v| {
        v["linux"]["namespaces"][1] =
            serde_json::json!({"type": "mount", "path": "/proc/1/ns/mnt"});
    });
    assert_eq!(f, "linux.namespaces[1].path");
}

#[test]
fn a_mount_without_destination_is_refused() {
    let f = refused_field(|v| {
        v["mounts"][2]
            .as_object_mut()
            .expect("mount")
            .remove("destination");
    });
    assert_eq!(f, "mounts[2].destination");
    assert_eq!(
        refused_field(|v| v["mounts"][0]["destination"] = "".into()),
        "mounts[0].destination"
    );
    assert_eq!(
        refused_field(|v| v["mounts"][1]["destination"] = "dev".into()),
        "mounts[1].destination"
    );
}

#[test]
fn bind_mounts_need_an_absolute_source() {
    let f = refused_field(|v| {
        v["mounts"][0] = serde_json::json!({"destination": "/data", "type": "bind", "source": "data", "options": ["rbind"]});
    });
    assert_eq!(f, "mounts[0].source");
    let f = refused_field(|v| {
        v["mounts"][0] = serde_json::json!({"destination": "/data", "options": ["bind"]});
    });
    assert_eq!(f, "mounts[0].source");
    let f = refused_field(|v| {
        v["mounts"][0] = serde_json::json!({"destination": "/data", "source": "x"});
    });
    assert_eq!(f, "mounts[0].type");
    let f = refused_field(|v| {
        v["mounts"][0]["options"] = serde_json::json!(["remount"]);
    });
    assert_eq!(f, "mounts[0].options");
}

#[test]
fn id_mappings_need_a_user_namespace_and_vice_versa() {
    let f = refused_field(|v| {
        v["linux"]["uidMappings"] =
            serde_json::json!([{"containerID": 0, "hostID": 1000, "size": 1}]);
    });
    assert_eq!(f, "linux.uidMappings");
    let f = refused_field(|v| {
        v["linux"]["gidMappings"] =
            serde_json::json!([{"containerID": 0, "hostID": 1000, "size": 1}]);
    });
    assert_eq!(f, "linux.gidMappings");
    let f = refused_field(|v| {
        v["linux"]["namespaces"]
            .as_array_mut()
            .expect("ns")
            .push(serde_json::json!({"type": "user"}));
    });
    assert_eq!(f, "linux.uidMappings");
    let f = refused_field(|v| {
        v["linux"]["namespaces"]
            .as_array_mut()
            .expect("ns")
            .push(serde_json::json!({"type": "user"}));
        v["linux"]["uidMappings"] =
            serde_json::json!([{"containerID": 0, "hostID": 1000, "size": 0}]);
        v["linux"]["gidMappings"] =
            serde_json::json!([{"containerID": 0, "hostID": 1000, "size": 1}]);
    });
    assert_eq!(f, "linux.uidMappings[0].size");
}

#[test]
fn a_hostname_needs_a_uts_namespace() {
    let f = refused_field(|v| {
        v["linux"]["namespaces"]
            .as_array_mut()
            .expect("ns")
            .remove(2);
    });
    assert_eq!(f, "hostname");
}

#[test]
fn process_fields_are_checked() {
    assert_eq!(
        refused_field(|v| v["process"]["cwd"] = "tmp".into()),
        "process.cwd"
    );
    assert_eq!(
        refused_field(|v| v["process"]["env"] = serde_json::json!(["PATH=/bin", "JUNK"])),
        "process.env[1]"
    );
    let f = refused_field(|v| {
        v["process"]["rlimits"] =
            serde_json::json!([{"type": "RLIMIT_NOFILE", "soft": 2048, "hard": 1024}]);
    });
    assert_eq!(f, "process.rlimits[0]");
    let f = refused_field(|v| {
        v["process"]["rlimits"] = serde_json::json!([
            {"type": "RLIMIT_NOFILE", "soft": 1, "hard": 2},
            {"type": "RLIMIT_NOFILE", "soft": 1, "hard": 2},
        ]);
    });
    assert_eq!(f, "process.rlimits[1].type");
}

#[test]
fn seccomp_problems_name_the_rule() {
    let f = refused_field(|v| {
        v["linux"]["seccomp"] = serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["getpid", "not_a_syscall"], "action": "SCMP_ACT_ERRNO"}],
        });
    });
    assert_eq!(f, "linux.seccomp.syscalls[0].names[1]");
    let f = refused_field(|v| {
        v["linux"]["seccomp"] = serde_json::json!({"defaultAction": "SCMP_ACT_NOTIFY"});
    });
    assert_eq!(f, "linux.seccomp.defaultAction");
}

#[test]
fn limits_without_cgroups_are_refused_not_ignored() {
    let edit = |v: &mut serde_json::Value| {
        v["linux"]["resources"] = serde_json::json!({"memory": {"limit": 1048576}});
    };
    assert_eq!(refused_field(edit), "linux.resources.memory");
    let mut v = spec_json(&["sh"]);
    edit(&mut v);
    validate(&spec_from(&v), CGROUPS).expect("fine with cgroups");
    let f = refused_field_with(CGROUPS, |v| {
        v["linux"]["resources"] = serde_json::json!({"blockIO": {"weight": 10}});
    });
    assert_eq!(f, "linux.resources.blockIO");
}

#[test]
fn other_unsupported_fields_are_refused() {
    let f =
        refused_field(|v| v["hooks"] = serde_json::json!({"prestart": [{"path": "/bin/true"}]}));
    assert_eq!(f, "hooks");
    let f = refused_field(|v| v["linux"]["sysctl"] = serde_json::json!({"../x": "1"}));
    assert_eq!(f, "linux.sysctl.../x");
    let f = refused_field(|v| v["linux"]["maskedPaths"] = serde_json::json!(["proc/kcore"]));
    assert_eq!(f, "linux.maskedPaths[0]");
    let f = refused_field(|v| v["linux"]["rootfsPropagation"] = "sideways".into());
    assert_eq!(f, "linux.rootfsPropagation");
}

fn create_refusal(id: &str, v: serde_json::Value, stdio: StdioSpec) -> ContainerError {
    let sys = Arc::new(RecordingSyscalls::new());
    let err = Container::create_with_config(
        CreateRequest {
            id: id.into(),
            spec: spec_from(&v),
            rootfs: RootfsSource::Directory("/nonexistent".into()),
            stdio,
        },
        sys.clone(),
        RuntimeConfig {
            cgroups: CgroupConfig::Disabled,
            state_dir: "/nonexistent".into(),
            step_timeout: DEFAULT_STEP_TIMEOUT,
        },
    )
    .expect_err("refused");
    assert!(
        sys.calls().is_empty(),
        "nothing may be touched before validation passes"
    );
    err
}

fn devnull_pipes() -> StdioSpec {
    let f = || std::fs::File::open("/dev/null").expect("/dev/null").into();
    StdioSpec::Pipes {
        stdin: None,
        stdout: f(),
        stderr: f(),
    }
}

#[test]
fn create_refuses_bad_ids_and_terminal_mismatches_before_touching_anything() {
    let e = create_refusal("../escape", spec_json(&["sh"]), devnull_pipes());
    assert!(matches!(e, ContainerError::InvalidId { .. }), "{e}");
    let mut v = spec_json(&["sh"]);
    v["process"]["terminal"] = true.into();
    let e = create_refusal("tty", v, devnull_pipes());
    match e {
        ContainerError::InvalidSpec(s) => assert_eq!(s.field, "process.terminal"),
        other => panic!("unexpected {other}"),
    }
    let e = create_refusal("rel", spec_json(&["sh"]), devnull_pipes());
    assert!(e.to_string().contains("/nonexistent"), "{e}");
}
