// Test /init for boot experiments: prove the guest reached user space, then reboot.
// Prints RUST-VM-INIT-REACHED and the guest's uptime on the console, then asks the
// kernel to restart (the VMM/QEMU ends on reset). Built with gcc -static by
// guest-kernel/test-initramfs.sh.
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <unistd.h>

static void say(const char *s) { (void)!write(1, s, strlen(s)); }

int main(void) {
    if (fcntl(1, F_GETFD) < 0) {
        int fd = open("/dev/console", O_WRONLY);
        if (fd >= 0) { dup2(fd, 1); dup2(fd, 2); }
    }
    say("RUST-VM-INIT-REACHED\n");
    char buf[128] = "";
    if (mount("proc", "/proc", "proc", 0, NULL) == 0) {
        int fd = open("/proc/uptime", O_RDONLY);
        if (fd >= 0) {
            ssize_t n = read(fd, buf, sizeof buf - 1);
            if (n > 0) buf[n] = 0;
            close(fd);
        }
    }
    say("rust-vm test init: uptime ");
    say(buf[0] ? buf : "unknown\n");
    sync();
    reboot(RB_AUTOBOOT);
    for (;;) pause();
}
