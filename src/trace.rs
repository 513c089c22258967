//! `tracing` events when the `tracing` feature is on, nothing otherwise. Only used off the
//! hot path: refused handshakes, unreachable backends, closed tunnels.

#[cfg(feature = "tracing")]
macro_rules! debug {
    ($($arg:tt)*) => { tracing::debug!($($arg)*) };
}

#[cfg(not(feature = "tracing"))]
macro_rules! debug {
    ($($arg:tt)*) => {{}};
}

#[cfg(feature = "tracing")]
macro_rules! warning {
    ($($arg:tt)*) => { tracing::warn!($($arg)*) };
}

#[cfg(not(feature = "tracing"))]
macro_rules! warning {
    ($($arg:tt)*) => {{}};
}

pub(crate) use {debug, warning};
