//! The Kindling test guest: a tiny 64-bit x86 kernel that Kindling's
//! integration tests and benchmarks boot on `/dev/kvm`.
//!
//! It is written in C and GNU assembler (`guest/c/`) and built from source
//! by this crate's build script with the system `gcc`; [`TEST_GUEST_ELF`]
//! holds the result. The VMM loads it through the same path as a Linux
//! `vmlinux`: an ELF64 x86-64 executable whose `PT_LOAD` segments are
//! linked at physical (and virtual) address 1 MiB, entered at its ELF entry
//! point per the Linux x86 64-bit boot protocol.
//!
//! # Boot contract
//!
//! What the guest expects from the VMM (what Firecracker gives a `vmlinux`):
//!
//! - 64-bit long mode, paging on with an identity map covering the image,
//!   interrupts off, `RSI` = the address of the zero page
//!   (`struct boot_params`); CR4.SMEP and CR4.SMAP clear.
//! - In the zero page: `cmd_line_ptr` (0x228, plus `ext_cmd_line_ptr` at
//!   0x0c8 as the high 32 bits), `e820_entries` (0x1e8) and `e820_table`
//!   (0x2d0).
//! - For the `smp` action: an Intel MP table (spec 1.4) in the EBDA, in the
//!   last KiB of base memory or in 0xf0000..0xfffff; an in-kernel local APIC
//!   at 0xfee0_0000 in xAPIC mode; application processors waiting for
//!   INIT/SIPI; RAM at 0x3000 (the AP trampoline goes there).
//! - Devices: COM1 at port 0x3f8 (output only), the i8042 command port 0x64,
//!   the debug-exit port [`DEBUG_EXIT_PORT`], the boot timer at MMIO
//!   0xc000_0000, and [`BENCH_PORT`] for the `pio-loop` benchmark.
//! - For the virtio actions: virtio-mmio devices (version 2, virtio 1.x)
//!   named on the command line, and usable RAM (E820 type 1) over
//!   [`VIRTIO_DRIVER_RAM`], 4..10 MiB, which the driver uses for its rings and
//!   buffers (any guest of 16 MiB or more has it). The image itself ends
//!   below 4 MiB.
//!
//! The guest runs almost entirely in ring 3: its ring-0 prologue only loads
//! its own GDT and its own page tables (an identity map of 0..4 GiB with
//! 2 MiB pages, all user-accessible, built at link time) and `iretq`s to
//! ring 3 with IOPL=3. On hosts where KVM emulates ring-0 code instruction
//! by instruction, this keeps start-up in the microseconds. There is no
//! IDT: a fault is a triple fault, which the VMM sees as a shutdown.
//!
//! # Command line
//!
//! Tokens are separated by whitespace; tokens the guest does not know are
//! ignored, so a Linux-style line such as `console=ttyS0 kindling.test=e820`
//! works. When a token is given twice, the last one wins.
//!
//! - `kindling.test=A,B,C`: the actions to run, in order (default: `hello`,
//!   which is what [`DEFAULT_CMDLINE`] asks for too).
//! - `kindling.exit=N` (decimal 0..=255): at the end, write `N` to
//!   [`DEBUG_EXIT_PORT`], which makes the VMM exit with status `N`.
//!   `kindling.exit=reset`: write 0xfe to the i8042 command port (0x64)
//!   instead, a reset. Default, and for an invalid value: status 0 through
//!   [`DEBUG_EXIT_PORT`].
//! - `virtio_mmio.device=<size>@<base>:<irq>[:<id>]`, Linux's syntax: a
//!   virtio-mmio device. Unlike the others, each such token adds a device;
//!   device `virtio<i>` is the `i`-th (from 0) in command-line order. `size`
//!   is decimal or `0x` hex with an optional `K`, `M` or `G` suffix, `base`
//!   `0x` hex (or decimal), `irq` and the ignored platform id decimal, e.g.
//!   `virtio_mmio.device=4K@0xc0001000:5`. Tokens that do not parse, whose
//!   window is smaller than 0x100 bytes, not 4-byte aligned or not below
//!   4 GiB, and any after the eighth, are ignored.
//! - `kindling.event_idx=0`: do not accept `VIRTIO_RING_F_EVENT_IDX` even
//!   when a device offers it (`1`, the default: accept it).
//!
//! # Actions and their output
//!
//! All output goes to COM1, one line per `rep outsb`, each line ending in
//! `\n`. The guest prints nothing but the lines below. (KVM still turns
//! each byte of a `rep outsb` into its own `KVM_EXIT_IO` of one byte, so
//! output costs one VM exit per byte unless the VMM registers the port as
//! a coalesced PIO zone.)
//!
//! | action | output lines | notes |
//! | --- | --- | --- |
//! | `hello` | `Hello from the Kindling test guest!` | |
//! | `cmdline` | `cmdline: <command line>` | the whole line as read from the zero page (at most 4095 bytes) |
//! | `e820` | `e820: <N> entries`, then N × `e820: addr=0x<16 hex> size=0x<16 hex> type=<decimal>` | lowercase hex, zero-padded to 16 digits; N is capped at 128 |
//! | `smp` | `smp: <A> of <M> cpus online` or `smp: no MP table` | see below |
//! | `timer` | `boot-timer: signalled` | first writes the byte 123 to MMIO 0xc000_0000, which makes the VMM log the boot time |
//! | `pio-loop` | none | writes the byte 0 to [`BENCH_PORT`] in an endless loop (a VM-exit benchmark); never returns |
//! | `virtio` | `virtio: <N> devices`, then N × `virtio<i>: base=0x<hex> irq=<decimal> type=<blk\|rng\|vsock\|other(<id>)> status=<state>` | see [Virtio](#virtio) |
//! | `virtio` | `virtio: <N> devices`, then N × `virtio<i>: base=0x<hex> irq=<decimal> type=<blk\|rng\|net\|other(<id>)> status=<state>` | see [Virtio](#virtio) |
//! | `blk-info:D` | `blk<D>: capacity=<sectors> ro=<0\|1> flush=<0\|1> discard=<0\|1> write-zeroes=<0\|1> event-idx=<0\|1> queue=<size>` | the negotiated features; capacity in 512-byte sectors; the queue size in use |
//! | `blk-id:D` | `blk<D>: get-id status=<S>` + ` id=<id>` when `S` is `OK` | a `GET_ID` request; `<id>` is the 20-byte id up to its first NUL, bytes outside 0x20..0x7e printed as `.` |
//! | `blk-read:D:SECTOR:COUNT` | `blk<D>: read sector=<SECTOR> count=<COUNT> status=<S>` + ` crc32=0x<8 hex>` when `S` is `OK` | CRC-32/IEEE (Python's `zlib.crc32`) of the `COUNT * 512` bytes read |
//! | `blk-write:D:SECTOR:COUNT:BYTE` | `blk<D>: write sector=<SECTOR> count=<COUNT> status=<S>` | writes `COUNT` sectors, every byte `BYTE` (0..=255) |
//! | `blk-flush:D` | `blk<D>: flush status=<S>` | |
//! | `blk-discard:D:SECTOR:COUNT` | `blk<D>: discard sector=<SECTOR> count=<COUNT> status=<S>` | one segment, flags 0 |
//! | `blk-zeroes:D:SECTOR:COUNT` | `blk<D>: write-zeroes sector=<SECTOR> count=<COUNT> status=<S>` | one segment, flags 0 (no unmap) |
//! | `rng:N` | `rng: bytes=<n> crc32=0x<8 hex> nonzero=<count>` | reads `N` (1..=4096) bytes from the first entropy device; `n` bytes came back, `count` of them non-zero |
//! | `blk-bench:D:MODE:BS:QD:OPS` | `blk-bench: start`, then `blk-bench: done ops=<OPS> errors=<E>` | see [Block benchmark](#block-benchmark) |
//! | `blk-hog:D:COUNT:KIB` | `blk<D>: hog done=<COUNT> ok=<X> ioerr=<Y>` | `COUNT` reads of `KIB` KiB (1..65536) from sector 0, the queue kept full, all into one buffer at 16 MiB: an adversarial workload for the device's limits |
//! | `count` | `count: <N>` for N = 0, 1, 2, ... | never returns; one line every 2×10^7 TSC cycles (a few ms); the counter lives in guest memory, so a restored snapshot goes on where it was |
//! | `count:D` | the same | before each line, writes sector `N % 64` of block device `D`, every byte `N & 0xff` (a `blk<D>: write sector=.. count=1 status=<S>` line and exit status 3 if that fails) |
//! | `count-touch:KIB` | `count: <N>` as `count` | before each line, writes `KIB` KiB (1..=1048576) of guest memory from 16 MiB up, the same pages every time, every byte `(N & 0xff) \| 1`: a snapshot taken after one more line has them dirty; the guest needs 16 MiB + `KIB` KiB of memory |
//! | `vsock-connect:PORT:N` | `vsock: connect port=<PORT> sent=<s> received=<r> crc32=0x<8 hex> mismatches=<m>`, or `vsock: connect port=<PORT> refused` | connects to host port `PORT` (0..2^32-1) on the first vsock device, sends `N` (0..2^32-1) bytes of the [vsock pattern](#vsock) while reading what comes back; `crc32` of the `r` bytes received, `m` of them differ from the pattern; see [Vsock](#vsock) |
//! | `vsock-listen:PORT` | `vsock: listen port=<PORT> echoed=<e> crc32=0x<8 hex> overruns=<o>` + ` reset` when the peer (or a transport reset) reset the connection | accepts one host connection to guest port `PORT` and echoes what it receives until the host shuts down its sending side; `crc32` of everything received |
//! | `net-info` | `net0: mac=<mac> mac-feature=<0\|1> mrg-rxbuf=<0\|1> csum=<0\|1> guest-csum=<0\|1> event-idx=<0\|1> rxq=<size> txq=<size>` | the first network device; see [Network](#network) |
//! | `net-send:N:LEN` | `net-send: start`, then `net-send: done frames=<N> bytes=<N*LEN>` | sends `N` (at least 1) frames of `LEN` (18..=2036) bytes |
//! | `net-echo:N` | `net-echo: start`, then `net-echo: done frames=<n> bytes=<B> csum=<C> dropped=<D>` | receives `N` frames and sends each back unchanged |
//! | `net-recv:N[:CRC]` | `net-recv: start`, then `net-recv: done frames=<n> bytes=<B>` + ` crc32=0x<8 hex>` unless `CRC` is 0 | receives `N` frames (`CRC` 0 or 1, default 1: whether to checksum them) |
//! | `net-csum` | `net-csum: sent` | one UDP/IPv4 frame whose checksum is left to the device |
//! | `net-tso:N:LEN` | `net-tso: start`, then `net-tso: done frames=<N> bytes=<N*(LEN-54)>` (TCP payload); `net-tso: no TSO` (status 3) without `_HOST_TSO4` and `_CSUM` | sends `N` (at least 1) TCP/IPv4 frames of `LEN` (55..=65536) bytes for the device to segment |
//! | anything else | `unknown action: <name>` | then exits at once with status 2 ([`EXIT_BAD_ARGUMENTS`]) through [`DEBUG_EXIT_PORT`] |
//!
//! `smp`: `M` is the number of enabled processor entries in the MP table;
//! `A` counts the boot CPU plus the application processors that answered.
//! The guest copies a real-mode trampoline to 0x3000, software-enables its
//! local APIC, and sends INIT, SIPI, SIPI (vector 0x03) to every enabled
//! processor other than itself; each AP increments a counter in the
//! trampoline's page and halts. The guest waits for the counter for a
//! bounded time (about a second of native execution if an AP never
//! answers). With the MP table the VMM writes for `n` vCPUs, the line is
//! `smp: n of n cpus online`.
//!
//! For example, `kindling.test=hello,e820 kindling.exit=7` on a 128 MiB
//! guest of Kindling's VMM prints
//!
//! ```text
//! Hello from the Kindling test guest!
//! e820: 3 entries
//! e820: addr=0x0000000000000000 size=0x000000000009fc00 type=1
//! e820: addr=0x000000000009fc00 size=0x0000000000060400 type=2
//! e820: addr=0x0000000000100000 size=0x0000000007f00000 type=1
//! ```
//!
//! and the VMM exits with status 7.
//!
//! # Virtio
//!
//! The virtio actions take arguments after their name, separated by `:`,
//! all decimal: `D` is a block device's index among the block devices
//! (device id 2 with a good magic and version) in command-line order,
//! counted from 0, whether or not it initialised; `SECTOR` and `COUNT` are
//! in 512-byte sectors. `<S>`, a request's status, is `OK`, `IOERR`,
//! `UNSUPP` or `?<n>` for any other status byte `n` (`?255` means the
//! device did not write it). Requests are sent whatever the negotiated
//! features say (a flush without `VIRTIO_BLK_F_FLUSH`, a write to a
//! read-only device), so tests can check the device's answer. Example:
//! `kindling.test=virtio,blk-read:0:0:8,rng:32`.
//!
//! The first virtio action probes every device of the command line and
//! initialises each one the guest has a driver for (block, entropy and vsock),
//! once, as virtio 1.1 §3.1.1 says: reset (waiting for Status to read 0),
//! initialises each one the guest has a driver for (block, entropy and
//! network), once, as virtio 1.1 §3.1.1 says: reset (waiting for Status to
//! read 0),
//! ACKNOWLEDGE, DRIVER, features (it requires `VIRTIO_F_VERSION_1`; it also
//! accepts `VIRTIO_RING_F_EVENT_IDX`, and for block `VIRTIO_BLK_F_RO`,
//! `_FLUSH`, `_DISCARD` and `_WRITE_ZEROES`, when offered), FEATURES_OK
//! (read back), queue 0 (and queue 1 for a network device; size
//! `min(QueueNumMax, 256)` rounded down to a
//! power of two; descriptor table, driver and device areas as 64-bit
//! addresses; QueueReady; for vsock also queues 1 and 2, which must offer
//! at least 32 and 8 entries), DRIVER_OK. Each device that fails prints
//! `virtio<i>: init failed: <reason>` right then (before the action's own
//! lines) and gets FAILED; the VM goes on. The reasons: `reset not
//! acknowledged`, `no VIRTIO_F_VERSION_1`, `features not accepted`, `queue
//! 0 already live`, `queue 0 unavailable`, `queue 0 too small` (a block
//! device needs 4 entries, a vsock device 16), `queue already live`,
//! `queue unavailable`, `queue too small` (vsock queues 1 and 2), `a second
//! vsock device` (the driver serves one), `device needs reset` (DEVICE_NEEDS_RESET or
//! FAILED set after DRIVER_OK) and `no usable RAM at 0x400000..0xa00000`.
//! 0 already live`, `queue 0 unavailable`, `queue 0 too small` (and the same
//! three for queue 1 of a network device; a block device needs 4
//! entries, a network device 2), `device needs reset` (DEVICE_NEEDS_RESET or
//! FAILED set after DRIVER_OK) and `no usable RAM at 0x400000..0x900000`.
//!
//! In the `virtio` lines, `type` comes from the DeviceID register (read
//! even when the magic is wrong) and `status` is one of `ok`, `bad magic`,
//! `bad version` (not 2), `no driver` (a device type other than block,
//! entropy and vsock; nothing is written to it) and `init failed`.
//! entropy and network; nothing is written to it) and `init failed`.
//!
//! The driver runs in ring 3 with interrupts off. It notifies a queue with
//! one 32-bit write of the queue index (0, or 1 for a network device's
//! transmit queue) to QueueNotify, only when the
//! device asks for it (`avail_event` with `VIRTIO_RING_F_EVENT_IDX`,
//! otherwise `VIRTQ_USED_F_NO_NOTIFY`), and polls the used ring. It asks
//! for no interrupts (`VIRTQ_AVAIL_F_NO_INTERRUPT`, or a `used_event` kept
//! far ahead), though a device may raise its line anyway. A block request
//! is three descriptors, header (device-readable), data, status byte
//! (device-writable); a flush has no data descriptor. `blk-read` and
//! `blk-write` send one request of at most 64 KiB at a time, one after the
//! other, and stop at the first status other than `OK`. `rng` asks again
//! until it has `N` bytes or the device returns none.
//!
//! Errors end the VM at once through [`DEBUG_EXIT_PORT`]:
//!
//! | line | exit status | when |
//! | --- | --- | --- |
//! | `<name>: bad arguments` (e.g. `blk-read: bad arguments`) | [`EXIT_BAD_ARGUMENTS`] | a missing, extra or malformed argument, a number out of range (`COUNT` 0, `SECTOR + COUNT` past 2^64, a discard of 2^32 sectors or more), no block device `D`, or for `blk-bench` a `QD` above a third of the queue size or a disk smaller than `BS` |
//! | `blk<D>: not ready` / `rng: not ready` | [`EXIT_DEVICE_ERROR`] | the device did not initialise |
//! | `rng: no device` | [`EXIT_DEVICE_ERROR`] | `rng` without an entropy device |
//! | `vsock: no device` / `vsock: not ready` | [`EXIT_DEVICE_ERROR`] | a `vsock-*` action without a (working) vsock device |
//! | `vsock: timeout <what>` (`connecting`, `transferring`, `listening`, `echoing`, `sending`) | [`EXIT_DEVICE_ERROR`] | no progress for about 10^8 `pause` loops (10^9 while `listening` for a connection) |
//! | `blk<D>: timeout` / `rng: timeout` | [`EXIT_DEVICE_ERROR`] | no completion within about 10^8 `pause` loops (about 3 s on the development hosts) |
//! | `blk<D>: bad used element` / `rng: bad used element` | [`EXIT_DEVICE_ERROR`] | the device completed a descriptor chain that was not in flight |
//!
//! # Vsock
//!
//! The vsock driver (device id 19) initialises the device like the others,
//! with its three queues: RX (queue 0, up to 64 buffers of 8 KiB, header
//! and payload in one device-writable descriptor), TX (queue 1, 16 slots of
//! a header descriptor and an optional payload descriptor of at most
//! 16 KiB) and event (queue 2, 8 buffers of 8 bytes, reposted as events
//! come). It reads its CID from the configuration space. It runs one
//! stream connection at a time with the virtio credit scheme: it offers a
//! 64 KiB receive buffer (`buf_alloc`), sends no more than the peer's
//! credit allows, and sends a CREDIT_UPDATE once it has consumed half its
//! buffer unannounced; it answers CREDIT_REQUEST, and packets for no
//! connection of its own with RST. Both actions end a connection with a
//! SHUTDOWN (both directions) and wait for the peer's RST. Received
//! buffers go back to the device together, with one notification at most,
//! when the driver finds no more to read.
//!
//! A transport reset event (`VIRTIO_VSOCK_EVENT_TRANSPORT_RESET`, which a
//! device restored from a snapshot sends) prints `vsock: transport reset`
//! when the driver takes it (while an action polls the device) and ends
//! the connection in progress as reset by its peer: `vsock-connect`
//! prints what it had sent and received (or `refused`, if it was still
//! waiting for the host's answer), `vsock-listen` what it had echoed, with
//! ` reset`; the next action starts afresh.
//!
//! `vsock-connect` uses local ports from 49152 up. The vsock pattern is
//! byte `i` = `(i * 31 + (i >> 12)) mod 256`. `vsock-listen` keeps what it
//! received in a 64 KiB ring until the host's credit lets it send it back
//! (`overruns` counts bytes a peer sent beyond the credit it was given,
//! which are dropped).
//! | `net: no device` / `net: not ready` / `net: timeout` / `net: bad used element` | [`EXIT_DEVICE_ERROR`] | see [Network](#network) |
//! | `blk<D>: timeout` / `rng: timeout` | [`EXIT_DEVICE_ERROR`] | no completion within about 10^8 `pause` loops (about 3 s on the development hosts) |
//! | `blk<D>: bad used element` / `rng: bad used element` | [`EXIT_DEVICE_ERROR`] | the device completed a descriptor chain that was not in flight |
//!
//! # Network
//!
//! The network actions use the first network device (device id 1) in
//! command-line order. The driver accepts `VIRTIO_NET_F_MAC`,
//! `_MRG_RXBUF`, `_CSUM`, `_GUEST_CSUM`, `_HOST_TSO4`, `_GUEST_TSO4` and
//! `VIRTIO_RING_F_EVENT_IDX` when offered, sets up queue 0 (receive) and
//! queue 1 (transmit), and right after DRIVER_OK posts every receive
//! buffer: one device-writable descriptor of 2048 bytes each (the 12-byte
//! virtio header, then the frame). A frame spanning several buffers
//! (`num_buffers` with `_MRG_RXBUF`) is gathered; one that does not fit the
//! action's buffer (2048 bytes for `net-echo`, 64 KiB for `net-recv`) is
//! counted in `dropped` and not echoed. Buffers are posted again as soon as
//! their frame is copied out. Each transmitted frame is one
//! device-readable descriptor of 2048 bytes at most, header first
//! (`net-tso`: 12 + 65536 bytes at most, 32 in flight at most); the
//! driver keeps up to a queue's worth in flight and waits for all of them
//! before its `done` line. `net-tso` publishes its frames 8 at a time. `net-send` publishes its frames 32 at a time
//! (one kick, if the device asks for it, per 32 frames, and one when the
//! queue is full); `net-echo` and `net-csum` publish each frame at once. `<mac>` is the device's (`mac-feature=1`) or
//! `02:00:00:00:00:01`.
//!
//! - `net-send` frames: destination `ff:ff:ff:ff:ff:ff`, source `<mac>`,
//!   EtherType 0x88b5 (IEEE local experimental), then frame number `i`
//!   (from 0) as a little-endian u32, then byte `k` (`k` from 18) equal to
//!   `(i + k) mod 256`; the header is all zeroes.
//! - `net-echo` sends each frame back with its header's
//!   `VIRTIO_NET_HDR_F_NEEDS_CSUM` request, `csum_start` and `csum_offset`
//!   (kept only when `_CSUM` was negotiated; every other field zeroed);
//!   `C` counts frames that arrived with that flag.
//! - `net-recv`'s CRC-32 covers the frames without their headers, in order.
//! - `net-csum` sends destination broadcast, source `<mac>`, IPv4
//!   169.254.1.2 → 169.254.1.1, UDP 1234 → 5678 with 32 payload bytes
//!   0, 1, ..., 31 (74 bytes), header flags `NEEDS_CSUM`, `csum_start` 34,
//!   `csum_offset` 6, the UDP checksum field holding the pseudo-header sum.
//! - `net-tso` frame `i`: destination broadcast, source `<mac>`, IPv4
//!   169.254.1.2 → 169.254.1.1 (don't fragment, id `i mod 65536`, TTL 64,
//!   header checksum done), TCP 1234 → 5678, sequence number
//!   `i * (LEN - 54) mod 2^32`, flags ACK, window 65535, the checksum field
//!   holding the pseudo-header sum (with the TCP length); then `LEN - 54`
//!   payload bytes, byte `j` equal to `j mod 251`. Header: flags
//!   `NEEDS_CSUM`, `csum_start` 34, `csum_offset` 16, and when the payload
//!   is over 1448 bytes `gso_type` `VIRTIO_NET_HDR_GSO_TCPV4`, `hdr_len`
//!   54, `gso_size` 1448 (otherwise no GSO).
//!
//! Errors: `net: no device` and `net: not ready` (status 3), `net: timeout`
//! when a frame or a transmit completion does not come within the bounded
//! wait (about 3 s), `net: bad used element`.
//!
//! # Block benchmark
//!
//! `blk-bench:D:MODE:BS:QD:OPS` runs `OPS` (at least 1) requests of `BS`
//! bytes (a multiple of 512, 512..=65536) on block device `D`, keeping up
//! to `QD` in flight (1..=64, and at most a third of the queue size).
//! `MODE` is `randread`, `seqread`, `randwrite` or `seqwrite`: sequential
//! modes start at sector 0 and wrap around at the end of the disk; random
//! ones pick `BS`-aligned offsets with a fixed-seed xorshift64, so every run
//! makes the same requests. Writes write the byte 0x5a. The disk must hold
//! at least one block. Each round fills every free slot, publishes them with
//! a single kick (one QueueNotify exit at most), waits for a completion, and
//! takes all completions there are; each slot has its own 64 KiB buffer in
//! [`VIRTIO_DRIVER_RAM`]. `errors` counts requests whose status was not
//! `OK`. The loop runs natively in ring 3; the host times the two lines
//! (`blk-bench: start` is printed once everything is set up). A device that
//! stalls ends it with `blk<D>: timeout`.
//!
//! For example, with one 4 MiB disk and an entropy device,
//! `kindling.test=virtio,blk-info:0,blk-read:0:0:8,blk-flush:0,rng:64`
//! prints lines such as
//!
//! ```text
//! virtio: 2 devices
//! virtio0: base=0xc0001000 irq=5 type=blk status=ok
//! virtio1: base=0xc0002000 irq=6 type=rng status=ok
//! blk0: capacity=8192 ro=0 flush=1 discard=1 write-zeroes=1 event-idx=1 queue=256
//! blk0: read sector=0 count=8 status=OK crc32=0xabdf3e81
//! blk0: flush status=OK
//! rng: bytes=64 crc32=0x1c2d3e4f nonzero=63
//! ```
//!
//! # Example
//!
//! ```
//! use kindling_test_guest::{DEFAULT_CMDLINE, TEST_GUEST_ELF};
//!
//! assert_eq!(&TEST_GUEST_ELF[..4], b"\x7fELF");
//! assert_eq!(DEFAULT_CMDLINE, "kindling.test=hello");
//! ```

/// The test guest, an ELF64 x86-64 executable linked at 1 MiB (entry
/// `_start`), built from `guest/c/` by this crate's build script.
pub const TEST_GUEST_ELF: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/kindling-test-guest.elf"));

/// The command line to boot the test guest with when nothing else is asked
/// for: it prints its hello line and exits with status 0.
pub const DEFAULT_CMDLINE: &str = "kindling.test=hello";

/// The debug-exit port: the guest writes its exit status here (one byte),
/// and the VMM exits with that status. A VMM without the port (Kindling's
/// is opt-in, `VmConfig::debug_exit`) lets the guest run on: it then
/// prints `exit: no debug-exit device at port 0xf4, status N lost;
/// resetting` and resets through the i8042.
pub const DEBUG_EXIT_PORT: u16 = 0xf4;

/// The port the `pio-loop` action writes to, forever: one VM exit per
/// write, for exit-path benchmarks.
pub const BENCH_PORT: u16 = 0xf5;

/// The exit status after an unknown action or bad action arguments.
pub const EXIT_BAD_ARGUMENTS: u8 = 2;

/// The exit status after a device error: a virtio device that is missing,
/// did not initialise, timed out or completed a request it was not given.
pub const EXIT_DEVICE_ERROR: u8 = 3;

/// Guest-physical RAM the virtio driver uses (rings, request headers, the
/// I/O buffer and the benchmark buffers), once a virtio action runs: it
/// must be usable RAM in the E820 map, and nothing else (an initrd) should
/// be loaded there. The image ends below it.
pub const VIRTIO_DRIVER_RAM: std::ops::Range<u64> = 0x40_0000..0xa0_0000;

#[cfg(test)]
mod tests {
    use super::*;

    fn u16_at(off: usize) -> u16 {
        u16::from_le_bytes(TEST_GUEST_ELF[off..off + 2].try_into().unwrap())
    }

    fn u32_at(off: usize) -> u32 {
        u32::from_le_bytes(TEST_GUEST_ELF[off..off + 4].try_into().unwrap())
    }

    fn u64_at(off: usize) -> u64 {
        u64::from_le_bytes(TEST_GUEST_ELF[off..off + 8].try_into().unwrap())
    }

    /// `(p_type, p_offset, p_paddr, p_filesz, p_memsz)` of each program header.
    fn program_headers() -> Vec<(u32, u64, u64, u64, u64)> {
        let phoff = u64_at(32) as usize;
        let phentsize = u16_at(54) as usize;
        let phnum = u16_at(56) as usize;
        (0..phnum)
            .map(|i| {
                let ph = phoff + i * phentsize;
                (
                    u32_at(ph),
                    u64_at(ph + 8),
                    u64_at(ph + 24),
                    u64_at(ph + 32),
                    u64_at(ph + 40),
                )
            })
            .collect()
    }

    #[test]
    fn is_an_elf64_x86_64_executable() {
        assert_eq!(&TEST_GUEST_ELF[..4], b"\x7fELF");
        assert_eq!(TEST_GUEST_ELF[4], 2, "ELFCLASS64");
        assert_eq!(TEST_GUEST_ELF[5], 1, "little-endian");
        assert_eq!(u16_at(16), 2, "ET_EXEC");
        assert_eq!(u16_at(18), 62, "EM_X86_64");
    }

    #[test]
    fn entry_is_inside_a_loaded_segment_above_1_mib() {
        let entry = u64_at(24);
        assert!(entry >= 0x10_0000, "entry {entry:#x}");
        let loads: Vec<_> = program_headers().into_iter().filter(|p| p.0 == 1).collect();
        assert!(!loads.is_empty(), "no PT_LOAD segment");
        for &(_, offset, paddr, filesz, memsz) in &loads {
            assert!(paddr >= 0x10_0000, "segment at {paddr:#x}");
            assert!(filesz <= memsz);
            assert!(offset + filesz <= TEST_GUEST_ELF.len() as u64);
        }
        assert!(loads
            .iter()
            .any(|&(_, _, paddr, filesz, _)| (paddr..paddr + filesz).contains(&entry)));
    }

    #[test]
    fn image_is_small() {
        // The static page tables are 24 KiB; the rest is a few KiB of code.
        assert!(
            TEST_GUEST_ELF.len() < 64 * 1024,
            "{} bytes",
            TEST_GUEST_ELF.len()
        );
    }

    #[test]
    fn image_ends_below_the_virtio_driver_ram() {
        for (p_type, _, paddr, _, memsz) in program_headers() {
            if p_type == 1 {
                assert!(
                    paddr + memsz <= VIRTIO_DRIVER_RAM.start,
                    "segment at {paddr:#x} of {memsz:#x} bytes"
                );
            }
        }
    }

    #[test]
    fn default_command_line_asks_for_hello() {
        assert_eq!(DEFAULT_CMDLINE, "kindling.test=hello");
        assert_ne!(DEBUG_EXIT_PORT, BENCH_PORT);
    }
}
