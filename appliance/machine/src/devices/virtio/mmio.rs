//! The virtio-mmio transport, version 2 (virtio 1.2 section 4.2): the register file, the
//! device status state machine (sections 2.1 and 3.1.1) and the queues, around a device model.
//!
//! `mmio_load`/`mmio_store` run inside the hart's MMIO callback and never touch guest memory;
//! a QueueNotify only marks the queue. The machine calls `process` between run slices, and
//! that is where buffers are read and written.

use alloc::vec::Vec;

use super::queue::Queue;
use super::{GuestMemory, QueueWork, VirtioDevice, VIRTIO_F_VERSION_1};
use crate::state::{RestoreError, StateReader, StateWriter};

/// Register offsets (virtio 1.2 section 4.2.2, table "MMIO Device Register Layout").
pub const MAGIC_VALUE: u64 = 0x000;
pub const VERSION: u64 = 0x004;
pub const DEVICE_ID: u64 = 0x008;
pub const VENDOR_ID: u64 = 0x00c;
pub const DEVICE_FEATURES: u64 = 0x010;
pub const DEVICE_FEATURES_SEL: u64 = 0x014;
pub const DRIVER_FEATURES: u64 = 0x020;
pub const DRIVER_FEATURES_SEL: u64 = 0x024;
pub const QUEUE_SEL: u64 = 0x030;
pub const QUEUE_NUM_MAX: u64 = 0x034;
pub const QUEUE_NUM: u64 = 0x038;
pub const QUEUE_READY: u64 = 0x044;
pub const QUEUE_NOTIFY: u64 = 0x050;
pub const INTERRUPT_STATUS: u64 = 0x060;
pub const INTERRUPT_ACK: u64 = 0x064;
pub const STATUS: u64 = 0x070;
pub const QUEUE_DESC_LOW: u64 = 0x080;
pub const QUEUE_DESC_HIGH: u64 = 0x084;
pub const QUEUE_DRIVER_LOW: u64 = 0x090;
pub const QUEUE_DRIVER_HIGH: u64 = 0x094;
pub const QUEUE_DEVICE_LOW: u64 = 0x0a0;
pub const QUEUE_DEVICE_HIGH: u64 = 0x0a4;
pub const SHM_SEL: u64 = 0x0ac;
pub const SHM_LEN_LOW: u64 = 0x0b0;
pub const SHM_LEN_HIGH: u64 = 0x0b4;
pub const SHM_BASE_LOW: u64 = 0x0b8;
pub const SHM_BASE_HIGH: u64 = 0x0bc;
pub const CONFIG_GENERATION: u64 = 0x0fc;
pub const CONFIG: u64 = 0x100;

/// "virt" in little-endian ASCII (4.2.2).
pub const MAGIC: u32 = 0x7472_6976;
/// Version 2 is the non-legacy interface (4.2.2).
pub const TRANSPORT_VERSION: u32 = 2;
/// The vendor ID QEMU uses ("QEMU" little-endian); drivers do not match on it.
pub const VENDOR_ID_QEMU: u32 = 0x554d_4551;

/// Device status bits (virtio 1.2 section 2.1).
pub const STATUS_ACKNOWLEDGE: u32 = 1;
pub const STATUS_DRIVER: u32 = 2;
pub const STATUS_DRIVER_OK: u32 = 4;
pub const STATUS_FEATURES_OK: u32 = 8;
pub const STATUS_DEVICE_NEEDS_RESET: u32 = 64;
pub const STATUS_FAILED: u32 = 128;

/// InterruptStatus bits (4.2.2).
pub const INTERRUPT_USED_BUFFER: u32 = 1;
pub const INTERRUPT_CONFIG_CHANGE: u32 = 2;

/// How far the driver has brought the device through initialisation (3.1.1). The status
/// register is this state's bits plus FAILED and DEVICE_NEEDS_RESET.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DriverState {
    Reset,
    Acknowledged,
    Driver,
    FeaturesOk,
    DriverOk,
}

impl DriverState {
    pub fn bits(self) -> u32 {
        match self {
            DriverState::Reset => 0,
            DriverState::Acknowledged => STATUS_ACKNOWLEDGE,
            DriverState::Driver => STATUS_ACKNOWLEDGE | STATUS_DRIVER,
            DriverState::FeaturesOk => STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK,
            DriverState::DriverOk => {
                STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK
            }
        }
    }

    /// The transition table for a Status write of `bits` (without FAILED and
    /// DEVICE_NEEDS_RESET, which are handled apart). Each step adds exactly the next bit
    /// (3.1.1 steps 2, 3, 5, 8); writing the current bits again changes nothing. Any other
    /// write (skipping a step, clearing a bit: 2.1.1 "driver MUST NOT clear a device status
    /// bit") is illegal and returns `None`. FEATURES_OK is refused (the state stays
    /// `Driver`, so the driver reads the bit back clear, 3.1.1 step 6) when the driver's
    /// features are not acceptable.
    pub fn on_status_write(self, bits: u32, features_acceptable: bool) -> Option<DriverState> {
        use DriverState::*;
        if bits == self.bits() {
            return Some(self);
        }
        match (self, bits) {
            (Reset, b) if b == Acknowledged.bits() => Some(Acknowledged),
            (Acknowledged, b) if b == Driver.bits() => Some(Driver),
            (Driver, b) if b == FeaturesOk.bits() => Some(if features_acceptable {
                FeaturesOk
            } else {
                Driver
            }),
            (FeaturesOk, b) if b == DriverOk.bits() => Some(DriverOk),
            _ => None,
        }
    }
}

/// One virtio-mmio device: the transport registers, the queues and the device model.
pub struct VirtioMmio<D> {
    device: D,
    state: DriverState,
    /// The driver gave up on the device (FAILED, 2.1).
    failed: bool,
    /// The device saw the driver break the protocol and stopped (2.1.2).
    needs_reset: bool,
    device_features_select: u32,
    driver_features: u64,
    driver_features_select: u32,
    queue_select: u32,
    queues: Vec<Queue>,
    interrupt_status: u32,
    config_generation: u32,
}

impl<D: VirtioDevice> VirtioMmio<D> {
    pub fn new(device: D) -> Self {
        let queues = device
            .queue_max_sizes()
            .iter()
            .map(|&max| Queue::new(max))
            .collect();
        VirtioMmio {
            device,
            state: DriverState::Reset,
            failed: false,
            needs_reset: false,
            device_features_select: 0,
            driver_features: 0,
            driver_features_select: 0,
            queue_select: 0,
            queues,
            interrupt_status: 0,
            config_generation: 0,
        }
    }

    pub fn device(&self) -> &D {
        &self.device
    }

    pub fn device_mut(&mut self) -> &mut D {
        &mut self.device
    }

    pub fn state(&self) -> DriverState {
        self.state
    }

    pub fn needs_reset(&self) -> bool {
        self.needs_reset
    }

    /// The level of the device's interrupt line towards the PLIC.
    pub fn interrupt(&self) -> bool {
        self.interrupt_status != 0
    }

    /// Whether any queue was notified and still has work for `process`.
    pub fn has_work(&self) -> bool {
        self.live() && self.queues.iter().any(Queue::has_work)
    }

    fn offered_features(&self) -> u64 {
        self.device.device_features() | VIRTIO_F_VERSION_1
    }

    /// The device may use its queues: DRIVER_OK and neither FAILED nor DEVICE_NEEDS_RESET
    /// (3.1.1: no used buffers before DRIVER_OK).
    fn live(&self) -> bool {
        self.state == DriverState::DriverOk && !self.failed && !self.needs_reset
    }

    /// Does the queue work that notifications asked for. Call between run slices, at an
    /// instruction boundary the machine chose (never from inside an MMIO access).
    pub fn process(&mut self, memory: &mut dyn GuestMemory) {
        if !self.has_work() {
            return;
        }
        let work = self
            .device
            .process(&mut self.queues, self.driver_features, memory);
        self.apply(work);
    }

    /// Runs device-specific queue work (an input entering a queue) when the device is live;
    /// `None` when it is not.
    pub(super) fn with_queues<R>(
        &mut self,
        f: impl FnOnce(&mut D, &mut [Queue], u64) -> (QueueWork, R),
    ) -> Option<R> {
        if !self.live() {
            return None;
        }
        let (work, result) = f(&mut self.device, &mut self.queues, self.driver_features);
        self.apply(work);
        Some(result)
    }

    fn apply(&mut self, work: QueueWork) {
        if work.notify_driver {
            self.interrupt_status |= INTERRUPT_USED_BUFFER;
        }
        if work.needs_reset {
            self.set_needs_reset();
        }
    }

    /// 2.1.2: the device sets DEVICE_NEEDS_RESET and sends a configuration change
    /// notification; it serves no queue until the driver resets it.
    fn set_needs_reset(&mut self) {
        self.needs_reset = true;
        for queue in &mut self.queues {
            queue.clear_work();
        }
        self.interrupt_status |= INTERRUPT_CONFIG_CHANGE;
    }

    /// Writing 0 to Status (4.2.2): every register and queue back to its initial value.
    fn reset(&mut self) {
        self.state = DriverState::Reset;
        self.failed = false;
        self.needs_reset = false;
        self.device_features_select = 0;
        self.driver_features = 0;
        self.driver_features_select = 0;
        self.queue_select = 0;
        for queue in &mut self.queues {
            queue.reset();
        }
        self.interrupt_status = 0;
        self.device.reset();
    }

    fn selected_queue(&mut self) -> Option<&mut Queue> {
        self.queues.get_mut(self.queue_select as usize)
    }

    /// A load from the device's window; `None` faults the access. Registers are 32 bits wide
    /// (4.2.2: "all register values are little endian ... 32-bit"); configuration space takes
    /// 1, 2, 4 or 8-byte accesses.
    pub fn mmio_load(&mut self, offset: u64, size_bytes: u8) -> Option<u64> {
        if offset >= CONFIG {
            if !matches!(size_bytes, 1 | 2 | 4 | 8) {
                return None;
            }
            let mut data = [0u8; 8];
            let len = usize::from(size_bytes);
            self.device.read_config(offset - CONFIG, &mut data[..len]);
            return Some(u64::from_le_bytes(data));
        }
        if size_bytes != 4 || !offset.is_multiple_of(4) {
            return None;
        }
        let queue = self.queues.get(self.queue_select as usize);
        let value = match offset {
            MAGIC_VALUE => MAGIC,
            VERSION => TRANSPORT_VERSION,
            DEVICE_ID => self.device.device_id(),
            VENDOR_ID => VENDOR_ID_QEMU,
            DEVICE_FEATURES => match self.device_features_select {
                0 => self.offered_features() as u32,
                1 => (self.offered_features() >> 32) as u32,
                _ => 0,
            },
            // 4.2.2: reading QueueNumMax of a queue that does not exist returns 0.
            QUEUE_NUM_MAX => queue.map_or(0, |q| u32::from(q.max_size())),
            QUEUE_READY => queue.map_or(0, |q| q.ready as u32),
            INTERRUPT_STATUS => self.interrupt_status,
            STATUS => {
                self.state.bits()
                    | if self.needs_reset {
                        STATUS_DEVICE_NEEDS_RESET
                    } else {
                        0
                    }
                    | if self.failed { STATUS_FAILED } else { 0 }
            }
            // No shared memory regions: their length reads as all ones (4.2.2).
            SHM_LEN_LOW | SHM_LEN_HIGH | SHM_BASE_LOW | SHM_BASE_HIGH => u32::MAX,
            CONFIG_GENERATION => self.config_generation,
            // Write-only and reserved registers read as zero.
            _ => 0,
        };
        Some(u64::from(value))
    }

    /// A store to the device's window; `false` faults the access. Only records state: guest
    /// memory is not touched here.
    pub fn mmio_store(&mut self, offset: u64, size_bytes: u8, value: u64) -> bool {
        if offset >= CONFIG {
            if !matches!(size_bytes, 1 | 2 | 4 | 8) {
                return false;
            }
            let bytes = value.to_le_bytes();
            self.device
                .write_config(offset - CONFIG, &bytes[..usize::from(size_bytes)]);
            return true;
        }
        if size_bytes != 4 || !offset.is_multiple_of(4) {
            return false;
        }
        let value = value as u32;
        let queue_setup = self.state == DriverState::FeaturesOk;
        match offset {
            DEVICE_FEATURES_SEL => self.device_features_select = value,
            // 3.1.1 step 4: features are written after DRIVER and before FEATURES_OK.
            DRIVER_FEATURES if self.state == DriverState::Driver => {
                let shift = match self.driver_features_select {
                    0 => 0,
                    1 => 32,
                    _ => return true,
                };
                self.driver_features =
                    (self.driver_features & !(0xffff_ffff << shift)) | (u64::from(value) << shift);
            }
            DRIVER_FEATURES_SEL => self.driver_features_select = value,
            QUEUE_SEL => self.queue_select = value,
            QUEUE_NUM => {
                if let Some(queue) = self.selected_queue().filter(|q| queue_setup && !q.ready) {
                    queue.size = value.min(u32::from(u16::MAX)) as u16;
                }
            }
            QUEUE_READY => self.write_queue_ready(value),
            QUEUE_NOTIFY => {
                // Without VIRTIO_F_NOTIFICATION_DATA the value is the queue index (4.2.2).
                let live = self.live();
                if let Some(queue) = self.queues.get_mut(value as usize) {
                    if live && queue.ready {
                        queue.set_work();
                    }
                }
            }
            INTERRUPT_ACK => self.interrupt_status &= !value,
            STATUS => self.write_status(value),
            QUEUE_DESC_LOW | QUEUE_DESC_HIGH | QUEUE_DRIVER_LOW | QUEUE_DRIVER_HIGH
            | QUEUE_DEVICE_LOW | QUEUE_DEVICE_HIGH => {
                if let Some(queue) = self.selected_queue().filter(|q| queue_setup && !q.ready) {
                    let field = match offset & !0x4 {
                        QUEUE_DESC_LOW => &mut queue.desc_table,
                        QUEUE_DRIVER_LOW => &mut queue.avail_ring,
                        _ => &mut queue.used_ring,
                    };
                    let shift = if offset & 0x4 != 0 { 32 } else { 0 };
                    *field = (*field & !(0xffff_ffff << shift)) | (u64::from(value) << shift);
                }
            }
            // Read-only and reserved registers ignore writes.
            _ => {}
        }
        true
    }

    fn write_queue_ready(&mut self, value: u32) {
        let queue_setup = self.state == DriverState::FeaturesOk;
        let Some(queue) = self.selected_queue() else {
            return;
        };
        if value == 0 {
            // Taking a queue down is allowed at any time; the device stops using it.
            queue.ready = false;
            queue.clear_work();
            return;
        }
        if !queue_setup || queue.ready {
            return;
        }
        if queue.is_valid() {
            queue.ready = true;
        } else {
            // A size that is not a power of two or misaligned rings: the driver broke 2.7.
            self.set_needs_reset();
        }
    }

    fn write_status(&mut self, value: u32) {
        if value == 0 {
            self.reset();
            return;
        }
        if value & STATUS_FAILED != 0 {
            self.failed = true;
        }
        let bits = value & !(STATUS_FAILED | STATUS_DEVICE_NEEDS_RESET);
        let acceptable = self.features_acceptable();
        if let Some(next) = self.state.on_status_write(bits, acceptable) {
            self.state = next;
        }
    }

    /// 3.1.1 step 5 and 6.1: the driver may accept only offered features, and must accept
    /// VIRTIO_F_VERSION_1 (no device here has a legacy interface).
    fn features_acceptable(&self) -> bool {
        self.driver_features & !self.offered_features() == 0
            && self.driver_features & VIRTIO_F_VERSION_1 != 0
    }

    pub fn write_state(&self, out: &mut StateWriter) {
        out.u32(self.device.device_id());
        out.u32(
            self.state.bits()
                | if self.needs_reset {
                    STATUS_DEVICE_NEEDS_RESET
                } else {
                    0
                }
                | if self.failed { STATUS_FAILED } else { 0 },
        );
        out.u32(self.device_features_select);
        out.u64(self.driver_features);
        out.u32(self.driver_features_select);
        out.u32(self.queue_select);
        out.u32(self.interrupt_status);
        out.u32(self.config_generation);
        for queue in &self.queues {
            queue.write_state(out);
        }
        self.device.write_state(out);
    }

    /// Saved state for `Machine::save_devices`: the transport registers, every queue and
    /// the device model.
    pub fn save(&self, out: &mut StateWriter) {
        out.u32(self.device.device_id());
        out.u32(self.state.bits());
        out.u8(self.failed as u8 | (self.needs_reset as u8) << 1);
        out.u32(self.device_features_select);
        out.u64(self.driver_features);
        out.u32(self.driver_features_select);
        out.u32(self.queue_select);
        out.u32(self.interrupt_status);
        out.u32(self.config_generation);
        for queue in &self.queues {
            queue.save(out);
        }
        self.device.save(out);
    }

    /// Reads what `save` wrote; changes nothing (`restore_saved` applies it).
    pub fn parse_saved(
        &self,
        input: &mut StateReader,
    ) -> Result<SavedMmio<D::Saved>, RestoreError> {
        let device_id = input.u32()?;
        if device_id != self.device.device_id() {
            return Err(RestoreError::Mismatch {
                what: "virtio device",
                expected: u64::from(self.device.device_id()),
                found: u64::from(device_id),
            });
        }
        let bits = input.u32()?;
        let state = [
            DriverState::Reset,
            DriverState::Acknowledged,
            DriverState::Driver,
            DriverState::FeaturesOk,
            DriverState::DriverOk,
        ]
        .into_iter()
        .find(|state| state.bits() == bits)
        .ok_or(RestoreError::Invalid {
            what: "virtio status",
            value: u64::from(bits),
        })?;
        let flags = input.flags(0b11, "virtio status flags")?;
        let device_features_select = input.u32()?;
        let driver_features = input.u64()?;
        let driver_features_select = input.u32()?;
        let queue_select = input.u32()?;
        let interrupt_status = input.u32()?;
        let config_generation = input.u32()?;
        let queues = self
            .queues
            .iter()
            .map(|queue| Queue::restore(queue.max_size(), input))
            .collect::<Result<Vec<_>, _>>()?;
        let device = self.device.parse_saved(input)?;
        Ok(SavedMmio {
            state,
            failed: flags & 1 != 0,
            needs_reset: flags & 2 != 0,
            device_features_select,
            driver_features,
            driver_features_select,
            queue_select,
            queues,
            interrupt_status,
            config_generation,
            device,
        })
    }

    pub fn restore_saved(&mut self, saved: SavedMmio<D::Saved>) {
        self.state = saved.state;
        self.failed = saved.failed;
        self.needs_reset = saved.needs_reset;
        self.device_features_select = saved.device_features_select;
        self.driver_features = saved.driver_features;
        self.driver_features_select = saved.driver_features_select;
        self.queue_select = saved.queue_select;
        self.queues = saved.queues;
        self.interrupt_status = saved.interrupt_status;
        self.config_generation = saved.config_generation;
        self.device.restore_saved(saved.device);
    }
}

/// A virtio-mmio device's saved state, read and checked, not yet applied.
pub struct SavedMmio<S> {
    state: DriverState,
    failed: bool,
    needs_reset: bool,
    device_features_select: u32,
    driver_features: u64,
    driver_features_select: u32,
    queue_select: u32,
    queues: Vec<Queue>,
    interrupt_status: u32,
    config_generation: u32,
    device: S,
}

#[cfg(test)]
mod tests {
    use super::super::rng::Rng;
    use super::super::test_driver::{initialise, TestMemory, TestQueue, RAM_BASE};
    use super::*;

    fn device() -> VirtioMmio<Rng> {
        VirtioMmio::new(Rng::new())
    }

    fn status(device: &mut VirtioMmio<Rng>) -> u32 {
        device.mmio_load(STATUS, 4).unwrap() as u32
    }

    #[test]
    fn identification_registers_4_2_2() {
        let mut device = device();
        assert_eq!(device.mmio_load(MAGIC_VALUE, 4), Some(u64::from(MAGIC)));
        assert_eq!(device.mmio_load(VERSION, 4), Some(2));
        assert_eq!(device.mmio_load(DEVICE_ID, 4), Some(4));
        assert_eq!(
            device.mmio_load(VENDOR_ID, 4),
            Some(u64::from(VENDOR_ID_QEMU))
        );
        device.mmio_store(DEVICE_FEATURES_SEL, 4, 1);
        assert_eq!(
            device.mmio_load(DEVICE_FEATURES, 4),
            Some(1),
            "VIRTIO_F_VERSION_1"
        );
        device.mmio_store(QUEUE_SEL, 4, 0);
        assert_eq!(
            device.mmio_load(QUEUE_NUM_MAX, 4),
            Some(u64::from(super::super::rng::RNG_QUEUE_SIZE))
        );
        device.mmio_store(QUEUE_SEL, 4, 1);
        assert_eq!(device.mmio_load(QUEUE_NUM_MAX, 4), Some(0), "no queue 1");
    }

    #[test]
    fn registers_fault_on_non_32_bit_access() {
        let mut device = device();
        assert_eq!(device.mmio_load(MAGIC_VALUE, 1), None);
        assert_eq!(device.mmio_load(MAGIC_VALUE + 2, 4), None);
        assert!(!device.mmio_store(STATUS, 2, 1));
        assert_eq!(
            device.mmio_load(CONFIG, 1),
            Some(0),
            "config space takes byte accesses"
        );
    }

    #[test]
    fn status_follows_the_initialisation_sequence_3_1_1() {
        let mut device = device();
        let mut memory = TestMemory::new(1 << 16);
        let queue = TestQueue::new(RAM_BASE, 16);
        initialise(&mut device, core::slice::from_ref(&queue));
        assert_eq!(device.state(), DriverState::DriverOk);
        assert_eq!(status(&mut device), 0xf);
        // Reset clears everything, including the queues.
        device.mmio_store(STATUS, 4, 0);
        assert_eq!(status(&mut device), 0);
        assert_eq!(device.mmio_load(QUEUE_READY, 4), Some(0));
        device.process(&mut memory);
    }

    #[test]
    fn illegal_status_edges_are_ignored_2_1_1() {
        use DriverState::*;
        let all = [Reset, Acknowledged, Driver, FeaturesOk, DriverOk];
        let legal = [
            (Reset, Acknowledged),
            (Acknowledged, Driver),
            (Driver, FeaturesOk),
            (FeaturesOk, DriverOk),
        ];
        for from in all {
            for to in all {
                let result = from.on_status_write(to.bits(), true);
                if from == to || legal.contains(&(from, to)) {
                    assert_eq!(result, Some(to), "{from:?} -> {to:?} is legal");
                } else {
                    assert_eq!(result, None, "{from:?} -> {to:?} is illegal");
                }
            }
        }
        // DRIVER_OK without FEATURES_OK (bits 1|2|4) is not a state at all.
        assert_eq!(Driver.on_status_write(0x7, true), None);
    }

    #[test]
    fn features_ok_is_refused_for_unoffered_features_or_without_version_1() {
        for features in [0u64, VIRTIO_F_VERSION_1 | 1 << 40] {
            let mut device = device();
            device.mmio_store(STATUS, 4, 1);
            device.mmio_store(STATUS, 4, 3);
            for select in 0..2u64 {
                device.mmio_store(DRIVER_FEATURES_SEL, 4, select);
                device.mmio_store(DRIVER_FEATURES, 4, features >> (32 * select));
            }
            device.mmio_store(STATUS, 4, 0xb);
            assert_eq!(status(&mut device), 0x3, "FEATURES_OK reads back clear");
        }
    }

    #[test]
    fn queue_registers_are_ignored_outside_queue_setup() {
        let mut device = device();
        device.mmio_store(QUEUE_SEL, 4, 0);
        device.mmio_store(QUEUE_NUM, 4, 4);
        device.mmio_store(QUEUE_READY, 4, 1);
        assert_eq!(
            device.mmio_load(QUEUE_READY, 4),
            Some(0),
            "not before FEATURES_OK"
        );
    }

    #[test]
    fn invalid_queue_size_sets_device_needs_reset_2_1_2() {
        let mut device = device();
        for value in [1, 3, 0xb] {
            device.mmio_store(STATUS, 4, value);
            if value == 3 {
                device.mmio_store(DRIVER_FEATURES_SEL, 4, 1);
                device.mmio_store(DRIVER_FEATURES, 4, 1);
            }
        }
        assert_eq!(status(&mut device), 0xb);
        device.mmio_store(QUEUE_SEL, 4, 0);
        device.mmio_store(QUEUE_NUM, 4, 12);
        device.mmio_store(QUEUE_READY, 4, 1);
        assert_eq!(device.mmio_load(QUEUE_READY, 4), Some(0));
        assert_eq!(status(&mut device), 0xb | STATUS_DEVICE_NEEDS_RESET);
        assert!(device.interrupt(), "configuration change notification");
        assert_eq!(
            device.mmio_load(INTERRUPT_STATUS, 4),
            Some(u64::from(INTERRUPT_CONFIG_CHANGE))
        );
        device.mmio_store(STATUS, 4, 0);
        assert_eq!(status(&mut device), 0);
        assert!(!device.interrupt());
    }

    #[test]
    fn notify_only_marks_the_queue() {
        let mut device = device();
        let queue = TestQueue::new(RAM_BASE, 16);
        initialise(&mut device, core::slice::from_ref(&queue));
        assert!(!device.has_work());
        device.mmio_store(QUEUE_NOTIFY, 4, 7);
        assert!(!device.has_work(), "no queue 7");
        device.mmio_store(QUEUE_NOTIFY, 4, 0);
        assert!(device.has_work());
    }
}
