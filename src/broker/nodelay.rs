//! TCP_NODELAY and TCP_DEFER_ACCEPT for device connections. rumqttd accepts device sockets itself and never disables
//! Nagle's algorithm, so the box's event ack, published right after rumqttd's PUBACK, waits for the
//! device's delayed ACK: about 40 ms per event on Linux, which capped durable event throughput at a
//! sixth of mosquitto's (docs/benchmarks.md). Linux copies TCP_NODELAY from a listening socket to
//! every socket it accepts, so setting it once on rumqttd's listener — found among this process's
//! file descriptors by its local address — covers every device connection.

use std::net::SocketAddr;
use std::os::fd::{BorrowedFd, RawFd};

use nix::sys::socket::{getsockname, getsockopt, setsockopt, sockopt, SockaddrStorage};

/// Sets TCP_NODELAY on the listening socket bound to `addr`; false if none was found.
pub fn set_on_listener(addr: SocketAddr) -> std::io::Result<bool> {
    let wanted = SockaddrStorage::from(addr);
    for entry in std::fs::read_dir("/proc/self/fd")? {
        let entry = entry?;
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<RawFd>().ok())
        else {
            continue;
        };
        let is_socket = std::fs::read_link(entry.path())
            .map(|t| t.to_string_lossy().starts_with("socket:"))
            .unwrap_or(false);
        if !is_socket {
            continue;
        }
        // SAFETY: `fd` was open when listed; it is only used for the socket calls below, each of
        // which fails harmlessly if another thread closed it meanwhile. We never close it.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        let Ok(local) = getsockname::<SockaddrStorage>(std::os::fd::AsRawFd::as_raw_fd(&fd)) else {
            continue;
        };
        if local != wanted || !getsockopt(&fd, sockopt::AcceptConn).unwrap_or(false) {
            continue;
        }
        setsockopt(&fd, sockopt::TcpNoDelay, &true).map_err(std::io::Error::from)?;
        return Ok(true);
    }
    Ok(false)
}

/// Makes idle connections cost the process nothing: TCP_DEFER_ACCEPT (`secs`) has the kernel
/// hand a connection to `accept` only once its first bytes arrive (or after about `secs`), and a
/// second `listen` raises rumqttd's backlog (Rust's default 128) to `backlog` so that many wait
/// there; beyond it the kernel answers with SYN cookies and accepts at once. rumqttd's accept loop
/// retries a failing `accept` without pause and cannot be changed from here; this keeps a flood
/// of silent connections from ever taking its descriptors (each one reaching it is then closed by
/// the 5 s CONNECT timeout).
pub fn defer_accept(fd: RawFd, secs: i32, backlog: i32) -> std::io::Result<()> {
    // SAFETY: setsockopt and listen on a descriptor we were given, with a pointer to a local i32.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_DEFER_ACCEPT,
            &secs as *const i32 as *const libc::c_void,
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: listen on a socket that is already listening only changes its backlog.
    if unsafe { libc::listen(fd, backlog) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Finds the listening socket bound to `addr` among this process's descriptors.
pub fn find_listener(addr: SocketAddr) -> std::io::Result<Option<RawFd>> {
    let wanted = SockaddrStorage::from(addr);
    for entry in std::fs::read_dir("/proc/self/fd")? {
        let Some(fd) = entry?
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<RawFd>().ok())
        else {
            continue;
        };
        // SAFETY: as above; read-only socket calls that fail harmlessly on a closed fd.
        let b = unsafe { BorrowedFd::borrow_raw(fd) };
        if getsockname::<SockaddrStorage>(fd).ok() == Some(wanted)
            && getsockopt(&b, sockopt::AcceptConn).unwrap_or(false)
        {
            return Ok(Some(fd));
        }
    }
    Ok(None)
}

/// Whether TCP_NODELAY is set on the listening socket bound to `addr` (for tests).
pub fn listener_has_nodelay(addr: SocketAddr) -> std::io::Result<Option<bool>> {
    let wanted = SockaddrStorage::from(addr);
    for entry in std::fs::read_dir("/proc/self/fd")? {
        let Some(fd) = entry?
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<RawFd>().ok())
        else {
            continue;
        };
        // SAFETY: as above; read-only socket calls that fail harmlessly on a closed fd.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        if getsockname::<SockaddrStorage>(std::os::fd::AsRawFd::as_raw_fd(&fd)).ok() == Some(wanted)
            && getsockopt(&fd, sockopt::AcceptConn).unwrap_or(false)
        {
            return Ok(Some(
                getsockopt(&fd, sockopt::TcpNoDelay).map_err(std::io::Error::from)?,
            ));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodelay_set_on_the_listener_is_inherited_by_accepted_sockets() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        assert_eq!(listener_has_nodelay(addr).unwrap(), Some(false));
        assert!(set_on_listener(addr).unwrap());
        assert_eq!(listener_has_nodelay(addr).unwrap(), Some(true));
        let _client = std::net::TcpStream::connect(addr).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        assert!(
            accepted.nodelay().unwrap(),
            "accepted socket inherits TCP_NODELAY"
        );
        let other: SocketAddr = "127.0.0.1:1".parse().unwrap();
        assert!(!set_on_listener(other).unwrap(), "no listener there");
    }
}
