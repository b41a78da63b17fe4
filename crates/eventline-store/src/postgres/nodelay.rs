//! TCP_NODELAY on connections to PostgreSQL. sqlx 0.9 leaves Nagle's algorithm on for TCP
//! connections under tokio. A COPY ends with a small CopyDone message written right after
//! the data; Nagle holds it until the server acknowledges the data's last segment, and
//! the server delays that acknowledgement (40 ms on Linux) because it has nothing to send.
//! Every COPY, and so every ingest commit, stalled by up to 40 ms: at half load the ack
//! p50 fell from 41 ms to 9 ms once the delay was gone (README "Performance").
//!
//! sqlx does not hand out its socket, so the connection asks the server for its own
//! address pair and the matching socket of this process is found among its descriptors.

use sqlx::PgConnection;

/// Turns Nagle's algorithm off for `connection` when it is TCP; a Unix socket (or a
/// connection through a proxy, whose ports do not match) is left as it is. Returns
/// whether it did.
pub async fn disable_nagle(connection: &mut PgConnection) -> Result<bool, sqlx::Error> {
    // NULL over a Unix socket.
    let (client_port, server_port): (Option<i32>, Option<i32>) =
        sqlx::query_as("SELECT inet_client_port(), inet_server_port()")
            .fetch_one(&mut *connection)
            .await?;
    let (Some(client), Some(server)) = (client_port, server_port) else {
        return Ok(false);
    };
    let ports = (
        u16::try_from(client).unwrap_or_default(),
        u16::try_from(server).unwrap_or_default(),
    );
    let done = set_nodelay_on(ports);
    if !done {
        tracing::debug!(?ports, "no socket of this process matches the connection");
    }
    Ok(done)
}

/// Sets TCP_NODELAY on this process's TCP socket from local port `local` to remote port
/// `remote`; returns whether it found one.
#[cfg(unix)]
fn set_nodelay_on((local, remote): (u16, u16)) -> bool {
    use std::os::fd::{BorrowedFd, RawFd};
    let directory = if cfg!(target_os = "linux") {
        "/proc/self/fd"
    } else {
        "/dev/fd"
    };
    let Ok(entries) = std::fs::read_dir(directory) else {
        return false;
    };
    for entry in entries.filter_map(Result::ok) {
        let Some(raw) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<RawFd>().ok())
        else {
            continue;
        };
        // SAFETY: the descriptor is only queried and given a socket option for the
        // duration of this loop body. Were it closed meanwhile, the calls fail with
        // EBADF; were its number reused, the address check below would not match, and
        // TCP_NODELAY is harmless on any TCP socket anyway.
        let descriptor = unsafe { BorrowedFd::borrow_raw(raw) };
        let socket = socket2::SockRef::from(&descriptor);
        let port_of = |address: std::io::Result<socket2::SockAddr>| {
            address
                .ok()
                .and_then(|address| address.as_socket())
                .map(|address| address.port())
        };
        if port_of(socket.local_addr()) == Some(local)
            && port_of(socket.peer_addr()) == Some(remote)
        {
            return socket.set_tcp_nodelay(true).is_ok();
        }
    }
    false
}

#[cfg(not(unix))]
fn set_nodelay_on(_ports: (u16, u16)) -> bool {
    false
}
