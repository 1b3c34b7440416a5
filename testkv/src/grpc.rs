//! gRPC methods as plain async functions: the decoding, encoding and HTTP/2
//! framing are tonic's, the routing by path is the services' own.

use std::convert::Infallible;
use std::future::Future;
use std::task::{Context, Poll};

use futures::Stream;
use tonic::body::BoxBody;
use tonic::codec::ProstCodec;
use tonic::codegen::{Body, BoxFuture, Service, StdError, http};
use tonic::{Request, Response, Status, Streaming};

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

/// The answer to a method the server does not serve.
pub fn unimplemented(path: &str) -> Reply {
    let status = Status::unimplemented(format!("testkv does not serve {path}"));
    Box::pin(async move { Ok(status.to_http()) })
}
