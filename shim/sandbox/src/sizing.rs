//! Pod sizing: a pod's VM gets the CPU and memory its containers may use, from the annotations
//! containerd's CRI plugin puts on the pod's sandbox container (the sums of the containers'
//! limits the kubelet passes in the PodSandboxConfig, Kubernetes 1.23 and later), on top of the
//! runtime's own `vcpus` and `mem_mib`, which are then the VM's overhead: the guest kernel, the
//! agent, the page cache. `pod_max_vcpus` and `pod_max_mem_mib` bound the result.

use std::collections::HashMap;

/// The CFS period (µs) of the pod's CPU limit.
pub const CPU_PERIOD: &str = "io.kubernetes.cri.sandbox-cpu-period";
/// The CFS quota (µs per period) of the pod's CPU limit; 0 or absent: none.
pub const CPU_QUOTA: &str = "io.kubernetes.cri.sandbox-cpu-quota";
/// The pod's memory limit in bytes; 0 or absent: none.
pub const MEMORY: &str = "io.kubernetes.cri.sandbox-memory";

const MIB: u64 = 1024 * 1024;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("annotation {key} is {value:?}: {reason}")]
pub struct SizingError {
    pub key: &'static str,
    pub value: String,
    pub reason: &'static str,
}

/// What a pod's containers may use together.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PodResources {
    /// CPUs' worth of quota, rounded up.
    pub cpus: u32,
    /// Bytes.
    pub memory: u64,
}

fn number(annotations: &HashMap<String, String>, key: &'static str) -> Result<i64, SizingError> {
    match annotations.get(key) {
        None => Ok(0),
        Some(value) => value.trim().parse::<i64>().map_err(|_| SizingError {
            key,
            value: value.clone(),
            reason: "not an integer",
        }),
    }
}

impl PodResources {
    /// Reads the CRI plugin's annotations; absent ones mean "no limit". A limit the kubelet
    /// could not have sent (negative memory, a quota without a period) is an error.
    pub fn from_annotations(annotations: &HashMap<String, String>) -> Result<Self, SizingError> {
        let quota = number(annotations, CPU_QUOTA)?;
        let period = number(annotations, CPU_PERIOD)?;
        let memory = number(annotations, MEMORY)?;
        let bad = |key, value: i64, reason| SizingError {
            key,
            value: value.to_string(),
            reason,
        };
        if memory < 0 {
            return Err(bad(MEMORY, memory, "negative"));
        }
        if period < 0 {
            return Err(bad(CPU_PERIOD, period, "negative"));
        }
        // A negative quota is "unlimited" in CFS terms.
        let cpus = if quota > 0 {
            if period == 0 {
                return Err(bad(CPU_PERIOD, period, "a CPU quota needs a period"));
            }
            u32::try_from((quota as u64).div_ceil(period as u64)).unwrap_or(u32::MAX)
        } else {
            0
        };
        Ok(PodResources {
            cpus,
            memory: memory as u64,
        })
    }
}

/// The VM's size for a pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VmSize {
    pub vcpus: u32,
    pub mem_mib: u64,
    /// Whether a bound cut what the pod asked for.
    pub capped: bool,
}

/// `base` (the runtime's `vcpus` and `mem_mib`) plus what the pod asks, within the bounds.
pub fn vm_size(
    base_vcpus: u32,
    base_mem_mib: u64,
    max_vcpus: u32,
    max_mem_mib: u64,
    pod: PodResources,
) -> VmSize {
    let want_vcpus = base_vcpus.saturating_add(pod.cpus);
    let want_mem = base_mem_mib.saturating_add(pod.memory.div_ceil(MIB));
    // The bounds never take the VM below its base.
    let vcpus = want_vcpus.min(max_vcpus.max(base_vcpus));
    let mem_mib = want_mem.min(max_mem_mib.max(base_mem_mib));
    VmSize {
        vcpus,
        mem_mib,
        capped: vcpus < want_vcpus || mem_mib < want_mem,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn annotations(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn quota_over_period_rounds_up_to_whole_cpus() {
        let r = PodResources::from_annotations(&annotations(&[
            (CPU_QUOTA, "150000"),
            (CPU_PERIOD, "100000"),
            (MEMORY, "268435456"),
        ]))
        .unwrap();
        assert_eq!(
            r,
            PodResources {
                cpus: 2,
                memory: 256 * MIB
            }
        );
    }

    #[test]
    fn absent_or_zero_means_no_limit() {
        assert_eq!(
            PodResources::from_annotations(&HashMap::new()).unwrap(),
            PodResources::default()
        );
        // What the CRI plugin writes for a pod without limits.
        let r = PodResources::from_annotations(&annotations(&[
            (CPU_QUOTA, "0"),
            (CPU_PERIOD, "100000"),
            (MEMORY, "0"),
        ]))
        .unwrap();
        assert_eq!(r, PodResources::default());
        let unlimited = PodResources::from_annotations(&annotations(&[(CPU_QUOTA, "-1")])).unwrap();
        assert_eq!(unlimited.cpus, 0);
    }

    #[test]
    fn bad_values_name_the_annotation() {
        let err = PodResources::from_annotations(&annotations(&[(MEMORY, "1Gi")])).unwrap_err();
        assert_eq!(err.key, MEMORY);
        assert!(err.to_string().contains("\"1Gi\""), "{err}");
        let err = PodResources::from_annotations(&annotations(&[(MEMORY, "-5")])).unwrap_err();
        assert_eq!(err.reason, "negative");
        let err =
            PodResources::from_annotations(&annotations(&[(CPU_QUOTA, "50000")])).unwrap_err();
        assert_eq!(err.key, CPU_PERIOD);
    }

    #[test]
    fn the_vm_is_the_base_plus_the_pod_within_the_bounds() {
        let pod = PodResources {
            cpus: 2,
            memory: 300 * MIB + 1,
        };
        assert_eq!(
            vm_size(1, 256, 8, 4096, pod),
            VmSize {
                vcpus: 3,
                mem_mib: 557,
                capped: false
            }
        );
        let capped = vm_size(1, 256, 2, 512, pod);
        assert_eq!(
            (capped.vcpus, capped.mem_mib, capped.capped),
            (2, 512, true)
        );
        // A bound below the base keeps the base.
        let base = vm_size(2, 256, 1, 128, PodResources::default());
        assert_eq!((base.vcpus, base.mem_mib, base.capped), (2, 256, false));
    }
}
