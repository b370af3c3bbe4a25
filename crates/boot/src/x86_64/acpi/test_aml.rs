//! A small AML decoder for the tests: enough of the grammar to read back
//! what the DSDT builder writes (scopes, devices, names with integers,
//! strings, buffers and packages) and the resource descriptors in `_CRS`.
//! Anything else fails the test.

/// A data object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AmlObject {
    /// An integer.
    Integer(u64),
    /// A string.
    String(String),
    /// An integer `_HID` read back as its EISA id ("PNP0501").
    EisaId(String),
    /// A buffer.
    Buffer(Vec<u8>),
    /// A package.
    Package(Vec<AmlObject>),
}

/// A resource descriptor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resource {
    /// I/O port descriptor (16-bit decode).
    Io {
        min: u16,
        max: u16,
        align: u8,
        len: u8,
    },
    /// 32-bit fixed memory range.
    Memory32Fixed { writable: bool, base: u32, len: u32 },
    /// QWord memory address space.
    QWordMemory { min: u64, max: u64, len: u64 },
    /// Extended interrupt descriptor.
    Interrupt { flags: u8, irqs: Vec<u32> },
}

/// A device and the names declared directly in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmlDevice {
    /// Absolute path ("\\_SB_.VR00").
    pub path: String,
    /// Names declared in the device, in order.
    pub names: Vec<(String, AmlObject)>,
}

impl AmlDevice {
    pub fn name(&self, name: &str) -> Option<&AmlObject> {
        self.names.iter().find(|(n, _)| n == name).map(|(_, o)| o)
    }

    /// `_HID`, with integers decoded as EISA ids.
    pub fn hid(&self) -> Option<AmlObject> {
        match self.name("_HID")? {
            AmlObject::Integer(v) => Some(AmlObject::EisaId(eisa_id(*v as u32))),
            other => Some(other.clone()),
        }
    }

    /// The descriptors of `_CRS`.
    pub fn resources(&self) -> Vec<Resource> {
        match self.name("_CRS") {
            Some(AmlObject::Buffer(b)) => parse_resources(b),
            other => panic!("{}: _CRS is {other:?}", self.path),
        }
    }
}

/// What a DSDT declares.
#[derive(Debug, Default)]
pub struct ParsedDsdt {
    /// Names outside devices, with absolute paths.
    pub names: Vec<(String, AmlObject)>,
    /// Every device, in order.
    pub devices: Vec<AmlDevice>,
}

impl ParsedDsdt {
    pub fn device(&self, path: &str) -> Option<&AmlDevice> {
        self.devices.iter().find(|d| d.path == path)
    }
}

fn eisa_id(value: u32) -> String {
    let v = value.swap_bytes();
    let letter = |shift: u32| char::from(b'@' + ((v >> shift) & 0x1f) as u8);
    format!(
        "{}{}{}{:04X}",
        letter(26),
        letter(21),
        letter(16),
        v & 0xffff
    )
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn byte(&mut self) -> u8 {
        let v = self.b[self.at];
        self.at += 1;
        v
    }
    fn le(&mut self, n: usize) -> u64 {
        let v = self.b[self.at..self.at + n]
            .iter()
            .rev()
            .fold(0u64, |acc, &x| (acc << 8) | u64::from(x));
        self.at += n;
        v
    }
    /// A PkgLength; returns the end offset of the package.
    fn pkg_end(&mut self) -> usize {
        let start = self.at;
        let lead = self.byte();
        let follow = usize::from(lead >> 6);
        let len = if follow == 0 {
            usize::from(lead & 0x3f)
        } else {
            let mut len = usize::from(lead & 0x0f);
            for i in 0..follow {
                len |= usize::from(self.byte()) << (4 + 8 * i);
            }
            len
        };
        let end = start + len;
        assert!(end <= self.b.len(), "package past the end at {start}");
        end
    }
    fn name_seg(&mut self) -> String {
        let seg = &self.b[self.at..self.at + 4];
        self.at += 4;
        assert!(
            seg.iter()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == b'_'),
            "bad name segment {seg:?}"
        );
        String::from_utf8(seg.to_vec()).unwrap()
    }
    /// A NameString, made absolute against `scope`.
    fn name_string(&mut self, scope: &str) -> String {
        let mut root = false;
        if self.b[self.at] == b'\\' {
            root = true;
            self.at += 1;
        }
        let segs: Vec<String> = match self.b[self.at] {
            0x00 => {
                self.at += 1;
                vec![]
            }
            0x2e => {
                self.at += 1;
                vec![self.name_seg(), self.name_seg()]
            }
            0x2f => {
                self.at += 1;
                let n = self.byte();
                (0..n).map(|_| self.name_seg()).collect()
            }
            _ => vec![self.name_seg()],
        };
        let base = if root { "\\" } else { scope };
        let mut path = base.to_string();
        for seg in segs {
            if !path.ends_with('\\') {
                path.push('.');
            }
            path.push_str(&seg);
        }
        path
    }
    fn object(&mut self) -> AmlObject {
        let op = self.byte();
        match op {
            0x00 => AmlObject::Integer(0),
            0x01 => AmlObject::Integer(1),
            0xff => AmlObject::Integer(u64::MAX),
            0x0a => AmlObject::Integer(self.le(1)),
            0x0b => AmlObject::Integer(self.le(2)),
            0x0c => AmlObject::Integer(self.le(4)),
            0x0e => AmlObject::Integer(self.le(8)),
            0x0d => {
                let len = self.b[self.at..].iter().position(|&c| c == 0).unwrap();
                let s = String::from_utf8(self.b[self.at..self.at + len].to_vec()).unwrap();
                self.at += len + 1;
                AmlObject::String(s)
            }
            0x11 => {
                let end = self.pkg_end();
                let AmlObject::Integer(size) = self.object() else {
                    panic!("buffer size is not an integer");
                };
                assert_eq!(self.at + size as usize, end, "buffer size");
                let data = self.b[self.at..end].to_vec();
                self.at = end;
                AmlObject::Buffer(data)
            }
            0x12 => {
                let end = self.pkg_end();
                let count = self.byte();
                let mut elements = Vec::new();
                while self.at < end {
                    elements.push(self.object());
                }
                assert_eq!(self.at, end);
                assert_eq!(elements.len(), usize::from(count), "package count");
                AmlObject::Package(elements)
            }
            other => panic!(
                "unexpected data object opcode {other:#x} at {}",
                self.at - 1
            ),
        }
    }
    /// A TermList up to `end`, in `scope` (`device` if inside one).
    fn terms(&mut self, end: usize, scope: &str, out: &mut ParsedDsdt, device: Option<usize>) {
        while self.at < end {
            match self.byte() {
                0x08 => {
                    let path = self.name_string(scope);
                    let value = self.object();
                    match device {
                        Some(d) => {
                            let name = path.rsplit(['.', '\\']).next().unwrap().to_string();
                            out.devices[d].names.push((name, value));
                        }
                        None => out.names.push((path, value)),
                    }
                }
                0x10 => {
                    let pkg_end = self.pkg_end();
                    let path = self.name_string(scope);
                    self.terms(pkg_end, &path, out, None);
                }
                0x5b if self.b[self.at] == 0x82 => {
                    self.at += 1;
                    let pkg_end = self.pkg_end();
                    let path = self.name_string(scope);
                    out.devices.push(AmlDevice {
                        path: path.clone(),
                        names: Vec::new(),
                    });
                    let index = out.devices.len() - 1;
                    self.terms(pkg_end, &path, out, Some(index));
                }
                other => panic!("unexpected opcode {other:#x} at {}", self.at - 1),
            }
        }
        assert_eq!(self.at, end, "term list overruns its package");
    }
}

/// Parses a whole DSDT (header included), checking its length.
pub fn parse_dsdt(table: &[u8]) -> ParsedDsdt {
    assert_eq!(&table[..4], b"DSDT");
    let len = u32::from_le_bytes(table[4..8].try_into().unwrap()) as usize;
    assert_eq!(len, table.len());
    let mut out = ParsedDsdt::default();
    let mut r = Reader { b: table, at: 36 };
    r.terms(table.len(), "\\", &mut out, None);
    out
}

/// Parses a resource template up to and including its end tag.
pub fn parse_resources(b: &[u8]) -> Vec<Resource> {
    let mut r = Reader { b, at: 0 };
    let mut out = Vec::new();
    loop {
        let tag = r.byte();
        match tag {
            0x47 => {
                assert_eq!(r.byte(), 1, "16-bit decode");
                out.push(Resource::Io {
                    min: r.le(2) as u16,
                    max: r.le(2) as u16,
                    align: r.byte(),
                    len: r.byte(),
                });
            }
            0x79 => {
                r.byte(); // checksum
                assert_eq!(r.at, b.len(), "end tag is last");
                return out;
            }
            0x86 => {
                assert_eq!(r.le(2), 9);
                out.push(Resource::Memory32Fixed {
                    writable: r.byte() & 1 == 1,
                    base: r.le(4) as u32,
                    len: r.le(4) as u32,
                });
            }
            0x89 => {
                let len = r.le(2) as usize;
                let flags = r.byte();
                let count = usize::from(r.byte());
                assert_eq!(len, 2 + 4 * count);
                let irqs = (0..count).map(|_| r.le(4) as u32).collect();
                out.push(Resource::Interrupt { flags, irqs });
            }
            0x8a => {
                assert_eq!(r.le(2), 43);
                assert_eq!(r.byte(), 0, "memory range");
                assert_eq!(r.byte(), 0b1101, "consumer, fixed min and max");
                assert_eq!(r.byte(), 1, "read-write, non-cacheable");
                let _granularity = r.le(8);
                let min = r.le(8);
                let max = r.le(8);
                assert_eq!(r.le(8), 0, "translation");
                let len = r.le(8);
                out.push(Resource::QWordMemory { min, max, len });
            }
            other => panic!("unexpected resource descriptor {other:#x}"),
        }
    }
}

#[test]
fn eisa_ids_decode() {
    assert_eq!(eisa_id(0x0105_d041), "PNP0501");
    assert_eq!(eisa_id(0x0303_d041), "PNP0303");
}
