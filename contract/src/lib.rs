//! The contracts between init (PID 1) and each vmm it launches, defined
//! once and used by both sides: how init asks a vmm to run a guest
//! ([`launch`]), what the vmm's exit code means ([`exit`]), and how the tap
//! devices it hands over are opened ([`tap`]).
//!
//! A new vmm option is added to [`launch::Launch`] and nowhere else: init
//! builds the command line with [`launch::Launch::to_args`], the vmm reads
//! it back with [`launch::parse`].

pub mod exit;
pub mod launch;
pub mod tap;

pub use exit::VmmExit;
pub use launch::{Command, Launch, LaunchSource};
