//! Guest kernel command lines.

/// Every guest of ours: the serial console, reboot through the keyboard controller (our i8042
/// resets the VM), and `i8042.*` options that spare the guest's driver its probe time-outs (our
/// controller has no keyboard or mouse behind it).
pub const BASE_CMDLINE: &str = "console=ttyS0 reboot=k i8042.noaux i8042.nomux i8042.dumbkbd";

/// What the VMM passes when the configuration names no command line: the base, a guest that
/// panics reboots (so the VM ends) and loads no modules.
pub const DEFAULT_CMDLINE: &str =
    "console=ttyS0 reboot=k i8042.noaux i8042.nomux i8042.dumbkbd panic=1 nomodule";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_extends_the_base() {
        assert!(DEFAULT_CMDLINE.starts_with(BASE_CMDLINE));
        assert!(!DEFAULT_CMDLINE.contains("  "));
    }
}
