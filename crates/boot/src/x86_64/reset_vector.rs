//! A reset-vector stub at 0xF000:0xFFF0.
//!
//! There is no firmware in a Kindling microVM, yet Linux may jump to the
//! BIOS reset vector to reboot: on an ACPI hardware-reduced platform
//! without EFI it picks `reboot=efi`, which falls back to `reboot=bios`
//! (`machine_real_restart`), which switches to real mode and jumps to
//! 0xF000:0xFFF0. With nothing there the vCPU would run zeroed memory
//! forever. The stub puts a reset request to the i8042 there, so the VMM
//! ends the VM as for any other reboot.

use vm_memory::{Bytes, GuestAddress};

use kindling_memory::GuestMemoryMmap;

use crate::BootError;

/// Physical address of the x86 reset vector (CS base 0xF0000, IP 0xFFF0).
pub const RESET_VECTOR: u64 = 0xffff0;

/// Real-mode code: `mov al, 0xfe; out 0x64, al; cli; 1: hlt; jmp 1b`.
pub const RESET_VECTOR_STUB: [u8; 8] = [0xb0, 0xfe, 0xe6, 0x64, 0xfa, 0xf4, 0xeb, 0xfd];

/// Writes the reset-vector stub into guest memory.
pub fn write_reset_vector(mem: &GuestMemoryMmap) -> Result<(), BootError> {
    mem.write_slice(&RESET_VECTOR_STUB, GuestAddress(RESET_VECTOR))
        .map_err(|source| BootError::GuestMemory {
            what: "reset vector stub",
            addr: RESET_VECTOR,
            len: RESET_VECTOR_STUB.len() as u64,
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stub_lands_at_the_reset_vector() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 2 << 20)]).unwrap();
        write_reset_vector(&mem).unwrap();
        let mut bytes = [0u8; 8];
        mem.read_slice(&mut bytes, GuestAddress(RESET_VECTOR))
            .unwrap();
        assert_eq!(bytes, RESET_VECTOR_STUB);
        // The stub ends inside the 16 bytes before 1 MiB.
        const { assert!(RESET_VECTOR + RESET_VECTOR_STUB.len() as u64 <= 0x100000) };
    }

    #[test]
    fn memory_without_the_vector_is_an_error() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x1000)]).unwrap();
        assert!(matches!(
            write_reset_vector(&mem),
            Err(BootError::GuestMemory { .. })
        ));
    }
}
