//! `update`: change the resource limits of a running container.

use oci_spec::runtime::LinuxResources;

use super::cgroup::ApplyError;
use super::error::ContainerError;
use super::spec::{validate_resources, Capabilities};
use super::Container;

impl Container {
    pub fn update(&mut self, resources: &LinuxResources) -> Result<(), ContainerError> {
        let cg = self
            .cgroup
            .as_ref()
            .ok_or(ContainerError::CgroupsDisabled {
                id: self.id.clone(),
                what: "updating resources",
            })?;
        validate_resources(resources, Capabilities { cgroups: true })?;
        match cg.apply(resources) {
            Ok(()) => Ok(()),
            Err(ApplyError::Spec(e)) => Err(e.into()),
            Err(ApplyError::Io(e)) => Err(self.cgroup_err(e)),
        }
    }

    pub(crate) fn cgroup_err(&self, e: super::cgroup::CgroupIoError) -> ContainerError {
        ContainerError::Cgroup {
            id: self.id.clone(),
            path: e.path,
            what: e.what,
            source: e.source,
        }
    }
}
