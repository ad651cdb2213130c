//! A server of testkit's own (a proxy, a plugin) served on a thread with a
//! current-thread tokio runtime of its own, stopped on demand or on drop.

use std::convert::Infallible;
use std::future::Future;
use std::thread::JoinHandle;

use hyper::body::{Body, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::UnixListener;
use tokio::sync::oneshot;

/// The thread serving; [`Background::stop`] (or dropping it) tells the
/// server to stop and waits for the thread.
#[derive(Debug)]
pub(crate) struct Background {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Background {
    /// Runs `serve(stopped)` on a thread named `name`; the future should
    /// return once `stopped` resolves. Dropping the runtime afterwards ends
    /// every connection it still holds.
    pub(crate) fn spawn<F, Fut>(name: &str, serve: F) -> Result<Background, String>
    where
        F: FnOnce(oneshot::Receiver<()>) -> Fut + Send + 'static,
        Fut: Future<Output = ()>,
    {
        let (stop, stopped) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    return;
                };
                runtime.block_on(serve(stopped));
            })
            .map_err(|e| format!("cannot start the {name} thread: {e}"))?;
        Ok(Background {
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Stops the server and waits for its thread (once; later calls do
    /// nothing).
    pub(crate) fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Serves HTTP/1 on `listener` until `stopped`, each connection on a task
/// of its own, each request answered by `handle`.
pub(crate) async fn serve_unix<H, Fut, B>(
    listener: std::os::unix::net::UnixListener,
    mut stopped: oneshot::Receiver<()>,
    handle: H,
) where
    H: Fn(Request<Incoming>) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<Response<B>, Infallible>> + Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let Ok(listener) = UnixListener::from_std(listener) else {
        return;
    };
    loop {
        let stream = tokio::select! {
            _ = &mut stopped => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => continue,
            },
        };
        let handle = handle.clone();
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), hyper::service::service_fn(handle))
                .await;
        });
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.stop();
    }
}
