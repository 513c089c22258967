//! The waiting room of [`Proxy::serve`](crate::Proxy::serve): accepted clients that have not
//! sent a byte yet.
//!
//! Rule 29 asks that a connection which has said nothing cost next to nothing. A task per
//! connection costs its task cell and a reactor registration (over 600 bytes with malloc's
//! overhead) before the client has sent anything. Here a silent client is only an entry in a
//! slab (its socket, address, deadline and place among the proxy's connections), registered in
//! one epoll set of the room's own, which is itself registered once with tokio's reactor. When
//! a client's first bytes (or its EOF) arrive, or its head deadline passes, it leaves the room
//! as an ordinary [`Connection`](super::connection::Connection) on its own task.
//!
//! Clients whose bytes are already there when they are accepted never enter the room (see
//! `serve.rs`), so the common case pays nothing for it.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use mio::net::TcpStream;
use mio::{Events, Interest, Token};
use tokio::io::unix::AsyncFd;
use tokio::time::{Instant, Sleep};

use crate::splice::register;
use crate::trace;

/// Readiness events taken from the room's epoll set per `epoll_wait`.
const EVENTS: usize = 256;

/// Slab capacity kept when the room empties.
const KEEP: usize = 64;

/// A client in the room, with what its owner keeps with it (`T`: its place among the
/// proxy's connections for `serve`).
pub(crate) struct Waiter<T> {
    pub(crate) socket: TcpStream,
    pub(crate) peer: SocketAddr,
    pub(crate) data: T,
    /// When its head is due (the client-head timeout from its accept), if ever.
    pub(crate) deadline: Option<Instant>,
}

/// A slab entry: the waiter and the sequence number its deadline queue entry carries.
struct Slot<T> {
    waiter: Waiter<T>,
    seq: u64,
}

pub(crate) struct Room<T> {
    poll: AsyncFd<mio::Poll>,
    events: Events,
    /// Waiters by token; `free` lists the empty slots.
    slots: Vec<Option<Slot<T>>>,
    free: Vec<usize>,
    /// Tokens reported ready and not yet handed out.
    ready: Vec<usize>,
    /// Waiters with a deadline, in accept order (every waiter's deadline is the same time after
    /// its accept, so this is deadline order): (sequence number, token). An entry whose slot
    /// no longer holds that sequence number left earlier, and is skipped.
    queue: VecDeque<(u64, usize)>,
    next_seq: u64,
    /// One timer for the earliest deadline, created when first needed.
    timer: Option<Pin<Box<Sleep>>>,
    /// Waiters to hand out before anything else: all of them once the epoll set failed.
    spill: Vec<Waiter<T>>,
    broken: bool,
}

impl<T> Room<T> {
    /// A room with its own epoll set, registered with the current tokio reactor.
    pub(crate) fn new() -> io::Result<Self> {
        let poll = register(mio::Poll::new()?, tokio::io::Interest::READABLE)?;
        Ok(Room {
            poll,
            events: Events::with_capacity(EVENTS),
            slots: Vec::new(),
            free: Vec::new(),
            ready: Vec::new(),
            queue: VecDeque::new(),
            next_seq: 0,
            timer: None,
            spill: Vec::new(),
            broken: false,
        })
    }

    /// How many clients wait in the room.
    pub(crate) fn len(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// Puts `waiter` in the room until it is readable or due; gives it back when the room
    /// cannot take it (its epoll set failed, or registering failed: out of memory or past
    /// `max_user_watches`), for the caller to run it at once.
    pub(crate) fn insert(&mut self, mut waiter: Waiter<T>) -> Option<Waiter<T>> {
        if self.broken {
            return Some(waiter);
        }
        let token = match self.free.pop() {
            Some(token) => token,
            None => {
                self.slots.push(None);
                self.slots.len() - 1
            }
        };
        let registry = self.poll.get_ref().registry();
        if let Err(_error) = registry.register(&mut waiter.socket, Token(token), Interest::READABLE)
        {
            trace::warning!(%_error, "a silent client could not wait in the room; it gets a task");
            self.free.push(token);
            return Some(waiter);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        if waiter.deadline.is_some() {
            self.queue.push_back((seq, token));
        }
        self.slots[token] = Some(Slot { waiter, seq });
        None
    }

    /// The next waiter to leave the room: one whose socket became readable (bytes, EOF or an
    /// error), or whose deadline passed.
    pub(crate) fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Waiter<T>> {
        loop {
            if let Some(waiter) = self.spill.pop() {
                return Poll::Ready(waiter);
            }
            while let Some(token) = self.ready.pop() {
                if let Some(waiter) = self.remove(token) {
                    return Poll::Ready(waiter);
                }
            }
            if self.broken {
                return Poll::Pending;
            }
            match self.poll_events(cx) {
                Poll::Ready(Ok(())) => continue,
                Poll::Ready(Err(_error)) => {
                    // Not expected of epoll; failing open keeps every client served.
                    trace::warning!(%_error, "the waiting room's epoll set failed; each client gets a task");
                    self.break_open();
                    continue;
                }
                Poll::Pending => {}
            }
            return match self.poll_due(cx) {
                Some(waiter) => Poll::Ready(waiter),
                None => Poll::Pending,
            };
        }
    }

    /// Fills `ready` from the epoll set; `Pending` (with the reactor's wake-up registered)
    /// once it has nothing more.
    fn poll_events(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Room {
            poll,
            events,
            ready,
            ..
        } = self;
        loop {
            let mut guard = match poll.poll_read_ready_mut(cx) {
                Poll::Ready(Ok(guard)) => guard,
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                Poll::Pending => return Poll::Pending,
            };
            let waited = guard.try_io(|poll| {
                poll.get_mut().poll(events, Some(Duration::ZERO))?;
                if events.is_empty() {
                    // Clears the readiness: the next poll waits for the reactor.
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                Ok(())
            });
            match waited {
                Ok(Ok(())) => {
                    ready.extend(events.iter().map(|event| event.token().0));
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(error)) if error.kind() == io::ErrorKind::Interrupted => continue,
                Ok(Err(error)) => return Poll::Ready(Err(error)),
                Err(_would_block) => continue,
            }
        }
    }

    /// The first waiter past its deadline, if any; otherwise the timer is set for the
    /// earliest deadline.
    fn poll_due(&mut self, cx: &mut Context<'_>) -> Option<Waiter<T>> {
        loop {
            let &(seq, token) = self.queue.front()?;
            let deadline = match &self.slots[token] {
                Some(slot) if slot.seq == seq => slot.waiter.deadline?,
                // Left the room already.
                _ => {
                    self.queue.pop_front();
                    continue;
                }
            };
            let timer = match &mut self.timer {
                Some(timer) => {
                    if timer.deadline() != deadline {
                        timer.as_mut().reset(deadline);
                    }
                    timer
                }
                None => self
                    .timer
                    .insert(Box::pin(tokio::time::sleep_until(deadline))),
            };
            if std::future::Future::poll(timer.as_mut(), cx).is_pending() {
                return None;
            }
            self.queue.pop_front();
            return self.remove(token);
        }
    }

    /// Takes the waiter of `token` out of the room and out of its epoll set.
    fn remove(&mut self, token: usize) -> Option<Waiter<T>> {
        let Slot { mut waiter, .. } = self.slots.get_mut(token)?.take()?;
        self.free.push(token);
        // Its readiness now goes to tokio's reactor alone; the socket is not closed, so
        // leaving it registered here would wake the room for every later read.
        if let Err(_error) = self
            .poll
            .get_ref()
            .registry()
            .deregister(&mut waiter.socket)
        {
            trace::debug!(%_error, "deregistering a client from the waiting room");
        }
        if self.slots.len() == self.free.len() && self.slots.capacity() > KEEP {
            // Empty again after a burst of silent clients: give back what the burst made
            // the slab grow to (kept when small, so that a client now and then through the
            // room allocates nothing).
            self.slots = Vec::new();
            self.free = Vec::new();
            self.queue = VecDeque::new();
        }
        Some(waiter)
    }

    /// Every waiter left, to run on tasks of their own (the epoll set failed).
    fn break_open(&mut self) {
        self.broken = true;
        let waiters = self.slots.drain(..).flatten().map(|slot| slot.waiter);
        self.spill.extend(waiters);
        self.free.clear();
        self.queue.clear();
        self.ready.clear();
    }

    /// Empties the room (the accept loop is stopping): every waiter, to run on a task of its
    /// own so that the drain treats it as any other connection.
    pub(crate) fn into_waiters(self) -> impl Iterator<Item = Waiter<T>> {
        // The epoll set closes with `poll`; the sockets stay open.
        let Room { slots, spill, .. } = self;
        spill
            .into_iter()
            .chain(slots.into_iter().flatten().map(|slot| slot.waiter))
    }
}

/// Whether the client of a socket not yet registered with a reactor has spoken: bytes, its
/// EOF or an error are there (a one-byte peek, which leaves the bytes in the socket).
pub(crate) fn has_spoken(socket: &TcpStream) -> bool {
    match socket.peek(&mut [0u8; 1]) {
        Err(error) => !matches!(
            error.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
        ),
        Ok(_) => true,
    }
}

/// A socket accepted through mio, registered with tokio's reactor.
pub(crate) fn into_tokio(socket: TcpStream) -> io::Result<tokio::net::TcpStream> {
    tokio::net::TcpStream::from_std(std::net::TcpStream::from(socket))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::Admission;
    use crate::Proxy;
    use std::future::poll_fn;
    use std::io::{Read, Write};
    use std::net::TcpListener;

    /// A connected loopback pair: (the accepted side as the accept loop gets it, the client).
    fn pair(listener: &TcpListener) -> (TcpStream, SocketAddr, std::net::TcpStream) {
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, peer) = listener.accept().unwrap();
        accepted.set_nonblocking(true).unwrap();
        (TcpStream::from_std(accepted), peer, client)
    }

    fn waiter(
        proxy: &Proxy,
        socket: TcpStream,
        peer: SocketAddr,
        deadline: Option<Instant>,
    ) -> Waiter<Admission> {
        let group = proxy.new_group();
        Waiter {
            socket,
            peer,
            data: proxy.admit(&group),
            deadline,
        }
    }

    /// The next waiter out of `room` within `limit`.
    async fn next(room: &mut Room<Admission>, limit: Duration) -> Option<Waiter<Admission>> {
        tokio::time::timeout(limit, poll_fn(|cx| room.poll_next(cx)))
            .await
            .ok()
    }

    #[tokio::test]
    async fn a_silent_client_waits_until_it_speaks_then_leaves_with_its_bytes_unread() {
        let proxy = Proxy::new("127.0.0.1:9");
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut room = Room::new().unwrap();
        let (socket, peer, mut client) = pair(&listener);
        assert!(room.insert(waiter(&proxy, socket, peer, None)).is_none());
        assert_eq!(room.len(), 1);
        assert!(next(&mut room, Duration::from_millis(150)).await.is_none());
        assert_eq!(proxy.active_tunnels(), 1, "a waiter keeps its place");
        client.write_all(b"GET / HTTP/1.1\r\n").unwrap();
        let mut out = next(&mut room, Duration::from_secs(5))
            .await
            .expect("the client spoke, yet it is still in the room");
        assert_eq!(out.peer, peer);
        assert_eq!(room.len(), 0);
        let mut got = [0u8; 64];
        let n = out.socket.read(&mut got).unwrap();
        assert_eq!(&got[..n], b"GET / HTTP/1.1\r\n");
        // Out of the room's epoll set: more bytes do not wake the room.
        client.write_all(b"Host: a\r\n").unwrap();
        assert!(next(&mut room, Duration::from_millis(150)).await.is_none());
    }

    #[tokio::test]
    async fn a_client_that_closes_leaves_the_room() {
        let proxy = Proxy::new("127.0.0.1:9");
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut room = Room::new().unwrap();
        let (socket, peer, client) = pair(&listener);
        assert!(room.insert(waiter(&proxy, socket, peer, None)).is_none());
        drop(client);
        let mut out = next(&mut room, Duration::from_secs(5))
            .await
            .expect("the client closed, yet it is still in the room");
        assert_eq!(out.socket.read(&mut [0u8; 8]).unwrap(), 0);
    }

    #[tokio::test]
    async fn silent_clients_leave_at_their_deadlines_in_order() {
        let proxy = Proxy::new("127.0.0.1:9");
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut room = Room::new().unwrap();
        let start = Instant::now();
        let (first, first_peer, _a) = pair(&listener);
        let (second, second_peer, _b) = pair(&listener);
        let early = start + Duration::from_millis(150);
        let late = start + Duration::from_millis(300);
        assert!(room
            .insert(waiter(&proxy, first, first_peer, Some(early)))
            .is_none());
        assert!(room
            .insert(waiter(&proxy, second, second_peer, Some(late)))
            .is_none());
        let out = next(&mut room, Duration::from_secs(5)).await.unwrap();
        assert_eq!(out.peer, first_peer);
        assert!(
            Instant::now() >= early,
            "left {:?} early",
            early - Instant::now()
        );
        let out = next(&mut room, Duration::from_secs(5)).await.unwrap();
        assert_eq!(out.peer, second_peer);
        assert!(Instant::now() >= late);
        assert_eq!(room.len(), 0);
    }

    #[tokio::test]
    async fn a_client_that_left_early_is_not_expired_in_a_reused_slot() {
        let proxy = Proxy::new("127.0.0.1:9");
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut room = Room::new().unwrap();
        let now = Instant::now();
        let (socket, peer, mut client) = pair(&listener);
        assert!(room
            .insert(waiter(
                &proxy,
                socket,
                peer,
                Some(now + Duration::from_millis(100))
            ))
            .is_none());
        client.write_all(b"G").unwrap();
        assert_eq!(
            next(&mut room, Duration::from_secs(5)).await.unwrap().peer,
            peer
        );
        // The same slot, a later deadline: the first one's queue entry must not expire it.
        let (socket, later_peer, _c) = pair(&listener);
        let later = now + Duration::from_millis(400);
        assert!(room
            .insert(waiter(&proxy, socket, later_peer, Some(later)))
            .is_none());
        let out = next(&mut room, Duration::from_secs(5)).await.unwrap();
        assert_eq!(out.peer, later_peer);
        assert!(
            Instant::now() >= later,
            "expired at the earlier client's deadline"
        );
    }

    #[tokio::test]
    async fn emptying_the_room_gives_back_every_waiter() {
        let proxy = Proxy::new("127.0.0.1:9");
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut room = Room::new().unwrap();
        let mut clients = Vec::new();
        for _ in 0..5 {
            let (socket, peer, client) = pair(&listener);
            assert!(room.insert(waiter(&proxy, socket, peer, None)).is_none());
            clients.push(client);
        }
        assert_eq!(proxy.active_tunnels(), 5);
        assert_eq!(room.into_waiters().count(), 5);
        // Their places went with them.
        assert_eq!(proxy.active_tunnels(), 0);
    }

    /// Through `serve`: clients that have sent nothing get no task; once they speak, each
    /// gets one.
    #[tokio::test]
    async fn serve_gives_no_task_to_a_silent_client() {
        let proxy = Proxy::builder()
            .backend("127.0.0.1:9")
            .grace_period(Duration::from_millis(100))
            .build()
            .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = tokio::spawn({
            let proxy = proxy.clone();
            async move {
                proxy
                    .serve(listener, async {
                        let _ = stopped.await;
                    })
                    .await
            }
        });
        let metrics = tokio::runtime::Handle::current().metrics();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let before = metrics.num_alive_tasks();
        let mut clients = Vec::new();
        for _ in 0..32 {
            clients.push(tokio::net::TcpStream::connect(addr).await.unwrap());
        }
        // All accepted (each holds a place) while none has a task.
        for _ in 0..100 {
            if proxy.active_tunnels() == 32 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(proxy.active_tunnels(), 32);
        assert_eq!(
            metrics.num_alive_tasks(),
            before,
            "silent clients got tasks"
        );
        for client in &mut clients {
            tokio::io::AsyncWriteExt::write_all(client, b"GET /")
                .await
                .unwrap();
        }
        let mut tasks = before;
        for _ in 0..100 {
            tasks = metrics.num_alive_tasks();
            if tasks == before + 32 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(tasks, before + 32, "clients that spoke did not get tasks");
        drop(stop);
        let summary = serving.await.unwrap();
        assert_eq!(summary.accepted, 32);
    }
}
