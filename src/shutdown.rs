//! The drain signal, a leaf every layer may use: watch channels that turn `true` once,
//! and the three stages a listener stops in (accept, drain, close).

use tokio::sync::watch;

/// Signals that stop a listener: `accept` stops its accept loop only (a reload replaced
/// it: its connections go on); `drain` also asks its connections to finish their
/// requests and close; `close` ends whatever is still open.
#[derive(Clone)]
pub struct Shutdown {
    pub accept: watch::Receiver<bool>,
    pub drain: watch::Receiver<bool>,
    pub close: watch::Receiver<bool>,
}

impl Shutdown {
    /// Resolves once the accept loop must stop.
    pub async fn accepting_stops(&mut self) {
        tokio::select! {
            _ = signalled(&mut self.accept) => {}
            _ = signalled(&mut self.drain) => {}
        }
    }
}

/// Resolves once `signal` turns true, or its sender is gone (which also means stop).
pub async fn signalled(signal: &mut watch::Receiver<bool>) {
    let _ = signal.wait_for(|stop| *stop).await;
}
