//! The persist contract for [`VirtioInterrupt`].

use std::sync::Arc;

use kindling_devices::InterruptLine;
use kindling_memory::Persist;

use super::{InterruptState, VirtioInterrupt, INT_CONFIG, INT_VRING};

/// Why a saved interrupt state cannot be restored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InterruptStateError {
    /// The InterruptStatus has bits other than used-buffer and
    /// configuration-change.
    #[error("interrupt status {0:#x} has bits other than INT_VRING and INT_CONFIG")]
    UnknownStatusBits(u32),
}

impl Persist<'_> for VirtioInterrupt {
    type State = InterruptState;
    type ConstructorArgs = Arc<dyn InterruptLine>;
    type Error = InterruptStateError;

    fn save(&self) -> Result<InterruptState, InterruptStateError> {
        Ok(self.state())
    }

    /// Recreates the handle on `line`. Pending status bits are not raised
    /// here: the transport's restore raises the line once when any is set
    /// (the interrupt may not have reached the saved interrupt controller).
    fn restore(
        line: Arc<dyn InterruptLine>,
        state: &InterruptState,
    ) -> Result<Self, InterruptStateError> {
        if state.status & !(INT_VRING | INT_CONFIG) != 0 {
            return Err(InterruptStateError::UnknownStatusBits(state.status));
        }
        Ok(VirtioInterrupt::from_checked_state(state, line))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::interrupt::tests::CountingLine;

    #[test]
    fn status_generation_and_needs_reset_survive() {
        let line = Arc::new(CountingLine::default());
        let irq = VirtioInterrupt::new(line.clone());
        irq.signal_config_change().unwrap();
        irq.signal_config_change().unwrap();
        irq.signal_used_queue().unwrap();
        irq.acknowledge(INT_CONFIG);
        let state = irq.save().unwrap();
        let json = serde_json::to_string(&state).unwrap();
        let new_line = Arc::new(CountingLine::default());
        let restored =
            VirtioInterrupt::restore(new_line.clone(), &serde_json::from_str(&json).unwrap())
                .unwrap();
        assert_eq!(restored.save().unwrap(), state);
        assert_eq!(restored.status(), INT_VRING);
        assert_eq!(restored.config_generation(), 2);
        assert_eq!(new_line.count(), 0, "nothing raised at restore");
        // Same behaviour: the next change is generation 3, on the new line.
        restored.signal_config_change().unwrap();
        assert_eq!(restored.config_generation(), 3);
        assert_eq!(new_line.count(), 1);
        assert_eq!(line.count(), 3);
    }

    #[test]
    fn unknown_status_bits_are_refused() {
        let state = InterruptState {
            status: 0x7,
            ..InterruptState::default()
        };
        assert_eq!(
            VirtioInterrupt::restore(Arc::new(CountingLine::default()), &state).unwrap_err(),
            InterruptStateError::UnknownStatusBits(7)
        );
    }
}
