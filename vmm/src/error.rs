//! The one error type `main` turns into a message and an exit code.

use std::fmt;

use hvcontract::VmmExit;

#[derive(Debug)]
pub struct Fatal {
    pub code: i32,
    pub message: String,
}

impl Fatal {
    /// Bad usage, invalid definition, unusable kernel/initrd: exit 2.
    pub fn invalid(message: impl Into<String>) -> Self {
        Fatal {
            code: VmmExit::Invalid.code(),
            message: message.into(),
        }
    }

    /// The VMM or the host failed: exit 1.
    pub fn vmm(message: impl Into<String>) -> Self {
        Fatal {
            code: 1,
            message: message.into(),
        }
    }
}

impl fmt::Display for Fatal {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&self.message)
    }
}
