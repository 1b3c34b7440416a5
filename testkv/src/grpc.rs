//! gRPC methods as plain async functions: the decoding, encoding and HTTP/2
//! framing are tonic's, the routing by path is the services' own.

use std::convert::Infallible;
use std::future::Future;
use std::task::{Context, Poll};

use futures::Stream;
use tonic::body::BoxBody;
use tonic::codec::ProstCodec;
use tonic::codegen::{Body, BoxFuture, Service, StdError, http};
use tonic::server::NamedService;
use tonic::{Request, Response, Status, Streaming};

use crate::Shared;

/// What a service answers an HTTP/2 request with.
pub type Reply = BoxFuture<http::Response<BoxBody>, Infallible>;

/// A function from a request message to a reply, as tonic's server wants it.
struct Handler<F>(F);

impl<F, Fut, Req, Resp> Service<Request<Req>> for Handler<F>
where
    F: FnMut(Req) -> Fut,
    Fut: Future<Output = Result<Resp, Status>> + Send + 'static,
{
    type Response = Response<Resp>;
    type Error = Status;
    type Future = BoxFuture<Response<Resp>, Status>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Status>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Req>) -> Self::Future {
        let reply = (self.0)(request.into_inner());
        Box::pin(async move { reply.await.map(Response::new) })
    }
}

/// A unary method.
pub fn unary<B, Req, Resp, F, Fut>(request: http::Request<B>, handler: F) -> Reply
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
    Req: prost::Message + Default + Send + 'static,
    Resp: prost::Message + Send + 'static,
    F: FnMut(Req) -> Fut + Send + 'static,
    Fut: Future<Output = Result<Resp, Status>> + Send + 'static,
{
    Box::pin(async move {
        let mut grpc = tonic::server::Grpc::new(ProstCodec::<Resp, Req>::default());
        Ok(grpc.unary(Handler(handler), request).await)
    })
}

/// A stream of requests answered by a stream of replies.
struct StreamHandler<F>(F);

impl<F, Req, S> Service<Request<Streaming<Req>>> for StreamHandler<F>
where
    F: FnMut(Streaming<Req>) -> S,
    S: Send + 'static,
{
    type Response = Response<S>;
    type Error = Status;
    type Future = BoxFuture<Response<S>, Status>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Status>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Streaming<Req>>) -> Self::Future {
        let replies = (self.0)(request.into_inner());
        Box::pin(async move { Ok(Response::new(replies)) })
    }
}

/// A bidirectional streaming method.
pub fn streaming<B, Req, Resp, F, S>(request: http::Request<B>, handler: F) -> Reply
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
    Req: prost::Message + Default + Send + 'static,
    Resp: prost::Message + Send + 'static,
    F: FnMut(Streaming<Req>) -> S + Send + 'static,
    S: Stream<Item = Result<Resp, Status>> + Send + 'static,
{
    Box::pin(async move {
        let mut grpc = tonic::server::Grpc::new(ProstCodec::<Resp, Req>::default());
        Ok(grpc.streaming(StreamHandler(handler), request).await)
    })
}

/// A gRPC service's methods by name.
pub trait Methods: Clone + Send + 'static {
    /// The service's full name, as in `/<NAME>/<method>` paths.
    const NAME: &'static str;

    fn shared(&self) -> &Shared;

    /// The reply to `method`, or None when the service has no such method.
    fn route<B>(&self, method: &str, request: http::Request<B>) -> Option<Reply>
    where
        B: Body + Send + 'static,
        B::Error: Into<StdError> + Send + 'static;
}

/// A service as tonic serves it: the path routed to its methods, every call
/// counted, and a method it lacks answered `Unimplemented` and recorded.
#[derive(Debug, Clone)]
pub struct Routed<T>(pub T);

impl<T: Methods> NamedService for Routed<T> {
    const NAME: &'static str = T::NAME;
}

impl<T, B> Service<http::Request<B>> for Routed<T>
where
    T: Methods,
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<BoxBody>;
    type Error = Infallible;
    type Future = Reply;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Reply {
        let path = request.uri().path().to_owned();
        let method = path
            .strip_prefix('/')
            .and_then(|rest| rest.strip_prefix(T::NAME))
            .and_then(|rest| rest.strip_prefix('/'))
            .unwrap_or_default();
        self.0.shared().count(method);
        match self.0.route(method, request) {
            Some(reply) => reply,
            None => {
                self.0.shared().unserved(&path);
                let status = Status::unimplemented(format!("testkv does not serve {path}"));
                Box::pin(async move { Ok(status.to_http()) })
            }
        }
    }
}
