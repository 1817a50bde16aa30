//! The epoll tokens of the event loop: what woke it, as the u64 each
//! registered fd carries.

use nix::sys::epoll::{EpollEvent, EpollFlags};

/// What woke epoll, as the u64 of its event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Token {
    Signal,
    /// The config fetch thread ended.
    Fetch,
    /// The creation of guest `i`'s disk images ended.
    Provision(usize),
    /// Power button `i` of those opened at start.
    Button(usize),
    /// A guest's vmm wrote to its stdout or stderr.
    Guest {
        index: usize,
        stderr: bool,
    },
}

const TOKEN_SIGNAL: u64 = 0;
const TOKEN_FETCH: u64 = 1;
const TOKEN_PROVISION: u64 = 1 << 8;
const TOKEN_BUTTON: u64 = 1 << 16;
const TOKEN_GUEST: u64 = 1 << 32;

impl Token {
    pub fn encode(self) -> u64 {
        // usize is 64 bits on every target init is built for.
        let wide = |i: usize| u64::try_from(i).unwrap_or(u64::MAX);
        match self {
            Token::Signal => TOKEN_SIGNAL,
            Token::Fetch => TOKEN_FETCH,
            Token::Provision(i) => {
                TOKEN_PROVISION + wide(i).min(TOKEN_BUTTON - TOKEN_PROVISION - 1)
            }
            Token::Button(i) => TOKEN_BUTTON + wide(i).min(TOKEN_GUEST - TOKEN_BUTTON - 1),
            Token::Guest { index, stderr } => {
                TOKEN_GUEST | (wide(index).min(u64::MAX >> 2) << 1) | u64::from(stderr)
            }
        }
    }

    pub fn decode(token: u64) -> Option<Token> {
        let narrow = |v: u64| usize::try_from(v).ok();
        match token {
            TOKEN_SIGNAL => Some(Token::Signal),
            TOKEN_FETCH => Some(Token::Fetch),
            t if t & TOKEN_GUEST != 0 => Some(Token::Guest {
                index: narrow((t & !TOKEN_GUEST) >> 1)?,
                stderr: t & 1 == 1,
            }),
            t if t >= TOKEN_BUTTON => Some(Token::Button(narrow(t - TOKEN_BUTTON)?)),
            t if t >= TOKEN_PROVISION => Some(Token::Provision(narrow(t - TOKEN_PROVISION)?)),
            _ => None,
        }
    }

    pub fn event(self) -> EpollEvent {
        EpollEvent::new(EpollFlags::EPOLLIN, self.encode())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip() {
        for token in [
            Token::Signal,
            Token::Fetch,
            Token::Button(0),
            Token::Button(7),
            Token::Provision(0),
            Token::Provision(crate::guests::MAX_GUESTS - 1),
            Token::Guest {
                index: 0,
                stderr: false,
            },
            Token::Guest {
                index: crate::guests::MAX_GUESTS - 1,
                stderr: true,
            },
        ] {
            assert_eq!(Token::decode(token.encode()), Some(token), "{token:?}");
        }
        assert_eq!(Token::decode(2), None);
    }
}
