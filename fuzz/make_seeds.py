#!/usr/bin/env python3
"""Writes the seed corpora, fuzz/corpus/<target>/<name>: a few valid inputs
per target, in the byte layout each target reads (see the target's source).

    python3 fuzz/make_seeds.py

Deterministic: running it again rewrites the same files. Inputs that a
longer fuzzing run found worth keeping can be added next to them (see
fuzz/README.md); this script does not remove files it did not write.
"""

import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def u8(v):
    return struct.pack("<B", v)


def u16(v):
    return struct.pack("<H", v)


def u32(v):
    return struct.pack("<I", v)


def u64(v):
    return struct.pack("<Q", v)


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# --- legacy_serial: op byte (kind = (op & 15) % 6, register = (op >> 4) % 8)

def serial_write(reg, value):
    return u8((reg << 4) | 0) + u8(value)


def serial_read(reg):
    return u8((reg << 4) | 2)


def serial_input(data):
    return u8(3) + u8(len(data)) + data


SERIAL_RESTORE = u8(5)

linux_init = (
    serial_write(3, 0x80)  # LCR: DLAB
    + serial_write(0, 0x01)  # divisor 115200
    + serial_write(1, 0x00)
    + serial_write(3, 0x03)  # 8N1
    + serial_write(4, 0x0b)  # MCR: DTR RTS OUT2
    + serial_write(1, 0x03)  # IER: RX and THR-empty interrupts
    + b"".join(serial_write(0, c) for c in b"Linux version\n")
    + serial_read(2)  # IIR
    + serial_read(5)  # LSR
)
write("legacy_serial", "linux-init", linux_init)
write(
    "legacy_serial",
    "input-and-restore",
    serial_write(1, 0x01)
    + serial_input(b"root\n")
    + serial_read(5)
    + serial_read(0)
    + SERIAL_RESTORE
    + serial_read(0)
    + serial_read(0)
    + serial_input(bytes(range(70)))
    + SERIAL_RESTORE
    + serial_read(5),
)
write(
    "legacy_serial",
    "loopback",
    serial_write(4, 0x10)
    + b"".join(serial_write(0, c) for c in b"loop")
    + serial_read(5)
    + serial_read(0)
    + SERIAL_RESTORE
    + serial_write(4, 0x00)
    + serial_write(0, ord("x"))
    + u8(4) + u8(2) + u16(0x10) + u8(0),  # ignored wide and far accesses
)

# --- legacy_devices: op (device = (op >> 2) % 5, kind = op % 4), offset
# byte (below 0xf0: offset % 6), width selector (0 -> 1 byte), bytes ------

def dev_write(device, offset, data):
    sel = {1: 0, 2: 4, 4: 5, 8: 6, 0: 7}[len(data)]
    return u8(device << 2) + u8(offset) + u8(sel) + data


def dev_read(device, offset, width=1):
    sel = {1: 0, 2: 4, 4: 5, 8: 6, 0: 7}[width]
    return u8((device << 2) | 2) + u8(offset) + u8(sel)


DEV_RESTORE = u8(3) + u8(0) + u8(0)
I8042, CMOS, PM, TIMER, DEBUG = range(5)

write(
    "legacy_devices",
    "i8042",
    dev_write(I8042, 4, b"\xaa")  # self test
    + dev_read(I8042, 4)
    + dev_read(I8042, 0)
    + dev_write(I8042, 4, b"\x60")  # write command byte
    + dev_write(I8042, 0, b"\x47")
    + dev_write(I8042, 4, b"\x20")
    + DEV_RESTORE
    + dev_read(I8042, 0)
    + dev_write(I8042, 0, b"\xff")  # keyboard reset
    + dev_write(I8042, 0, b"\xf2")  # identify
    + dev_read(I8042, 0, 4)
    + dev_write(I8042, 4, b"\xd2")
    + DEV_RESTORE
    + dev_write(I8042, 0, b"\x1c")
    + dev_write(I8042, 4, b"\xfe"),  # reset
)
write(
    "legacy_devices",
    "cmos",
    dev_write(CMOS, 0, b"\x40")
    + dev_write(CMOS, 1, b"\x5a")
    + dev_write(CMOS, 0, b"\x8b")  # NMI bit, status B
    + dev_write(CMOS, 1, b"\x06")
    + dev_read(CMOS, 1)
    + dev_write(CMOS, 0, b"\x00")
    + dev_read(CMOS, 1)
    + dev_write(CMOS, 0, b"\x32")
    + dev_read(CMOS, 1)
    + DEV_RESTORE
    + dev_write(CMOS, 0, b"\x40")
    + dev_read(CMOS, 1, 2),
)
write(
    "legacy_devices",
    "acpi-timer-debug",
    dev_write(PM, 0, b"\x24")  # S1: wakes at once
    + dev_read(PM, 0, 4)
    + DEV_RESTORE
    + dev_write(PM, 1, b"\x80\x00")
    + dev_write(TIMER, 0, b"\x7b")
    + dev_read(TIMER, 0, 8)
    + DEV_RESTORE
    + dev_write(TIMER, 0, b"\x7b")
    + dev_write(PM, 0, b"\x34")  # S5: power off
    + dev_write(PM, 2, b"\x01")
    + dev_write(DEBUG, 0, b"\x2a")
    + dev_read(DEBUG, 0),
)

# --- boot_initrd: flags, u32 pages, [u16], kernel end, [initrd_addr_max],
# [himem_start], initrd size, initrd bytes ---------------------------------

MIB = 1 << 20
PAGE = 4096


def initrd(flags, ram, end, size, addr_max=None, himem=None, body=b""):
    out = u8(flags) + u32(ram // PAGE - 1)
    end_sel = flags >> 6
    out += {0: u32(end), 1: u16(end >> 12), 2: u32(end >> 2), 3: u64(end)}[end_sel]
    if flags & 2:
        out += u32(addr_max)
    if flags & 4:
        out += u32(himem)
    out += {0: u16, 1: u32, 2: u64, 3: u8}[(flags >> 3) & 3](size)
    return out + body


write("boot_initrd", "elf-64m", initrd(0x00, 64 * MIB, 0x110_0000, 5000,
                                       body=b"070701" + bytes(200)))
write("boot_initrd", "bzimage-limit", initrd(0x02 | (1 << 3), 2048 * MIB, 0x200_0000,
                                             3 * MIB, addr_max=0x0fff_ffff, body=b"\x1f\x8b" + bytes(100)))
write("boot_initrd", "above-4g", initrd(0x02 | (3 << 6) | (1 << 3), 5 * 1024 * MIB,
                                        0x100_0000, 16 * MIB, addr_max=0xffff_ffff, body=b"x"))
write("boot_initrd", "no-room", initrd(0x04 | (2 << 3), 32 * MIB, 0x1f0_0000, 2 * MIB,
                                       himem=0x10_0000, body=b"y" * 64))

# --- boot_cmdline: u16 capacity, u8 device count, (u64 base, u8 irq)...,
# u16 kernel limit, u8 layout selector [u16 start, u16 size], text --------


def cmdline(capacity, devices, kernel_max, layout, text, start=0, size=0):
    out = u16(capacity) + u8(len(devices))
    for base, irq in devices:
        out += u64(base) + u8(irq)
    out += u16(kernel_max) + u8(layout)
    if layout == 0:
        out += u16(start) + u16(size)
    return out + text


write("boot_cmdline", "console", cmdline(2048, [(0xd000_0000, 5), (0xd000_1000, 6)], 2048, 2,
                                         b"console=ttyS0 reboot=k panic=1 pci=off"))
write("boot_cmdline", "init-args", cmdline(2048, [(0xd000_0000, 5)], 2048, 1,
                                           b"  root=/dev/vda quoted=\"a -- b\" -- single init=x  "))
write("boot_cmdline", "too-long", cmdline(64, [(0x1000, 7), (0x2000, 8), (0x3000, 9)], 40, 2,
                                          b"console=ttyS0 loglevel=8"))
write("boot_cmdline", "moved-layout", cmdline(256, [], 2048, 0, b"quiet",
                                              start=0x8000, size=0x1000))

# --- coalesced_ring: u8 capacity, u8 flags (1: hostile first, 2: hostile
# last), u32 first, u32 last, per entry (u64 addr, u8 len, u8 pio, u64 data)


def ring(capacity, flags, first, last, entries):
    out = u8(capacity) + u8(flags) + u32(first) + u32(last)
    for addr, data, pio in entries:
        out += u64(addr) + u8(len(data)) + u8(pio) + data.ljust(8, b"\0")
    return out


serial = [(0x3f8, bytes([c]), 1) for c in b"hello, ring\n"]
write("coalesced_ring", "serial", ring(12, 0, 0, 11, serial))
write("coalesced_ring", "wraps", ring(170, 0, 165, 7,
                                      [(0xd000_0000 + 8 * i, bytes([i] * 4), i % 2) for i in range(170)]))
write("coalesced_ring", "hostile-last", ring(8, 2, 2, 0xffff_fff0, serial[:8]))
write("coalesced_ring", "hostile-first", ring(8, 1, 200, 3, serial[:8]))

# --- block_file_backend: flags (1: /dev/shm), u8 sectors - 1, u8 pattern
# seed, then ops: op (kind = op % 5: read, write, flush, discard,
# write-zeroes; sector from op >> 6), sector, u8 count - 1, details -------


def buf(addr, sectors):
    return u16(addr) + u8(1) + u8(sectors - 1)


def blk_rw(write_, sector, bufs):
    return u8(1 if write_ else 0) + u8(sector) + u8(len(bufs) - 1) + b"".join(bufs)


def blk_zero(discard, ranges):
    out = u8(3 if discard else 4) + u8(ranges[0][0]) + u8(len(ranges) - 1)
    for i, (sector, n, unmap) in enumerate(ranges):
        if i:
            out += u8(sector)
        out += u8(n) + u8(unmap)
    return out


BLK_FLUSH = u8(2) + u8(0) + u8(0)

for flags, name in [(0, "tmp"), (1, "shm")]:
    write("block_file_backend", "write-read-" + name,
          u8(flags) + u8(15) + u8(7)
          + blk_rw(True, 2, [buf(0x1000, 2), buf(0x0, 1)])
          + blk_rw(False, 1, [buf(0x2000, 4)])
          + BLK_FLUSH
          + blk_zero(True, [(0, 2, 0), (5, 1, 0)])
          + blk_zero(False, [(3, 4, 1), (8, 0, 0)])
          + blk_rw(False, 0, [buf(0x3000, 8)]))
write("block_file_backend", "edges",
      u8(0) + u8(7) + u8(3)
      + blk_rw(True, 7, [buf(0x0, 1)])  # the last sector
      + blk_rw(True, 7, [buf(0x0, 2)])  # one past the end
      + blk_rw(False, 8, [buf(0x0, 1)])
      + blk_rw(False, 0, [buf(0x3f00, 1)])  # partly outside guest memory
      + blk_zero(False, [(6, 3, 0)])
      + blk_zero(True, [(7, 1, 1)]))

# --- the first four targets ----------------------------------------------

# virtio_queue_descriptor_walk: u8 size selector, u8 event_idx, u16 desc,
# u16 avail, u16 used, then guest memory from 0.


def desc(addr, length, flags, nxt):
    return u64(addr) + u32(length) + u16(flags) + u16(nxt)


NEXT, WRITE, INDIRECT = 1, 2, 4


def memory(places):
    mem = bytearray(max(a + len(d) for a, d in places))
    for a, d in places:
        mem[a:a + len(d)] = d
    return bytes(mem)


table = desc(0x1000, 64, WRITE | NEXT, 1) + desc(0x1100, 32, WRITE, 0) + desc(0x2000, 32, INDIRECT, 0)
avail = u16(0) + u16(2) + u16(0) + u16(2)
indirect = desc(0x1200, 16, WRITE | NEXT, 1) + desc(0x1300, 16, WRITE, 0)
write("virtio_queue_descriptor_walk", "direct-and-indirect",
      u8(4) + u8(0) + u16(0) + u16(0x100) + u16(0x200)
      + memory([(0, table), (0x100, avail), (0x2000, indirect)]))
write("virtio_queue_descriptor_walk", "event-idx",
      u8(3) + u8(1) + u16(0x400) + u16(0x600) + u16(0x700)
      + memory([(0x400, desc(0x1000, 128, WRITE, 0)), (0x600, u16(0) + u16(1) + u16(0) + u16(0))]))

# virtio_block_request: u16 head, u16 capacity (sectors), guest memory
# (descriptor table at 0, avail ring at 0x100).


def blk_request(type_, sector, data_len, data_flags, extra=b""):
    table = (desc(0x400, 16, NEXT, 1) + desc(0x800, data_len, data_flags | NEXT, 2)
             + desc(0x1000, 1, WRITE, 0))
    header = u32(type_) + u32(0) + u64(sector)
    return memory([(0, table), (0x400, header), (0x800, extra or bytes(16))])


write("virtio_block_request", "read", u16(0) + u16(64) + blk_request(0, 3, 1024, WRITE))
write("virtio_block_request", "write", u16(0) + u16(64) + blk_request(1, 63, 512, 0))
write("virtio_block_request", "discard", u16(0) + u16(64)
      + blk_request(11, 0, 16, 0, u64(8) + u32(4) + u32(0)))
write("virtio_block_request", "get-id", u16(0) + u16(64) + blk_request(8, 0, 20, WRITE))

# virtio_mmio_transport: u8 device (1: block), 256 bytes of guest memory,
# then ops (op % 7): 5 = initialise queue 0 (u64 features, u16 desc, avail,
# used, u8 size shift), 3 = notify (u8 queue), 0 = read (u16 offset, u8
# width), 1 = write (u16 offset, u32 value, u8 width), 6 = save/restore.


def mmio_init(features, d, a, u, shift):
    return u8(5) + u64(features) + u16(d) + u16(a) + u16(u) + u8(shift)


rng_mem = memory([(0, desc(0x3000, 64, WRITE, 0)), (0x80, u16(0) + u16(1) + u16(0))]).ljust(256, b"\0")
write("virtio_mmio_transport", "entropy",
      u8(0) + rng_mem + mmio_init(1 << 32, 0, 0x80, 0xc0, 3) + u8(3) + u8(0)
      + u8(0) + u16(0x70) + u8(0) + u8(6) + u8(3) + u8(0) + u8(0) + u16(0x60) + u8(0))
blk_mem = memory([(0, desc(0x400, 16, NEXT, 1) + desc(0x800, 512, WRITE | NEXT, 2) + desc(0x1000, 1, WRITE, 0)),
                  (0x80, u16(0) + u16(1) + u16(0))]).ljust(256, b"\0")
write("virtio_mmio_transport", "block",
      u8(1) + blk_mem + mmio_init(1 << 32, 0, 0x80, 0xc0, 3) + u8(3) + u8(0)
      + u8(1) + u16(0x100) + u32(0) + u8(0) + u8(0) + u16(0x108) + u8(1) + u8(6)
      + u8(1) + u16(0x70) + u32(0) + u8(0))

# boot_kernel_image: selector (vCPUs, command line length), then the image.


def tiny_elf():
    elf = bytearray(120)
    elf[:7] = b"\x7fELF\x02\x01\x01"
    elf[18] = 62
    elf[24:32] = u64(0x100_0000)
    elf[32] = 64
    elf[54] = 56
    elf[56] = 1
    ph = bytearray(56)
    ph[0] = 1
    ph[8:16] = u64(120)
    ph[24:32] = u64(0x100_0000)
    ph[32] = 2
    ph[40] = 2
    elf[64:120] = ph
    return bytes(elf) + b"\xf4\xf4"


def bzimage():
    image = bytearray(2 * 512)
    image[0x1f1] = 1
    image[0x1fe:0x200] = u16(0xaa55)
    image[0x200:0x202] = b"\xeb\x6a"
    image[0x202:0x206] = b"HdrS"
    image[0x206:0x208] = u16(0x020f)
    image[0x211] = 0x01
    image[0x214:0x218] = u32(0x10_0000)
    image[0x22c:0x230] = u32(0x7fff_ffff)
    image[0x230:0x234] = u32(0x100_0000)
    image[0x234] = 1
    image[0x236:0x238] = u16(1)
    image[0x238:0x23c] = u32(2047)
    image[0x258:0x260] = u64(0x100_0000)
    image[0x260:0x264] = u32(0x20_0000)
    return bytes(image) + b"\xcc" * 16


write("boot_kernel_image", "elf", u8(2) + tiny_elf())
write("boot_kernel_image", "bzimage", u8(4) + bzimage())
