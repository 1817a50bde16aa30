//! PC legacy devices on the I/O port bus.

pub mod cmos;
pub mod i8042;
pub mod serial;

pub use cmos::Cmos;
pub use i8042::I8042;
pub use serial::SerialDevice;
