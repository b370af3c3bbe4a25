//! Synthetic kernel images and guest memory for the unit tests.

use kindling_memory::layout::ram_ranges;
use kindling_memory::GuestMemoryMmap;
use vm_memory::GuestAddress;

/// Guest memory of `size` bytes laid out as Kindling lays it out.
/// A boot layout that moves everything: zero page at 0x1_0000, command
/// line at 0x4_0000 (4 KiB), MP table at 0x8_0000, ACPI tables at
/// 0x8_1000..0x9_0000, kernel from 2 MiB.
pub(crate) fn moved_layout() -> crate::x86_64::BootLayout {
    crate::x86_64::BootLayout {
        cmdline_start: 0x4_0000,
        cmdline_max_size: 4096,
        zero_page_start: 0x1_0000,
        ebda_start: 0x8_0000,
        acpi_start: 0x8_1000,
        acpi_end: 0x9_0000,
        himem_start: 0x20_0000,
    }
}

pub(crate) fn guest_memory(size: u64) -> GuestMemoryMmap {
    let ranges: Vec<(GuestAddress, usize)> = ram_ranges(size)
        .into_iter()
        .map(|(start, len)| (GuestAddress(start), len as usize))
        .collect();
    GuestMemoryMmap::from_ranges(&ranges).unwrap()
}

struct Segment {
    p_type: u32,
    paddr: u64,
    data: Vec<u8>,
    memsz: u64,
}

/// Builds a minimal ELF64 image: header, program headers, then the
/// segments' bytes in order.
pub(crate) struct ElfBuilder {
    entry: u64,
    class: u8,
    data: u8,
    machine: u16,
    segments: Vec<Segment>,
}

impl ElfBuilder {
    pub(crate) fn new(entry: u64) -> Self {
        Self {
            entry,
            class: 2,
            data: 1,
            machine: 62,
            segments: Vec::new(),
        }
    }

    pub(crate) fn segment(mut self, paddr: u64, data: &[u8], memsz: u64) -> Self {
        self.segments.push(Segment {
            p_type: 1,
            paddr,
            data: data.to_vec(),
            memsz,
        });
        self
    }

    pub(crate) fn note(mut self, n_type: u32, name: &[u8], desc: &[u8]) -> Self {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&(name.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&(desc.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&n_type.to_le_bytes());
        bytes.extend_from_slice(name);
        bytes.resize(bytes.len().next_multiple_of(4), 0);
        bytes.extend_from_slice(desc);
        bytes.resize(bytes.len().next_multiple_of(4), 0);
        let memsz = bytes.len() as u64;
        self.segments.push(Segment {
            p_type: 4,
            paddr: 0,
            data: bytes,
            memsz,
        });
        self
    }

    pub(crate) fn pvh_note(self, entry: u32) -> Self {
        self.note(18, b"Xen\0", &entry.to_le_bytes())
    }

    pub(crate) fn class(mut self, class: u8) -> Self {
        self.class = class;
        self
    }

    pub(crate) fn data(mut self, data: u8) -> Self {
        self.data = data;
        self
    }

    pub(crate) fn machine(mut self, machine: u16) -> Self {
        self.machine = machine;
        self
    }

    pub(crate) fn build(self) -> Vec<u8> {
        let phnum = self.segments.len();
        let mut image = vec![0u8; 64];
        image[..4].copy_from_slice(b"\x7fELF");
        image[4] = self.class;
        image[5] = self.data;
        image[6] = 1;
        image[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
        image[18..20].copy_from_slice(&self.machine.to_le_bytes());
        image[20..24].copy_from_slice(&1u32.to_le_bytes());
        image[24..32].copy_from_slice(&self.entry.to_le_bytes());
        image[32..40].copy_from_slice(&64u64.to_le_bytes());
        image[52..54].copy_from_slice(&64u16.to_le_bytes());
        image[54..56].copy_from_slice(&56u16.to_le_bytes());
        image[56..58].copy_from_slice(&(phnum as u16).to_le_bytes());

        let mut offset = (64 + 56 * phnum) as u64;
        for seg in &self.segments {
            let mut ph = [0u8; 56];
            ph[0..4].copy_from_slice(&seg.p_type.to_le_bytes());
            ph[4..8].copy_from_slice(&7u32.to_le_bytes());
            ph[8..16].copy_from_slice(&offset.to_le_bytes());
            ph[16..24].copy_from_slice(&seg.paddr.to_le_bytes());
            ph[24..32].copy_from_slice(&seg.paddr.to_le_bytes());
            ph[32..40].copy_from_slice(&(seg.data.len() as u64).to_le_bytes());
            ph[40..48].copy_from_slice(&seg.memsz.to_le_bytes());
            ph[48..56].copy_from_slice(&4u64.to_le_bytes());
            image.extend_from_slice(&ph);
            offset += seg.data.len() as u64;
        }
        for seg in &self.segments {
            image.extend_from_slice(&seg.data);
        }
        image
    }
}

/// Builds a minimal bzImage: boot sector and setup sectors with a setup
/// header, then a payload.
pub(crate) struct BzImageBuilder {
    setup_sects: u8,
    version: u16,
    code32_start: u32,
    relocatable: bool,
    xloadflags: u16,
    cmdline_size: u32,
    initrd_addr_max: u32,
    pref_address: u64,
    init_size: u32,
    payload: Vec<u8>,
}

impl BzImageBuilder {
    pub(crate) fn new() -> Self {
        Self {
            setup_sects: 1,
            version: 0x020f,
            code32_start: 0x10_0000,
            relocatable: true,
            xloadflags: 0x1,
            cmdline_size: 2047,
            initrd_addr_max: 0x7fff_ffff,
            pref_address: 0x100_0000,
            init_size: 0x20_0000,
            payload: vec![0xcc; 16],
        }
    }

    pub(crate) fn setup_sects(mut self, v: u8) -> Self {
        self.setup_sects = v;
        self
    }
    pub(crate) fn version(mut self, v: u16) -> Self {
        self.version = v;
        self
    }
    pub(crate) fn code32_start(mut self, v: u32) -> Self {
        self.code32_start = v;
        self
    }
    pub(crate) fn relocatable(mut self, v: bool) -> Self {
        self.relocatable = v;
        self
    }
    pub(crate) fn xloadflags(mut self, v: u16) -> Self {
        self.xloadflags = v;
        self
    }
    pub(crate) fn cmdline_size(mut self, v: u32) -> Self {
        self.cmdline_size = v;
        self
    }
    pub(crate) fn initrd_addr_max(mut self, v: u32) -> Self {
        self.initrd_addr_max = v;
        self
    }
    pub(crate) fn pref_address(mut self, v: u64) -> Self {
        self.pref_address = v;
        self
    }
    pub(crate) fn init_size(mut self, v: u32) -> Self {
        self.init_size = v;
        self
    }
    pub(crate) fn payload(mut self, v: &[u8]) -> Self {
        self.payload = v.to_vec();
        self
    }

    pub(crate) fn build(self) -> Vec<u8> {
        let sects = if self.setup_sects == 0 {
            4
        } else {
            usize::from(self.setup_sects)
        };
        let mut image = vec![0u8; (sects + 1) * 512];
        image[0x1f1] = self.setup_sects;
        image[0x1fe..0x200].copy_from_slice(&0xaa55u16.to_le_bytes());
        image[0x200] = 0xeb; // jmp
        image[0x201] = 0x6a;
        image[0x202..0x206].copy_from_slice(b"HdrS");
        image[0x206..0x208].copy_from_slice(&self.version.to_le_bytes());
        image[0x211] = 0x01; // LOADED_HIGH
        image[0x214..0x218].copy_from_slice(&self.code32_start.to_le_bytes());
        image[0x22c..0x230].copy_from_slice(&self.initrd_addr_max.to_le_bytes());
        image[0x230..0x234].copy_from_slice(&0x100_0000u32.to_le_bytes());
        image[0x234] = u8::from(self.relocatable);
        image[0x236..0x238].copy_from_slice(&self.xloadflags.to_le_bytes());
        image[0x238..0x23c].copy_from_slice(&self.cmdline_size.to_le_bytes());
        image[0x258..0x260].copy_from_slice(&self.pref_address.to_le_bytes());
        image[0x260..0x264].copy_from_slice(&self.init_size.to_le_bytes());
        image.extend_from_slice(&self.payload);
        image
    }
}

/// Loads `image` as a kernel into `mem`.
pub(crate) fn load_bytes(
    mem: &GuestMemoryMmap,
    image: Vec<u8>,
) -> Result<crate::x86_64::LoadedKernel, crate::x86_64::BootError> {
    crate::x86_64::load_kernel(mem, &mut std::io::Cursor::new(image))
}
