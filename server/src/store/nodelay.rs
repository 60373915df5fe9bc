//! `TCP_NODELAY` on PostgreSQL connections.
//!
//! sqlx 0.9.0 opens its TCP sockets without `TCP_NODELAY` (launchbadge/sqlx#4335; fixed upstream
//! by #4336, not released as of 0.9.0). A statement that spans more than one TCP segment — a
//! push of a thousand check-ins binds ~100 KB of arrays — then leaves its last segment waiting
//! for the server's delayed ACK: about 40 ms per such statement, which made a batched merge
//! several times slower over TCP than over the Unix socket. sqlx gives no access to the socket,
//! so right after connecting the pool asks PostgreSQL which client port it sees and [`set`]
//! finds this process's socket bound to that port and sets the option on it. Best effort: it
//! changes nothing but latency, and where it cannot find the socket (another OS, a NAT between
//! us and the server) it does nothing. Delete this module once sqlx sets the option itself.

/// Sets `TCP_NODELAY` on this process's TCP socket whose local port is `local_port`; `false`
/// when there is none.
#[cfg(target_os = "linux")]
pub fn set(local_port: u16) -> std::io::Result<bool> {
    use rustix::process::{PidfdFlags, PidfdGetfdFlags, getpid, pidfd_getfd, pidfd_open};
    // `pidfd_getfd` on our own process duplicates a descriptor by number without `unsafe` (a
    // duplicate shares the socket, so its options are the original's).
    let me = pidfd_open(getpid(), PidfdFlags::empty())?;
    for entry in std::fs::read_dir("/proc/self/fd")? {
        let entry = entry?;
        let is_socket = std::fs::read_link(entry.path())
            .is_ok_and(|t| t.as_os_str().as_encoded_bytes().starts_with(b"socket:"));
        let Some(number) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        if !is_socket {
            continue;
        }
        // The descriptor may have been closed (and its number reused) meanwhile: the address
        // check below is made on what we hold.
        let Ok(fd) = pidfd_getfd(&me, number, PidfdGetfdFlags::empty()) else {
            continue;
        };
        let local = rustix::net::getsockname(&fd)
            .ok()
            .and_then(|a| std::net::SocketAddr::try_from(a).ok());
        let connected = rustix::net::getpeername(&fd).is_ok_and(|p| p.is_some());
        if connected && local.is_some_and(|a| a.port() == local_port) {
            rustix::net::sockopt::set_tcp_nodelay(&fd, true)?;
            return Ok(true);
        }
    }
    Ok(false)
}

#[cfg(not(target_os = "linux"))]
pub fn set(_local_port: u16) -> std::io::Result<bool> {
    Ok(false)
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    #[test]
    fn finds_and_sets_its_socket() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let client =
            std::net::TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        assert!(!client.nodelay().expect("nodelay"));
        let port = client.local_addr().expect("local").port();
        assert!(super::set(port).expect("set"));
        assert!(client.nodelay().expect("nodelay"));
    }
}
