// Probe: does `syscall` from guest ring 3 enter guest ring 0 on this KVM?
// A 64-bit guest irets to ring 3, which executes `syscall` (EFER.SCE, STAR, LSTAR, SFMASK set).
// The code at LSTAR writes 'A' + (CS & 3) to port 0x3f8: 'A' means CPL 0 (what hardware does),
// 'D' means the vCPU stayed in CPL 3. Then it halts (in CPL 3 that #GPs: triple fault, shutdown).
// Build: gcc -O2 -o syscall-cpl syscall-cpl.c. Measured on the project's PVM host: out 'D', cs=0x23.
#include <err.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#define MEM (2 << 20)
int main(void) {
  int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
  if (kvm < 0) err(1, "/dev/kvm");
  int vmfd = ioctl(kvm, KVM_CREATE_VM, 0);
  uint8_t *mem = mmap(NULL, MEM, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  struct kvm_userspace_memory_region region = {.slot = 0, .guest_phys_addr = 0, .memory_size = MEM, .userspace_addr = (uint64_t)mem};
  if (ioctl(vmfd, KVM_SET_USER_MEMORY_REGION, &region) < 0) err(1, "setmem");
  int vcpufd = ioctl(vmfd, KVM_CREATE_VCPU, 0);
  struct { struct kvm_cpuid2 c; struct kvm_cpuid_entry2 e[100]; } cp = {.c.nent = 100};
  ioctl(kvm, KVM_GET_SUPPORTED_CPUID, &cp);
  ioctl(vcpufd, KVM_SET_CPUID2, &cp);
  int sz = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, NULL);
  struct kvm_run *run = mmap(NULL, sz, PROT_READ | PROT_WRITE, MAP_SHARED, vcpufd, 0);
  uint64_t *pml4 = (void *)(mem + 0x9000), *pdpt = (void *)(mem + 0xa000), *pd = (void *)(mem + 0xb000);
  pml4[0] = 0xa000 | 7; pdpt[0] = 0xb000 | 7; pd[0] = 0 | 0x87;
  // GDT: 0x08 kernel code, 0x10 kernel data, 0x18 user data, 0x20 user code (64-bit)
  uint64_t *gdt = (void *)(mem + 0x500);
  gdt[0] = 0; gdt[1] = 0x00af9b000000ffff; gdt[2] = 0x00cf93000000ffff; gdt[3] = 0x00cff3000000ffff; gdt[4] = 0x00affb000000ffff;
  // ring 0 at 0x1000: iretq to ring 3 at 0x2000 (SS 0x1b, RSP 0x7000, RFLAGS IOPL=3, CS 0x23)
  uint8_t kcode[] = {0x6a, 0x1b, 0x68, 0x00, 0x70, 0x00, 0x00, 0x68, 0x02, 0x30, 0x00, 0x00, 0x6a, 0x23, 0x68, 0x00, 0x20, 0x00, 0x00, 0x48, 0xcf};
  memcpy(mem + 0x1000, kcode, sizeof kcode);
  uint8_t ucode[] = {0x0f, 0x05, 0xeb, 0xfe}; // syscall; jmp $
  memcpy(mem + 0x2000, ucode, sizeof ucode);
  // LSTAR target: mov %cs,%ax; and $3,%al; add $'A',%al; mov $0x3f8,%dx; out %al,(%dx); hlt
  uint8_t hcode[] = {0x66, 0x8c, 0xc8, 0x24, 0x03, 0x04, 'A', 0x66, 0xba, 0xf8, 0x03, 0xee, 0xf4};
  memcpy(mem + 0x3000, hcode, sizeof hcode);
  struct kvm_sregs s;
  ioctl(vcpufd, KVM_GET_SREGS, &s);
  s.cr3 = 0x9000; s.cr4 = 1 << 5; s.cr0 = 0x80000001 | 0x10 | 0x20; s.efer = 0x501; // LME|LMA|SCE
  s.gdt.base = 0x500; s.gdt.limit = 5 * 8 - 1;
  struct kvm_segment seg = {.base = 0, .limit = 0xffffffff, .selector = 8, .present = 1, .type = 11, .dpl = 0, .db = 0, .s = 1, .l = 1, .g = 1};
  s.cs = seg; seg.type = 3; seg.selector = 16; seg.l = 0; seg.db = 1; s.ds = s.es = s.fs = s.gs = s.ss = seg;
  if (ioctl(vcpufd, KVM_SET_SREGS, &s) < 0) err(1, "sregs");
  struct { struct kvm_msrs m; struct kvm_msr_entry e[3]; } msrs = {.m.nmsrs = 3};
  msrs.e[0].index = 0xc0000081; msrs.e[0].data = (0x08ull << 32) | (0x10ull << 48); // STAR
  msrs.e[1].index = 0xc0000082; msrs.e[1].data = 0x3000;                          // LSTAR
  msrs.e[2].index = 0xc0000084; msrs.e[2].data = 0x700;                           // SFMASK
  if (ioctl(vcpufd, KVM_SET_MSRS, &msrs) != 3) err(1, "msrs");
  struct kvm_regs r = {.rip = 0x1000, .rflags = 2, .rsp = 0x8000};
  ioctl(vcpufd, KVM_SET_REGS, &r);
  for (int i = 0; i < 10; i++) {
    if (ioctl(vcpufd, KVM_RUN, NULL) < 0) err(1, "run");
    struct kvm_regs rr; struct kvm_sregs ss;
    ioctl(vcpufd, KVM_GET_REGS, &rr); ioctl(vcpufd, KVM_GET_SREGS, &ss);
    if (run->exit_reason == KVM_EXIT_IO) {
      char c = *(((char *)run) + run->io.data_offset);
      printf("out '%c' at rip=0x%llx cs=0x%x rcx=0x%llx r11=0x%llx: %s\n", c, rr.rip, ss.cs.selector, rr.rcx, rr.r11,
             c == 'A' ? "syscall entered ring 0" : "syscall stayed in ring 3");
      continue;
    }
    printf("exit %d at rip=0x%llx cs=0x%x\n", run->exit_reason, rr.rip, ss.cs.selector);
    return 0;
  }
}
