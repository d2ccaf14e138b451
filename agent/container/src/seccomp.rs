//! `linux.seccomp` compiled with libseccomp. The filter is built in the agent before the
//! container process exists (so a bad profile is a create error naming the field) and loaded
//! by the container process right before exec.

use std::str::FromStr;

use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};
use oci_spec::runtime::{LinuxSeccomp, LinuxSeccompAction, LinuxSeccompOperator};

use super::error::SpecError;

fn action(a: LinuxSeccompAction, errno: Option<u32>, field: &str) -> Result<ScmpAction, SpecError> {
    Ok(match a {
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            ScmpAction::KillThread
        }
        LinuxSeccompAction::ScmpActKillProcess => ScmpAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => ScmpAction::Trap,
        LinuxSeccompAction::ScmpActErrno => {
            ScmpAction::Errno(errno.map_or(libc::EPERM, |e| e as i32))
        }
        LinuxSeccompAction::ScmpActTrace => {
            ScmpAction::Trace(errno.map_or(libc::EPERM as u16, |e| e as u16))
        }
        LinuxSeccompAction::ScmpActLog => ScmpAction::Log,
        LinuxSeccompAction::ScmpActAllow => ScmpAction::Allow,
        LinuxSeccompAction::ScmpActNotify => {
            return Err(SpecError::new(
                field,
                "SCMP_ACT_NOTIFY needs a listener, which this agent does not provide",
            ))
        }
    })
}

fn op(o: LinuxSeccompOperator, value_two: Option<u64>) -> ScmpCompareOp {
    match o {
        LinuxSeccompOperator::ScmpCmpNe => ScmpCompareOp::NotEqual,
        LinuxSeccompOperator::ScmpCmpLt => ScmpCompareOp::Less,
        LinuxSeccompOperator::ScmpCmpLe => ScmpCompareOp::LessOrEqual,
        LinuxSeccompOperator::ScmpCmpEq => ScmpCompareOp::Equal,
        LinuxSeccompOperator::ScmpCmpGe => ScmpCompareOp::GreaterEqual,
        LinuxSeccompOperator::ScmpCmpGt => ScmpCompareOp::Greater,
        LinuxSeccompOperator::ScmpCmpMaskedEq => ScmpCompareOp::MaskedEqual(value_two.unwrap_or(0)),
    }
}

fn lib_err(field: &str, e: libseccomp::error::SeccompError) -> SpecError {
    SpecError::new(field, format!("libseccomp: {e}"))
}

/// Builds the filter. Syscall names unknown to libseccomp on this architecture are refused.
pub fn compile(s: &LinuxSeccomp) -> Result<ScmpFilterContext, SpecError> {
    let default = action(
        s.default_action(),
        s.default_errno_ret(),
        "linux.seccomp.defaultAction",
    )?;
    let mut ctx = ScmpFilterContext::new(default).map_err(|e| lib_err("linux.seccomp", e))?;
    if s.listener_path().is_some() {
        return Err(SpecError::new(
            "linux.seccomp.listenerPath",
            "seccomp notify listeners are not supported",
        ));
    }
    for (i, a) in s.architectures().iter().flatten().enumerate() {
        let field = format!("linux.seccomp.architectures[{i}]");
        let arch = ScmpArch::from_str(&a.to_string()).map_err(|e| lib_err(&field, e))?;
        if arch != ScmpArch::native() {
            ctx.add_arch(arch).map_err(|e| lib_err(&field, e))?;
        }
    }
    // The kernel refuses a filter that is not protected by no_new_privs or CAP_SYS_ADMIN; the
    // init process loads it in the right order itself.
    ctx.set_ctl_nnp(false)
        .map_err(|e| lib_err("linux.seccomp", e))?;
    for (i, rule) in s.syscalls().iter().flatten().enumerate() {
        let field = format!("linux.seccomp.syscalls[{i}]");
        let act = action(rule.action(), rule.errno_ret(), &format!("{field}.action"))?;
        if act == default {
            continue;
        }
        let mut conds = Vec::new();
        for (j, arg) in rule.args().iter().flatten().enumerate() {
            if arg.index() > 5 {
                return Err(SpecError::new(
                    format!("{field}.args[{j}].index"),
                    format!("{} is above 5", arg.index()),
                ));
            }
            conds.push(ScmpArgCompare::new(
                arg.index() as u32,
                op(arg.op(), Some(arg.value())),
                if arg.op() == LinuxSeccompOperator::ScmpCmpMaskedEq {
                    arg.value_two().unwrap_or(0)
                } else {
                    arg.value()
                },
            ));
        }
        // Conditions on the same argument cannot all hold at once (libseccomp refuses such a
        // rule); as runc does, they are alternatives: one rule per condition.
        let indexes: Vec<usize> = rule.args().iter().flatten().map(|a| a.index()).collect();
        let repeated = (1..indexes.len()).any(|k| indexes[..k].contains(&indexes[k]));
        let cond_sets: Vec<Vec<ScmpArgCompare>> = if repeated {
            conds.into_iter().map(|c| vec![c]).collect()
        } else {
            vec![conds]
        };
        for (j, name) in rule.names().iter().enumerate() {
            let nfield = format!("{field}.names[{j}]");
            let sc = ScmpSyscall::from_name(name)
                .map_err(|_| SpecError::new(&nfield, format!("unknown syscall {name:?}")))?;
            for conds in &cond_sets {
                if conds.is_empty() {
                    ctx.add_rule(act, sc).map_err(|e| lib_err(&nfield, e))?;
                } else {
                    ctx.add_rule_conditional(act, sc, conds)
                        .map_err(|e| lib_err(&nfield, e))?;
                }
            }
        }
    }
    Ok(ctx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{LinuxSeccompBuilder, LinuxSyscallBuilder};

    fn profile(names: &[&str]) -> LinuxSeccomp {
        LinuxSeccompBuilder::default()
            .default_action(LinuxSeccompAction::ScmpActAllow)
            .syscalls(vec![LinuxSyscallBuilder::default()
                .names(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .action(LinuxSeccompAction::ScmpActErrno)
                .errno_ret(1u32)
                .build()
                .expect("rule")])
            .build()
            .expect("profile")
    }

    #[test]
    fn a_valid_profile_compiles() {
        compile(&profile(&["mkdir", "chroot"])).expect("compiles");
    }

    #[test]
    fn conditions_on_one_argument_are_alternatives() {
        use oci_spec::runtime::LinuxSeccompArgBuilder;
        // Docker's and runtime-tools' default profiles allow personality(0), (8), (0xffffffff).
        let args = [0u64, 8, 0xffff_ffff]
            .iter()
            .map(|v| {
                LinuxSeccompArgBuilder::default()
                    .index(0usize)
                    .value(*v)
                    .op(LinuxSeccompOperator::ScmpCmpEq)
                    .build()
                    .expect("arg")
            })
            .collect::<Vec<_>>();
        let s = LinuxSeccompBuilder::default()
            .default_action(LinuxSeccompAction::ScmpActErrno)
            .syscalls(vec![LinuxSyscallBuilder::default()
                .names(vec!["personality".to_string()])
                .action(LinuxSeccompAction::ScmpActAllow)
                .args(args)
                .build()
                .expect("rule")])
            .build()
            .expect("profile");
        compile(&s).expect("compiles");
    }

    #[test]
    fn an_unknown_syscall_names_the_field() {
        let e = compile(&profile(&["mkdir", "no_such_call"])).expect_err("refused");
        assert_eq!(e.field, "linux.seccomp.syscalls[0].names[1]");
    }
}
