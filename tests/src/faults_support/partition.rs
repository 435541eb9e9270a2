//! A TCP proxy that can cut one program off from the broker while the others stay connected:
//! a network partition of a single link.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Forwards connections to a target until cut; while cut, open connections are closed and new
/// ones are refused (closed at once).
#[derive(Debug)]
pub struct Partition {
    addr: String,
    cut: Arc<AtomicBool>,
    cuts: watch::Sender<u64>,
    task: JoinHandle<()>,
}

impl Partition {
    /// Listens on a free port and forwards to `target` (`host:port`).
    pub async fn start(target: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("binding the partition proxy: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("reading the partition proxy's address: {e}"))
            .to_string();
        let cut = Arc::new(AtomicBool::new(false));
        let (cuts, _) = watch::channel(0u64);
        let (target, is_cut, watch) = (target.to_owned(), cut.clone(), cuts.clone());
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if is_cut.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                tokio::spawn(relay(client, target.clone(), watch.subscribe()));
            }
        });
        Self {
            addr,
            cut,
            cuts,
            task,
        }
    }

    /// `nats://host:port` of the proxy.
    pub fn nats_url(&self) -> String {
        format!("nats://{}", self.addr)
    }

    /// Closes every connection and refuses new ones until [`Partition::heal`].
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        self.cuts.send_modify(|n| *n += 1);
    }

    /// Accepts connections again.
    pub fn heal(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for Partition {
    fn drop(&mut self) {
        self.task.abort();
        self.cut();
    }
}

async fn relay(mut client: TcpStream, target: String, mut cuts: watch::Receiver<u64>) {
    let Ok(mut upstream) = TcpStream::connect(&target).await else {
        return;
    };
    cuts.borrow_and_update();
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {}
        _ = cuts.changed() => {}
    }
}
