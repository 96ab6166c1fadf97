//! The floor server for `cargo bench --bench serve`: the least an HTTP server on a Unix socket
//! can do per request, so psi's server CPU per request has a yardstick measured in the same
//! run on the same machine.
//!
//! One thread, one level-triggered epoll set, non-blocking sockets, no runtime and no parsing
//! beyond finding the blank line that ends a request head: it accepts, reads a request (at
//! once if it is there, else when epoll says so), writes a fixed `200` with a 64-byte body
//! (the size of the bench's cached values) and closes. With `--keep-alive` it keeps the
//! connection for the next request instead, until the client closes. Every request gets the
//! same answer, whatever its method or path.
//!
//! The bench compiles this file with rustc alone (cargo cannot build while it runs the
//! bench), so it uses only std and declares the few C library calls it makes at the end, as
//! the libc crate does. `cargo run --release --example floor-server -- SOCKET [--keep-alive]`
//! runs it by hand.

use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixListener;

const REPLY: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 64\r\n\r\n\
    0000000000000000000000000000000000000000000000000000000000000000";
/// Largest request head kept: the bench's requests are under 100 bytes.
const MAX_HEAD: usize = 8192;

fn main() {
    let mut args = std::env::args_os().skip(1);
    let (Some(socket), keep_alive) = (args.next(), args.next()) else {
        eprintln!("usage: floor-server SOCKET [--keep-alive]");
        std::process::exit(2);
    };
    let keep_alive = match keep_alive.as_deref().map(|a| a.to_str()) {
        None => false,
        Some(Some("--keep-alive")) => true,
        Some(_) => {
            eprintln!("floor-server: the only option is --keep-alive");
            std::process::exit(2);
        }
    };
    let listener = UnixListener::bind(&socket).unwrap_or_else(|e| {
        eprintln!(
            "floor-server: cannot listen on {}: {e}",
            socket.to_string_lossy()
        );
        std::process::exit(1);
    });
    listener
        .set_nonblocking(true)
        .expect("non-blocking listener");
    serve(listener.as_raw_fd(), keep_alive);
}

/// The event loop; never returns (the bench stops the server with SIGTERM).
fn serve(listener: RawFd, keep_alive: bool) -> ! {
    let mut conns = Connections {
        pending: Vec::new(),
        buf: [0u8; MAX_HEAD],
        keep_alive,
    };
    // SAFETY: plain system calls on descriptors this process owns; every buffer passed to the
    // kernel is valid for the length given.
    unsafe {
        let epoll = epoll_create1(EPOLL_CLOEXEC);
        assert!(epoll >= 0, "epoll_create1");
        watch(epoll, listener);
        let mut events = [EpollEvent { events: 0, data: 0 }; 64];
        loop {
            let ready = epoll_wait(epoll, events.as_mut_ptr(), events.len() as i32, -1);
            if ready < 0 {
                continue; // EINTR
            }
            for event in &events[..ready as usize] {
                let fd = event.data as RawFd;
                if fd != listener {
                    conns.readable(fd);
                    continue;
                }
                loop {
                    let conn = accept4(
                        listener,
                        std::ptr::null_mut(),
                        std::ptr::null_mut(),
                        SOCK_NONBLOCK | SOCK_CLOEXEC,
                    );
                    if conn < 0 {
                        break; // EAGAIN: no more waiting connections
                    }
                    // A client writes its request right after connecting, so it is usually
                    // here already: answered at once, the connection never enters the set.
                    if conns.readable(conn) {
                        watch(epoll, conn);
                    }
                }
            }
        }
    }
}

struct Connections {
    /// Bytes of a request head not yet complete, per connection (indexed by descriptor).
    pending: Vec<Vec<u8>>,
    buf: [u8; MAX_HEAD],
    keep_alive: bool,
}

impl Connections {
    /// Reads what `fd` has and answers every complete request head in it; whether the
    /// connection is still open.
    ///
    /// # Safety
    /// `fd` is an open, non-blocking connection of this process.
    unsafe fn readable(&mut self, fd: RawFd) -> bool {
        // SAFETY: as the caller promises; `buf` and `REPLY` are valid for their lengths.
        unsafe {
            let n = read(fd, self.buf.as_mut_ptr().cast(), self.buf.len());
            if n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::WouldBlock {
                return true;
            }
            let idx = fd as usize;
            if self.pending.len() <= idx {
                self.pending.resize_with(idx + 1, Vec::new);
            }
            let head = &mut self.pending[idx];
            if n <= 0 || head.len() + n as usize > MAX_HEAD {
                // The client closed (or failed, or sent a head this server will not keep).
                head.clear();
                close(fd);
                return false;
            }
            head.extend_from_slice(&self.buf[..n as usize]);
            // Answers every complete head received (a client may pipeline on keep-alive).
            while let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                head.drain(..end + 4);
                // A reply is far smaller than an empty socket buffer, and the bench's clients
                // wait for it before sending again: one write always takes it.
                let written = write(fd, REPLY.as_ptr().cast(), REPLY.len());
                if written != REPLY.len() as isize || !self.keep_alive {
                    head.clear();
                    close(fd); // also leaves the epoll set
                    return false;
                }
            }
            true
        }
    }
}

/// Adds `fd` to the epoll set, level-triggered for reading, tagged with itself.
///
/// # Safety
/// `epoll` and `fd` are open descriptors.
unsafe fn watch(epoll: RawFd, fd: RawFd) {
    let mut event = EpollEvent {
        events: EPOLLIN,
        data: fd as u64,
    };
    // SAFETY: as the caller promises; `event` lives across the call.
    let added = unsafe { epoll_ctl(epoll, EPOLL_CTL_ADD, fd, &mut event) };
    assert_eq!(added, 0, "epoll_ctl");
}

// Linux's epoll and accept4, as in <sys/epoll.h> and <sys/socket.h> (x86-64 and aarch64).
const EPOLL_CLOEXEC: i32 = 0o2000000;
const EPOLL_CTL_ADD: i32 = 1;
const EPOLLIN: u32 = 1;
const SOCK_CLOEXEC: i32 = 0o2000000;
const SOCK_NONBLOCK: i32 = 0o4000;

/// `struct epoll_event`, packed on x86-64 as the kernel's is.
#[derive(Clone, Copy)]
#[cfg_attr(target_arch = "x86_64", repr(C, packed))]
#[cfg_attr(not(target_arch = "x86_64"), repr(C))]
struct EpollEvent {
    events: u32,
    data: u64,
}

extern "C" {
    fn epoll_create1(flags: i32) -> i32;
    fn epoll_ctl(epoll: i32, op: i32, fd: i32, event: *mut EpollEvent) -> i32;
    fn epoll_wait(epoll: i32, events: *mut EpollEvent, max: i32, timeout: i32) -> i32;
    fn accept4(fd: i32, addr: *mut std::ffi::c_void, len: *mut u32, flags: i32) -> i32;
    fn read(fd: i32, buf: *mut std::ffi::c_void, count: usize) -> isize;
    fn write(fd: i32, buf: *const std::ffi::c_void, count: usize) -> isize;
    fn close(fd: i32) -> i32;
}
