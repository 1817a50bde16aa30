//! The host itself as host.toml describes it: network bridges and taps,
//! the kernel's boot-time IP configuration, data mounts and cgroups, and
//! setting all that up once the configuration is loaded ([`host_setup`]).

pub mod cgroup;
pub mod data_mounts;
pub mod host_setup;
pub mod ipconfig;
pub mod net;
