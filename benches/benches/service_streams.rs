//! Server streams over one loopback TCP connection (plain mode): items/s of
//! 64-byte items, and 64 KiB items against the transport's one-way bulk
//! throughput measured in the same run. Prints figures; asserts nothing
//! about speed.
//!
//! `cargo bench -p netproto-benches --bench service_streams`

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::print_stdout
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use netproto_dispatch::{
    Correlator, CorrelatorConfig, Dispatcher, HandlerError, RequestOptions, ServeConfig,
};
use netproto_transport::{
    Acceptor, ClientSecurity, Connection, ConnectionConfig, Connector, Incoming, ServerSecurity,
};
use netproto_wire::{Envelope, MessageType};
use tokio::net::{TcpListener, TcpStream};

const ROUNDS: usize = 5;

async fn pair() -> (Connection, Connection) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        tcp.set_nodelay(true).unwrap();
        let acceptor = Acceptor::new(ServerSecurity::Plain, ConnectionConfig::default()).unwrap();
        acceptor.accept(tcp).await.unwrap()
    });
    let tcp = TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let connector = Connector::new(ClientSecurity::Plain, ConnectionConfig::default()).unwrap();
    let client = connector.connect(tcp).await.unwrap();
    (client, server.await.unwrap())
}

/// A client whose server streams `n` copies of the request's payload.
async fn stream_client() -> Correlator {
    let dispatcher = Arc::new(Dispatcher::default());
    dispatcher.register_stream("REPEAT", |_context, request: Envelope| {
        let n = u64::from_be_bytes(request.payload[..8].try_into().unwrap());
        let item = Bytes::from(vec![7_u8; usize::try_from(n >> 40).unwrap()]);
        futures::stream::iter(
            (0..(n & 0xff_ffff_ffff)).map(move |_| Ok::<_, HandlerError>(item.clone())),
        )
    });
    let (client, server) = pair().await;
    tokio::spawn(async move {
        let (_stop, shutdown) = tokio::sync::watch::channel(false);
        let _ = dispatcher
            .serve(server, &ServeConfig::default(), shutdown)
            .await;
    });
    Correlator::new(client, &CorrelatorConfig::default())
        .unwrap()
        .0
}

/// Streams `count` items of `size` bytes with `credit`; returns the time.
async fn stream(client: &Correlator, count: u64, size: u64, credit: u32) -> Duration {
    let request = Bytes::copy_from_slice(&((size << 40) | count).to_be_bytes());
    let started = Instant::now();
    let mut items = client
        .request_stream(
            MessageType::new("REPEAT").unwrap(),
            request,
            &RequestOptions::default(),
            credit,
        )
        .await
        .unwrap();
    let mut seen = 0;
    while let Some(item) = items.next().await {
        assert_eq!(item.unwrap().len() as u64, size);
        seen += 1;
    }
    assert_eq!(seen, count);
    started.elapsed()
}

/// One-way bulk on a bare connection: `count` messages of `size` bytes.
async fn bulk(count: u64, size: usize) -> Duration {
    let (client, mut server) = pair().await;
    let payload = Bytes::from(vec![7_u8; size]);
    let started = Instant::now();
    let sender = tokio::spawn(async move {
        let name = MessageType::new("BULK").unwrap();
        for _ in 0..count {
            client
                .send(Envelope::new(0, name.clone(), payload.clone()))
                .await
                .unwrap();
        }
        client
    });
    let mut seen = 0;
    while seen < count {
        if let Some(Incoming::Message(_)) = server.recv().await.unwrap() {
            seen += 1;
        }
    }
    let elapsed = started.elapsed();
    drop(sender.await.unwrap());
    elapsed
}

fn median(mut times: Vec<f64>) -> f64 {
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = stream_client().await;
        for credit in [256, 1024, 4096] {
            let count = 2_000_000;
            let _ = stream(&client, 100_000, 64, credit).await;
            let mut rates = Vec::with_capacity(ROUNDS);
            for _ in 0..ROUNDS {
                let took = stream(&client, count, 64, credit).await;
                rates.push(count as f64 / took.as_secs_f64());
            }
            let best = rates.iter().copied().fold(0.0, f64::max);
            println!(
                "stream 64 B items, credit {credit}: median {:.2} M items/s, best {:.2}",
                median(rates) / 1e6,
                best / 1e6
            );
        }
        let (count, size) = (20_000_u64, 64 * 1024_u64);
        let gib = (count * size) as f64 / f64::from(1 << 30);
        let mut streamed = Vec::new();
        let mut bare = Vec::new();
        for _ in 0..ROUNDS {
            streamed.push(gib / stream(&client, count, size, 64).await.as_secs_f64());
            bare.push(gib / bulk(count, usize::try_from(size).unwrap()).await.as_secs_f64());
        }
        let (streamed, bare) = (median(streamed), median(bare));
        println!(
            "64 KiB items: stream {streamed:.2} GiB/s, transport one-way bulk {bare:.2} GiB/s, ratio {:.2}",
            streamed / bare
        );
    });
}
