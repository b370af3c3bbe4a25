// The floor under restore-to-running on a host: what any VMM pays before
// its own work. Opens /dev/kvm, creates a VM, maps guest memory privately
// from a sparse file (as a restore maps its memory file), registers it as
// two memory slots around the 3 GiB MMIO gap (one below 3 GiB), creates
// the irqchip, the PIT and one vCPU, and runs it to its first exit (a port
// write in real mode). Prints the total and each step in ms.
//
//   gcc -O2 -o /tmp/restore_floor benches/floor/restore_floor.c
//   truncate -s 4G /tmp/floor.mem
//   /tmp/restore_floor 4096 /tmp/floor.mem     # guest MiB, memory file
//
// Not built by cargo or CI: README ("Snapshots and clones") gives its
// figures next to Kindling's.
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>
static double now(void){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec*1e3+t.tv_nsec/1e6;}
int main(int argc,char**argv){
  unsigned long mib = argc>1 ? strtoul(argv[1],0,0) : 4096;
  const char *file = argc>2 ? argv[2] : "/tmp/floor.mem";
  double t0=now();
  int kvm=open("/dev/kvm",O_RDWR|O_CLOEXEC);
  int vm=ioctl(kvm,KVM_CREATE_VM,0);
  double t1=now();
  int fd=open(file,O_RDONLY);
  unsigned long size=mib<<20;
  unsigned char*mem=mmap(0,size,PROT_READ|PROT_WRITE,MAP_PRIVATE|MAP_NORESERVE,fd,0);
  if(mem==MAP_FAILED){perror("mmap");return 1;}
  unsigned long low = size > (3UL<<30) ? (3UL<<30) : size;
  struct kvm_userspace_memory_region r={0,0,0,low,(unsigned long)mem};
  double t2=now();
  if(ioctl(vm,KVM_SET_USER_MEMORY_REGION,&r)){perror("slot0");return 1;}
  if(size>low){struct kvm_userspace_memory_region r1={1,0,1UL<<32,size-low,(unsigned long)mem+low};
    if(ioctl(vm,KVM_SET_USER_MEMORY_REGION,&r1)){perror("slot1");return 1;}}
  double t3=now();
  ioctl(vm,KVM_CREATE_IRQCHIP,0);
  struct kvm_pit_config pit={0};
  ioctl(vm,KVM_CREATE_PIT2,&pit);
  double t4=now();
  int vcpu=ioctl(vm,KVM_CREATE_VCPU,0);
  int sz=ioctl(kvm,KVM_GET_VCPU_MMAP_SIZE,0);
  struct kvm_run*run=mmap(0,sz,PROT_READ|PROT_WRITE,MAP_SHARED,vcpu,0);
  // real mode at 0x1000: out 0xf5, al
  mem[0x1000]=0xe6; mem[0x1001]=0xf5;
  struct kvm_sregs s; ioctl(vcpu,KVM_GET_SREGS,&s); s.cs.base=0; s.cs.selector=0; ioctl(vcpu,KVM_SET_SREGS,&s);
  struct kvm_regs rg; memset(&rg,0,sizeof rg); rg.rip=0x1000; rg.rflags=2; ioctl(vcpu,KVM_SET_REGS,&rg);
  double t5=now();
  ioctl(vcpu,KVM_RUN,0);
  double t6=now();
  printf("%lu MiB: total %.3f ms (kvm+vm %.3f, mmap %.3f, slots %.3f, irqchip+pit %.3f, vcpu %.3f, run %.3f) exit %d\n",
    mib,t6-t0,t1-t0,t2-t1,t3-t2,t4-t3,t5-t4,t6-t5,run->exit_reason);
  return 0;
}
