//! [`SpliceConfig`]: the tunnel's timers and buffer sizes.

use std::time::Duration;

/// Tunnel configuration: timers and buffer sizes.
///
/// Built with consuming setters from [`SpliceConfig::new`] (the same as
/// [`Default::default`]); every setting has a matching `get_*` getter.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use wsrelay::SpliceConfig;
///
/// let config = SpliceConfig::new()
///     .idle_timeout(Some(Duration::from_secs(60)))
///     .max_lifetime(Some(Duration::from_secs(3600)));
/// assert_eq!(config.get_fin_timeout(), Some(Duration::from_secs(30)));
/// ```
#[derive(Debug, Clone)]
pub struct SpliceConfig {
    idle_timeout: Option<Duration>,
    fin_timeout: Option<Duration>,
    max_lifetime: Option<Duration>,
    pipe_size: usize,
    buffer_size: usize,
    max_buffer_size: usize,
    zero_copy: bool,
    small_reads: bool,
}

impl Default for SpliceConfig {
    fn default() -> Self {
        Self {
            idle_timeout: Some(Duration::from_secs(600)),
            fin_timeout: Some(Duration::from_secs(30)),
            max_lifetime: None,
            pipe_size: 1024 * 1024,
            buffer_size: 8 * 1024,
            max_buffer_size: 64 * 1024,
            zero_copy: true,
            small_reads: true,
        }
    }
}

impl SpliceConfig {
    /// The default configuration (see each setter for its default).
    pub fn new() -> Self {
        Self::default()
    }

    /// Closes both sides when no byte has moved in either direction for this long
    /// (HAProxy `timeout tunnel`; nginx re-arms `proxy_read_timeout` on traffic either way).
    ///
    /// Default `Some(600 s)`; `None` disables it. To keep a busy tunnel cheap, the timer is
    /// not reset on every chunk: when it fires after traffic it is re-armed for another full
    /// period, so a tunnel is closed after between one and two periods of silence.
    pub fn idle_timeout(mut self, t: Option<Duration>) -> Self {
        self.idle_timeout = t;
        self
    }

    /// Closes a half-closed tunnel (one side has sent its EOF) this long after the first EOF,
    /// if the other direction has not ended by then (HAProxy `timeout client-fin` /
    /// `timeout server-fin`).
    ///
    /// Default `Some(30 s)`; `None` disables it.
    pub fn fin_timeout(mut self, t: Option<Duration>) -> Self {
        self.fin_timeout = t;
        self
    }

    /// Closes the tunnel this long after it started, whatever the traffic (Caddy
    /// `stream_timeout`).
    ///
    /// Default `None` (no limit).
    pub fn max_lifetime(mut self, t: Option<Duration>) -> Self {
        self.max_lifetime = t;
        self
    }

    /// Largest size of each pipe of the zero-copy path; it bounds the bytes in flight per
    /// direction on that path.
    ///
    /// A pipe is created with the kernel's default size (64 KiB, or this size if smaller)
    /// when its direction first carries bulk data, and is grown with `F_SETPIPE_SZ` to this
    /// size the first time one `splice` fills at least half of it: a busy direction then
    /// needs fewer, larger `splice` calls (about 16 times fewer at 1 MiB), while a
    /// direction that only sees the odd large message keeps the small pipe.
    ///
    /// Default 1 MiB (the default `/proc/sys/fs/pipe-max-size`); `0` keeps the kernel
    /// default. If the kernel refuses a size, the pipe keeps the size it has: an
    /// unprivileged process may not exceed `pipe-max-size`, and once a user's pipes hold
    /// more than `/proc/sys/fs/pipe-user-pages-soft` pages (16384 pages, 64 MiB, by default;
    /// that is 32 tunnels with both directions at 1 MiB), the kernel refuses growth and
    /// creates new pipes with two pages only. Lower this size (or raise that limit) for
    /// many concurrent bulk tunnels run by an unprivileged user.
    pub fn pipe_size(mut self, bytes: usize) -> Self {
        self.pipe_size = bytes;
        self
    }

    /// Initial size of the per-direction buffer of the buffered path, allocated when the
    /// first bytes arrive in that direction.
    ///
    /// Default 8 KiB. Values below 1 are treated as 1; values above
    /// [`max_buffer_size`](Self::max_buffer_size) as that cap.
    pub fn buffer_size(mut self, bytes: usize) -> Self {
        self.buffer_size = bytes;
        self
    }

    /// Cap on the per-direction buffer of the buffered path. The buffer doubles (up to this
    /// cap) when a read fills it completely, so bulk transfers need fewer system calls.
    ///
    /// Default 64 KiB. Values below 1 are treated as 1.
    pub fn max_buffer_size(mut self, bytes: usize) -> Self {
        self.max_buffer_size = bytes;
        self
    }

    /// Whether to use `splice(2)` when both streams are `TcpStream`s on Linux.
    ///
    /// Default `true`; `false` forces the buffered path.
    pub fn zero_copy(mut self, on: bool) -> Self {
        self.zero_copy = on;
        self
    }

    /// Whether a direction of the zero-copy path starts with ordinary reads and writes
    /// through a 4 KiB array on the stack, switching to `splice(2)` (and creating its pipe)
    /// only when a read fills that array, as HAProxy does.
    ///
    /// Small messages then cost one `recv` and one `send` instead of two `splice` calls, and
    /// a tunnel that only carries small messages holds no pipe (no extra fds). Nothing is
    /// kept on the heap unless the destination does not take a read at once.
    ///
    /// Default `true`; `false` splices from the first byte.
    pub fn small_reads(mut self, on: bool) -> Self {
        self.small_reads = on;
        self
    }

    /// Whether small reads are on (see [`small_reads`](Self::small_reads)).
    pub fn get_small_reads(&self) -> bool {
        self.small_reads
    }

    /// The idle timeout (see [`idle_timeout`](Self::idle_timeout)).
    pub fn get_idle_timeout(&self) -> Option<Duration> {
        self.idle_timeout
    }

    /// The fin timeout (see [`fin_timeout`](Self::fin_timeout)).
    pub fn get_fin_timeout(&self) -> Option<Duration> {
        self.fin_timeout
    }

    /// The maximum lifetime (see [`max_lifetime`](Self::max_lifetime)).
    pub fn get_max_lifetime(&self) -> Option<Duration> {
        self.max_lifetime
    }

    /// The size pipes grow to (see [`pipe_size`](Self::pipe_size)).
    pub fn get_pipe_size(&self) -> usize {
        self.pipe_size
    }

    /// The initial buffer size (see [`buffer_size`](Self::buffer_size)).
    pub fn get_buffer_size(&self) -> usize {
        self.buffer_size
    }

    /// The buffer size cap (see [`max_buffer_size`](Self::max_buffer_size)).
    pub fn get_max_buffer_size(&self) -> usize {
        self.max_buffer_size
    }

    /// Whether the zero-copy path may be used (see [`zero_copy`](Self::zero_copy)).
    pub fn get_zero_copy(&self) -> bool {
        self.zero_copy
    }

    /// The effective (initial, maximum) buffer sizes of the buffered path.
    pub(crate) fn buffer_sizes(&self) -> (usize, usize) {
        let max = self.max_buffer_size.max(1);
        (self.buffer_size.clamp(1, max), max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_and_setters() {
        let c = SpliceConfig::new();
        assert_eq!(c.get_idle_timeout(), Some(Duration::from_secs(600)));
        assert_eq!(c.get_fin_timeout(), Some(Duration::from_secs(30)));
        assert_eq!(c.get_max_lifetime(), None);
        assert_eq!(c.get_pipe_size(), 1024 * 1024);
        assert_eq!(c.get_buffer_size(), 8 * 1024);
        assert_eq!(c.get_max_buffer_size(), 64 * 1024);
        assert!(c.get_zero_copy());
        assert!(c.get_small_reads());
        assert!(!c.clone().small_reads(false).get_small_reads());
        let c = c
            .idle_timeout(None)
            .fin_timeout(Some(Duration::from_secs(1)))
            .max_lifetime(Some(Duration::from_secs(2)))
            .pipe_size(0)
            .buffer_size(1 << 20)
            .max_buffer_size(4096)
            .zero_copy(false);
        assert_eq!(c.get_idle_timeout(), None);
        assert_eq!(c.get_fin_timeout(), Some(Duration::from_secs(1)));
        assert_eq!(c.get_max_lifetime(), Some(Duration::from_secs(2)));
        assert_eq!(c.get_pipe_size(), 0);
        assert!(!c.get_zero_copy());
        // The initial size is clamped to the cap, and both to at least one byte.
        assert_eq!(c.buffer_sizes(), (4096, 4096));
        assert_eq!(c.buffer_size(0).max_buffer_size(0).buffer_sizes(), (1, 1));
    }
}
