//! Running under a service manager (feature `systemd`): listening sockets inherited through
//! socket activation, and readiness notification.
//!
//! - [`inherited_listeners`] takes the listening sockets passed by systemd socket activation
//!   (`LISTEN_FDS`, `LISTEN_PID`, descriptors from 3 on) or by any parent process that
//!   follows the same convention (`systemfd`, a supervisor handing its sockets to the next
//!   generation). Each must be a TCP socket in the listening state: anything else (a file, a
//!   UDP or Unix socket, a TCP socket that is not listening) is an error naming the
//!   descriptor, not a server that never accepts. Give each to [`Proxy::serve`] with
//!   `tokio::net::TcpListener::from_std`.
//! - [`notify`] tells the service manager the proxy's state (`READY=1` once it listens,
//!   `STOPPING=1` when it starts draining) on `NOTIFY_SOCKET` (systemd's `Type=notify`), and
//!   does nothing where that variable is not set.
//!
//! The descriptors are taken with the [`listenfd`](https://docs.rs/listenfd) crate, which
//! checks that each is a stream socket of an internet family before owning it (no `unsafe`
//! here), and their state is read with `socket2` (`SO_ACCEPTCONN`). The notification is one
//! datagram on a Unix socket, written here with the standard library: the `sd-notify`
//! crate needs a newer Rust than this crate's `rust-version`.
//!
//! A listening socket inherited from systemd stays open in systemd too: when the proxy
//! closes its copy on shutdown, new connections queue in systemd's socket (and start the
//! service again) instead of being refused. That is what socket activation is for; behind a
//! load balancer that must see refused connects during a restart, let the proxy bind its
//! own port instead.
//!
//! [`Proxy::serve`]: crate::Proxy::serve

use std::io;
use std::net::TcpListener;

/// Takes every listening socket passed to this process (`LISTEN_FDS` and `LISTEN_PID`, as
/// systemd's socket activation sets them), each non-blocking and ready for
/// `tokio::net::TcpListener::from_std`. Empty when nothing was passed (or the variables are
/// meant for another process).
///
/// Call it once, at the start of `main`, before any thread (a tokio runtime included) is
/// started: it removes `LISTEN_FDS` and `LISTEN_PID` from the environment, so that child
/// processes do not take the same descriptors.
///
/// # Errors
///
/// An [`io::ErrorKind::InvalidInput`] error naming the descriptor when one of them is not a
/// listening TCP socket, and the error of any system call that fails on one.
pub fn inherited_listeners() -> io::Result<Vec<TcpListener>> {
    let first: usize = std::env::var("LISTEN_FDS_FIRST_FD")
        .ok()
        .and_then(|first| first.parse().ok())
        .unwrap_or(3);
    let mut fds = listenfd::ListenFd::from_env();
    let mut listeners = Vec::with_capacity(fds.len());
    for index in 0..fds.len() {
        let fd = first + index;
        let listener = fds
            .take_tcp_listener(index)
            .map_err(|e| invalid(format!("inherited descriptor {fd}: {e}")))?
            .ok_or_else(|| invalid(format!("inherited descriptor {fd}: already taken")))?;
        let socket = socket2::SockRef::from(&listener);
        if !socket.is_listener()? {
            return Err(invalid(format!(
                "inherited descriptor {fd} is a TCP socket but not a listening one"
            )));
        }
        listener.set_nonblocking(true)?;
        listeners.push(listener);
    }
    Ok(listeners)
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

/// A state to report to the service manager with [`notify`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum State {
    /// `READY=1`: listening; start sending traffic.
    Ready,
    /// `STOPPING=1`: draining; no new connections are accepted.
    Stopping,
}

/// Reports `state` to the service manager on the Unix datagram socket named by
/// `NOTIFY_SOCKET` (a path, or `@name` for the abstract namespace), as `sd_notify(3)` does;
/// `Ok(false)` without sending anything when the variable is not set.
///
/// # Errors
///
/// When the socket cannot be reached, or the variable names no valid address.
pub fn notify(state: State) -> io::Result<bool> {
    use std::os::unix::net::UnixDatagram;

    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(false);
    };
    let message: &[u8] = match state {
        State::Ready => b"READY=1\n",
        State::Stopping => b"STOPPING=1\n",
    };
    let socket = UnixDatagram::unbound()?;
    let bytes = std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str());
    match bytes.strip_prefix(b"@") {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        Some(name) => {
            #[cfg(target_os = "android")]
            use std::os::android::net::SocketAddrExt;
            #[cfg(target_os = "linux")]
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            socket.send_to_addr(message, &addr)?;
        }
        _ => {
            socket.send_to(message, &path)?;
        }
    }
    Ok(true)
}
