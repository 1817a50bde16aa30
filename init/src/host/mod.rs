//! The host itself as host.toml describes it: network bridges and taps,
//! the kernel's boot-time IP configuration, data mounts and cgroups.

pub mod cgroup;
pub mod data_mounts;
pub mod ipconfig;
pub mod net;
