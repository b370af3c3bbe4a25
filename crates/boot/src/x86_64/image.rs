//! Where kernel and initrd bytes come from.

use std::fs::File;
use std::io::{self, Cursor, Read, Seek, SeekFrom};

use vm_memory::bitmap::BitmapSlice;
use vm_memory::{ReadVolatile, VolatileMemoryError, VolatileSlice};

/// A kernel or initrd image: seekable bytes.
///
/// Implemented for [`File`], for [`Cursor`] over bytes, and for references
/// and boxes of implementors, so `&mut dyn ReadSeek` works. For a reader of
/// your own, an empty `impl ReadSeek for MyReader {}` is enough.
pub trait ReadSeek: Read + Seek {
    /// The file behind this reader, if there is one. The loaders then read
    /// from it straight into guest memory instead of through a bounce
    /// buffer.
    fn as_file(&mut self) -> Option<&mut File> {
        None
    }
}

impl ReadSeek for File {
    fn as_file(&mut self) -> Option<&mut File> {
        Some(self)
    }
}

impl<T: AsRef<[u8]>> ReadSeek for Cursor<T> {}

impl<R: ReadSeek + ?Sized> ReadSeek for &mut R {
    fn as_file(&mut self) -> Option<&mut File> {
        (**self).as_file()
    }
}

impl<R: ReadSeek + ?Sized> ReadSeek for Box<R> {
    fn as_file(&mut self) -> Option<&mut File> {
        (**self).as_file()
    }
}

/// Size of the bounce buffer used for readers that are not files.
const BOUNCE_SIZE: usize = 64 * 1024;

/// Adapts a [`ReadSeek`] to the [`ReadVolatile`] that linux-loader and
/// vm-memory read guest memory from.
pub(crate) struct Image<'a, F: ?Sized> {
    inner: &'a mut F,
    bounce: Vec<u8>,
}

impl<'a, F: ReadSeek + ?Sized> Image<'a, F> {
    pub(crate) fn new(inner: &'a mut F) -> Self {
        Self {
            inner,
            bounce: Vec::new(),
        }
    }
}

impl<F: ReadSeek + ?Sized> Read for Image<'_, F> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf)
    }
}

impl<F: ReadSeek + ?Sized> Seek for Image<'_, F> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.inner.seek(pos)
    }
}

impl<F: ReadSeek + ?Sized> Image<'_, F> {
    /// One read into `buf`, straight from the file or through the bounce
    /// buffer.
    fn read_once<B: BitmapSlice>(
        &mut self,
        buf: &mut VolatileSlice<B>,
    ) -> Result<usize, VolatileMemoryError> {
        if let Some(file) = self.inner.as_file() {
            return file.read_volatile(buf);
        }
        if self.bounce.is_empty() {
            self.bounce.resize(BOUNCE_SIZE, 0);
        }
        let want = buf.len().min(BOUNCE_SIZE);
        let got = self
            .inner
            .read(&mut self.bounce[..want])
            .map_err(VolatileMemoryError::IOError)?;
        buf.copy_from(&self.bounce[..got]);
        Ok(got)
    }
}

impl<F: ReadSeek + ?Sized> ReadVolatile for Image<'_, F> {
    /// Fills `buf` completely unless the source ends first.
    ///
    /// vm-memory's `GuestMemoryBackend::read_exact_volatile_from` makes a
    /// single `read_volatile` call per memory region and fails on a short
    /// read, so this keeps reading (past the bounce buffer's size, short
    /// reads from the file, and `EINTR`) until the slice is full or the
    /// source is exhausted.
    fn read_volatile<B: BitmapSlice>(
        &mut self,
        buf: &mut VolatileSlice<B>,
    ) -> Result<usize, VolatileMemoryError> {
        let mut done = 0;
        while done < buf.len() {
            let mut rest = buf.offset(done)?;
            match self.read_once(&mut rest) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(VolatileMemoryError::IOError(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use vm_memory::{Bytes, GuestAddress};

    use super::*;
    use crate::x86_64::test_images::guest_memory;

    #[test]
    fn cursor_goes_through_the_bounce_buffer() {
        let mem = guest_memory(16 << 20);
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let mut cursor = Cursor::new(data.clone());
        let mut image = Image::new(&mut cursor);
        mem.read_exact_volatile_from(GuestAddress(0x10_0000), &mut image, data.len())
            .unwrap();
        let mut back = vec![0u8; data.len()];
        mem.read_slice(&mut back, GuestAddress(0x10_0000)).unwrap();
        assert_eq!(back, data);
    }

    #[test]
    fn file_is_read_directly() {
        let path = std::env::temp_dir().join(format!("kindling-boot-image-{}", std::process::id()));
        File::create(&path)
            .unwrap()
            .write_all(b"straight in")
            .unwrap();
        let mut file = File::open(&path).unwrap();
        std::fs::remove_file(&path).unwrap();

        let dyn_file: &mut dyn ReadSeek = &mut file;
        assert!(dyn_file.as_file().is_some());
        let mut boxed: Box<dyn ReadSeek> = Box::new(Cursor::new(vec![1u8]));
        assert!(boxed.as_file().is_none());

        let mem = guest_memory(16 << 20);
        let mut image = Image::new(dyn_file);
        mem.read_exact_volatile_from(GuestAddress(0x1000), &mut image, 11)
            .unwrap();
        let mut back = [0u8; 11];
        mem.read_slice(&mut back, GuestAddress(0x1000)).unwrap();
        assert_eq!(&back, b"straight in");
    }

    /// A reader that returns at most 3 bytes per call and is interrupted
    /// every other call.
    struct Trickle {
        data: Cursor<Vec<u8>>,
        calls: u32,
    }

    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.calls += 1;
            if self.calls % 2 == 0 {
                return Err(io::ErrorKind::Interrupted.into());
            }
            let n = buf.len().min(3);
            self.data.read(&mut buf[..n])
        }
    }

    impl Seek for Trickle {
        fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
            self.data.seek(pos)
        }
    }

    impl ReadSeek for Trickle {}

    #[test]
    fn short_reads_and_interruptions_are_retried() {
        let mem = guest_memory(16 << 20);
        let mut source = Trickle {
            data: Cursor::new((0..100u8).collect()),
            calls: 0,
        };
        let mut image = Image::new(&mut source);
        mem.read_exact_volatile_from(GuestAddress(0x1000), &mut image, 100)
            .unwrap();
        let mut back = [0u8; 100];
        mem.read_slice(&mut back, GuestAddress(0x1000)).unwrap();
        assert!(back.iter().enumerate().all(|(i, &b)| usize::from(b) == i));
    }

    #[test]
    fn short_source_is_an_error() {
        let mem = guest_memory(16 << 20);
        let mut cursor = Cursor::new(vec![1u8; 10]);
        let mut image = Image::new(&mut cursor);
        assert!(mem
            .read_exact_volatile_from(GuestAddress(0x1000), &mut image, 11)
            .is_err());
    }
}
