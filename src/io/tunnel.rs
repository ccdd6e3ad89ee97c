//! The two ends of a protocol switch: any byte stream both ways ([`TunnelIo`]), and the
//! client's connection handed from the server that wrote the `101` to whoever joins it
//! with the upstream's ([`ClientUpgrade`]).

use std::io;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::oneshot;

/// A byte stream both ways.
pub trait TunnelIo: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> TunnelIo for T {}

/// Where the server puts the client's connection once the `101` is written.
pub type TunnelSender = oneshot::Sender<Box<dyn TunnelIo>>;

/// The client's side of a protocol switch: its connection, once the `101` has been
/// written to it. Found in the request's extensions of an upgrade request (which must
/// be `Clone`: the first to ask gets the connection).
#[derive(Clone)]
pub struct ClientUpgrade(Arc<Mutex<Option<TunnelReceiver>>>);

/// Where the client's connection arrives once the `101` is written.
type TunnelReceiver = oneshot::Receiver<Box<dyn TunnelIo>>;

impl ClientUpgrade {
    /// A switch waiting for its connection, and where the server sends it.
    pub fn pending() -> (ClientUpgrade, TunnelSender) {
        let (sender, receiver) = oneshot::channel();
        (ClientUpgrade(Arc::new(Mutex::new(Some(receiver)))), sender)
    }

    /// The client's connection, ready to carry bytes.
    pub async fn connected(self) -> io::Result<Box<dyn TunnelIo>> {
        let receiver = self.0.lock().unwrap_or_else(PoisonError::into_inner).take();
        match receiver {
            Some(receiver) => receiver.await.map_err(|_| {
                io::Error::new(
                    io::ErrorKind::NotConnected,
                    "the client's connection closed before the switch",
                )
            }),
            None => Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "the client's connection was already taken",
            )),
        }
    }
}
