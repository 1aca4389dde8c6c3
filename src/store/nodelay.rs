//! Turns Nagle's algorithm off on each PostgreSQL connection.
//!
//! sqlx 0.9.0 stopped setting `TCP_NODELAY` on its sockets (transact-rs/sqlx#4335; the fix,
//! #4336, is merged but not released). A query larger than one segment, such as a group of
//! queued messages, then waits for the server's delayed acknowledgement before its last
//! segment leaves: about 40 ms a transaction, which capped QueueMail on PostgreSQL at ~800
//! messages/s with an idle CPU. sqlx does not hand out its socket, so the connection's own
//! socket is found among the process's descriptors by its local port, which the server
//! reports (`inet_client_port()`), and the option is set on it.
//!
//! Delete this module once the sqlx release in use sets the option itself.

use sqlx::{AnyConnection, Row};

/// Sets `TCP_NODELAY` on the socket of `connection` (nothing to do over a Unix socket, where
/// the server reports no port).
pub(super) async fn disable_nagle(connection: &mut AnyConnection) -> Result<(), sqlx::Error> {
    let row = sqlx::query("SELECT CAST(inet_client_port() AS BIGINT)")
        .fetch_one(&mut *connection)
        .await?;
    let port: Option<i64> = row.try_get(0)?;
    if let Some(port) = port.and_then(|p| u16::try_from(p).ok()) {
        set_on_local_port(port);
    }
    Ok(())
}

/// Sets the option on this process's connected TCP socket bound to local `port`; best effort (without
/// it the connection works, only slower).
#[cfg(target_os = "linux")]
fn set_on_local_port(port: u16) {
    use std::os::fd::{BorrowedFd, RawFd};
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    for entry in entries.flatten() {
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<RawFd>().ok())
        else {
            continue;
        };
        // SAFETY: the descriptor is only borrowed, for two socket calls, and never closed
        // here. Were another thread to close it meanwhile, the calls fail (EBADF, ENOTSOCK) or
        // reach a newer socket, which the port check leaves alone.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        let socket = socket2::SockRef::from(&borrowed);
        let bound_here = socket
            .local_addr()
            .ok()
            .and_then(|address| address.as_socket())
            .is_some_and(|address| address.port() == port)
            && socket.peer_addr().is_ok();
        if bound_here {
            if let Err(error) = socket.set_tcp_nodelay(true) {
                tracing::debug!(%error, "store: cannot set TCP_NODELAY");
            }
            return;
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn set_on_local_port(_port: u16) {}
