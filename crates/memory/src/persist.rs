//! The persist contract: how every stateful part of a Kindling VM saves its
//! guest-visible state and is rebuilt from it.
//!
//! A snapshot is a walk over the VM's parts (the VM itself, each vCPU, each
//! legacy device, each virtio transport with its device and queues), calling
//! [`Persist::save`] on each; a restore walks the same parts, calling
//! [`Persist::restore`] with the saved state and the host resources the new
//! part needs.
//!
//! The contract, for every implementation:
//!
//! - **Guest-visible state only.** A state holds what the guest can observe
//!   (registers, buffered bytes, queue positions), as plain data that
//!   `serde` can write to a file. Host resources (file descriptors, open
//!   files, eventfds, guest memory mappings, output writers, the KVM VM a
//!   vCPU belongs to) are not part of it: they are passed back in through
//!   [`Persist::ConstructorArgs`] at restore, so that a state can be
//!   restored in another process.
//! - **A state is hostile input.** It may come from a file someone edited.
//!   [`Persist::restore`] validates it and returns a typed error (never a
//!   panic) when it is inconsistent or does not fit the resources given.
//! - **Save while quiescent.** A part is saved while nothing drives it: the
//!   vCPUs paused (outside `KVM_RUN`) and the device event loop not
//!   processing. A save never changes the part.
//! - **Restore gives the same behaviour.** A restored part, given the same
//!   guest inputs, does what the saved part would have done.

/// A part of a VM whose guest-visible state can be saved and restored.
///
/// The lifetime `'a` lets [`Persist::ConstructorArgs`] borrow what a restore
/// builds on (a vCPU borrows the VM it is created in); most implementations
/// ignore it.
///
/// # Example
///
/// A device with one guest-visible register and a host-side output:
///
/// ```
/// use kindling_memory::Persist;
///
/// /// Guest-visible state: the register.
/// #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
/// struct LatchState {
///     value: u8,
/// }
///
/// /// Why a state cannot be restored.
/// #[derive(Debug, thiserror::Error)]
/// #[error("latch value {0:#x} has reserved bits set")]
/// struct BadLatch(u8);
///
/// struct Latch {
///     value: u8,
///     out: Vec<u8>, // a host resource: not saved, passed in at restore
/// }
///
/// impl Persist<'_> for Latch {
///     type State = LatchState;
///     type ConstructorArgs = Vec<u8>;
///     type Error = BadLatch;
///
///     fn save(&self) -> Result<LatchState, BadLatch> {
///         Ok(LatchState { value: self.value })
///     }
///
///     fn restore(out: Vec<u8>, state: &LatchState) -> Result<Self, BadLatch> {
///         if state.value & 0x80 != 0 {
///             return Err(BadLatch(state.value));
///         }
///         Ok(Latch { value: state.value, out })
///     }
/// }
///
/// let latch = Latch { value: 0x12, out: Vec::new() };
/// let state = latch.save().unwrap();
/// let restored = Latch::restore(Vec::new(), &state).unwrap();
/// assert_eq!(restored.save().unwrap(), state);
/// assert!(Latch::restore(Vec::new(), &LatchState { value: 0xff }).is_err());
/// # let _ = (latch.out, restored.out);
/// ```
pub trait Persist<'a>: Sized {
    /// The guest-visible state, as plain serialisable data.
    type State: serde::Serialize + serde::de::DeserializeOwned;
    /// The host resources a restore needs (file descriptors, files,
    /// eventfds, guest memory, output writers, the VM to create a vCPU in).
    type ConstructorArgs;
    /// Why a save or a restore failed.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Saves the guest-visible state. The part must be quiescent (no vCPU
    /// running, no event loop processing it); saving does not change it.
    fn save(&self) -> Result<Self::State, Self::Error>;

    /// Builds a new part from `state` and the host resources in `args`,
    /// after checking that `state` is consistent and fits `args`.
    fn restore(args: Self::ConstructorArgs, state: &Self::State) -> Result<Self, Self::Error>;
}
