//! What drives the virtio devices from the guest's side outside a guest:
//! a minimal virtio driver for the tests ([`driver`]), the hostile-driver
//! tests built on it, and the fuzz driver shared with the cargo-fuzz
//! target in vmm/fuzz ([`fuzz_driver`], also built with the `fuzzing`
//! feature). None of it is in the vmm binary.

#[cfg(test)]
pub(crate) mod driver;
pub mod fuzz_driver;
#[cfg(test)]
mod hostile;
#[cfg(test)]
mod net_fuzz;
