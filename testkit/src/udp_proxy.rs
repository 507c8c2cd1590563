//! A UDP relay between one QUIC client and its server, on loopback, that a
//! test can cut: while cut, every datagram either way is dropped, as when a
//! network link or a switch fails. The processes on both ends keep running
//! and keep their sockets; only the path between them goes away.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

/// A running relay; stops when dropped.
pub struct UdpProxy {
    /// Where the client sends (instead of the server's address).
    pub addr: SocketAddr,
    cut: Arc<AtomicBool>,
    /// Datagrams dropped while cut.
    dropped: Arc<AtomicU64>,
    stop: CancellationToken,
}

impl UdpProxy {
    /// Relays datagrams between the first client that sends to
    /// [`UdpProxy::addr`] (and whichever address it sends from later) and `server`.
    pub async fn start(server: SocketAddr) -> anyhow::Result<UdpProxy> {
        let front = UdpSocket::bind("127.0.0.1:0").await?;
        let back = UdpSocket::bind("127.0.0.1:0").await?;
        back.connect(server).await?;
        let addr = front.local_addr()?;
        let (cut, dropped, stop) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicU64::new(0)),
            CancellationToken::new(),
        );
        let (c, d, s) = (cut.clone(), dropped.clone(), stop.clone());
        tokio::spawn(async move {
            let mut client: Option<SocketAddr> = None;
            let (mut up, mut down) = (vec![0u8; 65_536], vec![0u8; 65_536]);
            loop {
                tokio::select! {
                    _ = s.cancelled() => return,
                    received = front.recv_from(&mut up) => {
                        let Ok((n, from)) = received else { continue };
                        client = Some(from);
                        if c.load(Ordering::Relaxed) {
                            d.fetch_add(1, Ordering::Relaxed);
                        } else {
                            let _ = back.send(&up[..n]).await;
                        }
                    }
                    received = back.recv(&mut down) => {
                        // ICMP errors (the server restarting) surface here: keep relaying.
                        let Ok(n) = received else { continue };
                        match (client, c.load(Ordering::Relaxed)) {
                            (Some(to), false) => {
                                let _ = front.send_to(&down[..n], to).await;
                            }
                            _ => {
                                d.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                }
            }
        });
        Ok(UdpProxy {
            addr,
            cut,
            dropped,
            stop,
        })
    }

    /// Cuts (`true`) or restores (`false`) the path.
    pub fn set_cut(&self, cut: bool) {
        self.cut.store(cut, Ordering::Relaxed);
    }

    /// Datagrams dropped while cut so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl Drop for UdpProxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
